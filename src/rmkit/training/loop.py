"""``rmkit train``: the training loop, top to bottom.

Data is read and tokenised once (:mod:`~rmkit.training.data`); each epoch is cut into global batches of
``batch_size`` pairs grouped by length, so a batch is padded only to its own longest row. Each step
(:func:`~rmkit.training.step.train_step`) runs chosen and rejected through the model in one forward pass
per micro-batch, with the Bradley-Terry loss (or a variant) of :mod:`rmkit.losses`, and one AdamW update.
Every ``logging_steps`` the loop logs loss and pair metrics, every ``eval_steps`` it evaluates on the
held-out pairs, every ``save_steps`` it writes a checkpoint (:mod:`~rmkit.training.checkpoint`). Several
processes: :mod:`~rmkit.training.parallel`.

The final model is an ordinary one-label sequence-classification checkpoint in ``D/`` (LoRA merged in;
gathered whole when sharded), with ``score_mean``/``score_std`` measured on the eval data in its metadata,
beside ``metrics.json`` and ``train_log.jsonl``.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import sys
import time
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from rmkit import kinds, runtime
from rmkit.data import ExampleTokenizer, RowCounts
from rmkit.errors import RMKitError
from rmkit.files import write_json
from rmkit.modeling import RewardModel
from rmkit.packing import packs
from rmkit.training.audio import AudioPairTask
from rmkit.training.budget import micro_batch_tokens
from rmkit.training.checkpoint import Trainee, checkpoints, load_checkpoint, resume_path, save_checkpoint
from rmkit.training.config import TrainConfig
from rmkit.training.cost import CostTask
from rmkit.training.data import PairStore, epoch_batches
from rmkit.training.parallel import Dist, distribute, unsharded_copy
from rmkit.training.precision import MasterWeights
from rmkit.training.process import StepTask
from rmkit.training.ratings import RatingTask
from rmkit.training.step import (
    NonFinite,
    PairTask,
    make_optimizer,
    make_scheduler,
    merged,
    train_step,
)
from rmkit.training.tracking import TrainLog
from rmkit.training.vision import VisionPairTask

log = logging.getLogger(__name__)

RECENT_STEPS = 100  # steps whose training figures stand for the model when there is no held-out data
NO_EVAL = (
    "no held-out evaluation (no --eval-data or --eval-split): metrics.json's train.last_steps holds the training "
    "figures of the last steps, and the stored score mean and std come from them"
)


def train(config: TrainConfig) -> dict[str, Any]:
    """Train a reward model as ``config`` says; returns the final metrics (also written to metrics.json).

    A run that fails before its first checkpoint removes the output directory it created (what it wrote
    there, the token cache too, is its own and cannot be resumed); one with a checkpoint keeps it for
    ``--resume``."""
    config.validate()
    out = Path(config.output_dir)
    created = not out.exists() and os.environ.get("RANK", "0") == "0"
    try:
        with runtime.start(config.device, config.threads) as rt:
            return _train(config, Dist.of(rt, config))
    except BaseException:
        if created and out.is_dir() and not checkpoints(out):
            shutil.rmtree(out, ignore_errors=True)
        raise


def _train(config: TrainConfig, d: Dist) -> dict[str, Any]:
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    stats = RowCounts()
    task, rm, tokenizer, pairs, eval_pairs, eval_source = _task_and_data(config, stats, d)
    if len(pairs) < d.world:
        raise RMKitError(f"{len(pairs)} training {task.unit} for {d.world} processes")

    peft_model = _prepare(rm, config, task)
    rm.to(d.device).train()
    bf16_weights = config.dtype == "bf16-weights" and not d.sharded  # sharded: the fp32 shards are masters
    masters = MasterWeights(rm, accumulate=d.world == 1) if bf16_weights else None
    model = distribute(rm, config, d)
    config = _sized(config, rm, d)
    lengths = pairs.lengths
    per_epoch = len(epoch_batches(lengths, config, 0, d.world))
    total = config.max_steps or math.ceil(config.epochs * per_epoch)
    optimizer = make_optimizer(rm, config, masters)
    scheduler = make_scheduler(optimizer, config, total)
    step = 0
    resume_from = resume_path(config)
    if resume_from is not None:
        step = load_checkpoint(resume_from, Trainee(rm, optimizer, scheduler, masters), config, d)
        if d.main:
            log.info("resumed from %s at step %d", resume_from, step)
    if d.main:
        log.info(
            "train: %d %s (%d truncated, %d dropped, %d skipped; accepted: %d with an empty reply, %d "
            "with histories that differ), eval: %d from %s; "
            "%d steps of %d on %d process(es), %d trainable parameters",
            len(pairs), task.unit, stats.truncated, stats.dropped, stats.skipped, stats.empty_replies,
            stats.split_histories, len(eval_pairs or []), eval_source or "nowhere (no --eval-data or --eval-split)",
            total, config.batch_size, d.world, sum(p.numel() for p in rm.parameters() if p.requires_grad),
        )  # fmt: skip

    with TrainLog(out, config, d.main, append=step > 0) as train_log:
        loop = _Loop(
            model, rm, optimizer, scheduler, pairs, eval_pairs, config, d, train_log, out, task, masters
        )
        step = loop.run(step, total, per_epoch)
        # Without held-out data nothing is scored after the last step: the end of a run costs the same
        # whatever the data's size (the save), and the figures are those training computed already.
        final = task.heldout(rm, eval_pairs, config, d) if eval_pairs is not None else None
        recent = loop.recent_metrics()
        name, shown = ("eval", final) if final is not None else ("train_last", recent)
        train_log.log({"step": step, **{f"{name}_{k}": v for k, v in shown.items()}})
    train_stats = {**_train_stats(task, len(pairs), stats, loop, step, d), "last_steps": recent}
    metrics = {"eval": final, "eval_data": eval_source, "train": train_stats}
    if final is None:
        metrics["eval_note"] = NO_EVAL
    if masters is not None:  # the final model holds the fp32 masters
        masters.into_model()
    _save(rm, peft_model, tokenizer, metrics, config, d, task)
    return metrics


def _train_stats(task: Any, items: int, stats: RowCounts, loop: _Loop, step: int, d: Dist) -> dict[str, Any]:
    """metrics.json's ``train``: what the run trained on, its counts and its speed."""
    return {
        "steps": step,
        task.unit: items,
        "truncated": stats.truncated,
        "dropped": stats.dropped,
        "skipped": stats.skipped,
        "empty_replies": stats.empty_replies,
        "split_histories": stats.split_histories,
        "groups_cut": stats.groups_cut,
        "tokens": loop.trained.tokens,
        "seconds": round(loop.seconds, 3),
        "tokens_per_s": loop.trained.tokens / max(loop.seconds, 1e-9),
        "processes": d.world,
        "packed": task.packed,
        "prefix_sharing": task.sharing,
        "shared_pairs": getattr(loop.trained, "shared", 0),
        "prefix_tokens_saved": getattr(loop.trained, "saved", 0),
        "micro_batch_tokens": loop.config.micro_batch_tokens,
        **({"frozen": task.frozen} if getattr(task, "frozen", None) else {}),
    }


