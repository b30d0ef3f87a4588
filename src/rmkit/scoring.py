"""RMScore: score every example of a data set with a reward model, in input order.

:func:`score_examples` is the one scorer of rmkit: ``rmkit score``, ``rmkit eval`` and the Python API all
go through it. It takes examples in chunks, tokenises each chunk in one call, scores the chunk in
length-sorted token-budget batches (:meth:`RewardModel.score_ids`) and yields the examples back in the
order they came.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

from rmkit.data import Encoder, Example
from rmkit.modeling import RewardModel


@dataclass
class ScoreStats:
    """Counts of a scoring run: rows scored, rows truncated or dropped by the length rule, real tokens."""

    rows: int = 0
    truncated: int = 0
    dropped: int = 0
    tokens: int = 0


def score_examples(
    rm: RewardModel,
    examples: Iterable[Example],
    *,
    encoder: Encoder | None = None,
    batch_tokens: int = 16384,
    chunk_rows: int = 2048,
    stats: ScoreStats | None = None,
) -> Iterator[tuple[Example, list[float] | None]]:
    """Yield ``(example, scores)`` in input order: one score per response (``[chosen, rejected]`` for a
    pair), or ``None`` for a row dropped by ``truncation="drop"``."""
    encoder = encoder or rm.encoder()
    stats = stats if stats is not None else ScoreStats()
    it = iter(examples)
    while chunk := list(islice(it, chunk_rows)):
        encoded = encoder.encode_many(chunk)
        seqs = [e.ids for encs in encoded if encs is not None for e in encs]
        scores = iter(rm.score_ids(seqs, batch_tokens=batch_tokens))
        for ex, encs in zip(chunk, encoded, strict=True):
            if encs is None:
                stats.dropped += 1
                yield ex, None
                continue
            stats.rows += 1
            stats.truncated += any(e.truncated for e in encs)
            stats.tokens += sum(len(e.ids) for e in encs)
            yield ex, [next(scores) for _ in encs]
