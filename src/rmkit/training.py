"""``rmkit train``: train a reward model from preference pairs.

A plain torch loop. Data is read and tokenised once (:func:`load_pairs`); each epoch is cut into global
batches of ``batch_size`` pairs grouped by length (:func:`length_grouped_batches`), so a batch is padded
only to its own longest row. A step runs chosen and rejected through the model in one forward pass, takes
the per-pair loss of :mod:`rmkit.losses`, and divides its sum by the pairs of the global batch, so that
gradient accumulation (``micro_batch_size``, ``micro_batch_tokens``) and the number of processes do not
change the result.

Multi-process: under ``torchrun`` (``WORLD_SIZE`` > 1) every process takes its share of every global batch
(``batch[rank::world]``) and the model is wrapped in DistributedDataParallel (gloo on CPU, nccl on GPU),
or, with ``fsdp``, sharded with PyTorch FSDP2 (``fully_shard`` on every transformer block, then on the whole
model): ``full_shard`` shards parameters, gradients and optimizer state (DeepSpeed ZeRO-3), ``shard_grad_op``
keeps the parameters gathered from forward to backward (ZeRO-2). Every forward and backward of a sharded
model gathers from all processes, so each process runs as many forward passes as the busiest one, padding
with a one-token pair whose loss counts zero (:meth:`Dist.same_count`).

Checkpoints ``D/checkpoint-STEP/`` hold the trainable weights (safetensors) and the optimizer state keyed by
parameter name, both whole (gathered from all processes when sharded, so a sharded run resumes on another
number of processes or unsharded), the scheduler and the RNG states; the data position follows from the
step, because each epoch's batch order is a function of ``seed`` and the epoch. They are written to a
temporary directory and renamed, so an interrupted save never leaves a half checkpoint. The final model is an
ordinary one-label sequence-classification checkpoint in ``D/`` (LoRA merged in; gathered whole when
sharded), with ``score_mean``/``score_std`` measured on the eval data in its metadata.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.tensor import DTensor
from tqdm.auto import tqdm

from rmkit.config import DataOptions, option
from rmkit.data import Encoder, Rejects, iter_examples, pad_batch, token_budget_batches
from rmkit.errors import RMKitError
from rmkit.losses import bradley_terry, divergence_index, metric_sums, metrics_from_sums, token_wise
from rmkit.modeling import RewardModel

log = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
# Options that fix the batches of each step: a resumed run must share them with the checkpoint's run.
DATA_ORDER_OPTIONS = (
    "data",
    "eval_data",
    "eval_split",
    "batch_size",
    "group_by_length",
    "seed",
    "max_length",
)


@dataclass(kw_only=True)
class TrainConfig(DataOptions):
    model: str = option(help="backbone or reward model to start from (path or hub name)")
    data: str = option(help="training pairs (.json, .jsonl, .csv, .parquet or save_to_disk directory)")
    output_dir: str = option(help="where the final model, metrics.json, train_log.jsonl and checkpoints go")
    eval_data: str | None = option(None, help="held-out pairs to evaluate on")
    eval_split: float = option(
        0.0, help="without --eval-data, hold out this fraction of --data for evaluation (e.g. 0.05)"
    )
    template: str = option(
        "auto",
        help="rendering: the tokenizer's chat template when it has one, or rmkit's plain one",
        choices=["auto", "chat", "plain"],
    )
    max_length: int = option(1024, help="longest sequence in tokens (capped at what the model takes)")
    truncation: str = option(
        "left",
        help="over-long rows: 'left' cuts the prompt from the left, 'drop' drops the pair",
        choices=["left", "drop"],
    )
    use_margin: bool = option(True, help="use the data's per-pair 'margin' column in the loss when present")
    subset_column: str = option("subset", help="column whose values get a per-subset accuracy in eval")
    loss: str = option(
        "bt",
        help="'bt': Bradley-Terry on end scores; 'token_wise': safe-rlhf's per-token variant",
        choices=["bt", "token_wise"],
    )
    score_reg: float = option(0.0, help="score regularisation coefficient λ of λ·mean(r²)")
    center_rewards: float = option(0.0, help="reward centering coefficient c of c·mean((r_c + r_r)²)")
    epochs: float = option(1.0, help="passes over the training data")
    max_steps: int = option(0, help="stop after this many optimizer steps (0: run the epochs)")
    batch_size: int = option(32, help="pairs per optimizer step, over all processes (global batch)")
    micro_batch_size: int | None = option(
        None, help="most pairs per forward pass on one process (gradient accumulation beyond it)"
    )
    micro_batch_tokens: int | None = option(
        None, help="most padded tokens (chosen + rejected) per forward pass on one process"
    )
    group_by_length: bool = option(True, help="batch pairs of similar length together (less padding)")
    learning_rate: float = option(2e-5, help="peak learning rate of AdamW")
    weight_decay: float = option(0.0, help="AdamW weight decay (never on biases and norm weights)")
    adam_betas: list[float] = option([0.9, 0.999], help="AdamW betas")
    lr_scheduler: str = option("cosine", help="decay after warm-up", choices=["cosine", "linear", "constant"])
    warmup_ratio: float = option(0.03, help="fraction of the steps spent warming the learning rate up")
    max_grad_norm: float = option(1.0, help="clip gradients to this norm (0: no clipping)")
    dtype: str = option(
        "fp32", help="compute dtype: fp32, or bf16 autocast over fp32 weights", choices=["fp32", "bf16"]
    )
    gradient_checkpointing: bool = option(False, help="recompute activations in backward to save memory")
    dropout: bool = option(False, help="keep the model's dropout (disabled by default, as in TRL)")
    lora: bool = option(False, help="train LoRA adapters (peft) plus the whole score head; merged at save")
    lora_r: int = option(16, help="LoRA rank")
    lora_alpha: int = option(32, help="LoRA alpha")
    lora_dropout: float = option(0.0, help="LoRA dropout")
    lora_target_modules: list[str] = option(
        ["all-linear"], help="modules that get LoRA adapters ('all-linear': every linear layer but the head)"
    )
    seed: int = option(42, help="seed of the head's init, the eval split and the batch order")
    logging_steps: int = option(10, help="log training metrics every N steps")
    eval_steps: int = option(0, help="evaluate every N steps (0: at the end only)")
    eval_batch_tokens: int = option(16384, help="padded-token budget of an eval batch")
    save_steps: int = option(0, help="write a checkpoint every N steps (0: none)")
    save_total_limit: int | None = option(None, help="keep at most this many checkpoints (oldest deleted)")
    resume: str | None = option(
        None,
        help="continue from a checkpoint: a path, or 'auto' (the flag alone) for the latest in --output-dir",
        const="auto",
    )
    report_to: list[str] = option([], help="trackers to log to: tensorboard, wandb (when installed)")
    fsdp: str = option(
        "off",
        help="under torchrun, shard the model with PyTorch FSDP2 instead of replicating it (DDP): "
        "'full_shard' shards parameters, gradients and optimizer state (as DeepSpeed ZeRO-3), "
        "'shard_grad_op' keeps parameters gathered between forward and backward (ZeRO-2)",
        choices=["off", "full_shard", "shard_grad_op"],
    )
    device: str = option("auto", help="'auto' (cuda when available), 'cpu' or 'cuda'")
    trust_remote_code: bool = option(False, help="allow the model's custom code to run")


@dataclass
class Pair:
    """One tokenised preference pair."""

    chosen: list[int]
    rejected: list[int]
    margin: float = 0.0
    subset: str | None = None

    @property
    def length(self) -> int:
        return max(len(self.chosen), len(self.rejected))


@dataclass
class DataStats:
    """Rows read, skipped for bad input, truncated or dropped by the length rule."""

    pairs: int = 0
    skipped: int = 0
    truncated: int = 0
    dropped: int = 0


@dataclass
class Dist:
    """This process's place in a (possibly one-process) run."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    sharded: bool = False  # the model is sharded with FSDP across the processes

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            t = t.to(self.device)
            dist.all_reduce(t)
        return t.cpu()

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def same_count(self, batches: list[list[int]]) -> list[list[int]]:
        """``batches`` followed by empty ones up to the count of the process with the most, when the model is
        sharded: each forward and backward then gathers parameters from all processes, which must all run it.
        An empty batch runs a one-token stand-in pair whose results are not counted."""
        if not self.sharded:
            return batches
        most = torch.tensor([len(batches)], device=self.device)
        dist.all_reduce(most, op=dist.ReduceOp.MAX)
        return batches + [[] for _ in range(int(most.item()) - len(batches))]


