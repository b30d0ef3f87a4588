"""``rmkit train`` on step-labelled data: a process reward model, trained on its labelled steps.

The loop, optimiser, schedule, checkpoints, resume, LoRA, DDP and FSDP are those of pair training
(:mod:`rmkit.training.loop`); this module is the task: a one-label token-classification head read at each
step's separator (:mod:`rmkit.process`), binary cross-entropy on the labelled steps only (unlabelled steps,
steps cut by the length limit and, with ``--first-error-only``, the steps after a solution's first wrong
one add nothing), its mean over the labelled steps of the global batch, and the held-out figures of
``rmkit eval`` (:func:`rmkit.metrics.step_metrics`: step accuracy, F1 of wrong steps, ProcessBench's
measure).
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rmkit.data import Rejects, RowCounts, pad_batch, token_budget_batches
from rmkit.data.steps import StepExample, iter_step_examples
from rmkit.errors import RMKitError
from rmkit.metrics.graded import step_metrics
from rmkit.packing import inputs_on
from rmkit.process import ProcessRewardModel
from rmkit.training.config import TrainConfig
from rmkit.training.data import ItemList
from rmkit.training.parallel import Dist


@dataclass
class StepItem:
    """One tokenised solution: its ids, where each scored step is read, and each one's label (1 right,
    0 wrong, NaN unlabelled)."""

    ids: np.ndarray
    positions: np.ndarray
    labels: np.ndarray
    subset: str | None = None

    @property
    def length(self) -> int:
        return len(self.ids)

    @property
    def labelled(self) -> int:
        return int((~np.isnan(self.labels)).sum())


def tokenize_steps(
    prm: ProcessRewardModel, examples: list[StepExample], config: TrainConfig, stats: RowCounts
) -> list[StepItem]:
    items = []
    for ex in examples:
        ids, positions = prm.encode(ex.prompt, ex.steps, config.max_length)
        labels = np.array([np.nan if v is None else float(v) for v in (ex.labels or [])[: len(positions)]])
        if config.first_error_only and (wrong := np.flatnonzero(labels == 0.0)).size:
            labels[wrong[0] + 1 :] = np.nan
        stats.rows += 1
        stats.tokens += len(ids)
        stats.truncated += len(positions) < len(ex.steps)
        item = StepItem(
            np.asarray(ids, np.int32),
            np.asarray(positions, np.int32),
            labels,
            ex.subset(config.subset_column),
        )
        items.append(item)
    return items


def _read(
    path: str, prm: ProcessRewardModel, config: TrainConfig, stats: RowCounts, rejects_path: str | None
) -> ItemList:
    skip = config.on_error == "skip"
    with Rejects(rejects_path) if skip else nullcontext() as rejects:
        examples = [
            ex
            for ex in iter_step_examples(
                path,
                format=config.format,
                columns=config.columns,
                rejects=rejects,
                neutral=config.neutral_steps,
            )
            if ex.labels is not None
        ]
        stats.skipped += rejects.count if rejects is not None else 0
    items = [it for it in tokenize_steps(prm, examples, config, stats) if it.labelled]
    if not items:
        raise RMKitError(f"{path}: no solutions with labelled steps to train or evaluate on")
    return ItemList(items)


@dataclass
class StepTotals:
    """Running sums of a PRM's steps: summed loss, labelled steps, right calls, the wrong-step confusion."""

    loss: float = 0.0
    steps: int = 0
    correct: int = 0
    true_wrong: int = 0
    predicted_wrong: int = 0
    actual_wrong: int = 0
    tokens: int = 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, tokens: int) -> None:
        says_wrong, is_wrong = (logits < 0).cpu(), (labels == 0).cpu()  # logit < 0: probability < 0.5
        self.loss += float(loss.detach().double().sum())
        self.steps += len(labels)
        self.correct += int((says_wrong == is_wrong).sum())
        self.true_wrong += int((says_wrong & is_wrong).sum())
        self.predicted_wrong += int(says_wrong.sum())
        self.actual_wrong += int(is_wrong.sum())
        self.tokens += tokens

    def merge(self, other: StepTotals) -> StepTotals:
        for name in ("loss", "steps", "correct", "true_wrong", "predicted_wrong", "actual_wrong", "tokens"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    def metrics(self) -> dict[str, Any]:
        precision = self.true_wrong / self.predicted_wrong if self.predicted_wrong else None
        recall = self.true_wrong / self.actual_wrong if self.actual_wrong else None
        f1 = 2 * precision * recall / (precision + recall) if precision and recall else None
        return {
            "loss": self.loss / max(self.steps, 1),
            "steps": self.steps,
            "step_accuracy": self.correct / max(self.steps, 1),
            "wrong_precision": precision,
            "wrong_recall": recall,
            "wrong_f1": f1,
        }

    def progress(self) -> dict[str, str]:
        n = max(self.steps, 1)
        return {"loss": f"{self.loss / n:.4f}", "acc": f"{self.correct / n:.3f}"}


@dataclass
class StepTask:
    """The PRM task of the training loop (the interface of :class:`rmkit.training.step.PairTask`)."""

    unit: str = "solutions"
    lora_task: str = "TOKEN_CLS"
    pad: list[int] = field(default_factory=list)
    packed: bool = False  # micro-batches packed without pads (rmkit.packing)

    def prepare(
        self, config: TrainConfig, stats: RowCounts, d: Dist
    ) -> tuple[ProcessRewardModel, ItemList, ItemList, str]:
        """The PRM to train and the tokenised training and held-out solutions."""
        prm = ProcessRewardModel.from_pretrained(
            config.model,
            allow_pickle=config.allow_pickle,
            trust_remote_code=config.trust_remote_code,
            revision=config.revision,
            **config.step_format(),
        )
        if prm.steps.head != "classifier" or prm.labels != 1:
            raise RMKitError(
                "rmkit trains one-label token-classification PRMs; this model's head is another kind"
            )
        prm.metadata["max_length"] = config.max_length
        items = _read(config.data, prm, config, stats, config.rejects if d.main else None)
        if config.eval_data:
            return prm, items, _read(config.eval_data, prm, config, RowCounts(), None), config.eval_data
        if config.eval_split > 0:
            order = torch.randperm(len(items), generator=torch.Generator().manual_seed(config.seed)).tolist()
            n_eval = max(1, round(config.eval_split * len(items)))
            source = f"{n_eval} solutions held out of {config.data}"
            return prm, items.select(sorted(order[n_eval:])), items.select(order[:n_eval]), source
        return prm, items, None, None  # no held-out solutions: no held-out evaluation

    def totals(self) -> StepTotals:
        return StepTotals()

    def units(self, items: list[StepItem]) -> int:
        return sum(it.labelled for it in items)

    def lengths(self, items: list[StepItem]) -> list[int]:
        return [it.length for it in items]

    def stand_in(self, pad_id: int) -> StepItem:
        return StepItem(np.array([pad_id], np.int32), np.zeros(0, np.int32), np.zeros(0))

    def forward(
        self, model: nn.Module, chunk: list[StepItem], pad_id: int, config: TrainConfig, device: torch.device
    ):
        """``(BCE of each labelled step, a function counting the chunk)``; a chunk without labelled steps
        gives one zero loss that still reaches every parameter (FSDP runs every pass in lockstep)."""
        sequences = [it.ids.tolist() for it in chunk]
        inputs = inputs_on(sequences, pad_id, device, self.packed)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.dtype == "bf16"):
            logits = model(*inputs, raw=True, right_padded=True).scores.float()
        rows, cols, labels = _targets(chunk, device, self.packed)
        picked = logits[rows, cols]
        loss = (
            F.binary_cross_entropy_with_logits(picked, labels, reduction="none")
            if len(labels)
            else logits.sum()[None] * 0
        )
        tokens = sum(it.length for it in chunk)
        return loss, lambda totals: totals.add(loss, picked.detach(), labels, tokens)

    @torch.no_grad()
    def heldout(
        self, rm: ProcessRewardModel, items: ItemList, config: TrainConfig, d: Dist
    ) -> dict[str, Any]:
        """Loss and :func:`rmkit.metrics.step_metrics` of ``rm`` on the held-out solutions (all processes)."""
        was_training = rm.training
        rm.eval()
        mine = items[d.rank :: d.world]
        scores: list[list[float]] = []
        labels: list[list[bool | None]] = []
        loss, steps = 0.0, 0
        for idx in d.same_count(token_budget_batches(mine.lengths, config.eval_batch_tokens)):
            chunk = [mine[i] for i in idx] or [self.stand_in(rm.pad_token_id)]
            ids, mask = pad_batch([it.ids.tolist() for it in chunk], rm.pad_token_id)
            logits = rm(ids.to(rm.device), mask.to(rm.device), raw=True).scores.float().cpu()
            for r, it in enumerate(chunk if idx else []):
                at = logits[r, torch.as_tensor(it.positions, dtype=torch.long)]
                keep = ~np.isnan(it.labels)
                target = torch.as_tensor(it.labels[keep], dtype=torch.float32)
                loss += float(F.binary_cross_entropy_with_logits(at[keep], target, reduction="sum"))
                steps += int(keep.sum())
                scores.append(torch.sigmoid(at).tolist())
                labels.append([None if math.isnan(v) else bool(v) for v in it.labels])
        rm.train(was_training)
        gathered = d.gather((scores, labels, loss, steps))
        all_scores = [s for part in gathered for s in part[0]]
        all_labels = [lab for part in gathered for lab in part[1]]
        total_loss, total_steps = sum(p[2] for p in gathered), sum(p[3] for p in gathered)
        return {"loss": total_loss / max(total_steps, 1), **step_metrics(all_scores, all_labels)}

    def metadata(self, final: dict[str, Any]) -> dict[str, Any]:
        return {}

    def summary(self, final: dict[str, Any]) -> str:
        pb = final.get("processbench_f1")
        return (
            f"loss {final['loss']:.4f}, step accuracy {final['step_accuracy'] or 0:.3f}, "
            f"ProcessBench F1 {'-' if pb is None else f'{pb:.3f}'}"
        )


def _targets(
    chunk: list[StepItem], device: torch.device, packed: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row and position of every labelled step of ``chunk`` (in the one packed row, with ``packed``), and
    its label."""
    rows, cols, labels = [], [], []
    start = 0
    for r, it in enumerate(chunk):
        keep = ~np.isnan(it.labels)
        cols.extend((it.positions[keep] + (start if packed else 0)).tolist())
        labels.extend(it.labels[keep].tolist())
        rows.extend([0 if packed else r] * int(keep.sum()))
        start += len(it.ids)
    as_long = {"dtype": torch.long, "device": device}
    return torch.tensor(rows, **as_long), torch.tensor(cols, **as_long), torch.tensor(labels, device=device)
