"""One training step, the held-out evaluation, and the optimiser and schedule they use.

A step runs chosen and rejected through the model in one forward pass per micro-batch, takes the per-pair
loss of :mod:`rmkit.losses`, and divides its sum by the pairs of the global batch, so that gradient
accumulation (``micro_batch_size``, ``micro_batch_tokens``) and the number of processes do not change the
result. What a step or an evaluation saw is kept in :class:`Totals`, named running sums that add up
across micro-batches and processes.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.distributed.tensor import DTensor
from transformers import get_scheduler

from rmkit.data import ExampleTokenizer, RowCounts, token_budget_batches
from rmkit.errors import RMKitError
from rmkit.inference import MIN_SAVING, MIN_SHARED, score_sequences
from rmkit.losses import bradley_terry, divergence_index, token_wise
from rmkit.metrics import PairStats
from rmkit.modeling import RewardModel
from rmkit.packing import inputs_on, share_pairs, shared_prefix
from rmkit.training.config import TrainConfig
from rmkit.training.data import Pair, train_and_eval_pairs
from rmkit.training.parallel import Dist
from rmkit.training.precision import MasterWeights

# rmkit's schedule names -> transformers'; rmkit's "constant" keeps the warm-up.
SCHEDULES = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}


class NonFinite(ArithmeticError):
    """A step's loss or gradient is NaN or infinite; the step was not taken."""


@dataclass
class Totals:
    """What some training or eval batches saw: summed per-pair loss, pair statistics, real tokens."""

    loss: float = 0.0
    pairs: PairStats = field(default_factory=PairStats)
    tokens: int = 0
    shared: int = 0  # pairs whose answers ran after one pass over their shared prefix
    saved: int = 0  # the prefix tokens that sharing did not run a second time

    def add(
        self,
        loss: torch.Tensor,
        chosen: torch.Tensor,
        rejected: torch.Tensor,
        tokens: int,
        shared: int = 0,
        saved: int = 0,
    ) -> None:
        self.loss += float(loss.detach().double().sum())
        self.pairs.merge(PairStats.of(chosen, rejected))
        self.tokens += tokens
        self.shared += shared
        self.saved += saved

    def merge(self, other: Totals) -> Totals:
        self.loss += other.loss
        self.pairs.merge(other.pairs)
        self.tokens += other.tokens
        self.shared += other.shared
        self.saved += other.saved
        return self

    def metrics(self) -> dict[str, Any]:
        """``loss`` (mean per pair), :meth:`PairStats.training_metrics` and what prefix sharing saved."""
        return {
            "loss": self.loss / max(self.pairs.pairs, 1),
            **self.pairs.training_metrics(),
            "shared_pairs": self.shared,
            "prefix_tokens_saved": self.saved,
        }

    def progress(self) -> dict[str, str]:
        """The progress bar's figures."""
        n = max(self.pairs.pairs, 1)
        return {"loss": f"{self.loss / n:.4f}", "acc": f"{self.pairs.correct / n:.3f}"}


def merged(parts: list) -> Any:
    """The totals of all processes (``Dist.gather`` gives one a process)."""
    out = type(parts[0])()
    for part in parts:
        out.merge(part)
    return out