def _sized(config: TrainConfig, rm: Any, d: Dist) -> TrainConfig:
    """``config`` with the micro-batch budget the GPU's free memory allows when none is given
    (:mod:`rmkit.training.budget`)."""
    tokens = micro_batch_tokens(rm, config, d.device, d.world if d.sharded else 1)
    if tokens == config.micro_batch_tokens:
        return config
    if d.main:
        log.info("micro-batches of at most %d padded tokens, sized from the GPU's free memory", tokens)
    return replace(config, micro_batch_tokens=tokens)


# The training task of each kind that trains (a kind that subclasses one trains as it does).
TASKS = {
    kinds.ProcessKind: StepTask,
    kinds.RatedKind: RatingTask,
    kinds.CostKind: CostTask,
    kinds.AudioKind: AudioPairTask,
    kinds.VisionKind: VisionPairTask,
    kinds.PairwiseKind: PairTask,
}


def task_of(kind: kinds.Kind) -> type:
    """The training task of ``kind``: its own, else that of the nearest kind it derives from."""
    task = next((TASKS[k] for k in type(kind).__mro__ if k in TASKS), None)
    if task is None:
        raise RMKitError(f"rmkit train has no task for {kind.name} reward models ({kind.data})")
    return task


def _task_and_data(config: TrainConfig, stats: RowCounts, d: Dist) -> tuple:
    """``(task, model, tokenizer, training data, eval data, where the eval data came from)``: the task of the
    kind whose data ``--data`` holds (:func:`rmkit.kinds.for_data`): preference pairs, step-labelled
    solutions for a process RM (:mod:`rmkit.training.process`), rated responses for a regression RM."""
    model = kinds.recognise(kinds.Checkpoint.read(config.model, config.loading()))
    data = kinds.for_data([config.data], kinds.Reading.of(config))
    task = task_of(model if model.modality != "text" else data)()  # a VLM reads text pairs as image pairs
    rm, items, eval_items, source = task.prepare(config, stats, d)
    task.packed = _packs(rm, config)
    task.sharing = _shares_pairs(rm, config, task)
    return task, rm, getattr(task, "tokenizer", None), items, eval_items, source


