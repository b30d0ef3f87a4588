"""Data layer: read files, normalise rows to :class:`Example`, render and tokenise, batch."""

from rmkit.data.batching import pad_batch, token_budget_batches
from rmkit.data.formats import (
    FORMATS,
    PAIR_FORMATS,
    SCORE_FORMATS,
    Example,
    Rejects,
    detect_format,
    iter_examples,
)
from rmkit.data.readers import read_records
from rmkit.data.rendering import Encoded, Encoder, render_plain

__all__ = [
    "FORMATS",
    "PAIR_FORMATS",
    "SCORE_FORMATS",
    "Encoded",
    "Encoder",
    "Example",
    "Rejects",
    "detect_format",
    "iter_examples",
    "pad_batch",
    "read_records",
    "render_plain",
    "token_budget_batches",
]