def forward_pairs(
    model: nn.Module,
    pairs: list[Pair],
    pad_id: int,
    config: TrainConfig,
    device: torch.device,
    packed: bool = False,
    shared: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair loss (B,) and the chosen and rejected scores (B,) of ``pairs``, in one forward pass.

    The batch is ``[chosen_1 .. chosen_B, rejected_1 .. rejected_B]``, right-padded to its longest row, or
    with ``packed`` end to end in one row without pads, or with ``shared`` a row a pair whose two answers
    follow one pass over their shared prefix (:mod:`rmkit.packing`; the same scores and gradients).
    """
    if shared:
        inputs: tuple = (share_pairs([(p.chosen, p.rejected) for p in pairs], pad_id).to(device),)
    else:
        inputs = inputs_on([p.chosen for p in pairs] + [p.rejected for p in pairs], pad_id, device, packed)
    margin = torch.tensor([p.margin for p in pairs], device=device) if any(p.margin for p in pairs) else None
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.dtype == "bf16"):
        out = model(*inputs, token_scores=config.loss == "token_wise", right_padded=True)
    chosen, rejected = out.end_scores.float().chunk(2)
    if config.loss == "bt":
        loss = bradley_terry(
            chosen, rejected, margin, score_reg=config.score_reg, center=config.center_rewards
        )
    else:
        scores_c, scores_r = out.scores.float().chunk(2)
        end_c, end_r = out.end_index.chunk(2)
        ids_c, ids_r = inputs[0].chunk(2)
        loss = token_wise(
            scores_c, scores_r, end_c, end_r, divergence_index(ids_c, ids_r), margin,
            score_reg=config.score_reg, center=config.center_rewards,
        )  # fmt: skip
    return loss, chosen, rejected


class PairTask:
    """What a step and an evaluation do with preference pairs (the Bradley-Terry family of losses); the
    loop (:mod:`rmkit.training.loop`) is the same for every task (:mod:`rmkit.training.process` is the other)."""

    unit = "pairs"
    lora_task = "SEQ_CLS"

    def __init__(self, packed: bool = False, sharing: str = "off"):
        self.packed = packed  # micro-batches packed without pads (rmkit.packing)
        self.sharing = sharing  # a pair's answers after one pass over their prefix: "auto", "on" or "off"
        self.tokenizer: ExampleTokenizer | None = None  # of the training data, saved with the model

    def prepare(self, config: TrainConfig, stats: RowCounts, d: Dist) -> tuple[RewardModel, Any, Any, str]:
        """The model to train (a fresh score head on a backbone) and the tokenised training and held-out
        pairs, with where the held-out ones came from."""
        rm = RewardModel.from_pretrained(config.model, **config.loading())
        if config.loss == "token_wise" and not rm.is_decoder:
            raise RMKitError(
                "--loss token_wise needs a decoder model (per-token scores); this one is an encoder"
            )
        limit = rm.max_length
        max_length = min(config.max_length, limit) if limit else config.max_length
        self.tokenizer = rm.example_tokenizer(
            max_length=max_length, template=config.template, truncation=config.truncation
        )
        builder = int(os.environ.get("LOCAL_RANK", "0")) == 0
        pairs, eval_pairs, source = train_and_eval_pairs(
            config, self.tokenizer, stats, main=d.main, builder=builder
        )
        return rm, pairs, eval_pairs, source

    def totals(self) -> Totals:
        return Totals()

    def units(self, items: list[Pair]) -> int:
        """What the step's loss is a mean over: its pairs."""
        return len(items)

    def lengths(self, items: list[Pair]) -> list[int]:
        """Each item's cost in tokens: its real tokens when packed, its row when its prefix is shared (the
        prefix counted once), else its two rows padded alike."""
        return [self._cost(p) for p in items]

    def _cost(self, pair: Pair) -> int:
        if self.packed:
            return len(pair.chosen) + len(pair.rejected)
        prefix = self.shares(pair)
        return len(pair.chosen) + len(pair.rejected) - prefix if prefix else 2 * pair.length

    def shares(self, pair: Pair, prefix: int | None = None) -> int:
        """The prefix tokens ``pair`` runs once under ``sharing`` (0: its answers run apart); ``prefix`` is its
        :func:`shared_prefix` when already known. ``auto`` shares a pair whose prefix is at least
        ``MIN_SHARED`` tokens and whose row is at least ``MIN_SAVING`` shorter than its two padded rows;
        ``on`` every pair whose answers start alike."""
        if self.sharing == "off":
            return 0
        prefix = shared_prefix(pair.chosen, pair.rejected) if prefix is None else prefix
        row = len(pair.chosen) + len(pair.rejected) - prefix
        pays = prefix >= MIN_SHARED and row <= (1 - MIN_SAVING) * 2 * pair.length
        return prefix if self.sharing == "on" or pays else 0

    def stand_in(self, pad_id: int) -> Pair:
        return Pair([pad_id], [pad_id])

    def forward(
        self, model: nn.Module, chunk: list[Pair], pad_id: int, config: TrainConfig, device: torch.device
    ):
        """``(loss per unit, a function counting the chunk into some totals)``. A micro-batch runs a row a
        pair (:func:`rmkit.packing.share_pairs`) when one of its pairs shares its prefix."""
        prefixes = [shared_prefix(p.chosen, p.rejected) for p in chunk] if self.sharing != "off" else []
        shared = any(self.shares(p, n) for p, n in zip(chunk, prefixes, strict=False))
        loss, chosen, rejected = forward_pairs(model, chunk, pad_id, config, device, self.packed, shared)
        tokens = sum(len(p.chosen) + len(p.rejected) for p in chunk)
        # a row a pair: each pair saves its own prefix
        counts = (sum(n > 0 for n in prefixes), sum(prefixes)) if shared else (0, 0)
        return loss, lambda totals: totals.add(loss, chosen, rejected, tokens, *counts)

    def heldout(self, rm: Any, items: Any, config: TrainConfig, d: Dist) -> dict[str, Any]:
        return heldout_metrics(rm, items, config, d, self.packed)

    def metadata(self, final: dict[str, Any]) -> dict[str, Any]:
        """What the final model's metadata keeps of the final figures (held-out, else the last steps')."""
        if final.get("reward_mean") is None:  # no pair was scored (a run resumed at its end)
            return {}
        return {"score_mean": final["reward_mean"], "score_std": final["reward_std"]}

    def summary(self, final: dict[str, Any]) -> str:
        return f"loss {final['loss']:.4f}, accuracy {final['accuracy']:.3f}, margin {final['margin']:.3f}"


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    share: list,
    global_units: int,
    pad_id: int,
    config: TrainConfig,
    d: Dist,
    task: Any = None,
    masters: MasterWeights | None = None,
) -> tuple[Any, float]:
    """One optimizer step on this process's ``share`` of a global batch holding ``global_units`` of what
    the loss is a mean over (pairs; labelled steps for a PRM), for ``task`` (:class:`PairTask` by default);
    through the fp32 ``masters`` of bf16 weights when given.

    Returns this process's totals and the gradient norm before clipping.
    """
    task = task or PairTask()
    budget = config.micro_batch_tokens or 1 << 62
    micro = d.same_count(token_budget_batches(task.lengths(share), budget, config.micro_batch_size))
    totals = task.totals()
    for k, idx in enumerate(micro):
        chunk = [share[i] for i in idx] or [task.stand_in(pad_id)]
        sync = k == len(micro) - 1 or not isinstance(model, nn.parallel.DistributedDataParallel)
        with contextlib.nullcontext() if sync else model.no_sync():
            loss, count = task.forward(model, chunk, pad_id, config, d.device)
            # Sum over units / units of the global batch: the step's loss is the mean over all of them,
            # whatever the micro-batches. DDP and FSDP average gradients over processes, hence the factor
            # world. A stand-in item (empty idx) still runs backward, for FSDP's collectives, but adds 0.
            (loss.sum() * (d.world / max(global_units, 1) if idx else 0.0)).backward()
        if idx:
            count(totals)
    if masters is not None:
        masters.collect()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm or float("inf"))
    if isinstance(grad_norm, DTensor):  # FSDP: the norm over the shards of all processes
        grad_norm = grad_norm.full_tensor()
    if not math.isfinite(float(grad_norm)):  # the same on every process: gradients are reduced already
        optimizer.zero_grad(set_to_none=True)
        raise NonFinite(f"the gradient norm is {float(grad_norm)} (loss {totals.metrics()['loss']})")
    optimizer.step()
    if masters is not None:
        masters.publish()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return totals, float(grad_norm)


