"""Exact shortcuts in a vision-language RM's passes: work transformers' forward does that no score reads, and a
layer computed by a faster kernel of the same arithmetic.

- **The patch embedding as a matrix product** (:func:`as_matmul`). Qwen2-VL, Qwen2.5-VL and Qwen3-VL embed
  each patch with a ``Conv3d`` whose stride is its kernel, applied to inputs of exactly the kernel's size
  ``(patches, channels, *kernel)``: one output position a patch, so the convolution is
  ``patches @ weight.reshape(out, -1).T + bias``. PyTorch's 3-D convolution kernels are slow for that shape
  (measured on this project's 2-core CPU: 2.1x the matrix product's time at 256 outputs, 2.9x at Qwen2-VL's
  1280; vLLM replaced the layer for the same reason on GPUs). The layer keeps its parameters, their names in
  a checkpoint and their gradients; its outputs differ by the order of the sum (about 1e-6 relative).
- **The last feed-forward only where it is read** (:func:`read_only_at`). A reward model reads the language
  model's final state at one token a row (its last real one), and a shared prompt's pass reads none (what it
  keeps, the keys and values, every layer makes before its feed-forward). The last decoder layer's
  feed-forward (``mlp``: two thirds of a Qwen2 layer's weights) then runs on those tokens alone; every other
  position's final state is left without it and is not the model's, so nothing may read it. That is
  ``1 / layers`` of the feed-forward work saved (a 28-layer model: 3 %, the 4-layer benchmark model: a
  quarter), with the same scores (the read rows' arithmetic is the same, in smaller matrices).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


class PatchConv3d(nn.Conv3d):
    """A ``Conv3d`` (stride = kernel, no padding) that embeds kernel-sized inputs with one matrix product."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or tuple(x.shape[2:]) != tuple(self.kernel_size):
            return super().forward(x)
        out = F.linear(x.reshape(len(x), -1), self.weight.reshape(self.out_channels, -1), self.bias)
        return out.view(len(x), self.out_channels, 1, 1, 1)


def as_matmul(model: nn.Module) -> int:
    """Make each plain ``Conv3d`` of ``model`` whose stride is its kernel (no padding, dilation or groups) a
    :class:`PatchConv3d`, in place; the number changed."""
    changed = 0
    for module in model.modules():
        if (
            type(module) is nn.Conv3d
            and module.kernel_size == module.stride
            and module.padding == (0, 0, 0)
            and module.dilation == (1, 1, 1)
            and module.groups == 1
        ):
            module.__class__ = PatchConv3d
            changed += 1
    return changed


def last_feed_forward(model: nn.Module) -> nn.Module | None:
    """The feed-forward (``mlp``) of the last decoder layer of a transformers VLM's language model
    (``model.model.language_model``, Idefics3's ``text_model``); ``None`` where there is none."""
    inner = getattr(model, "model", None)
    language = getattr(inner, "language_model", None) or getattr(inner, "text_model", None)
    layers = getattr(language, "layers", None)
    if not isinstance(layers, nn.ModuleList) or not len(layers):
        return None
    mlp = getattr(layers[-1], "mlp", None)
    return mlp if isinstance(mlp, nn.Module) else None


@contextlib.contextmanager
def read_only_at(model: nn.Module, ends: torch.Tensor | None) -> Iterator[None]:
    """While the block runs, the last feed-forward of ``model`` (:func:`last_feed_forward`) computes only at
    ``ends`` (B,): each row's one position whose final state is read; an empty ``ends``: none is read (a
    shared prompt's pass). Every other position's final state is then not the model's: read none of them.
    Nothing changes with ``ends`` None, with gradients enabled, or for a model without that layer."""
    mlp = last_feed_forward(model)
    if mlp is None or ends is None or torch.is_grad_enabled():
        yield
        return
    width: list[int] = []

    def before(module: nn.Module, args: tuple) -> tuple | None:
        if not args or not isinstance(args[0], torch.Tensor) or args[0].dim() != 3:
            return None  # called another way: left whole
        x = args[0]
        width.append(x.shape[1])
        if not len(ends):
            return (x[:, :1], *args[1:])
        return (x[torch.arange(len(ends), device=x.device), ends.to(x.device)].unsqueeze(1), *args[1:])

    def after(module: nn.Module, args: tuple, out: Any) -> Any:
        if not width:
            return None
        first = out[0] if isinstance(out, tuple) else out
        full = first.new_zeros((first.shape[0], width.pop(), first.shape[-1]))
        if len(ends):
            full[torch.arange(len(ends), device=full.device), ends.to(full.device)] = first[:, 0]
        return (full, *out[1:]) if isinstance(out, tuple) else full

    hooks = [mlp.register_forward_pre_hook(before), mlp.register_forward_hook(after)]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()
