"""The inference core: the one scorer under ``RewardModel.score``, ``rmkit score`` and ``rmkit eval``.

Examples go in, scores come out in the order the examples came::

    examples ─ ExampleTokenizer ─> token ids ─ token_budget_batches ─> padded batches ─ model ─> end scores
       (a chunk at a time)          (one call per chunk)   (longest first, rows × longest ≤ budget)

Sorting by length lets short rows travel in wide batches and long ones in narrow batches, so little
compute goes to padding; each batch carries the indices of its rows, which put the scores back in input
order. The core knows nothing of files, processes or HTTP: the jobs (``rmkit score``, ``rmkit eval``) and
the server feed it examples and write what comes back.

A model is anything with the :class:`BatchModel` shape; :class:`rmkit.RewardModel` is one (and calls this
module for its own ``score``), so the core does not depend on how a model is loaded.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import Any, Protocol

import torch

from rmkit.data import Example, ExampleTokenizer, RowCounts, pad_batch, token_budget_batches

BATCH_TOKENS = 16384  # padded tokens (rows × longest row) per forward pass
MAX_ROWS = 256  # rows per forward pass, whatever their length
CHUNK_ROWS = 2048  # examples tokenised and sorted together


class BatchModel(Protocol):
    """What the core needs of a model: a forward pass over a padded batch, its device and pad token."""

    @property
    def device(self) -> torch.device: ...

    @property
    def pad_token_id(self) -> int: ...

    def __call__(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_scores: bool = ...
    ) -> Any:
        """Returns an object whose ``end_scores`` is the (B,) sequence score of each row."""
        ...


@torch.inference_mode()
def score_sequences(
    model: BatchModel,
    sequences: Sequence[Sequence[int]],
    *,
    batch_tokens: int = BATCH_TOKENS,
    max_rows: int | None = MAX_ROWS,
    batch_cost: float | None = None,
) -> list[float]:
    """The score of each token id sequence, in the order given (the batch loop of rmkit).

    ``batch_cost`` (see :func:`batch_cost`) makes a few rows of mixed lengths split by length where that
    pays (:func:`rmkit.data.token_budget_batches`); without it batches fill the token budget.
    """
    scores = [0.0] * len(sequences)
    for batch in token_budget_batches([len(s) for s in sequences], batch_tokens, max_rows, batch_cost):
        ids, mask = pad_batch([sequences[i] for i in batch], model.pad_token_id)
        end = model(ids.to(model.device), mask.to(model.device), token_scores=False).end_scores
        for i, value in zip(batch, end.float().cpu().tolist(), strict=True):
            scores[i] = value
    return scores


def batch_cost(model: BatchModel, *, short: int = 16, long: int = 512, repeats: int = 3) -> float:
    """The fixed cost of one forward pass of ``model`` on its device, in tokens' worth of work.

    Times one row of ``short`` and one of ``long`` tokens (the best of ``repeats``) and fits
    ``time = fixed + per_token × tokens``; returns ``fixed / per_token`` (large on a GPU, where a pass costs
    nearly the same whatever its size; small on a CPU).
    """
    row = [model.pad_token_id]

    def best(length: int) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            score_sequences(model, [row * length])
            times.append(time.perf_counter() - start)
        return min(times)

    best(short)  # the first pass pays for allocations
    t_short, t_long = best(short), best(long)
    per_token = max(t_long - t_short, 1e-9) / (long - short)
    return max(0.0, t_short - per_token * short) / per_token


def score_examples(
    model: BatchModel,
    examples: Iterable[Example],
    tokenizer: ExampleTokenizer,
    *,
    batch_tokens: int = BATCH_TOKENS,
    chunk_rows: int = CHUNK_ROWS,
    stats: RowCounts | None = None,
) -> Iterator[tuple[Example, list[float] | None]]:
    """Yield ``(example, scores)`` in input order: one score per response (``[chosen, rejected]`` for a
    pair), or ``None`` for an example the tokenizer dropped (``truncation="drop"``).

    ``chunk_rows`` examples are tokenised and length-sorted together; ``stats`` (when given) is updated
    as examples come back.
    """
    stats = stats if stats is not None else RowCounts()
    it = iter(examples)
    while chunk := list(islice(it, chunk_rows)):
        tokenized = tokenizer.tokenize(chunk)
        ids = [t.ids for row in tokenized if row is not None for t in row]
        scores = iter(score_sequences(model, ids, batch_tokens=batch_tokens))
        for example, row in zip(chunk, tokenized, strict=True):
            stats.add(row)
            yield example, None if row is None else [next(scores) for _ in row]