def load_pairs(
    path: str, encoder: Encoder, config: TrainConfig, stats: DataStats, *, write_rejects: bool = True
) -> list[Pair]:
    """Read, normalise and tokenise every pair of ``path``, counting what the length rule touched."""
    rejects = Rejects(config.rejects if write_rejects else None) if config.on_error == "skip" else None
    examples = iter_examples(
        path, format=config.format, columns=config.columns, rejects=rejects, kind="pairs"
    )
    pairs: list[Pair] = []
    while chunk := list(islice(examples, 4096)):
        for ex, encs in zip(chunk, encoder.encode_many(chunk), strict=True):
            if encs is None:
                stats.dropped += 1
                continue
            stats.truncated += any(e.truncated for e in encs)
            subset = ex.extra.get(config.subset_column)
            pairs.append(
                Pair(
                    encs[0].ids,
                    encs[1].ids,
                    float(ex.margin) if config.use_margin and ex.margin is not None else 0.0,
                    None if subset is None else str(subset),
                )
            )
    if rejects is not None:
        stats.skipped += rejects.count
        rejects.close()
    stats.pairs += len(pairs)
    if not pairs:
        raise RMKitError(f"{path}: no preference pairs to train or evaluate on")
    return pairs


def length_grouped_batches(
    lengths: list[int], batch_size: int, *, seed: int, group: bool = True, chunk_batches: int = 64
) -> list[list[int]]:
    """One epoch's global batches of indices into ``lengths``, a function of ``seed`` only.

    The indices are shuffled; with ``group`` each run of ``batch_size * chunk_batches`` of them is sorted by
    length and cut into batches, and the batch order is shuffled again, so a batch holds pairs of similar
    length while the epoch still visits lengths in random order. The last batch may be smaller.
    """
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(lengths), generator=g).tolist()
    if group:
        span = batch_size * chunk_batches
        order = [
            i
            for s in range(0, len(order), span)
            for i in sorted(order[s : s + span], key=lambda i: lengths[i], reverse=True)
        ]
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    if group:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
    return batches