@torch.no_grad()
def heldout_metrics(
    rm: RewardModel, pairs: list[Pair], config: TrainConfig, d: Dist, packed: bool = False
) -> dict[str, Any]:
    """Loss, the pair metrics and per-subset accuracy of ``rm`` on the held-out ``pairs`` (all processes)."""
    was_training = rm.training
    rm.eval()
    totals, subsets = Totals(), {}
    mine = pairs[d.rank :: d.world]
    if _shares(rm, config):
        # The inference core, whose chosen and rejected answers share their prompt's pass: fine for the
        # per-pair Bradley-Terry loss, which needs only the end scores, and without FSDP's lockstep passes.
        scores = score_sequences(
            rm,
            [s for p in mine for s in (p.chosen, p.rejected)],
            batch_tokens=config.eval_batch_tokens,
            groups=[[2 * i, 2 * i + 1] for i in range(len(mine))],
        )
        chosen, rejected = torch.tensor(scores[0::2]), torch.tensor(scores[1::2])
        margin = torch.tensor([p.margin for p in mine]) if any(p.margin for p in mine) else None
        loss = bradley_terry(
            chosen, rejected, margin, score_reg=config.score_reg, center=config.center_rewards
        )
        _count(totals, subsets, mine, loss, chosen, rejected)
    else:
        for idx in d.same_count(token_budget_batches([2 * p.length for p in mine], config.eval_batch_tokens)):
            batch = [mine[i] for i in idx] or [Pair([rm.pad_token_id], [rm.pad_token_id])]
            loss, chosen, rejected = forward_pairs(rm, batch, rm.pad_token_id, config, d.device, packed)
            if idx:
                _count(totals, subsets, batch, loss, chosen, rejected)
    rm.train(was_training)
    gathered = d.gather((totals, subsets))
    metrics = merged([t for t, _ in gathered]).metrics()
    by_subset: dict[str, PairStats] = {}
    for _, part in gathered:
        for name, stats in part.items():
            by_subset.setdefault(name, PairStats()).merge(stats)
    if by_subset:
        metrics["subset_accuracy"] = {name: by_subset[name].accuracy for name in sorted(by_subset)}
    return metrics


