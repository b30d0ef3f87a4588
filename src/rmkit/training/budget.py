"""Training's micro-batches on a GPU: without ``--micro-batch-tokens``, the padded tokens one forward and
backward pass may take are sized from the GPU's free memory, so a long batch is cut into micro-batches
(gradient accumulation, the same step) instead of running out of memory.

What a token costs is counted from the model's shape (:func:`rmkit.memory.token_bytes`), what the first
step has still to allocate from its trainable parameters (:func:`state_bytes`); :func:`rmkit.memory.budget_for`
turns the rest into a budget, as it does for scoring.
"""

from __future__ import annotations

from typing import Any

import torch

from rmkit.memory import budget_for, token_bytes
from rmkit.runtime import free_memory


def state_bytes(model: torch.nn.Module, shards: int = 1) -> int:
    """Bytes the first step still allocates: the fp32 gradients and AdamW's two fp32 moments of the
    trainable parameters (this process's share of them, of ``shards``)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return 12 * trainable // shards


def micro_batch_tokens(model: Any, config: Any, device: torch.device, shards: int = 1) -> int | None:
    """``config.micro_batch_tokens`` when given; on a GPU otherwise, the budget the free memory allows
    (:mod:`this module <rmkit.training.budget>`); ``None`` (no bound) on the CPU."""
    if config.micro_batch_tokens or device.type != "cuda":
        return config.micro_batch_tokens
    per_token = token_bytes(model.model.config, config.gradient_checkpointing)
    return budget_for(max(free_memory(device) - state_bytes(model, shards), 0), per_token)
