"""bf16 weights trained through fp32 master weights (``--dtype bf16-weights``, one process or DDP).

The model's weights, activations and gradients are bf16: no casts in the forward and half the memory
traffic of autocast over fp32 weights, whose residual stream and element-wise work stay fp32. The
optimizer updates fp32 master copies instead of the weights, so an update too small for bf16's 8-bit
mantissa still adds up; after each step the masters are rounded into the weights. The score head (and
any classifier) stays fp32 and is its own master, so scores are never rounded to bf16.

In one process a hook adds each micro-batch's bf16 gradient into its master's fp32 gradient as soon as
it is computed, so gradient accumulation is fp32 too. Under DDP the gradients are reduced (and, across
micro-batches, accumulated) in bf16 by DDP itself and moved to the masters before clipping. Under FSDP
the sharded fp32 parameters are the masters (``MixedPrecisionPolicy``, :mod:`rmkit.training.parallel`),
and this class is not used.

Checkpoints hold the masters' fp32 values and the optimizer state keyed by parameter name, as every
other run's do, so a run resumes in any precision.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rmkit.runtime import keep_fp32

HEADS = ("score", "classifier")  # modules kept in fp32 (their parameters are their own masters)
OWN_HEAD = "head."  # a VLM reward model's value head, beside its model (rmkit.vlm)


class MasterWeights:
    """fp32 masters of a model's bf16 trainable weights (see the module docstring)."""

    def __init__(self, rm: nn.Module, accumulate: bool = True):
        """Cast ``rm``'s parameters, the heads' but for, to bf16 and make fp32 masters of the trainable
        ones; with ``accumulate`` (one process) gradients go to the masters as they are computed."""
        self.names: dict[int, str] = {}  # id(master) -> the parameter's name
        self.pairs: list[tuple[nn.Parameter, nn.Parameter]] = []  # (bf16 weight, its fp32 master)
        self._master: dict[int, nn.Parameter] = {}
        for name, module in rm.named_modules():
            if isinstance(module, nn.Linear) and _is_head(f"{name}."):
                keep_fp32(module)  # it reads the bf16 hidden states in fp32
        for name, p in rm.named_parameters():
            if _is_head(name):
                self.names[id(p)] = name
                continue
            master = nn.Parameter(p.detach().float().clone()) if p.requires_grad else None
            p.data = p.data.to(torch.bfloat16)
            if master is None:
                continue
            self.pairs.append((p, master))
            self._master[id(p)] = master
            self.names[id(master)] = name
            if accumulate:
                p.register_post_accumulate_grad_hook(self._add_to_master)

    def param(self, p: nn.Parameter) -> nn.Parameter:
        """What the optimizer updates for the model's parameter ``p``: its master, or ``p`` itself."""
        return self._master.get(id(p), p)

    def _add_to_master(self, p: nn.Parameter) -> None:
        master = self._master[id(p)]
        if master.grad is None:
            master.grad = p.grad.float()
        else:
            master.grad.add_(p.grad)
        p.grad = None

    def collect(self) -> None:
        """Move gradients still on the bf16 weights (DDP's, which no hook takes) to the masters."""
        for p, _ in self.pairs:
            if p.grad is not None:
                self._add_to_master(p)

    @torch.no_grad()
    def publish(self) -> None:
        """Round the masters into the bf16 weights (after each optimizer step, and after loading)."""
        for p, master in self.pairs:
            p.copy_(master)

    def state_dicts(self, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """``(weights, optimizer state)`` keyed by parameter name: the masters' fp32 values (the heads' own)
        and the optimizer's state of each, as ``torch.distributed.checkpoint.state_dict`` gives them."""
        params = [p for group in optimizer.param_groups for p in group["params"]]
        weights = {self.names[id(p)]: p.detach().cpu() for p in params}
        state = optimizer.state_dict()
        name = [self.names[id(p)] for p in params]
        return weights, {
            "state": {name[i]: s for i, s in state["state"].items()},
            "param_groups": [{**g, "params": [name[i] for i in g["params"]]} for g in state["param_groups"]],
        }

    @torch.no_grad()
    def load_state_dicts(
        self, optimizer: torch.optim.Optimizer, weights: dict[str, torch.Tensor], state: dict[str, Any]
    ) -> None:
        """Restore what :meth:`state_dicts` wrote (or any name-keyed checkpoint of the same model)."""
        params = [p for group in optimizer.param_groups for p in group["params"]]
        index = {self.names[id(p)]: i for i, p in enumerate(params)}
        for name, i in index.items():
            params[i].copy_(weights[name])
        optimizer.load_state_dict(
            {
                "state": {index[n]: s for n, s in state["state"].items()},
                "param_groups": [
                    {**g, "params": [index[n] for n in g["params"]]} for g in state["param_groups"]
                ],
            }
        )
        self.publish()

    @torch.no_grad()
    def into_model(self) -> None:
        """Give the model its masters' fp32 values, as fp32 weights (for the final save)."""
        for p, master in self.pairs:
            p.data = master.data


def _is_head(name: str) -> bool:
    """Whether the parameter (or module, with a final dot) ``name`` of a reward model belongs to its head."""
    return name.startswith(OWN_HEAD) or any(part in HEADS for part in name.split("."))