def forward_pairs(
    model: nn.Module, pairs: list[Pair], pad_id: int, config: TrainConfig, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair loss (B,) and the chosen and rejected scores (B,) of ``pairs``, in one forward pass.

    The batch is ``[chosen_1 .. chosen_B, rejected_1 .. rejected_B]`` right-padded to its longest row.
    """
    ids, mask = pad_batch([p.chosen for p in pairs] + [p.rejected for p in pairs], pad_id)
    ids, mask = ids.to(device), mask.to(device)
    margin = torch.tensor([p.margin for p in pairs], device=device) if any(p.margin for p in pairs) else None
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.dtype == "bf16"):
        out = model(ids, mask, token_scores=config.loss == "token_wise")
    chosen, rejected = out.end_scores.float().chunk(2)
    if config.loss == "bt":
        loss = bradley_terry(
            chosen, rejected, margin, score_reg=config.score_reg, center=config.center_rewards
        )
    else:
        scores_c, scores_r = out.scores.float().chunk(2)
        end_c, end_r = out.end_index.chunk(2)
        ids_c, ids_r = ids.chunk(2)
        loss = token_wise(
            scores_c, scores_r, end_c, end_r, divergence_index(ids_c, ids_r), margin,
            score_reg=config.score_reg, center=config.center_rewards,
        )  # fmt: skip
    return loss, chosen, rejected


@torch.no_grad()
def evaluate(rm: RewardModel, pairs: list[Pair], config: TrainConfig, d: Dist) -> dict[str, Any]:
    """Loss, accuracy, margin, reward statistics and per-subset accuracy over ``pairs`` (all processes)."""
    was_training = rm.training
    rm.eval()
    subsets = sorted({p.subset for p in pairs if p.subset is not None})
    sums = torch.zeros(9, dtype=torch.float64)
    per_subset = torch.zeros(len(subsets), 2, dtype=torch.float64)
    mine = pairs[d.rank :: d.world]
    pad_id = rm.tokenizer.pad_token_id
    for idx in d.same_count(token_budget_batches([2 * p.length for p in mine], config.eval_batch_tokens)):
        batch = [mine[i] for i in idx] or [Pair([pad_id], [pad_id])]
        loss, chosen, rejected = forward_pairs(rm, batch, pad_id, config, d.device)
        if not idx:
            continue
        sums[0] += loss.double().sum().cpu()
        sums[1:] += metric_sums(chosen, rejected).cpu()
        for p, right in zip(batch, (chosen > rejected).tolist(), strict=True):
            if p.subset is not None:
                per_subset[subsets.index(p.subset)] += torch.tensor([1.0, float(right)], dtype=torch.float64)
    sums, per_subset = d.all_sum(sums), d.all_sum(per_subset)
    rm.train(was_training)
    metrics: dict[str, Any] = {
        "loss": sums[0].item() / max(sums[1].item(), 1.0),
        **metrics_from_sums(sums[1:]),
    }
    if subsets:
        metrics["subset_accuracy"] = {
            s: per_subset[i, 1].item() / per_subset[i, 0].item() for i, s in enumerate(subsets)
        }
    return metrics


def _train_and_eval_pairs(
    config: TrainConfig, encoder: Encoder, stats: DataStats, d: Dist
) -> tuple[list[Pair], list[Pair], str]:
    """Training pairs, eval pairs, and where the eval pairs came from (for metrics.json)."""
    pairs = load_pairs(config.data, encoder, config, stats, write_rejects=d.main)
    if config.eval_data:
        return (
            pairs,
            load_pairs(config.eval_data, encoder, config, DataStats(), write_rejects=False),
            config.eval_data,
        )
    if config.eval_split > 0:
        order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(config.seed)).tolist()
        n_eval = max(1, round(config.eval_split * len(pairs)))
        held_out = [pairs[i] for i in order[:n_eval]]
        return (
            [pairs[i] for i in sorted(order[n_eval:])],
            held_out,
            f"{n_eval} pairs held out of {config.data}",
        )
    return pairs, pairs, "the training data (no --eval-data or --eval-split)"


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    share: list[Pair],
    global_pairs: int,
    pad_id: int,
    config: TrainConfig,
    d: Dist,
) -> tuple[torch.Tensor, float]:
    """One optimizer step on this process's ``share`` of a global batch of ``global_pairs`` pairs.

    Returns this process's sums (loss, the :func:`metric_sums` fields, real tokens; (10,)) and the gradient
    norm before clipping.
    """
    micro = d.same_count(
        token_budget_batches(
            [2 * p.length for p in share], config.micro_batch_tokens or 1 << 62, config.micro_batch_size
        )
    )
    sums = torch.zeros(10, dtype=torch.float64)
    for k, idx in enumerate(micro):
        chunk = [share[i] for i in idx] or [Pair([pad_id], [pad_id])]
        sync = k == len(micro) - 1 or not isinstance(model, nn.parallel.DistributedDataParallel)
        with contextlib.nullcontext() if sync else model.no_sync():
            loss, chosen, rejected = forward_pairs(model, chunk, pad_id, config, d.device)
            # Sum over pairs / pairs of the global batch: the step's loss is the mean over all its pairs,
            # whatever the micro-batches. DDP and FSDP average gradients over processes, hence the factor
            # world. A stand-in pair (empty idx) still runs backward, for FSDP's collectives, but adds 0.
            (loss.sum() * (d.world / global_pairs if idx else 0.0)).backward()
        if not idx:
            continue
        sums[0] += loss.detach().double().sum().cpu()
        sums[1:9] += metric_sums(chosen, rejected).cpu()
        sums[9] += sum(len(p.chosen) + len(p.rejected) for p in chunk)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm or float("inf"))
    if isinstance(grad_norm, DTensor):  # FSDP: the norm over the shards of all processes
        grad_norm = grad_norm.full_tensor()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return sums, float(grad_norm)


def _init_dist(config: TrainConfig) -> tuple[Dist, bool]:
    """This process's rank, world size and device; starts the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
    if config.device == "cuda" and not torch.cuda.is_available():
        raise RMKitError("--device cuda, but no CUDA device is available")
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    started = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
        started = True
    if config.fsdp != "off" and world == 1:
        log.info("--fsdp %s: one process, nothing to shard; training unsharded", config.fsdp)
    return Dist(rank, world, device, sharded=config.fsdp != "off" and world > 1), started


def _shard(rm: RewardModel, config: TrainConfig) -> None:
    """Shard ``rm`` in place with FSDP2: each transformer block (the classes the HF model names in
    ``_no_split_modules``) is one unit gathered for its own forward and backward, the rest (embeddings,
    final norm, score head) is the root unit."""
    from torch.distributed.fsdp import fully_shard

    names = set(getattr(rm.model, "_no_split_modules", None) or [])
    blocks = [m for m in rm.modules() if type(m).__name__ in names]
    if not blocks:
        raise RMKitError(
            f"--fsdp: {type(rm.model).__name__} names no transformer block class (_no_split_modules) to shard"
        )
    reshard = config.fsdp == "full_shard"
    for block in reversed(blocks):  # innermost first: a unit takes the parameters no inner unit holds
        fully_shard(block, reshard_after_forward=reshard)
    fully_shard(rm, reshard_after_forward=reshard)


def _unsharded_copy(rm: RewardModel, config: TrainConfig, d: Dist) -> RewardModel | None:
    """On the main process, a plain (unsharded) copy of the FSDP-sharded ``rm`` holding its full weights,
    gathered from all processes (every process must call this); ``None`` on the others."""
    from transformers import AutoModelForSequenceClassification

    full = get_model_state_dict(rm, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not d.main:
        return None
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(
            rm.model.config, trust_remote_code=config.trust_remote_code
        )
    plain = RewardModel(model, rm.tokenizer, rm.metadata)
    plain.load_state_dict(full, assign=True)
    return plain


def _apply_lora(rm: RewardModel, config: TrainConfig) -> Any:
    """Inject LoRA adapters into ``rm.model`` in place; the score head is trained whole (modules_to_save)."""
    from peft import LoraConfig, TaskType, get_peft_model

    targets = config.lora_target_modules
    lora = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules="all-linear" if targets == ["all-linear"] else targets,
    )
    try:
        return get_peft_model(rm.model, lora)
    except ValueError as e:
        raise RMKitError(f"cannot apply LoRA to '{config.model}': {e}") from None


def _optimizer(rm: RewardModel, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (never on biases and LayerNorm/RMSNorm weights)."""
    params = [p for p in rm.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    betas = tuple(config.adam_betas)
    if len(betas) != 2:
        raise RMKitError(f"--adam-betas takes two numbers, got {config.adam_betas}")
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=betas)


def _scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, total: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_ratio`` of the steps, then cosine or linear decay to 0, or constant."""
    warmup = math.ceil(config.warmup_ratio * total)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(total - warmup, 1)
        if config.lr_scheduler == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        if config.lr_scheduler == "linear":
            return max(1 - progress, 0.0)
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _trainable_names(rm: RewardModel) -> set[str]:
    return {n for n, p in rm.named_parameters() if p.requires_grad}


def save_checkpoint(
    out: Path, step: int, rm: RewardModel, optimizer, scheduler, config: TrainConfig, d: Dist
) -> Path:
    """Write ``out/checkpoint-STEP`` atomically: every process writes into a temporary directory, then the
    main process renames it."""
    final = out / f"{CHECKPOINT_PREFIX}{step}"
    tmp = out / f".tmp-{CHECKPOINT_PREFIX}{step}"
    if d.main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    d.barrier()
    rng = {"torch": torch.get_rng_state()}
    if d.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(d.device)
    torch.save(rng, tmp / f"rng-{d.rank}.pt")
    # Whole tensors keyed by parameter name, gathered from all processes when sharded (main process only).
    full = StateDictOptions(full_state_dict=True, cpu_offload=d.world > 1)
    weights, optimizer_state = get_state_dict(rm, optimizer, options=full)
    if d.main:
        trainable = _trainable_names(rm)
        weights = {n: t.contiguous() for n, t in weights.items() if n in trainable}
        save_file(weights, str(tmp / "model.safetensors"))
        torch.save(optimizer_state, tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        state = {"step": step, "world_size": d.world, "config": asdict(config)}
        (tmp / "state.json").write_text(json.dumps(state, indent=2))
    d.barrier()
    if d.main:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        if config.save_total_limit:
            for old in _checkpoints(out)[: -config.save_total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    d.barrier()
    return final


def _checkpoints(out: Path) -> list[Path]:
    """Finished checkpoints of ``out``, oldest first."""
    found = [
        p
        for p in out.glob(f"{CHECKPOINT_PREFIX}*")
        if p.is_dir() and p.name[len(CHECKPOINT_PREFIX) :].isdigit()
    ]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]))


def _resume_path(config: TrainConfig) -> Path | None:
    if not config.resume:
        return None
    if config.resume == "auto":
        found = _checkpoints(Path(config.output_dir))
        if not found:
            log.info("--resume: no checkpoint in %s yet; starting from the beginning", config.output_dir)
        return found[-1] if found else None
    path = Path(config.resume)
    if not (path / "state.json").is_file():
        raise RMKitError(f"--resume {path}: not a checkpoint directory (no state.json)")
    return path


def load_checkpoint(path: Path, rm: RewardModel, optimizer, scheduler, config: TrainConfig, d: Dist) -> int:
    """Restore weights, optimizer, scheduler and RNG from ``path``; returns the step to continue from."""
    state = json.loads((path / "state.json").read_text())
    changed = [k for k in DATA_ORDER_OPTIONS if state["config"].get(k) != getattr(config, k)]
    if changed:
        raise RMKitError(
            f"--resume {path}: the checkpoint was written with other {', '.join(changed)}; "
            "resuming needs the same data order"
        )
    weights = load_file(str(path / "model.safetensors"))
    if set(weights) != _trainable_names(rm):
        raise RMKitError(f"--resume {path}: the checkpoint's weights do not match this model and options")
    optimizer_state = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
    keys = [*optimizer_state["state"], *(n for g in optimizer_state["param_groups"] for n in g["params"])]
    if not all(isinstance(k, str) for k in keys):
        raise RMKitError(
            f"--resume {path}: optimizer.pt keys the optimizer state by parameter index, as rmkit did before "
            "sharded training; this version needs parameter names, so start the run again without --resume"
        )
    set_state_dict(
        rm,
        optimizer,
        model_state_dict=weights,
        optim_state_dict=optimizer_state,
        options=StateDictOptions(full_state_dict=True, strict=False),  # frozen (LoRA base) weights absent
    )
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    rng_file = path / f"rng-{d.rank}.pt"
    if rng_file.is_file():
        rng = torch.load(rng_file, weights_only=True)
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and d.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], d.device)
    return int(state["step"])


