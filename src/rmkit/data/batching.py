"""Length-aware batching and padding.

Sequences are sorted by length and cut into batches whose padded size (rows × longest row) stays within
a token budget, so short rows travel in wide batches and long rows in narrow ones, and little compute is
spent on padding. Callers restore input order from the indices each batch carries.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from rmkit.runtime import to_device


def token_budget_batches(
    lengths: Sequence[int], max_tokens: int, max_rows: int | None = None, batch_cost: float | None = None
) -> list[list[int]]:
    """Group indices of ``lengths`` into batches of similar length.

    Returns lists of indices, longest batch first; within each batch ``len(batch) * max(length)`` is at
    most ``max_tokens`` (a single row longer than the budget forms a batch of its own) and ``len(batch)``
    at most ``max_rows``.

    Without ``batch_cost`` each batch is filled up to the budget (right for thousands of rows, where the
    neighbours of a sorted row have nearly its length). With it (the fixed cost of one forward pass, in
    padded tokens' worth of work), the split minimises ``Σ (batch_cost + rows × longest)`` over all ways to
    cut the sorted rows: a few rows of mixed lengths (a server's batch) then go in as many passes as pay,
    not padded to the longest of them.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    if batch_cost is not None:
        return [
            [order[k] for k in range(a, b)]
            for a, b in _cheapest_cuts([lengths[i] for i in order], max_tokens, max_rows, batch_cost)
        ]
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        full = max_rows is not None and len(current) >= max_rows
        if current and (full or (len(current) + 1) * longest > max_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def _cheapest_cuts(
    desc: Sequence[int], max_tokens: int, max_rows: int | None, batch_cost: float
) -> list[tuple[int, int]]:
    """``[start, end)`` ranges of the descending lengths ``desc`` with the least total cost (dynamic
    programming over where the last batch starts: a batch ``[j, i)`` costs ``batch_cost + (i - j) × desc[j]``)."""
    n = len(desc)
    lengths = np.asarray(desc, dtype=np.float64)
    best = np.zeros(n + 1)
    start = np.zeros(n + 1, dtype=np.int64)
    cap = max_rows or n
    for i in range(1, n + 1):
        j = np.arange(max(0, i - cap), i)
        padded = (i - j) * lengths[j]
        cost = best[j] + batch_cost + padded
        cost[(padded > max_tokens) & (j < i - 1)] = np.inf
        k = int(np.argmin(cost))
        best[i], start[i] = cost[k], j[k]
    cuts, i = [], n
    while i > 0:
        cuts.append((int(start[i]), i))
        i = int(start[i])
    return cuts[::-1]


def pad_batch(
    rows: Sequence[Sequence[int]], pad_id: int, side: str = "right", pin: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token id lists to one tensor.

    Returns ``input_ids`` and ``attention_mask``, both ``(len(rows), max_len)`` int64; the mask is 1 on real
    tokens. For rows ``[[5, 6, 7], [8]]`` and pad 0, right padding gives ids ``[[5, 6, 7], [8, 0, 0]]`` and
    mask ``[[1, 1, 1], [1, 0, 0]]``; left padding puts the pads first. ``pin``: in page-locked memory, to
    copy to a GPU without waiting.
    """
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long, pin_memory=pin)
    mask = torch.zeros((len(rows), width), dtype=torch.long, pin_memory=pin)
    for i, r in enumerate(rows):
        sl = slice(0, len(r)) if side == "right" else slice(width - len(r), width)
        ids[i, sl] = torch.as_tensor(r, dtype=torch.long)
        mask[i, sl] = 1
    return ids, mask


def padded_on(rows: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """:func:`pad_batch` (right padding) on ``device``: padded straight into pinned memory for a GPU and
    sent without waiting (:func:`rmkit.runtime.to_device`)."""
    padded = pad_batch(rows, pad_id, pin=device.type == "cuda")
    return tuple(to_device(t, device) for t in padded)