def _shares(rm: RewardModel, config: TrainConfig) -> bool:
    """Whether the held-out pass may go through the inference core with prefix sharing."""
    plain = config.loss == "bt" and config.fsdp == "off" and config.dtype == "fp32"
    return plain and config.prefix_sharing != "off" and rm.shares_prefixes


def _count(
    totals: Totals,
    subsets: dict[str, PairStats],
    batch: list[Pair],
    loss: torch.Tensor,
    chosen: torch.Tensor,
    rejected: torch.Tensor,
) -> None:
    totals.add(loss, chosen, rejected, 0)
    names = [p.subset for p in batch]
    for name in dict.fromkeys(n for n in names if n is not None):
        rows = [i for i, n in enumerate(names) if n == name]
        subsets.setdefault(name, PairStats()).merge(PairStats.of(chosen[rows], rejected[rows]))


def make_optimizer(
    rm: RewardModel, config: TrainConfig, masters: MasterWeights | None = None
) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (never on biases and LayerNorm/RMSNorm weights); on a GPU
    its fused kernel (one launch for all parameters, where the default loops over them). With ``masters``
    it updates their fp32 masters in place of the bf16 weights."""
    params = [masters.param(p) if masters else p for p in rm.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    fused = all(p.device.type == "cuda" for p in params) or None
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=tuple(config.adam_betas), fused=fused)


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, total: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """transformers' schedule: linear warm-up over ``warmup_ratio`` of the ``total`` steps, then cosine or
    linear decay to 0, or constant.

    Steps count from 1: transformers' warm-up gives step 0 a learning rate of 0, which would waste the first
    batch. So the schedule is one step longer and starts one step in: step ``s`` (from 0) trains at
    ``(s + 1) / (warmup + 1)`` of the peak during warm-up, and the decay reaches 0 after the last step.
    """
    warmup = math.ceil(config.warmup_ratio * total)
    scheduler = get_scheduler(
        SCHEDULES[config.lr_scheduler], optimizer, num_warmup_steps=warmup + 1, num_training_steps=total + 1
    )
    with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()": on purpose, see above
        warnings.simplefilter("ignore", UserWarning)
        scheduler.step()
    return scheduler
