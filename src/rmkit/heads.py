"""The score heads rmkit reads at every position of a decoder: one linear layer (every trainer's), or a
two-layer MLP (:class:`MLPHead`, INF-ORM's)."""

from __future__ import annotations

import torch
from torch import nn


class MLPHead(nn.Sequential):
    """A two-layer score head, ``Linear → ReLU → Linear``, read at the same position as a linear one
    (INF-ORM's; :mod:`rmkit.layouts` reads its ``score.0``/``score.2`` weights). Not linear, so not writable
    as a plain one-label classifier."""

    def __init__(self, hidden: int, labels: int = 1):
        super().__init__(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, labels))


HEADS = (nn.Linear, MLPHead)  # the score heads read at every position of a decoder


def head_dtype(head: nn.Module) -> torch.dtype:
    return next(head.parameters()).dtype