class Logger:
    """``train_log.jsonl`` lines (main process) and the optional trackers of ``report_to``."""

    def __init__(self, out: Path, config: TrainConfig, main: bool, *, append: bool):
        self.main = main
        mode = "a" if append else "w"
        self.file = open(out / "train_log.jsonl", mode, encoding="utf-8") if main else None  # noqa: SIM115
        self.trackers: list[Any] = []
        for name in config.report_to if main else []:
            if name == "tensorboard":
                from torch.utils.tensorboard import SummaryWriter

                self.trackers.append(SummaryWriter(str(out / "runs")))
            else:
                import wandb

                self.trackers.append(wandb.init(config=asdict(config), dir=str(out)))

    def log(self, record: dict[str, Any]) -> None:
        if not self.main:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
        for t in self.trackers:
            if hasattr(t, "add_scalar"):
                for k, v in scalars.items():
                    t.add_scalar(k, v, record["step"])
            else:
                t.log(scalars, step=record["step"])

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        for t in self.trackers:
            (t.close if hasattr(t, "close") else t.finish)()


def train(config: TrainConfig) -> dict[str, Any]:
    """Train a reward model as ``config`` says; returns the final metrics (also written to metrics.json)."""
    if config.batch_size < 1:
        raise RMKitError(f"--batch-size must be at least 1, got {config.batch_size}")
    for name in config.report_to:
        if name not in ("tensorboard", "wandb"):
            raise RMKitError(f"--report-to: unknown tracker '{name}' (expected tensorboard or wandb)")
        if importlib.util.find_spec(name) is None:
            raise RMKitError(
                f"--report-to {name}: the '{name}' package is not installed (pip install {name})"
            )
    if config.logging_steps < 1:
        raise RMKitError(f"--logging-steps must be at least 1, got {config.logging_steps}")
    if not 0.0 <= config.eval_split < 1.0:
        raise RMKitError(f"--eval-split must be in [0, 1), got {config.eval_split}")
    if config.lora and config.fsdp != "off":
        raise RMKitError(
            f"--lora with --fsdp {config.fsdp} is not supported: LoRA trains few parameters, so shard "
            "nothing (drop --fsdp) or train the full model sharded (drop --lora)"
        )
    d, started = _init_dist(config)
    try:
        return _train(config, d)
    finally:
        if started:
            dist.destroy_process_group()


