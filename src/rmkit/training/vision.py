"""``rmkit train`` on preference pairs with images: a vision-language RM (:mod:`rmkit.vlm`) through the loop.

The task reads the pairs as ``rmkit score`` does (:mod:`rmkit.data.vision`), tokenises them with the model's
:class:`~rmkit.data.processing.VisionTokenizer` (image tokens expanded; a row too long to keep its images
is dropped and counted) and trains with the Bradley-Terry family of losses, like :class:`PairTask`. Each
micro-batch runs each pair's images through the vision encoder once, the chosen and rejected rows then
reading the same features: the same loss and gradients as running the images once a row (a test checks
it), for half the encoder's work. With ``--prefix-sharing`` (``auto``: a prefix of 16 tokens or more;
``on``; ``off``) a pair's shared prefix, its images and prompt, runs once through the language model and
both answers after it (:mod:`rmkit.vlm_sharing`): the same loss and every gradient as the unshared step (a
test checks it); not under ``--gradient-checkpointing``, which keeps no cache.
``--freeze vision,projector`` stops the gradients of the vision encoder and of its projector into the
language model, matched by each family's module names (:data:`rmkit.vlm_families.FAMILIES`); the
parameters frozen are counted by module in the log and in ``metrics.json`` (``train.frozen``).

Not yet: LoRA, several processes (DDP, FSDP), ``--loss token_wise`` and ``--packing`` (refused in one line).
"""

from __future__ import annotations

import logging
import random
from typing import Any

import torch
from torch import nn

from rmkit import kinds, vlm_sharing
from rmkit.data import RowCounts, token_budget_batches
from rmkit.data.processing import VisionRow
from rmkit.errors import RMKitError
from rmkit.inference import MIN_SHARED
from rmkit.losses import bradley_terry
from rmkit.training.config import TrainConfig
from rmkit.training.parallel import Dist
from rmkit.training.step import PairTask, Totals

log = logging.getLogger(__name__)
FREEZABLE = ("vision", "projector")


class VisionPair:
    """The two rows of one pair (their images' patches are one array: encoded once), its margin, subset."""

    def __init__(
        self, chosen: VisionRow, rejected: VisionRow, margin: float = 0.0, subset: str | None = None
    ):
        self.chosen, self.rejected, self.margin, self.subset = chosen, rejected, margin, subset

    @property
    def length(self) -> int:
        return max(len(self.chosen.ids), len(self.rejected.ids))


class VisionPairs(list):
    """A list of :class:`VisionPair` with the ``lengths`` the loop batches by (each pair's two rows padded)."""

    @property
    def lengths(self) -> list[int]:
        return [2 * p.length for p in self]


class VisionPairTask(PairTask):
    """Preference pairs with images (module docstring)."""

    def prepare(self, config: TrainConfig, stats: RowCounts, d: Dist) -> tuple[Any, Any, Any, str | None]:
        from rmkit.vlm import VisionRewardModel

        if config.lora or d.world > 1 or config.loss != "bt" or config.packing == "on":
            raise RMKitError(
                "rmkit train on images runs in one process with the bt loss, without LoRA or --packing on (not yet)"
            )
        rm = VisionRewardModel.from_pretrained(
            config.model,
            allow_pickle=config.allow_pickle,
            min_pixels=config.min_pixels,
            max_pixels=config.max_pixels,
        )
        rm.model.fresh_head = None
        self.frozen = freeze(rm, config.freeze or [])
        self.tokenizer = rm.example_tokenizer(
            max_length=config.max_length, template=config.template, truncation=config.truncation
        )
        pairs = self.read(config.data, config, stats)
        if config.eval_data:
            return rm, pairs, self.read(config.eval_data, config, RowCounts()), config.eval_data
        if not config.eval_split:
            return rm, pairs, None, None
        order = list(range(len(pairs)))
        random.Random(config.seed).shuffle(order)
        held = set(order[: max(1, round(config.eval_split * len(pairs)))])
        train = VisionPairs(p for i, p in enumerate(pairs) if i not in held)
        return (
            rm,
            train,
            VisionPairs(p for i, p in enumerate(pairs) if i in held),
            f"--eval-split {config.eval_split}",
        )

    def read(self, path: str, config: TrainConfig, stats: RowCounts) -> VisionPairs:
        """The tokenised pairs of the data file ``path`` (dropped ones counted in ``stats``)."""
        reading = kinds.Reading.of(config)
        examples = list(kinds.VisionKind().pairs(path, reading))
        out = VisionPairs()
        for ex, rows in zip(examples, self.tokenizer.tokenize(examples), strict=True):
            stats.add(rows, ex.notes)
            if rows is not None:
                margin = ex.margin if config.use_margin and ex.margin is not None else 0.0
                out.append(
                    VisionPair(rows[0], rows[1], margin, ex.subset(getattr(config, "subset_column", None)))
                )
        if not out:
            raise RMKitError(f"{path}: no pair left to train on")
        return out

    def lengths(self, items: list[VisionPair]) -> list[int]:
        return [2 * p.length for p in items]

    def stand_in(self, pad_id: int) -> VisionPair:
        return VisionPair(VisionRow([pad_id]), VisionRow([pad_id]))

    def forward(
        self,
        model: nn.Module,
        chunk: list[VisionPair],
        pad_id: int,
        config: TrainConfig,
        device: torch.device,
    ):
        """``(loss per pair, a function counting the chunk into some totals)``: each pair's images encoded
        once (:meth:`rmkit.vlm.VisionRewardModel.encode`), its shared prefix run once where ``sharing`` says
        (:func:`plan_pairs`), else its two rows in one forward pass."""
        plan = plan_pairs(model, chunk, self.sharing)
        loss, chosen, rejected = pair_scores(model, chunk, config, shared=True, plan=plan)
        tokens = sum(len(p.chosen.ids) + len(p.rejected.ids) for p in chunk)
        counts = (len(plan[0]), sum(n for n, _ in plan[0]))  # pairs shared, prefix tokens not run again
        return loss, lambda totals: totals.add(loss, chosen, rejected, tokens, *counts)

    @torch.no_grad()
    def heldout(self, rm: Any, items: Any, config: TrainConfig, d: Dist) -> dict[str, Any]:
        was_training = rm.training
        rm.eval()
        totals, budget = Totals(), config.eval_batch_tokens
        for idx in token_budget_batches(self.lengths(items), budget, None):
            batch = [items[i] for i in idx]
            plan = plan_pairs(rm, batch, self.sharing)
            totals.add(*pair_scores(rm, batch, config, shared=True, plan=plan), 0)
        rm.train(was_training)
        return totals.metrics()


