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

import torch

from rmkit.data import padded_on
from rmkit.runtime import to_device

# Attention implementations that skip the blocks between packed sequences (varlen or block-sparse).
PACKED_ATTENTION = ("flash_attention_2", "flash_attention_3", "flex_attention")


@dataclass
class Packed:
    """Sequences packed into one row: ``input_ids`` and ``position_ids`` (1, T), ``ends`` (N,)."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    ends: torch.Tensor

    def to(self, device: torch.device) -> Packed:
        return Packed(*(to_device(t, device) for t in self.tensors()))

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.input_ids, self.position_ids, self.ends


def pack(rows: Sequence[Sequence[int]]) -> Packed:
    """Pack token id lists end to end (the module docstring shows the layout); every row needs a token."""
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    if not len(rows) or int(lengths.min()) < 1:
        raise ValueError("pack: every sequence needs at least one token")
    ids = torch.tensor([t for r in rows for t in r], dtype=torch.long)
    starts = torch.cumsum(lengths, 0) - lengths
    positions = torch.arange(len(ids)) - torch.repeat_interleave(starts, lengths)
    return Packed(ids[None], positions[None], starts + lengths - 1)


def inputs_on(rows: Sequence[Sequence[int]], pad_id: int, device: torch.device, packed: bool) -> tuple:
    """The model's input for a micro-batch of ``rows`` on ``device``: ``(Packed,)`` when ``packed``, else
    right-padded ``(input_ids, attention_mask)``."""
    return (pack(rows).to(device),) if packed else padded_on(rows, pad_id, device)


def is_right_padded(attention_mask: torch.Tensor) -> bool:
    """Whether every row of the mask is ones then zeros (no padding counts)."""
    return bool((attention_mask[:, :-1] >= attention_mask[:, 1:]).all())


def packs(rm: Any, packing: str) -> bool:
    """Whether training ``rm`` runs packed batches: ``packing`` ``"on"`` for any causal decoder, ``"off"``
    never, ``"auto"`` when its attention implementation skips the blocks between sequences."""
    if packing == "off" or not (rm.is_decoder and getattr(rm, "unmask_right_padding", True)):
        return False
    implementation = getattr(rm.model.config, "_attn_implementation", None)
    return packing == "on" or implementation in PACKED_ATTENTION