def _train(config: TrainConfig, d: Dist) -> dict[str, Any]:
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    rm = RewardModel.from_pretrained(config.model, trust_remote_code=config.trust_remote_code)
    if config.loss == "token_wise" and not rm.is_decoder:
        raise RMKitError("--loss token_wise needs a decoder model (per-token scores); this one is an encoder")
    limit = rm.max_length
    max_length = min(config.max_length, limit) if limit else config.max_length
    encoder = rm.encoder(max_length=max_length, template=config.template, truncation=config.truncation)

    stats = DataStats()
    pairs, eval_pairs, eval_source = _train_and_eval_pairs(config, encoder, stats, d)
    if len(pairs) < d.world:
        raise RMKitError(f"{len(pairs)} training pairs for {d.world} processes")

    if not config.dropout:
        for m in rm.modules():
            if isinstance(m, nn.Dropout):
                m.p = 0.0
    peft_model = _apply_lora(rm, config) if config.lora else None
    if config.gradient_checkpointing:
        rm.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    rm.to(d.device).train()
    model: nn.Module = rm
    if d.sharded:
        _shard(rm, config)
    elif d.world > 1:
        model = nn.parallel.DistributedDataParallel(
            rm, device_ids=[d.device.index] if d.device.type == "cuda" else None
        )

    lengths = [p.length for p in pairs]
    per_epoch = len(_epoch_batches(lengths, config, 0, d.world))
    total = config.max_steps or math.ceil(config.epochs * per_epoch)
    optimizer = _optimizer(rm, config)
    scheduler = _scheduler(optimizer, config, total)
    step = 0
    resume_from = _resume_path(config)
    if resume_from is not None:
        step = load_checkpoint(resume_from, rm, optimizer, scheduler, config, d)
        if d.main:
            log.info("resumed from %s at step %d", resume_from, step)
    if d.main:
        log.info(
            "train: %d pairs (%d truncated, %d dropped, %d skipped), eval: %d pairs from %s; "
            "%d steps of %d pairs on %d process(es), %d trainable parameters",
            len(pairs), stats.truncated, stats.dropped, stats.skipped, len(eval_pairs), eval_source,
            total, config.batch_size, d.world, sum(p.numel() for p in rm.parameters() if p.requires_grad),
        )  # fmt: skip

    logger = Logger(out, config, d.main, append=step > 0)
    window = torch.zeros(10, dtype=torch.float64)  # loss sum, metric sums, tokens since the last log
    train_tokens, train_time, window_time = 0, 0.0, 0.0
    bar = tqdm(total=total, initial=step, disable=not d.main, desc="train", dynamic_ncols=True)
    epoch_batches: list[list[int]] = []
    while step < total:
        epoch, index = divmod(step, per_epoch)
        if index == 0 or not epoch_batches:
            epoch_batches = _epoch_batches(lengths, config, epoch, d.world)
        batch = epoch_batches[index]
        started = time.perf_counter()

        share = [pairs[i] for i in batch[d.rank :: d.world]]
        sums, grad_norm = train_step(
            model, optimizer, scheduler, share, len(batch), rm.tokenizer.pad_token_id, config, d
        )
        step += 1

        elapsed = time.perf_counter() - started
        sums = d.all_sum(sums)
        window += sums
        window_time += elapsed
        train_tokens += int(sums[9].item())
        train_time += elapsed
        bar.update(1)
        bar.set_postfix(
            loss=f"{sums[0].item() / sums[1].item():.4f}",
            acc=f"{sums[2].item() / sums[1].item():.3f}",
            tok_s=f"{sums[9].item() / max(elapsed, 1e-9):.0f}",
        )
        if step % config.logging_steps == 0 or step == total:
            logger.log(
                {
                    "step": step,
                    "epoch": round(step / per_epoch, 4),
                    "loss": window[0].item() / window[1].item(),
                    **{k: v for k, v in metrics_from_sums(window[1:9]).items() if k != "pairs"},
                    "lr": scheduler.get_last_lr()[0],
                    "grad_norm": grad_norm,
                    "tokens_per_s": window[9].item() / max(window_time, 1e-9),
                }
            )
            window.zero_()
            window_time = 0.0
        if config.eval_steps and step % config.eval_steps == 0 and step < total:
            logger.log(
                {"step": step, **{f"eval_{k}": v for k, v in evaluate(rm, eval_pairs, config, d).items()}}
            )
        if config.save_steps and step % config.save_steps == 0 and step < total:
            save_checkpoint(out, step, rm, optimizer, scheduler, config, d)
    bar.close()

    final = evaluate(rm, eval_pairs, config, d)
    logger.log({"step": step, **{f"eval_{k}": v for k, v in final.items()}})
    logger.close()
    metrics = {
        "eval": final,
        "eval_data": eval_source,
        "train": {
            "steps": step,
            "pairs": len(pairs),
            "truncated": stats.truncated,
            "dropped": stats.dropped,
            "skipped": stats.skipped,
            "tokens": train_tokens,
            "seconds": round(train_time, 3),
            "tokens_per_s": train_tokens / max(train_time, 1e-9),
            "processes": d.world,
        },
    }
    if d.sharded:
        rm = _unsharded_copy(rm, config, d)
    if d.main:
        if peft_model is not None:
            rm.model = peft_model.merge_and_unload()
        rm.save_pretrained(
            out,
            metadata={
                "template": "chat" if encoder.use_chat else "plain",
                "max_length": max_length,
                "add_eos": encoder.add_eos,
                "score_mean": final["reward_mean"],
                "score_std": final["reward_std"],
            },
        )
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        log.info(
            "eval: loss %.4f, accuracy %.3f, margin %.3f; model written to %s",
            final["loss"], final["accuracy"], final["margin"], out,
        )  # fmt: skip
    d.barrier()
    return metrics


def _epoch_batches(lengths: list[int], config: TrainConfig, epoch: int, world: int) -> list[list[int]]:
    """The global batches of ``epoch``; a last batch too small to give every process a pair is dropped."""
    batches = length_grouped_batches(
        lengths, config.batch_size, seed=config.seed + epoch, group=config.group_by_length
    )
    return [b for b in batches if len(b) >= world]
