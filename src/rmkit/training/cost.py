"""``rmkit train --objective cost``: a cost model (Safe RLHF) from safety-labelled responses.

The loop is pair training's (:mod:`rmkit.training.loop`); this module is the task. An item is a
PKU-SafeRLHF pair (safer answer first, each answer's safety sign) or a lone BeaverTails response with its
sign (:mod:`rmkit.data.safety`); the loss is :func:`rmkit.losses.safety_cost` (``--loss bt``: safe-rlhf's
sequence-wise loss) or :func:`rmkit.losses.safety_cost_token_wise` (``--loss token_wise``), with
``--score-reg`` as safe-rlhf's ``regularization`` and ``--cost-scale`` as align-anything's ``scale_coeff``; a
lone response adds the sign term alone (:func:`rmkit.losses.sign_cost`, on its end cost under either loss).
A step's loss is the mean over its items. The held-out figures are :class:`rmkit.metrics.safety.CostStats`'
(pair accuracy, sign accuracy, cost mean and std, per label). The result is the standard one-label
classifier with ``"kind": "cost"`` in rmkit's settings.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from rmkit.data import Example, ExampleTokenizer, Rejects, RowCounts, token_budget_batches
from rmkit.data.safety import SafetyExample, iter_safety
from rmkit.errors import RMKitError
from rmkit.losses import divergence_index, safety_cost, safety_cost_token_wise, sign_cost
from rmkit.metrics.safety import CostStats
from rmkit.modeling import RewardModel
from rmkit.packing import inputs_on
from rmkit.training.config import TrainConfig
from rmkit.training.data import ItemList
from rmkit.training.parallel import Dist


@dataclass
class CostItem:
    """One training item: a pair's ``[safer, less safe]`` token ids, or a lone response's, and their signs."""

    ids: list[list[int]]
    signs: list[float]

    @property
    def length(self) -> int:
        return max(len(s) for s in self.ids)


def read_safety(
    path: str, config: TrainConfig, stats: RowCounts, rejects_path: str | None
) -> list[SafetyExample]:
    """The safety-labelled rows of ``path``; bad rows raise or, with ``--on-error skip``, are counted in
    ``stats`` and written to ``rejects_path``."""
    skip = config.on_error == "skip"
    with Rejects(rejects_path) if skip else nullcontext() as rejects:
        rows = list(iter_safety(path, format=config.format, columns=config.columns, rejects=rejects))
        stats.skipped += rejects.count if rejects is not None else 0
    if not rows:
        raise RMKitError(f"{path}: no safety-labelled responses to train or evaluate on")
    return rows


def _items(rows: list[SafetyExample], tokenizer: ExampleTokenizer, stats: RowCounts) -> ItemList:
    examples = [Example(ex.row, ex.prompt, ex.responses, ex.is_pair, extra=ex.extra) for ex in rows]
    items = ItemList()
    for start in range(0, len(rows), 1024):
        chunk = slice(start, start + 1024)
        for ex, tokenized in zip(rows[chunk], tokenizer.tokenize(examples[chunk]), strict=True):
            stats.add(tokenized)
            if tokenized is not None:
                items.append(CostItem([t.ids for t in tokenized], list(ex.signs)))
    return items


@dataclass
class CostTotals:
    """Summed per-item loss, the cost figures and the real tokens of some batches."""

    loss: float = 0.0
    items: int = 0
    costs: CostStats = field(default_factory=CostStats)
    tokens: int = 0

    def add(self, loss: torch.Tensor, stats: CostStats, tokens: int) -> None:
        self.loss += float(loss.detach().double().sum())
        self.items += len(loss)
        self.costs.merge(stats)
        self.tokens += tokens

    def merge(self, other: CostTotals) -> CostTotals:
        self.loss, self.items, self.tokens = (
            self.loss + other.loss,
            self.items + other.items,
            self.tokens + other.tokens,
        )
        self.costs.merge(other.costs)
        return self

    def metrics(self) -> dict[str, Any]:
        figures = self.costs.metrics()
        return {
            "loss": self.loss / max(self.items, 1),
            **{k: v for k, v in figures.items() if not k.endswith("_ci")},
        }

    def progress(self) -> dict[str, str]:
        sign = self.costs.signed / max(self.costs.labelled, 1)
        return {"loss": f"{self.loss / max(self.items, 1):.4f}", "sign": f"{sign:.3f}"}


class CostTask:
    """The cost model's task of the training loop (the interface of :class:`rmkit.training.step.PairTask`)."""

    unit = "items"
    lora_task = "SEQ_CLS"

    def __init__(self) -> None:
        self.packed = False  # micro-batches packed without pads (rmkit.packing; the sequence-wise loss)
        self.sharing = "off"
        self.tokenizer: ExampleTokenizer | None = None

    def prepare(
        self, config: TrainConfig, stats: RowCounts, d: Dist
    ) -> tuple[RewardModel, ItemList, Any, Any]:
        rows = read_safety(config.data, config, stats, config.rejects if d.main else None)
        rm = RewardModel.from_pretrained(config.model, **config.loading())
        if config.loss == "token_wise" and not rm.is_decoder:
            raise RMKitError(
                "--loss token_wise needs a decoder model (per-token costs); this one is an encoder"
            )
        limit = rm.max_length
        self.tokenizer = rm.example_tokenizer(
            max_length=min(config.max_length, limit) if limit else config.max_length,
            template=config.template,
            truncation=config.truncation,
        )
        items = _items(rows, self.tokenizer, stats)
        if config.eval_data:
            held = read_safety(config.eval_data, config, RowCounts(), None)
            return rm, items, _items(held, self.tokenizer, RowCounts()), config.eval_data
        if config.eval_split > 0:
            order = torch.randperm(len(items), generator=torch.Generator().manual_seed(config.seed)).tolist()
            n_eval = max(1, round(config.eval_split * len(items)))
            held_out = f"{n_eval} items held out of {config.data}"
            return rm, items.select(sorted(order[n_eval:])), items.select(order[:n_eval]), held_out
        return rm, items, None, None

    def totals(self) -> CostTotals:
        return CostTotals()

    def units(self, items: list[CostItem]) -> int:
        return len(items)

    def lengths(self, items: list[CostItem]) -> list[int]:
        return [sum(len(s) for s in it.ids) if self.packed else len(it.ids) * it.length for it in items]

    def stand_in(self, pad_id: int) -> CostItem:
        return CostItem([[pad_id]], [0.0])

    def forward(
        self, model: nn.Module, chunk: list[CostItem], pad_id: int, config: TrainConfig, device: torch.device
    ):
        """``(each item's loss, a function counting the chunk)``: one pass over the safer answers of the
        chunk's pairs, their less safe answers, then its lone responses."""
        pairs = [it for it in chunk if len(it.ids) == 2]
        lone = [it for it in chunk if len(it.ids) == 1]
        rows = [it.ids[0] for it in pairs] + [it.ids[1] for it in pairs] + [it.ids[0] for it in lone]
        signs = torch.tensor(
            [it.signs[0] for it in pairs] + [it.signs[1] for it in pairs] + [it.signs[0] for it in lone],
            device=device,
        )
        inputs = inputs_on(rows, pad_id, device, self.packed)
        token_wise = config.loss == "token_wise" and bool(pairs)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.dtype == "bf16"):
            out = model(*inputs, token_scores=token_wise, right_padded=True)
        costs = out.end_scores.float()
        n = len(pairs)
        safer, unsafer, alone = costs[:n], costs[n : 2 * n], costs[2 * n :]
        weights = {"scale": config.cost_scale, "regularization": config.score_reg}
        if token_wise:
            scores, ends, ids = out.scores.float(), out.end_index, inputs[0]
            start = divergence_index(ids[:n], ids[n : 2 * n])
            paired = safety_cost_token_wise(
                scores[:n],
                scores[n : 2 * n],
                ends[:n],
                ends[n : 2 * n],
                start,
                signs[:n],
                signs[n : 2 * n],
                **weights,
            )
        else:
            paired = safety_cost(safer, unsafer, signs[:n], signs[n : 2 * n], **weights)
        loss = torch.cat([paired, sign_cost(alone, signs[2 * n :], **weights)])
        stats = CostStats.of(costs.detach(), signs, safer.detach(), unsafer.detach())
        tokens = sum(len(r) for r in rows)
        return loss, lambda totals: totals.add(loss, stats, tokens)

    @torch.no_grad()
    def heldout(self, rm: RewardModel, items: ItemList, config: TrainConfig, d: Dist) -> dict[str, Any]:
        """Loss and the cost figures (with intervals) of the held-out items, over all processes."""
        was_training = rm.training
        rm.eval()
        totals, mine = CostTotals(), items[d.rank :: d.world]
        for idx in d.same_count(token_budget_batches(self.lengths(mine), config.eval_batch_tokens)):
            chunk = [mine[i] for i in idx] or [self.stand_in(rm.pad_token_id)]
            _, count = self.forward(rm, chunk, rm.pad_token_id, config, rm.device)
            if idx:
                count(totals)
        rm.train(was_training)
        merged = CostTotals()
        for part in d.gather(totals):
            merged.merge(part)
        return {
            "loss": merged.loss / max(merged.items, 1),
            **merged.costs.metrics(bootstrap=1000, seed=config.seed),
        }

    def metadata(self, final: dict[str, Any]) -> dict[str, Any]:
        """The kind, so that every face reads the checkpoint as a cost model, and the costs' mean and std."""
        stored: dict[str, Any] = {"kind": "cost"}
        if final.get("cost_mean") is not None:
            stored.update(score_mean=final["cost_mean"], score_std=final["cost_std"])
        return stored

    def summary(self, final: dict[str, Any]) -> str:
        def share(x: float | None) -> str:
            return "-" if x is None else f"{x:.3f}"

        return (
            f"loss {final['loss']:.4f}, sign accuracy {share(final['sign_accuracy'])}, pair accuracy "
            f"{share(final['pair_accuracy'])}, cost mean {share(final['cost_mean'])}"
        )
