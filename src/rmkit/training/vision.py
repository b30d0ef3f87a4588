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

The loop's other options hold as for text pairs: the loss variants (``--score-reg``, ``--center-rewards``,
the data's margins, ``--loss token_wise``, read from the same forward pass where a pair's rows part),
``--dtype bf16`` and ``bf16-weights`` (the value head stays fp32), ``--resume``, and several processes under
``torchrun``, each taking its share of every batch and of the held-out pairs. DDP finds each step's unused
parameters (the vision encoder on a batch without images). Under FSDP (``--fsdp``) the vision encoder stays
in the root unit, each row runs its images through it inside the sharded forward (the same numbers; a pass
outside it would read unsharded weights), and a pass without images carries a blank-image stand-in pair,
its loss left out, so that every process reduces the encoder's gradients together (:meth:`VisionPairTask.stand_in`).
``--lora`` puts adapters on the language model's linear layers (:func:`lora_modules`), not the vision
encoder's or its projector's unless ``--lora-target-modules`` names them; the value head trains whole, the
unused LM head not at all; the adapters are merged at save, so the checkpoint is the plain VLM plus its value
head. ``--packing on`` is refused (a row's images and M-RoPE positions are its own).

:class:`rmkit.training.audio.AudioPairTask` trains an audio RM (:mod:`rmkit.alm`) the same way, its clips in
place of images (``--freeze audio,projector``), in one process with the bt loss and without LoRA (refused).
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
from rmkit.losses import bradley_terry, divergence_index, token_wise
from rmkit.training.config import TrainConfig
from rmkit.training.parallel import Dist
from rmkit.training.step import PairTask, Totals, merged

log = logging.getLogger(__name__)


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

    kind: kinds.Kind = kinds.VisionKind()  # whose data reader reads the pairs
    lora_task = None  # peft's plain LoRA model: the value head is rmkit's module, outside the VLM
    sharded = False  # FSDP: each row's images run inside the sharded model's forward
    world = 1  # processes (several: the prefix is not shared, sharing_refused)

    def load(self, config: TrainConfig) -> Any:
        """The model to train, a value head on it (a fresh one where it has none)."""
        from rmkit.vlm import VisionRewardModel

        return VisionRewardModel.from_pretrained(
            config.model,
            allow_pickle=config.allow_pickle,
            min_pixels=config.min_pixels,
            max_pixels=config.max_pixels,
            video_fps=config.video_fps,
            max_frames=config.max_frames,
        )

    def prepare(self, config: TrainConfig, stats: RowCounts, d: Dist) -> tuple[Any, Any, Any, str | None]:
        refused(config)
        self.sharded, self.world = d.sharded, d.world
        rm = self.load(config)
        rm.model.fresh_head = None
        output = rm.model.get_output_embeddings()
        if output is not None and output.weight is not rm.model.get_input_embeddings().weight:
            output.requires_grad_(False)  # the LM head: no score reads it (tied, it is the embeddings)
        self.frozen = freeze(rm, config.freeze or [])
        self.tokenizer = rm.example_tokenizer(
            max_length=config.max_length, template=config.template, truncation=config.truncation
        )
        if self.sharded:
            self.blank = blank_pair(self.tokenizer)
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

    def lora_modules(self, rm: Any) -> list[str]:
        return lora_modules(rm)

    def read(self, path: str, config: TrainConfig, stats: RowCounts) -> VisionPairs:
        """The tokenised pairs of the data file ``path`` (dropped ones counted in ``stats``)."""
        reading = kinds.Reading.of(config)
        examples = list(self.kind.pairs(path, reading))
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
        """The pair a process runs, its loss not counted, where it has none: FSDP's lockstep passes. It holds
        an image, so that every process's pass reaches the vision encoder, whose gradients are reduced together."""
        return self.blank if self.sharded else VisionPair(VisionRow([pad_id]), VisionRow([pad_id]))

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
        # FSDP: a chunk without images takes the stand-in along (its loss left out; see stand_in)
        blank = self.sharded and all(p.chosen.patches is None and p.rejected.patches is None for p in chunk)
        plan = plan_pairs(getattr(model, "module", model), chunk, "off" if blank else self.sharing)
        with autocast(config, device):
            loss, chosen, rejected = pair_scores(
                model, [*chunk, self.blank] if blank else chunk, config, shared=not self.sharded, plan=plan
            )
        if blank:
            loss, chosen, rejected = loss[:-1], chosen[:-1], rejected[:-1]
        tokens = sum(len(p.chosen.ids) + len(p.rejected.ids) for p in chunk)
        counts = (len(plan[0]), sum(n for n, _ in plan[0]))  # pairs shared, prefix tokens not run again
        return loss, lambda totals: totals.add(loss, chosen, rejected, tokens, *counts)

    @torch.no_grad()
    def heldout(self, rm: Any, items: Any, config: TrainConfig, d: Dist) -> dict[str, Any]:
        """The held-out figures of ``items``, each process scoring its share (``items[rank::world]``)."""
        was_training = rm.training
        rm.eval()
        totals, mine = Totals(), items[d.rank :: d.world]
        for idx in d.same_count(token_budget_batches(self.lengths(mine), config.eval_batch_tokens, None)):
            batch = [mine[i] for i in idx] or [self.stand_in(rm.pad_token_id)]
            with autocast(config, d.device):
                plan = plan_pairs(rm, batch, self.sharing if idx else "off")
                loss, chosen, rejected = pair_scores(rm, batch, config, shared=not self.sharded, plan=plan)
            if idx:
                totals.add(loss, chosen, rejected, 0)
        rm.train(was_training)
        return merged(d.gather(totals)).metrics()


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
    shared prefix once, then both answers after it (:mod:`rmkit.vlm_sharing`: the same loss and gradients);
    the rest in one forward pass. Without ``plan`` every row runs whole, in one pass, through ``model`` (DDP's
    wrapper where there is one); ``--loss token_wise`` reads every position's score of it (:func:`pair_loss`)."""
    rm = getattr(model, "module", model)  # DDP wraps the model (and is what the forward must go through)
    rows = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    shares, alone = plan or ([], list(range(len(rows))))
    if not shares:
        batch = rm.batch(rows, rm.encode(rows, 1 << 62) if shared else None)
        out = model(**batch, token_scores=config.loss == "token_wise")
        chosen, rejected = out.end_scores.float().chunk(2)
        return pair_loss(out, batch["input_ids"], pairs, config), chosen, rejected
    parts = list(vlm_sharing.scores(rm, rows, shares, 1 << 62, None))
    if alone:
        whole = [rows[i] for i in alone]
        features = rm.encode(whole, 1 << 62) if shared else None
        parts.append((alone, model(**rm.batch(whole, features)).end_scores))
    order = torch.tensor([i for members, _ in parts for i in members])
    scores = torch.cat([values for _, values in parts])[order.argsort().to(parts[0][1].device)]
    chosen, rejected = scores.float().chunk(2)
    margin = None
    if any(p.margin for p in pairs):
        margin = torch.tensor([p.margin for p in pairs], device=chosen.device)
    loss = bradley_terry(chosen, rejected, margin, score_reg=config.score_reg, center=config.center_rewards)
    return loss, chosen, rejected


def pair_loss(out: Any, ids: torch.Tensor, pairs: list[VisionPair], config: TrainConfig) -> torch.Tensor:
    """The per-pair loss (B,) of a forward's output ``out`` over the rows ``[chosen.., rejected..]`` (ids (2B, L),
    right-padded): Bradley-Terry on the end scores, or safe-rlhf's token-wise loss over the positions from
    where the two rows part to the later end; both with the pairs' margins and the regularisers."""
    chosen, rejected = out.end_scores.float().chunk(2)
    margin = None
    if any(p.margin for p in pairs):
        margin = torch.tensor([p.margin for p in pairs], device=chosen.device)
    if config.loss == "bt":
        return bradley_terry(
            chosen, rejected, margin, score_reg=config.score_reg, center=config.center_rewards
        )
    scores_c, scores_r = out.scores.float().chunk(2)
    end_c, end_r = out.end_index.chunk(2)
    ids_c, ids_r = ids.chunk(2)
    return token_wise(
        scores_c, scores_r, end_c, end_r, divergence_index(ids_c, ids_r), margin,
        score_reg=config.score_reg, center=config.center_rewards,
    )  # fmt: skip


def blank_pair(tokenizer: Any) -> VisionPair:
    """A pair of one-letter answers about one blank image (FSDP's stand-in, :meth:`VisionPairTask.stand_in`)."""
    from PIL import Image

    from rmkit.data.images import Picture
    from rmkit.data.vision import VisionExample

    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "?"}]}]
    image = Picture(Image.new("RGB", (56, 56)), "<blank>")
    return VisionPair(*tokenizer.tokenize([VisionExample(0, prompt, ["a", "b"], True, images=[image])])[0])


