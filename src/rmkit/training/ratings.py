"""``rmkit train`` on rated responses: a regression RM, one output per attribute, trained with MSE.

The loop is pair training's (:mod:`rmkit.training.loop`); this module is the task. A rated response
(:mod:`rmkit.data.ratings`: HelpSteer2-style rows, or each of UltraFeedback's completions) is one item; the
head has one output per attribute (``num_labels = K``, the names in ``id2label``), and the loss of an item
is the mean over attributes of the squared error against its ratings. The held-out figures are, per
attribute, the mean absolute error and the Pearson and Spearman correlations with the ratings. The result
is a plain ``AutoModelForSequenceClassification`` checkpoint; with K > 1 rmkit scores it by the weighted
sum of its outputs (:mod:`rmkit.attributes`).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from rmkit import kinds
from rmkit.data import (
    Example,
    ExampleTokenizer,
    Rejects,
    RowCounts,
    token_budget_batches,
)
from rmkit.data.ratings import iter_rated
from rmkit.errors import RMKitError
from rmkit.metrics import pearson, spearman
from rmkit.modeling import RewardModel
from rmkit.packing import inputs_on
from rmkit.training.config import TrainConfig
from rmkit.training.data import ItemList
from rmkit.training.parallel import Dist


@dataclass
class RatedItem:
    ids: list[int]
    targets: np.ndarray  # (K,)
    subset: str | None = None

    @property
    def length(self) -> int:
        return len(self.ids)


def _read(path: str, config: TrainConfig, stats: RowCounts, rejects_path: str | None):
    """``(names, (response example, ratings) pairs)`` of a rated file."""
    skip = config.on_error == "skip"
    rows: list[tuple[Example, list[float]]] = []
    names: list[str] | None = None
    with Rejects(rejects_path) if skip else nullcontext() as rejects:
        for ex in iter_rated(
            path, format=config.format, columns=config.columns, rejects=rejects, attributes=config.attributes
        ):
            for response, ratings in zip(ex.responses, ex.ratings, strict=True):
                if names is None:
                    names = list(ratings)
                if list(ratings) != names:
                    raise RMKitError(
                        f"{path}, row {ex.row}: rated on {list(ratings)}, not {names} as the rows before"
                    )
                example = Example(ex.row, ex.prompt, [response], False, extra=ex.extra)
                rows.append((example, [ratings[n] for n in names]))
        stats.skipped += rejects.count if rejects is not None else 0
    if not rows or not names:
        raise RMKitError(f"{path}: no rated responses to train or evaluate on")
    return names, rows


def _items(rows, tokenizer: ExampleTokenizer, config: TrainConfig, stats: RowCounts) -> ItemList:
    items = ItemList()
    for start in range(0, len(rows), 1024):
        chunk = rows[start : start + 1024]
        for (ex, targets), tokenized in zip(chunk, tokenizer.tokenize([ex for ex, _ in chunk]), strict=True):
            stats.add(tokenized, ex.notes)
            if tokenized is not None:
                items.append(
                    RatedItem(
                        tokenized[0].ids, np.asarray(targets, np.float32), ex.subset(config.subset_column)
                    )
                )
    return items


@dataclass
class RatingTotals:
    loss: float = 0.0
    items: int = 0
    abs_error: list[float] = field(default_factory=list)
    tokens: int = 0

    def add(self, loss: torch.Tensor, predicted: torch.Tensor, targets: torch.Tensor, tokens: int) -> None:
        self.loss += float(loss.detach().double().sum())
        self.items += len(targets)
        error = (predicted.detach() - targets).abs().sum(0).double().cpu().tolist()
        self.abs_error = [a + b for a, b in zip(self.abs_error or [0.0] * len(error), error, strict=True)]
        self.tokens += tokens

    def merge(self, other: RatingTotals) -> RatingTotals:
        self.loss, self.items, self.tokens = (
            self.loss + other.loss,
            self.items + other.items,
            self.tokens + other.tokens,
        )
        if other.abs_error:
            self.abs_error = [
                a + b
                for a, b in zip(self.abs_error or [0.0] * len(other.abs_error), other.abs_error, strict=True)
            ]
        return self

    def metrics(self) -> dict[str, Any]:
        n = max(self.items, 1)
        return {"loss": self.loss / n, "mae": [e / n for e in self.abs_error]}

    def progress(self) -> dict[str, str]:
        return {"mse": f"{self.loss / max(self.items, 1):.4f}"}


def _check_head(model: str, names: list[str]) -> None:
    """Refuse, in one line, a trained score head whose outputs are not one per rated attribute."""
    checkpoint = kinds.Checkpoint.read(model)
    trained = any(a.endswith("ForSequenceClassification") for a in checkpoint.architectures)
    if trained and checkpoint.labels != len(names):
        raise RMKitError(
            f"{model} has a score head of {checkpoint.labels} output(s) and the data rates {len(names)} "
            f"attribute(s) ({', '.join(names)}): start from its backbone, or rate {checkpoint.labels} "
            "attribute(s) with --attributes"
        )


@dataclass
class RatingTask:
    """The regression task of the training loop (the interface of :class:`rmkit.training.step.PairTask`)."""

    unit: str = "responses"
    lora_task: str = "SEQ_CLS"
    names: list[str] = field(default_factory=list)
    tokenizer: ExampleTokenizer | None = None
    scaled: bool = False
    mean: Any = None
    std: Any = None
    packed: bool = False  # micro-batches packed without pads (rmkit.packing)

    def prepare(
        self, config: TrainConfig, stats: RowCounts, d: Dist
    ) -> tuple[RewardModel, ItemList, ItemList, str]:
        self.names, rows = _read(config.data, config, stats, config.rejects if d.main else None)
        k = len(self.names)
        labels = {
            "num_labels": k,
            "id2label": dict(enumerate(self.names)),
            "label2id": {n: i for i, n in enumerate(self.names)},
        }
        _check_head(config.model, self.names)
        rm = RewardModel.from_pretrained(config.model, **config.loading(), **(labels if k > 1 else {}))
        self.tokenizer = rm.example_tokenizer(
            max_length=config.max_length, template=config.template, truncation=config.truncation
        )
        items = _items(rows, self.tokenizer, config, stats)
        if config.standardize_ratings:
            targets = np.stack([it.targets for it in items])
            self.mean, self.std = targets.mean(0), np.where(targets.std(0) > 0, targets.std(0), 1.0)
        self.scaled = config.standardize_ratings
        if config.eval_data:
            names, held = _read(config.eval_data, config, RowCounts(), None)
            if names != self.names:
                raise RMKitError(f"--eval-data rates {names}; the training data rates {self.names}")
            return rm, items, _items(held, self.tokenizer, config, RowCounts()), config.eval_data
        if config.eval_split > 0:
            order = torch.randperm(len(items), generator=torch.Generator().manual_seed(config.seed)).tolist()
            n_eval = max(1, round(config.eval_split * len(items)))
            return (
                rm,
                items.select(sorted(order[n_eval:])),
                items.select(order[:n_eval]),
                f"{n_eval} responses held out of {config.data}",
            )
        return rm, items, None, None  # no held-out responses: no held-out evaluation

    def totals(self) -> RatingTotals:
        return RatingTotals()

    def units(self, items: list[RatedItem]) -> int:
        return len(items)

    def lengths(self, items: list[RatedItem]) -> list[int]:
        return [it.length for it in items]

    def stand_in(self, pad_id: int) -> RatedItem:
        return RatedItem([pad_id], np.zeros(len(self.names), np.float32))

    def _outputs(
        self, model: nn.Module, chunk: list[RatedItem], pad_id: int, config: TrainConfig, device: torch.device
    ):
        sequences = [list(it.ids) for it in chunk]
        inputs = inputs_on(sequences, pad_id, device, self.packed)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.dtype == "bf16"):
            out = model(*inputs, token_scores=False, right_padded=True)
        predicted = out.attribute_scores if out.attribute_scores is not None else out.end_scores[:, None]
        targets = np.stack([it.targets for it in chunk])
        if self.scaled:
            targets = (targets - self.mean) / self.std
        return predicted.float(), torch.tensor(targets, dtype=torch.float32, device=device)

    def forward(
        self, model: nn.Module, chunk: list[RatedItem], pad_id: int, config: TrainConfig, device: torch.device
    ):
        """``(each item's MSE over its attributes, a function counting the chunk)``."""
        predicted, targets = self._outputs(model, chunk, pad_id, config, device)
        loss = ((predicted - targets) ** 2).mean(-1)
        tokens = sum(it.length for it in chunk)
        return loss, lambda totals: totals.add(loss, predicted, targets, tokens)

    @torch.no_grad()
    def heldout(self, rm: RewardModel, items: ItemList, config: TrainConfig, d: Dist) -> dict[str, Any]:
        """MSE, and per attribute the MAE and the Pearson and Spearman correlations with the ratings."""
        was_training = rm.training
        rm.eval()
        mine = items[d.rank :: d.world]
        predicted, targets = [], []
        for idx in d.same_count(token_budget_batches(mine.lengths, config.eval_batch_tokens)):
            chunk = [mine[i] for i in idx] or [self.stand_in(rm.pad_token_id)]
            p, t = self._outputs(rm, chunk, rm.pad_token_id, config, rm.device)
            if idx:
                predicted += p.cpu().tolist()
                targets += t.cpu().tolist()
        rm.train(was_training)
        gathered = d.gather((predicted, targets))
        p = np.array([row for part in gathered for row in part[0]])
        t = np.array([row for part in gathered for row in part[1]])
        per = {
            name: {
                "mae": float(np.abs(p[:, k] - t[:, k]).mean()),
                "pearson": pearson(p[:, k], t[:, k]),
                "spearman": spearman(p[:, k], t[:, k]),
            }
            for k, name in enumerate(self.names)
        }
        correlations = [v["spearman"] for v in per.values() if v["spearman"] is not None]
        return {
            "loss": float(((p - t) ** 2).mean()),
            "responses": len(p),
            "spearman_mean": float(np.mean(correlations)) if correlations else None,
            "attributes": per,
        }

    def metadata(self, final: dict[str, Any]) -> dict[str, Any]:
        """With standardised ratings, the scale rmkit maps the outputs back with (:class:`RewardModel`)."""
        if not self.scaled:
            return {}
        return {"rating_mean": self.mean.tolist(), "rating_std": self.std.tolist()}

    def summary(self, final: dict[str, Any]) -> str:
        s = final["spearman_mean"]
        return f"MSE {final['loss']:.4f}, mean Spearman {'-' if s is None else f'{s:.3f}'} over {', '.join(self.names)}"
