"""Padding-free batches: several sequences packed end to end into one row, for causal decoders.

A packed batch of rows ``[[5, 6, 7], [8, 9]]`` is::

    input_ids    [[5, 6, 7, 8, 9]]     (1, T): T = the real tokens of all rows, no pads
    position_ids [[0, 1, 2, 0, 1]]     positions restart at every sequence
    ends         [2, 4]                (N,): where each sequence's last token is, read for its end score

transformers (5.x) reads a row whose positions restart, given with no attention mask, as packed
sequences: each token attends causally within its own sequence only. Flash attention (``flash_attention_2``
and ``_3``, varlen) and ``flex_attention`` then skip the blocks between sequences, so a packed batch costs
the real tokens alone; SDPA and eager attention build a dense (T, T) block-diagonal mask instead, correct
but quadratic in T, which is why :func:`packs` turns packing on by default only for the first kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rmkit.data import padded_on
from rmkit.runtime import to_device

# Attention implementations that skip the blocks between packed sequences (varlen or block-sparse).
PACKED_ATTENTION = ("flash_attention_2", "flash_attention_3", "flex_attention")


@dataclass
class Packed:
    """Sequences packed into rows: ``input_ids`` and ``position_ids`` (R, T), ``ends`` (N,) the flat index
    (row * T + column) of each sequence's last token, and ``mask`` (R, 1, T, T; True: attends), which only
    :func:`share_pairs` gives (packing alone lets transformers read the sequences from the positions)."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    ends: torch.Tensor
    mask: torch.Tensor | None = None

    def to(self, device: torch.device) -> Packed:
        mask = None if self.mask is None else to_device(self.mask, device)
        return Packed(*(to_device(t, device) for t in self.tensors()), mask)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.input_ids, self.position_ids, self.ends

    def attention(self, implementation: str | None, dtype: torch.dtype) -> torch.Tensor | None:
        """The mask as ``implementation`` reads it: SDPA a boolean one, eager attention an additive one."""
        if self.mask is None or implementation != "eager":
            return self.mask
        return torch.zeros(self.mask.shape, dtype=dtype, device=self.mask.device).masked_fill(
            ~self.mask, torch.finfo(dtype).min
        )


def pack(rows: Sequence[Sequence[int]]) -> Packed:
    """Pack token id lists end to end (the module docstring shows the layout); every row needs a token."""
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    if not len(rows) or int(lengths.min()) < 1:
        raise ValueError("pack: every sequence needs at least one token")
    ids = torch.tensor([t for r in rows for t in r], dtype=torch.long)
    starts = torch.cumsum(lengths, 0) - lengths
    positions = torch.arange(len(ids)) - torch.repeat_interleave(starts, lengths)
    return Packed(ids[None], positions[None], starts + lengths - 1)


def shared_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many tokens ``a`` and ``b`` share from their start, leaving each at least one of its own."""
    n = min(len(a), len(b)) - 1
    if n <= 0:
        return 0
    differ = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(differ[0]) if len(differ) else n


def share_pairs(pairs: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int) -> Packed:
    """Each pair one row, its shared prefix run once: ``prefix | chosen's rest | rejected's rest``, right-padded.

    For the pair ``([5, 6, 7], [5, 6, 8, 9])`` (prefix ``[5, 6]``)::

        input_ids    [5, 6, 7, 8, 9]
        position_ids [0, 1, 2, 2, 3]     the rejected answer's positions go on from the prefix's end
        segment      p  p  c  r  r       each token attends causally to the prefix and its own answer

    ``ends`` holds the chosen answers' last tokens, then the rejected ones' (the pairs' order): the scores
    and every gradient are those of the two sequences run apart.
    """
    cut = [shared_prefix(a, b) for a, b in pairs]
    width = max(len(a) + len(b) - p for (a, b), p in zip(pairs, cut, strict=True))
    ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(pairs), width), dtype=torch.long)
    segment = torch.full((len(pairs), width), -1, dtype=torch.long)  # -1 pad, 0 prefix, 1 chosen, 2 rejected
    ends = torch.zeros(2, len(pairs), dtype=torch.long)
    for i, ((a, b), p) in enumerate(zip(pairs, cut, strict=True)):
        n = len(a) + len(b) - p
        ids[i, :n] = torch.tensor([*a, *b[p:]])
        positions[i, :n] = torch.cat([torch.arange(len(a)), torch.arange(p, len(b))])
        segment[i, :n] = torch.tensor([0] * p + [1] * (len(a) - p) + [2] * (len(b) - p))
        ends[:, i] = torch.tensor([len(a) - 1, n - 1]) + i * width
    query, key = segment[:, :, None], segment[:, None, :]
    mask = torch.ones(width, width, dtype=torch.bool).tril() & (key >= 0) & ((key == 0) | (key == query))
    mask |= torch.eye(width, dtype=torch.bool)  # a pad attends to itself: no row attends to nothing
    return Packed(ids, positions, ends.flatten(), mask[:, None])


def inputs_on(rows: Sequence[Sequence[int]], pad_id: int, device: torch.device, packed: bool) -> tuple:
    """The model's input for a micro-batch of ``rows`` on ``device``: ``(Packed,)`` when ``packed``, else
    right-padded ``(input_ids, attention_mask)``."""
    return (pack(rows).to(device),) if packed else padded_on(rows, pad_id, device)


def is_right_padded(attention_mask: torch.Tensor) -> bool:
    """Whether every row of the mask is ones then zeros (no padding counts)."""
    return bool((attention_mask[:, :-1] >= attention_mask[:, 1:]).all())


def last_real(attention_mask: torch.Tensor) -> torch.Tensor:
    """Each row's last real token (the mask's last 1), under either padding: (B,)."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (positions * attention_mask.ne(0)).argmax(-1)


def packs(rm: Any, packing: str) -> bool:
    """Whether training ``rm`` runs packed batches: ``packing`` ``"on"`` for any causal decoder, ``"off"``
    never, ``"auto"`` when its attention implementation skips the blocks between sequences."""
    if packing == "off" or getattr(rm, "reads_images", False):  # a VLM's rows carry images: never packed
        return False
    if not (rm.is_decoder and getattr(rm, "unmask_right_padding", True)):
        return False
    implementation = getattr(rm.model.config, "_attn_implementation", None)
    return packing == "on" or implementation in PACKED_ATTENTION
