"""What a model's passes hold in memory, a token at a time, from its config alone: the sizes the GPU's
budgets are cut from (:func:`rmkit.inference.token_budget` for scoring,
:func:`rmkit.training.budget.micro_batch_tokens` for training). Counts are of the tensors alive at a
pass's peak, in bytes; what the caching allocator loses to fragments is why a budget takes only
``GPU_MEMORY_SHARE`` of the free memory.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

MAX_BATCH_TOKENS = 1 << 17  # the most a GPU's pass takes when sized from its memory: larger gains nothing
GPU_MEMORY_SHARE = 0.5  # of a GPU's free memory, what a pass's activations may take (the rest: fragments)


class Shape(NamedTuple):
    """A transformer's sizes: hidden, heads, key/value heads, head size, MLP intermediate, layers."""

    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    layers: int

    @classmethod
    def of(cls, config: Any) -> Shape:
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        hidden, heads = text.hidden_size, text.num_attention_heads
        return cls(
            hidden,
            heads,
            getattr(text, "num_key_value_heads", None) or heads,
            getattr(text, "head_dim", None) or hidden // heads,
            getattr(text, "intermediate_size", None) or 4 * hidden,
            text.num_hidden_layers,
        )


def activation_bytes(config: Any, dtype: torch.dtype, max_length: int | None = None) -> int:
    """Bytes of the tensors one padded token holds at the peak of an inference pass.

    Without autograd only one layer's tensors are alive at a time: the residual stream, its normed copy,
    the queries, keys and values, the attention output and its projection, and the MLP's three
    intermediate-size tensors (gate, up and their product), in ``dtype``; plus the final hidden state in
    fp32 for the score head. Fused attention (SDPA, flash) keeps no scores; eager attention keeps a
    fp32 row of scores and probabilities per head for each key (up to ``max_length``).
    """
    m = Shape.of(config)
    width = torch.finfo(dtype).bits // 8
    layer = (4 * m.hidden + (m.heads + 2 * m.kv_heads) * m.head_dim + 3 * m.intermediate) * width
    eager = getattr(config, "_attn_implementation", None) == "eager"
    attention = 2 * 4 * m.heads * (max_length or 0) if eager else 0
    return layer + 2 * 4 * m.hidden + attention


def kv_bytes(config: Any, dtype: torch.dtype) -> int:
    """Bytes of the keys and values of one token over all layers (what a prefix cache keeps of it)."""
    m = Shape.of(config)
    return 2 * m.layers * m.kv_heads * m.head_dim * (torch.finfo(dtype).bits // 8)


def block_bytes(config: Any) -> int:
    """Bytes one token leaves saved for backward in one transformer block under bf16 autocast: the fp32
    residual stream at both norms (4 h each); the normed inputs of the attention and MLP projections and
    the attention output (2 h each); the queries (2 h), keys and values (2 kv each) and attention's output
    (2 h); the MLP's gate, up, activation and product (2 i each): 18 h + 4 kv + 8 i bytes."""
    m = Shape.of(config)
    return 18 * m.hidden + 4 * m.kv_heads * m.head_dim + 8 * m.intermediate


def token_bytes(config: Any, checkpointing: bool) -> int:
    """Bytes of activations one token takes at the peak of a training pass: every block's saved tensors,
    or with gradient checkpointing each block's fp32 input alone plus one block recomputed with its
    gradients (three blocks' worth); two blocks' worth more for the gradients in flight either way."""
    m, block = Shape.of(config), block_bytes(config)
    if checkpointing:
        return m.layers * 4 * m.hidden + 3 * block
    return m.layers * block + 2 * block


def budget_for(free_bytes: int, per_token: int) -> int:
    """The largest multiple of 1,024 tokens whose activations take at most ``GPU_MEMORY_SHARE`` of
    ``free_bytes``, between 1,024 and ``MAX_BATCH_TOKENS``."""
    fits = int(GPU_MEMORY_SHARE * free_bytes) // max(per_token, 1)
    return max(1024, min(MAX_BATCH_TOKENS, fits // 1024 * 1024))
