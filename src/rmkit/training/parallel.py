"""Training in several processes: DDP by default, FSDP2 sharding with ``--fsdp``.

Under ``torchrun`` every process takes its share of every global batch (``batch[rank::world]``) and the
model is wrapped in DistributedDataParallel, or, with ``fsdp``, sharded with PyTorch FSDP2
(``fully_shard`` on every transformer block, then on the whole model; with ``--dtype bf16-weights`` they
are gathered in bf16 over fp32 master shards): ``full_shard`` shards parameters,
gradients and optimizer state (DeepSpeed ZeRO-3), ``shard_grad_op`` keeps the parameters gathered from
forward to backward (ZeRO-2). Every forward and backward of a sharded model gathers from all processes, so
each process runs as many forward passes as the busiest one, padding with a one-token pair whose loss
counts zero (:meth:`Dist.same_count`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from rmkit.errors import RMKitError
from rmkit.modeling import RewardModel
from rmkit.runtime import Runtime
from rmkit.training.config import TrainConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dist(Runtime):
    """A training process's :class:`~rmkit.runtime.Runtime`, and whether the model is sharded (FSDP)."""

    sharded: bool = False

    @classmethod
    def of(cls, rt: Runtime, config: TrainConfig) -> Dist:
        if config.fsdp != "off" and rt.world == 1:
            log.info("--fsdp %s: one process, nothing to shard; training unsharded", config.fsdp)
        return cls(rt.rank, rt.world, rt.device, sharded=config.fsdp != "off" and rt.world > 1)

    def same_count(self, batches: list[list[int]]) -> list[list[int]]:
        """``batches`` followed by empty ones up to the count of the process with the most, when the model is
        sharded: each forward and backward then gathers parameters from all processes, which must all run it.
        An empty batch runs a one-token stand-in pair whose results are not counted."""
        if not self.sharded:
            return batches
        return batches + [[] for _ in range(self.all_max(len(batches)) - len(batches))]

    def gather(self, value: Any) -> list[Any]:
        """Every process's ``value``, in rank order."""
        if self.world == 1:
            return [value]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, value)
        return out


def distribute(rm: RewardModel, config: TrainConfig, d: Dist) -> nn.Module:
    """The module the training step calls: ``rm`` itself (one process, or sharded in place), or ``rm``
    wrapped in DistributedDataParallel."""
    if d.sharded:
        _shard(rm, config)
        return rm
    if d.world > 1:
        return nn.parallel.DistributedDataParallel(
            rm,
            device_ids=[d.device.index] if d.device.type == "cuda" else None,
            # a VLM's vision encoder gets no gradient from a micro-batch without images
            find_unused_parameters=getattr(rm, "reads_images", False),
        )
    return rm


def _shard(rm: RewardModel, config: TrainConfig) -> None:
    """Shard ``rm`` in place with FSDP2: each transformer block (the classes the HF model names in
    ``_no_split_modules``) is one unit gathered for its own forward and backward, the rest (embeddings,
    final norm, score head) is the root unit."""
    names = set(getattr(rm.model, "_no_split_modules", None) or [])
    # A VLM's vision encoder runs only where a micro-batch has images: its blocks stay in the root unit, which
    # every process gathers in each forward, so no process waits on a gather the others never call.
    encoder = f"model.{rm.family.vision}" if getattr(rm, "reads_images", False) else None
    blocks = [
        m
        for name, m in rm.named_modules()
        if type(m).__name__ in names and not (encoder and name.startswith(encoder))
    ]
    if not blocks:
        raise RMKitError(
            f"--fsdp: {type(rm.model).__name__} names no transformer block class (_no_split_modules) to shard"
        )
    reshard = config.fsdp == "full_shard"
    # bf16-weights: the fp32 shards are the master weights, gathered in bf16 (half the traffic, no casts in
    # the forward) with gradients reduced in fp32; the score head is a unit of its own that stays fp32.
    policy = MixedPrecisionPolicy()
    if config.dtype == "bf16-weights":
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        heads = [getattr(rm.model, name, None) for name in ("score", "classifier")] + [
            getattr(rm, "head", None)
        ]
        for head in {
            id(h): h for h in heads if isinstance(h, nn.Module)
        }.values():  # a VLM's head may be score
            fully_shard(head, reshard_after_forward=reshard)
    for block in reversed(blocks):  # innermost first: a unit takes the parameters no inner unit holds
        fully_shard(block, reshard_after_forward=reshard, mp_policy=policy)
    fully_shard(rm, reshard_after_forward=reshard, mp_policy=policy)


def unsharded_copy(rm: RewardModel, config: TrainConfig, d: Dist) -> RewardModel | None:
    """On the main process, a plain (unsharded) copy of the FSDP-sharded ``rm`` holding its full weights,
    gathered from all processes (every process must call this); ``None`` on the others."""
    full = get_model_state_dict(rm, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not d.main:
        return None
    with torch.device("meta"):
        model = rm.auto_class.from_config(rm.model.config, trust_remote_code=config.trust_remote_code)
    plain = rm.with_model(model)
    plain.load_state_dict(full, assign=True)
    return plain