def _shares_pairs(rm: RewardModel, config: TrainConfig, task: Any) -> str:
    """``--prefix-sharing`` as this run of ``task`` can honour it: ``off`` where a pair's shared prefix cannot
    run once exactly (``on`` there is refused, naming why)."""
    config_ = rm.model.config
    implementation = getattr(config_, "_attn_implementation", None)
    window = getattr(config_, "sliding_window", None) and getattr(config_, "use_sliding_window", True)
    why = (
        f"training on {task.unit} shares no prefix" if not hasattr(task, "shares")
        else "a vision-language RM's pairs share their images' pass only" if getattr(rm, "reads_images", False)
        else "it needs a causal decoder" if not (rm.is_decoder and rm.unmask_right_padding and rm.prefix_sharing)
        else "--loss token_wise reads each answer's padded score row" if config.loss == "token_wise"
        else "packed micro-batches (--packing) already drop the pads" if task.packed
        else f"{implementation} attention takes no mask of the prefix's blocks (sdpa and eager do)"
        if implementation not in ("sdpa", "eager")
        else "a sliding attention window is not kept by the prefix's mask" if window
        else None
    )  # fmt: skip
    if why and config.prefix_sharing == "on":
        raise RMKitError(f"--prefix-sharing on: {why}")
    return "off" if why else config.prefix_sharing


def _packs(rm: RewardModel, config: TrainConfig) -> bool:
    """Whether the micro-batches go in packed (``--packing``; :mod:`rmkit.packing`)."""
    if config.packing == "on" and config.loss == "token_wise":
        raise RMKitError("--packing on does not support --loss token_wise (it reads padded score rows)")
    packed = config.loss == "bt" and packs(rm, config.packing)
    if config.packing == "on" and not packed:
        raise RMKitError("--packing on needs a causal decoder; this model is an encoder")
    return packed


def _prepare(rm: Any, config: TrainConfig, task: Any) -> Any:
    """Dropout off (unless kept), LoRA adapters and gradient checkpointing as asked; returns the peft model
    (``None`` without LoRA)."""
    if not config.dropout:
        for m in rm.modules():
            if isinstance(m, nn.Dropout):
                m.p = 0.0
    peft_model = _apply_lora(rm, config, task) if config.lora else None
    if config.gradient_checkpointing:
        rm.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return peft_model


