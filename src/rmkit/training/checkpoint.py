"""Checkpoints of a training run: ``D/checkpoint-STEP/``.

A checkpoint holds the trainable weights (safetensors) and the optimizer state keyed by parameter name, both
whole (gathered from all processes when sharded, so a sharded run resumes on another number of processes or
unsharded), the scheduler and the RNG states; the data position follows from the step, because each epoch's
batch order is a function of ``seed`` and the epoch (:func:`rmkit.training.data.epoch_batches`). It is
written to a temporary directory and renamed, so an interrupted save never leaves a half checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from rmkit.errors import RMKitError
from rmkit.files import write_json
from rmkit.modeling import RewardModel
from rmkit.training.config import DATA_ORDER_OPTIONS, TrainConfig
from rmkit.training.parallel import Dist
from rmkit.training.precision import MasterWeights

log = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"


def trainable_names(rm: RewardModel) -> set[str]:
    return {n for n, p in rm.named_parameters() if p.requires_grad}


@dataclass
class Trainee:
    """What a checkpoint holds: the model, its optimizer and schedule, and the fp32 ``masters`` of its bf16
    weights when it trains them (:mod:`rmkit.training.precision`)."""

    rm: RewardModel
    optimizer: torch.optim.Optimizer
    scheduler: Any
    masters: MasterWeights | None = None


def save_checkpoint(out: Path, step: int, trainee: Trainee, config: TrainConfig, d: Dist) -> Path:
    """Write ``out/checkpoint-STEP`` atomically: every process writes into a temporary directory, then the
    main process renames it. With ``masters`` (bf16 weights) the weights written are their fp32 masters."""
    rm, optimizer, scheduler, masters = trainee.rm, trainee.optimizer, trainee.scheduler, trainee.masters
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
    if masters is not None:
        weights, optimizer_state = masters.state_dicts(optimizer)
    else:
        full = StateDictOptions(full_state_dict=True, cpu_offload=d.world > 1)
        weights, optimizer_state = get_state_dict(rm, optimizer, options=full)
    if d.main:
        trainable = trainable_names(rm)
        weights = {n: t.contiguous() for n, t in weights.items() if n in trainable}
        save_file(weights, str(tmp / "model.safetensors"))
        torch.save(optimizer_state, tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        write_json(tmp / "state.json", {"step": step, "world_size": d.world, "config": asdict(config)})
    d.barrier()
    if d.main:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        if config.save_total_limit:
            for old in checkpoints(out)[: -config.save_total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    d.barrier()
    return final


def checkpoints(out: Path) -> list[Path]:
    """Finished checkpoints of ``out``, oldest first."""
    found = [
        p
        for p in out.glob(f"{CHECKPOINT_PREFIX}*")
        if p.is_dir() and p.name[len(CHECKPOINT_PREFIX) :].isdigit()
    ]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]))


def resume_path(config: TrainConfig) -> Path | None:
    """The checkpoint ``--resume`` names (``auto``: the latest in the output directory), or ``None``."""
    if not config.resume:
        return None
    if config.resume == "auto":
        found = checkpoints(Path(config.output_dir))
        if not found:
            log.info("--resume: no checkpoint in %s yet; starting from the beginning", config.output_dir)
        return found[-1] if found else None
    path = Path(config.resume)
    if not (path / "state.json").is_file():
        raise RMKitError(f"--resume {path}: not a checkpoint directory (no state.json)")
    return path


def load_checkpoint(path: Path, trainee: Trainee, config: TrainConfig, d: Dist) -> int:
    """Restore weights (into the fp32 ``masters`` of bf16 weights when there are), optimizer, scheduler and
    RNG from ``path``; returns the step to continue from."""
    rm, optimizer, scheduler, masters = trainee.rm, trainee.optimizer, trainee.scheduler, trainee.masters
    state = json.loads((path / "state.json").read_text())
    changed = [k for k in DATA_ORDER_OPTIONS if state["config"].get(k) != getattr(config, k)]
    if changed:
        raise RMKitError(
            f"--resume {path}: the checkpoint was written with other {', '.join(changed)}; "
            "resuming needs the same data order"
        )
    weights = load_file(str(path / "model.safetensors"))
    if set(weights) != trainable_names(rm):
        raise RMKitError(f"--resume {path}: the checkpoint's weights do not match this model and options")
    optimizer_state = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
    keys = [*optimizer_state["state"], *(n for g in optimizer_state["param_groups"] for n in g["params"])]
    if not all(isinstance(k, str) for k in keys):
        raise RMKitError(
            f"--resume {path}: optimizer.pt keys the optimizer state by parameter index, as rmkit did before "
            "sharded training; this version needs parameter names, so start the run again without --resume"
        )
    if masters is not None:
        masters.load_state_dicts(optimizer, weights, optimizer_state)
    else:
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
