"""The heads beside a vision-language RM's VLM, read without remote code (:mod:`rmkit.vlm`; the layouts they
belong to: :mod:`rmkit.vlm_layouts`): ``value_head.safetensors`` (or ``.bin`` with ``allow_pickle``) holding
``v_head.summary.weight`` (1, H) and ``.bias`` (1,), and align-anything's ``score_head.weight`` (1, H), no bias,
among the VLM's own weights."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from rmkit.errors import RMKitError
from rmkit.layouts import VALUE_HEAD_FILES, pickle_refused

HEAD = "v_head.summary"  # the value head's weights: HEAD.weight (1, H), HEAD.bias (1,)


def read_score_head(path: Path) -> nn.Linear | None:
    """align-anything's VLM RM head: ``score_head.weight`` (1, H), no bias, saved among the VLM's own weights
    (its class subclasses the VLM; the rest of its weights are the VLM's, read by transformers as they are)."""
    for f in sorted(path.glob("*.safetensors")):
        with safe_open(str(f), "pt") as weights:
            if "score_head.weight" not in weights.keys():  # noqa: SIM118 (a safetensors file is no dict)
                continue
            weight = weights.get_tensor("score_head.weight")
        if weight.shape[0] != 1:
            raise RMKitError(f"{f}: its score_head has {weight.shape[0]} outputs; a reward model has one")
        head = nn.Linear(weight.shape[1], 1, bias=False)
        with torch.no_grad():
            head.weight.copy_(weight)
        return head
    return None


def read_value_head(path: Path, allow_pickle: bool) -> nn.Linear | None:
    """The value head stored beside the VLM at ``path``, ``None`` when there is none."""
    for name in VALUE_HEAD_FILES:
        f = path / name
        if not f.is_file():
            continue
        if f.suffix != ".safetensors" and not allow_pickle:
            raise RMKitError(pickle_refused(f))
        state = (
            load_file(str(f))
            if f.suffix == ".safetensors"
            else torch.load(str(f), map_location="cpu", weights_only=True)
        )
        weight, bias = state.get(f"{HEAD}.weight"), state.get(f"{HEAD}.bias")
        if weight is None:
            raise RMKitError(f"{f}: no {HEAD}.weight in it (it holds {', '.join(sorted(state)[:6])})")
        head = nn.Linear(weight.shape[1], 1, bias=bias is not None)
        with torch.no_grad():
            head.weight.copy_(weight.reshape(1, -1))
            if bias is not None:
                head.bias.copy_(bias.reshape(1))
        return head
    return None