def _apply_lora(rm: Any, config: TrainConfig, task: Any) -> Any:
    """Inject LoRA adapters into ``rm.model`` in place; the score head is trained whole. The modules adapted
    are ``--lora-target-modules``, for ``all-linear`` the task's ``lora_modules`` where it has them (VLMs)."""
    from peft import LoraConfig, TaskType, get_peft_model

    picked = config.lora_target_modules == ["all-linear"] and hasattr(task, "lora_modules")
    targets = task.lora_modules(rm) if picked else config.lora_target_modules
    lora = LoraConfig(
        task_type=TaskType[task.lora_task] if task.lora_task else None,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules="all-linear" if targets == ["all-linear"] else targets,
        # the head is trained whole (modules_to_save), never adapted: PEFT leaves it out of "all-linear" for
        # sequence classifiers, not for token classifiers (a task that picks its modules leaves it out)
        exclude_modules=None if picked else ["score", "classifier"],
    )
    try:
        peft_model = get_peft_model(rm.model, lora)
    except (ValueError, TypeError) as e:
        raise RMKitError(f"cannot apply LoRA to '{config.model}': {e}") from None
    for p in getattr(rm, "head", nn.Identity()).parameters():  # a VLM's value head, maybe its model's score
        p.requires_grad_(True)
    return peft_model


class _Loop:
    """The steps of a run, with what they log, evaluate and save on the way."""

    def __init__(
        self,
        model,
        rm,
        optimizer,
        scheduler,
        pairs,
        eval_pairs,
        config,
        d,
        train_log,
        out,
        task,
        masters=None,
    ):
        self.model, self.rm, self.optimizer, self.scheduler = model, rm, optimizer, scheduler
        self.task = task
        self.pairs: PairStore = pairs
        self.eval_pairs: PairStore = eval_pairs
        self.config: TrainConfig = config
        self.d: Dist = d
        self.train_log: TrainLog = train_log
        self.out: Path = out
        self.trained = task.totals()  # what the steps of this run saw
        self.recent: deque = deque(maxlen=RECENT_STEPS)  # and each of its last steps, for the final figures
        self.seconds = 0.0  # and the time they took
        self.masters: MasterWeights | None = masters  # fp32 masters of bf16 weights (--dtype bf16-weights)

    def run(self, step: int, total: int, per_epoch: int) -> int:
        """Train from ``step`` to ``total``; returns the step reached."""
        self.total = total
        config, d, lengths = self.config, self.d, self.pairs.lengths
        window, window_time = self.task.totals(), 0.0
        # One progress policy (as rmkit score's): a bar on a terminal, else a plain line every logging step
        show = d.main and config.progress
        self.lines = show and not sys.stderr.isatty()
        bar = tqdm(
            total=total, initial=step, disable=not show or self.lines, desc="train", dynamic_ncols=True
        )
        batches: list[list[int]] = []
        while step < total:
            epoch, index = divmod(step, per_epoch)
            if index == 0 or not batches:
                batches = epoch_batches(lengths, config, epoch, d.world)
            batch = batches[index]
            started = time.perf_counter()
            share = [self.pairs[i] for i in batch[d.rank :: d.world]]
            try:
                mine, grad_norm = train_step(
                    self.model,
                    self.optimizer,
                    self.scheduler,
                    share,
                    self.task.units([self.pairs[i] for i in batch]),
                    self.rm.pad_token_id,
                    config,
                    d,
                    self.task,
                    self.masters,
                )
            except NonFinite as e:
                saved = checkpoints(self.out)
                last = f"the last checkpoint, {saved[-1]}, is good" if saved else "no checkpoint was saved"
                raise RMKitError(
                    f"step {step + 1}: {e}; training stopped before the update, no model was written and {last} "
                    "(a lower --learning-rate, --max-grad-norm or --dtype fp32 may help)"
                ) from None
            step += 1
            elapsed = time.perf_counter() - started
            totals = merged(d.gather(mine))
            self.trained.merge(totals)
            self.recent.append(totals)
            window.merge(totals)
            window_time += elapsed
            self.seconds += elapsed
            bar.update(1)
            bar.set_postfix(**totals.progress(), tok_s=f"{totals.tokens / max(elapsed, 1e-9):.0f}")
            if step % config.logging_steps == 0 or step == total:
                self._log_train(step, per_epoch, window, window_time, grad_norm)
                window, window_time = self.task.totals(), 0.0
            if step < total:
                self._between(step)
        bar.close()
        return step

    def _between(self, step: int) -> None:
        """After a step that is not the last: evaluate and save when their turn comes."""
        config, d = self.config, self.d
        if config.eval_steps and self.eval_pairs is not None and step % config.eval_steps == 0:
            metrics = self.task.heldout(self.rm, self.eval_pairs, config, d)
            self.train_log.log({"step": step, **{f"eval_{k}": v for k, v in metrics.items()}})
        if config.save_steps and step % config.save_steps == 0:
            trainee = Trainee(self.rm, self.optimizer, self.scheduler, self.masters)
            save_checkpoint(self.out, step, trainee, config, d)

    def recent_metrics(self) -> dict[str, Any]:
        """The training figures of the last ``RECENT_STEPS`` steps of this run (``steps``: how many)."""
        totals = merged(list(self.recent)) if self.recent else self.task.totals()
        return {"steps": len(self.recent), **totals.metrics()}

    def _log_train(self, step: int, per_epoch: int, window: Any, seconds: float, grad_norm: float) -> None:
        metrics = window.metrics()
        metrics.pop("pairs", None)
        if self.lines:
            shown = ", ".join(f"{k} {v}" for k, v in window.progress().items())
            rate = window.tokens / max(seconds, 1e-9)
            print(
                f"train: step {step} of {self.total}: {shown}, {rate:.0f} tokens/s",
                file=sys.stderr,
                flush=True,
            )
        self.train_log.log(
            {
                "step": step,
                "epoch": round(step / per_epoch, 4),
                **metrics,
                "lr": self.scheduler.get_last_lr()[0],
                "grad_norm": grad_norm,
                "tokens": window.tokens,  # real tokens of the steps since the last record, and their time
                "seconds": round(seconds, 6),
                "tokens_per_s": window.tokens / max(seconds, 1e-9),
            }
        )