def plan_pairs(model: Any, pairs: list[VisionPair], sharing: str) -> tuple[list, list[int]]:
    """Which pairs of the rows ``[chosen_1 .. chosen_B, rejected_1 .. rejected_B]`` run after one pass over
    their shared prefix, images and all (:func:`rmkit.vlm_sharing.plan`; ``auto``: a prefix of ``MIN_SHARED``
    tokens or more, ``on``: every pair whose prefix holds its images, ``off``: none), and the rows that run
    whole."""
    n = len(pairs)
    if sharing == "off":
        return [], list(range(2 * n))
    rows = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    least = {"on": 1}.get(sharing, MIN_SHARED)
    return vlm_sharing.plan(rows, [[i, i + n] for i in range(n)], model.tokens.image_id, least)


def pair_scores(
    model: Any,
    pairs: list[VisionPair],
    config: TrainConfig,
    shared: bool,
    plan: tuple[list, list[int]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair loss (B,) and the chosen and rejected end scores (B,) of ``pairs``: the rows ``[chosen_1 ..
    chosen_B, rejected_1 .. rejected_B]``, each pair's images encoded once with ``shared``, else once a row
    (the unshared step, which gives the same numbers). The pairs of ``plan`` (:func:`plan_pairs`) run their
    shared prefix once, then both answers after it (:mod:`rmkit.vlm_sharing`: the same loss and
    gradients); the rest in one forward pass. Without ``plan`` every row runs whole."""
    rows = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    shares, alone = plan or ([], list(range(len(rows))))
    parts = list(vlm_sharing.scores(model, rows, shares, 1 << 62, None)) if shares else []
    if alone:
        whole = [rows[i] for i in alone]
        features = model.encode(whole, 1 << 62) if shared else None
        parts.append((alone, model(**model.batch(whole, features)).end_scores))
    order = torch.tensor([i for members, _ in parts for i in members])
    scores = torch.cat([values for _, values in parts])[order.argsort()]
    chosen, rejected = scores.float().chunk(2)
    margin = torch.tensor([p.margin for p in pairs]) if any(p.margin for p in pairs) else None
    loss = bradley_terry(chosen, rejected, margin, score_reg=config.score_reg, center=config.center_rewards)
    return loss, chosen, rejected


def sharing_refused(config: TrainConfig) -> str | None:
    """Why a vision-language RM's pairs cannot run their shared prefix once in this run (``None``: they can)."""
    if config.gradient_checkpointing:
        return "gradient checkpointing runs the language model without the prefix's cache"
    return None


def freeze(rm: Any, parts: list[str]) -> dict[str, int]:
    """Stop the gradients of the ``parts`` (vision, projector) of ``rm``'s family; the parameters frozen by
    part. An unknown part is an error."""
    unknown = sorted(set(parts) - set(FREEZABLE))
    if unknown:
        raise RMKitError(f"--freeze {','.join(unknown)}: a vision-language RM freezes {', '.join(FREEZABLE)}")
    frozen = dict.fromkeys(parts, 0)
    family = rm.family
    for name, param in rm.model.named_parameters():
        part = (
            "projector"
            if name.startswith(family.projector)
            else "vision"
            if name.startswith(family.vision)
            else None
        )
        if part in frozen:
            param.requires_grad_(False)
            frozen[part] += param.numel()
    if frozen:
        log.info("frozen: %s", ", ".join(f"{part} {n:,} parameters" for part, n in frozen.items()))
    return frozen
