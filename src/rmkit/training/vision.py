"""``rmkit train`` on preference pairs with images: a vision-language RM (:mod:`rmkit.vlm`) through the loop.

The task reads the pairs as ``rmkit score`` does (:mod:`rmkit.data.vision`), tokenises them with the model's
:class:`~rmkit.data.processing.VisionTokenizer` (image tokens expanded; a row too long to keep its images
is dropped and counted) and trains with the Bradley-Terry family of losses, like :class:`PairTask`. Each
micro-batch runs each pair's images through the vision encoder once, the chosen and rejected rows then
reading the same features: the same loss and gradients as running the images once a row (a test checks
it), for half the encoder's work. The prompt's text tokens run once an answer (text prefix sharing is not
applied to VLMs). ``--freeze vision,projector`` stops the gradients of the vision encoder and of its
projector into the language model, matched by each family's module names (:data:`rmkit.vlm_families.FAMILIES`); the
parameters frozen are counted by module in the log and in ``metrics.json`` (``train.frozen``).

Not yet: LoRA, several processes (DDP, FSDP), ``--loss token_wise`` and ``--packing`` (refused in one line).
"""

from __future__ import annotations

import logging
import random
from typing import Any

import torch
from torch import nn

from rmkit import kinds
from rmkit.data import RowCounts, token_budget_batches
from rmkit.data.processing import VisionRow
from rmkit.errors import RMKitError
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
            video_fps=config.video_fps,
            max_frames=config.max_frames,
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
        once (:meth:`rmkit.vlm.VisionRewardModel.encode`), its two rows in one forward pass."""
        loss, chosen, rejected = pair_scores(model, chunk, config, shared=True)
        tokens = sum(len(p.chosen.ids) + len(p.rejected.ids) for p in chunk)
        return loss, lambda totals: totals.add(loss, chosen, rejected, tokens)

    @torch.no_grad()
    def heldout(self, rm: Any, items: Any, config: TrainConfig, d: Dist) -> dict[str, Any]:
        was_training = rm.training
        rm.eval()
        totals, budget = Totals(), config.eval_batch_tokens
        for idx in token_budget_batches(self.lengths(items), budget, None):
            batch = [items[i] for i in idx]
            totals.add(*pair_scores(rm, batch, config, shared=True), 0)
        rm.train(was_training)
        return totals.metrics()


def pair_scores(
    model: Any, pairs: list[VisionPair], config: TrainConfig, shared: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair loss (B,) and the chosen and rejected end scores (B,) of ``pairs`` in one forward pass: the
    rows ``[chosen_1 .. chosen_B, rejected_1 .. rejected_B]``, each pair's images encoded once with
    ``shared``, else once a row (the unshared step, which gives the same numbers)."""
    rows = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    features = model.encode(rows, 1 << 62) if shared else None
    margin = torch.tensor([p.margin for p in pairs]) if any(p.margin for p in pairs) else None
    out = model(**model.batch(rows, features))
    chosen, rejected = out.end_scores.float().chunk(2)
    loss = bradley_terry(chosen, rejected, margin, score_reg=config.score_reg, center=config.center_rewards)
    return loss, chosen, rejected


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
