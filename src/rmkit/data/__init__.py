"""Data layer: read files, normalise rows to :class:`Example`, render and tokenise, batch.

Rows flow one way: :func:`read_records` (files to dicts) → :func:`normalise_records` (dicts to
:class:`Example`, bad rows to :class:`Rejects`) → :class:`ExampleTokenizer` (render, tokenise, truncate) →
:func:`token_budget_batches` and :func:`pad_batch` (length-sorted padded batches for the model).
"""

from rmkit import lazy
from rmkit.data.formats import (
    FORMATS,
    PAIR_FORMATS,
    SCORE_FORMATS,
    Example,
    detect_format,
    examples_from,
    iter_examples,
    normalise_records,
)
from rmkit.data.readers import BadRecord, first_record, jsonl_starts, parquet_groups, read_records
from rmkit.data.rejects import Rejects
from rmkit.data.rendering import ExampleTokenizer, RowCounts, Tokenized, render_plain
from rmkit.data.rows import SUBSET_COLUMNS

__all__ = [
    "FORMATS",
    "PAIR_FORMATS",
    "SCORE_FORMATS",
    "SUBSET_COLUMNS",
    "Example",
    "ExampleTokenizer",
    "Rejects",
    "RowCounts",
    "Tokenized",
    "detect_format",
    "examples_from",
    "iter_examples",
    "normalise_records",
    "pad_batch",
    "padded_on",
    "BadRecord",
    "first_record",
    "jsonl_starts",
    "parquet_groups",
    "read_records",
    "render_plain",
    "token_budget_batches",
]

# The batching helpers need torch: loaded on first use, so reading data (and ``--help``) does not load it.
__getattr__ = lazy(
    __name__, dict.fromkeys(("pad_batch", "padded_on", "token_budget_batches"), "rmkit.data.batching")
)