def _save(
    rm: Any,
    peft_model: Any,
    tokenizer: ExampleTokenizer | None,
    metrics: dict,
    config: TrainConfig,
    d: Dist,
    task: Any,
) -> None:
    """Write the final model (LoRA merged, gathered whole when sharded) and ``metrics.json`` to the output
    directory; every process must call this."""
    out, final = Path(config.output_dir), metrics["eval"]
    recent = metrics["train"]["last_steps"]
    if d.sharded:
        rm = unsharded_copy(rm, config, d)
    if d.main:
        if peft_model is not None:
            rm.model = peft_model.merge_and_unload()
        rendering = (
            {
                "template": "chat" if tokenizer.use_chat else "plain",
                "max_length": tokenizer.max_length,
                "add_eos": tokenizer.add_eos,
            }
            if tokenizer is not None
            else {"max_length": config.max_length}
        )
        rm.save_pretrained(out, metadata={**rendering, **task.metadata(final or recent)})
        write_json(out / "metrics.json", metrics)
        if final is not None:
            log.info("eval: %s; model written to %s", task.summary(final), out)
        else:
            figures = ", ".join(f"{k} {v:.4f}" for k, v in recent.items() if isinstance(v, float))
            log.info(
                "%s; the last %d steps trained at %s; model written to %s",
                NO_EVAL,
                recent["steps"],
                figures,
                out,
            )
    d.barrier()
