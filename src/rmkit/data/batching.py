"""Length-aware batching and padding.

Sequences are sorted by length and cut into batches whose padded size (rows × longest row) stays within
a token budget, so short rows travel in wide batches and long rows in narrow ones, and little compute is
spent on padding. Callers restore input order from the indices each batch carries.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def token_budget_batches(
    lengths: Sequence[int], max_tokens: int, max_rows: int | None = None
) -> list[list[int]]:
    """Group indices of ``lengths`` into batches of similar length.

    Returns lists of indices, longest batch first; within each batch ``len(batch) * max(length)`` is at
    most ``max_tokens`` (a single row longer than the budget forms a batch of its own) and ``len(batch)``
    at most ``max_rows``.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
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


def pad_batch(
    rows: Sequence[Sequence[int]], pad_id: int, side: str = "right"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token id lists to one tensor.

    Returns ``input_ids`` and ``attention_mask``, both ``(len(rows), max_len)`` int64; the mask is 1 on real
    tokens. For rows ``[[5, 6, 7], [8]]`` and pad 0, right padding gives ids ``[[5, 6, 7], [8, 0, 0]]`` and
    mask ``[[1, 1, 1], [1, 0, 0]]``; left padding puts the pads first.
    """
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        sl = slice(0, len(r)) if side == "right" else slice(width - len(r), width)
        ids[i, sl] = torch.as_tensor(r, dtype=torch.long)
        mask[i, sl] = 1
    return ids, mask