def refused(config: TrainConfig) -> None:
    """Refuse, in one line with the reason, the training options that do not apply to a vision-language RM."""
    if config.packing == "on":
        raise RMKitError(
            "--packing on: a vision-language RM's rows are not packed (each row carries its images, and Qwen's "
            "M-RoPE positions follow them); use --packing auto or off"
        )


def autocast(config: TrainConfig, device: torch.device) -> Any:
    """``--dtype bf16``'s autocast over the fp32 weights (off for the other dtypes); the head reads fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.dtype == "bf16")


def lora_modules(rm: Any) -> list[str]:
    """What ``--lora`` adapts in ``rm.model`` for ``--lora-target-modules all-linear`` (the default): every
    linear layer of the language model, by full name; not the vision encoder, its projector, the LM head or a
    score layer. Names given instead are matched by peft anywhere in the VLM, the vision encoder too."""
    family, output = rm.family, rm.model.get_output_embeddings()
    return [
        name
        for name, module in rm.model.named_modules()
        if isinstance(module, nn.Linear)
        and module is not output
        and not name.startswith((family.vision, family.projector))
        and name.split(".")[-1] not in ("score", "classifier")
    ]


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
    still = [[i, i + n] for i, p in enumerate(pairs) if p.chosen.videos is None and p.rejected.videos is None]
    return vlm_sharing.plan(rows, still, model.tokens.image_id, least)  # a pair with videos runs whole


def sharing_refused(config: TrainConfig, rm: Any, task: Any) -> str | None:
    """Why a vision-language RM's pairs cannot run their shared prefix once in this run (``None``: they can)."""
    if not rm.prefix_sharing:
        return "this model's forward runs its rows whole"
    if config.gradient_checkpointing:
        return "gradient checkpointing runs the language model without the prefix's cache"
    if config.loss == "token_wise":
        return "--loss token_wise reads each answer's padded score row"
    if task.world > 1:
        return "under torchrun the forward goes through DDP's or FSDP's wrapper, which runs rows whole"
    return None


def freeze(rm: Any, parts: list[str]) -> dict[str, int]:
    """Stop the gradients of the ``parts`` (vision, projector; an audio RM's audio, projector) of ``rm``'s
    family; the parameters frozen by part. An unknown part is an error."""
    family = rm.family
    prefixes = getattr(family, "parts", {"vision": family.vision, "projector": family.projector})
    unknown = sorted(set(parts) - set(prefixes))
    if unknown:
        raise RMKitError(f"--freeze {','.join(unknown)}: this RM freezes {', '.join(prefixes)}")
    frozen = dict.fromkeys(parts, 0)
    order = sorted(prefixes, key=lambda p: p != "projector")  # first: Qwen2-VL's sits in its encoder
    for name, param in rm.model.named_parameters():
        part = next((p for p in order if name.startswith(prefixes[p])), None)
        if part in frozen:
            param.requires_grad_(False)
            frozen[part] += param.numel()
    if frozen:
        log.info("frozen: %s", ", ".join(f"{part} {n:,} parameters" for part, n in frozen.items()))
    return frozen
