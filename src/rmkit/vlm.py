"""VisionRewardModel: a vision-language model (Qwen-VL, LLaVA, Idefics3, Gemma3 families) read as a reward model.

The model is the checkpoint's own transformers VLM (``Qwen2VLForConditionalGeneration``, unmodified, its LM
head unused; what differs between the families is a :class:`rmkit.vlm_families.Family`) plus a linear value head on the language
model's last hidden state, read at each sequence's last real token (found from the attention mask, so either
padding gives the same score)::

    score = v_head.summary.weight · h[last real token] + v_head.summary.bias

That is the layout of Skywork-VL-Reward and LLaMA-Factory's reward models (and what align-anything's VLM
RMs compute, which read ``[:, -1]`` instead: with right padding the shorter answer of a pair is scored at a
pad token). A checkpoint is the VLM's directory plus ``value_head.safetensors`` (``v_head.summary.weight``
(1, H), ``.bias`` (1,); a ``.bin`` only with ``allow_pickle``); also read, without remote code: transformers'
``Gemma3ForSequenceClassification`` (``score.weight``) and align-anything's (``score_head.weight`` among the
VLM's weights, no bias). rmkit writes the first, its settings under ``"rmkit"`` in ``config.json``.

Scoring takes rows of :class:`rmkit.data.processing.VisionRow` (ids with each image's tokens expanded, the
images' patches and grids) through the language model in token-budget batches, longest first. The images of
each example run through the vision encoder once, when the first batch that needs them comes (in passes of
at most the budget's count of patches), and their features stay until its last row has run: a pair's two
answers (and best-of-N's N) share that pass. An example's videos (Qwen2-VL, Qwen2.5-VL: the rows'
:class:`rmkit.data.processing.Clips`) run through the encoder the same way, once for all its answers. Given
the groups of rows answering one prompt, the prompt itself, images and all, runs once through the language
model and the answers after it (:mod:`rmkit.vlm_sharing`; rows with videos run whole).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import AutoConfig, AutoModelForImageTextToText, AutoTokenizer, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

from rmkit import inference, vlm_sharing
from rmkit.checkpoints import ensure_pad_token, save_model
from rmkit.data import RowCounts, padded_on, token_budget_batches
from rmkit.data.processing import VisionRow, VisionTokenizer
from rmkit.defaults import BATCH_TOKENS, MAX_ROWS, METADATA_KEY
from rmkit.errors import RMKitError
from rmkit.layouts import VALUE_HEAD_FILES
from rmkit.lean import as_matmul, read_only_at
from rmkit.modeling import HeldModel, RewardOutput
from rmkit.packing import last_real
from rmkit.runtime import keep_fp32, resolve_device, resolve_dtype
from rmkit.vlm_families import FAMILIES
from rmkit.vlm_heads import HEAD, read_score_head, read_value_head

REGRESSION_TOKEN = "<|regression|>"  # DocReward: appended to each conversation, its state read


class VisionRewardModel(HeldModel):
    """A VLM with a value head (module docstring), its tokenizer, image processor and rmkit metadata."""

    auto_class = AutoModelForImageTextToText
    reads_images = True  # the inference core hands it rows with their images (rmkit.inference)
    families: dict[str, Any] = FAMILIES  # what differs by model type (rmkit.alm's model has its own)
    kind, preparer = "vision", VisionTokenizer  # its kind's name in the settings; its example tokenizer

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: Any,
        processor: Any,
        metadata: dict[str, Any] | None = None,
        head: nn.Linear | None = None,
    ):
        super().__init__()
        ensure_pad_token(tokenizer)
        self.model, self.tokenizer, self.processor = model, tokenizer, processor
        as_matmul(model)  # Qwen's Conv3d patch embedding as the matrix product it is (rmkit.lean)
        self.metadata: dict[str, Any] = dict(metadata or getattr(model.config, METADATA_KEY, None) or {})
        self.family = self.families[model.config.model_type]
        hidden = model.config.get_text_config().hidden_size
        self.head = head if head is not None else nn.Linear(hidden, 1)
        keep_fp32(self.head)
        self.tokens = self.family.tokens(model.config, processor, tokenizer)
        self.video: dict[str, Any] = {}  # the videos' sampling: fps, max_frames (rmkit.data.video)
        self.external = False  # the value-head layout without rmkit's settings (example_tokenizer)
        self.prefix_sharing = True  # a group's answers after one pass over its prefix (score_rows)
        self.measured_pass_cost: float | None = None  # pass_cost's measure (a resumed run sets it back)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        dtype: str | torch.dtype = "auto",
        device: str | torch.device | None = None,
        allow_pickle: bool = False,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        video_fps: float | None = None,
        max_frames: int | None = None,
        **_: Any,
    ) -> VisionRewardModel:
        """The VLM RM at ``path`` (module docstring); a VLM without a value head gets a fresh one (to train).
        ``min_pixels``/``max_pixels`` bound each image's (and video frame's) size after the image processor's
        resize; ``video_fps`` and ``max_frames`` are the videos' sampling (:mod:`rmkit.data.video`)."""
        from transformers import AutoImageProcessor

        target = resolve_device(device) if device is not None else torch.device("cpu")
        config = AutoConfig.from_pretrained(str(path))
        if config.model_type not in FAMILIES:
            raise RMKitError(
                f"{path}: rmkit reads {', '.join(FAMILIES)} as vision-language RMs, not {config.model_type}"
            )
        if (video_fps is not None and video_fps <= 0) or (max_frames is not None and max_frames < 1):
            raise RMKitError(f"--video-fps {video_fps} --max-frames {max_frames}: both must be positive")
        sizes = {k: v for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v}
        if sizes and not FAMILIES[config.model_type].pixel_bounds:
            raise RMKitError(
                f"{path}: --min-pixels/--max-pixels bound Qwen's image processors; {config.model_type}'s image "
                "sizes are its image processor's own settings (preprocessor_config.json)"
            )
        model = _backbone(config).from_pretrained(str(path), dtype=resolve_dtype(dtype, target))
        processor = AutoImageProcessor.from_pretrained(str(path), backend="pil", **sizes)
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        rm = cls.assembled(Path(path), model, tokenizer, processor, allow_pickle=allow_pickle, device=device)
        rm.video = {k: v for k, v in (("fps", video_fps), ("max_frames", max_frames)) if v}
        return rm

    @classmethod
    def assembled(
        cls,
        path: Path,
        model: PreTrainedModel,
        tokenizer: Any,
        processor: Any,
        *,
        allow_pickle: bool,
        device: Any,
    ) -> VisionRewardModel:
        """The RM of a loaded ``model`` and the value head stored beside it at ``path`` (a fresh one, marked
        ``fresh_head``, where there is none), on ``device``, in eval mode."""
        value_head = read_value_head(path, allow_pickle)
        head = value_head or read_score_head(path) or getattr(model, "score", None)
        hidden = model.config.get_text_config().hidden_size
        if head is None:  # a VLM without a value head: rmkit train starts from it, the scorers refuse it
            model.fresh_head = [HEAD]
        elif head.weight.shape[1] != hidden:
            raise RMKitError(
                f"{path}: its value head reads {head.weight.shape[1]} features, its model has {hidden}"
            )
        rm = cls(model, tokenizer, processor, head=head)
        rm.external = value_head is not None and not rm.metadata
        if device is not None:
            rm.to(resolve_device(device))
        return rm.eval()

    def with_model(self, model: PreTrainedModel) -> VisionRewardModel:
        """The same reward model around another ``model`` of the same config (FSDP's gathered copy); its head
        is a fresh one, for the caller's state dict to fill."""
        rm = type(self)(model, self.tokenizer, self.processor, self.metadata)
        rm.video, rm.external = self.video, self.external
        return rm

    def example_tokenizer(
        self, *, max_length: int | None = None, template: str | None = None, truncation: str = "left"
    ) -> VisionTokenizer:
        """The :class:`VisionTokenizer` of this model, defaulting to the settings it was trained with. A
        conversation ends on the token whose state the head reads: the settings' ``end_token_id``, else a
        ``<|regression|>`` token where the tokenizer has one (DocReward's special-token head), else EOS.

        Whether it is appended: as rmkit's settings say (``add_eos``; rmkit's own checkpoints, and a backbone
        without a head that rmkit trains, append EOS). A ``value_head`` checkpoint without rmkit's settings
        (``external``) gets DocReward's token appended and nothing else: its head reads the rendered
        conversation's last token, where its authors' code reads it (Skywork-VL-Reward's model card and
        LLaMA-Factory's pairwise data: the chat template's text, ``...<|im_end|>\n`` for Qwen, read at the
        last real token; DocReward: that text, then ``<|regression|>``). align-anything's ``score_head``
        checkpoints get EOS, as its preference data appends ``eos_token`` to each conversation."""
        end = self.metadata.get("end_token_id", self.tokenizer.get_added_vocab().get(REGRESSION_TOKEN))
        return self.preparer(
            self.tokenizer,
            self.processor,
            self.tokens,
            **self.video,
            max_length=max_length or self.max_length,
            template=template or self.metadata.get("template", "auto"),
            truncation=truncation,
            add_eos=self.metadata.get("add_eos", end is not None if self.external else True),
            end_id=end,
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        token_scores: bool = False,
        right_padded: bool | None = None,
        image_features: Sequence[torch.Tensor] | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        video_grid_thw: torch.Tensor | None = None,
        second_per_grid_ts: torch.Tensor | None = None,
        video_features: Sequence[torch.Tensor] | None = None,
    ) -> RewardOutput:
        """End scores (B,) of a padded batch (either side), its images' ``pixel_values`` (P, D) and
        ``image_grid_thw`` (N, 3) in the order their tokens come; ``scores`` (B, L) with ``token_scores``.
        ``image_features`` (one (tokens, H) tensor an image, from :meth:`encode`) stand for ``pixel_values``:
        the vision encoder then does not run. Videos alike: ``pixel_values_videos`` (or ``video_features``),
        ``video_grid_thw`` and ``second_per_grid_ts`` (one a video)."""
        videos = (pixel_values_videos, video_grid_thw, second_per_grid_ts, video_features)
        ends = last_real(attention_mask)
        with read_only_at(self.model, None if token_scores else ends):
            hidden = self.run(
                input_ids,
                attention_mask,
                pixel_values,
                image_grid_thw,
                image_features,
                videos,
                use_cache=False,
            ).last_hidden_state
        return self.read_out(hidden, attention_mask, token_scores, ends)

    def read_out(
        self,
        hidden: torch.Tensor,
        attention_mask: torch.Tensor,
        token_scores: bool,
        end_index: torch.Tensor | None = None,
    ) -> RewardOutput:
        """The head on ``hidden`` (B, L, H): at each row's last real token (the mask's last 1, or ``end_index``
        where the caller has it), everywhere with ``token_scores``."""
        end_index = last_real(attention_mask) if end_index is None else end_index
        at_end = hidden[torch.arange(len(end_index), device=hidden.device), end_index]
        scores = self.head(hidden.float()).squeeze(-1) if token_scores else None
        return RewardOutput(scores, self.head(at_end.float()).squeeze(-1), end_index)

    def run(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        image_features: Sequence[torch.Tensor] | None = None,
        videos: tuple[Any, Any, Any, Any] = (None, None, None, None),
        **extra: Any,
    ) -> Any:
        """The VLM's output for :meth:`forward`'s inputs (``last_hidden_state``, and ``past_key_values`` with
        ``use_cache``); ``videos`` are its ``(pixel_values_videos, video_grid_thw, second_per_grid_ts,
        video_features)``; ``extra`` goes to the model as it is, over the family's inputs (``position_ids``, a
        cache: prefix sharing, :mod:`rmkit.vlm_sharing`)."""
        pixel_values_videos, video_grid_thw, seconds, video_features = videos
        images = image_grid_thw is not None
        kwargs = self.family.inputs(input_ids, attention_mask, self.tokens.image_id, image_grid_thw)
        encoded = {}
        if images and image_features is not None:
            encoded["image"] = self.family.encoder_outputs(list(image_features))
        elif images:
            kwargs["pixel_values"] = pixel_values
        if video_grid_thw is not None:
            kwargs = self.family.with_videos(kwargs, input_ids, self.tokens.video_id, video_grid_thw, seconds)
            if video_features is not None:
                encoded["video"] = BaseModelOutputWithPooling(pooler_output=list(video_features))
            else:
                kwargs["pixel_values_videos"] = pixel_values_videos
        if encoded:
            kwargs["mm_encoder_outputs"] = encoded
        return self.model.model(input_ids=input_ids, attention_mask=attention_mask, **{**kwargs, **extra})

    @torch.inference_mode()
    def score_rows(
        self,
        rows: Sequence[VisionRow],
        batch_tokens: int | None = None,
        max_rows: int | None = MAX_ROWS,
        groups: Sequence[Sequence[int]] | None = None,
        stats: RowCounts | None = None,
        batch_cost: float | None = None,
    ) -> list[float]:
        """End scores of prepared rows, in the order given, in token-budget batches. Each example's images
        run through the vision encoder once (the answers of a pair or a best-of-N row share them): encoded
        when the first batch that needs them comes, kept until the last one has run, so the features held
        are those of the rows still waiting that were encoded already, never a whole chunk's.

        ``groups`` (indices of rows answering one prompt) turn on prefix sharing where ``prefix_sharing``
        is on: a group's shared prefix, images and all, runs once and its answers after it
        (:mod:`rmkit.vlm_sharing`; the same scores), a row that repeats one of its group takes that one's
        score; ``stats`` counts it as the text scorer does. The prefixes and the answers after them are cut
        into passes by length where that pays: ``batch_cost``, a pass's fixed cost in tokens' worth of work
        (default: :meth:`pass_cost`, measured once)."""
        budget = batch_tokens or BATCH_TOKENS
        rows = [r if isinstance(r, VisionRow) else VisionRow(list(r)) for r in rows]  # ids alone: text
        scores = [0.0] * len(rows)
        alone, copies = list(range(len(rows))), {}
        if groups and self.prefix_sharing:  # rows with videos run whole (their positions are not split)
            groups = [[i for i in g if rows[i].videos is None] for g in groups]
            groups, copies = vlm_sharing.unique(rows, [g for g in groups if len(g) > 1])
            shares, alone = vlm_sharing.plan(rows, groups, self.tokens.image_id)
            alone = sorted({*alone, *(i for i, r in enumerate(rows) if r.videos is not None)} - set(copies))
            vlm_sharing.count(shares, groups, stats)
            cost = batch_cost or (self.pass_cost() if shares else 0.0)
            for members, values in vlm_sharing.scores(self, rows, shares, budget, max_rows, cost):
                for i, value in zip(members, values.tolist(), strict=True):
                    scores[i] = value
        waiting = Counter(id(m) for i in alone for m in _media(rows[i]))
        features: dict[int, tuple[torch.Tensor, ...]] = {}
        for batch in token_budget_batches([len(rows[i].ids) for i in alone], budget, max_rows):
            part = [rows[alone[b]] for b in batch]
            features.update(
                self.encode([r for r in part if any(id(m) not in features for m in _media(r))], budget)
            )
            out = self(**self.batch(part, features))
            for b, value in zip(batch, out.end_scores.tolist(), strict=True):
                scores[alone[b]] = value
            for m in (m for r in part for m in _media(r)):
                waiting[id(m)] -= 1
                if not waiting[id(m)]:
                    del features[id(m)]
        for i, first in copies.items():
            scores[i] = scores[first]
        return scores

    def pass_cost(self) -> float:
        """The fixed cost of one pass of this model on its device in tokens' worth of work
        (:func:`rmkit.inference.batch_cost`, text rows of 8 and 128 tokens), measured the first time it is
        asked for and kept; rounded up to a power of two, so that reruns cut their passes alike (up: a pass
        after a shared prompt also copies the prompt's keys and values, which the probe's rows do not)."""
        if self.measured_pass_cost is None:
            measured = inference.batch_cost(self, short=8, long=128, repeats=2)
            self.measured_pass_cost = float(2 ** math.ceil(math.log2(max(measured, 1.0))))
        return self.measured_pass_cost

    def encode(self, rows: Sequence[VisionRow], budget: int) -> dict[int, tuple[torch.Tensor, ...]]:
        """The vision encoder's features of each distinct image set of ``rows`` (by the ``id`` of its patches),
        one (tokens, H) tensor an image; sets batched up to ``budget`` patches a pass. Each distinct set of
        videos alike (by the ``id`` of its :class:`~rmkit.data.processing.Clips`), one tensor a video."""
        sets = list({id(r.patches): r for r in rows if r.patches is not None}.values())
        costs = [len(r.patches) for r in sets]
        features: dict[int, tuple[torch.Tensor, ...]] = {}
        for group in token_budget_batches(costs, budget, None):
            batch = self.batch([sets[i] for i in group])
            out = self.family.features(self.model.model, batch["pixel_values"], batch["image_grid_thw"])
            start = 0
            for i in group:
                features[id(sets[i].patches)] = tuple(out[start : start + len(sets[i].grids)])
                start += len(sets[i].grids)
        clips = list({id(r.videos): r.videos for r in rows if r.videos is not None}.values())
        for group in token_budget_batches([len(c.patches) for c in clips], budget, None):
            batch = self._videos([clips[i] for i in group])
            out = self.family.video_features(
                self.model.model, batch["pixel_values_videos"], batch["video_grid_thw"]
            )
            start = 0
            for i in group:
                features[id(clips[i])] = tuple(out[start : start + len(clips[i].grids)])
                start += len(clips[i].grids)
        return features

    def batch(
        self, rows: Sequence[VisionRow], features: dict[int, tuple[torch.Tensor, ...]] | None = None
    ) -> dict[str, Any]:
        """The model's input of ``rows``: ids right-padded, and their images (patches, or the ``features`` of
        :meth:`encode`) and grids in row order. A set of images shared by several rows is given once in its
        patches, and each row's features."""
        ids, mask = padded_on([r.ids for r in rows], self.pad_token_id, self.device)
        batch: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "right_padded": True}
        batch.update(self._videos([r.videos for r in rows if r.videos is not None], features))
        with_images = [r for r in rows if r.patches is not None]
        if not with_images:
            return batch
        grids = [g for r in with_images for g in r.grids]
        batch["image_grid_thw"] = torch.tensor(grids, dtype=torch.long, device=self.device)
        if features is not None:
            batch["image_features"] = [f for r in with_images for f in features[id(r.patches)]]
        else:
            dtype = next(self.model.get_submodule(self.family.vision.rstrip(".")).parameters()).dtype
            patches = self.family.pixels([r.patches for r in with_images])
            batch["pixel_values"] = torch.from_numpy(patches).to(self.device, dtype)
        return batch

    def _videos(
        self, clips: Sequence[Any], features: dict[int, tuple[torch.Tensor, ...]] | None = None
    ) -> dict:
        """The model's video inputs of ``clips`` (one :class:`~rmkit.data.processing.Clips` a row that has
        videos, in row order, each row with its own copy): ``video_grid_thw``, ``second_per_grid_ts``, and
        ``pixel_values_videos``, or the ``video_features`` of :meth:`encode` where ``features`` are given."""
        if not clips:
            return {}
        out: dict[str, Any] = {
            "video_grid_thw": torch.tensor(
                [g for c in clips for g in c.grids], dtype=torch.long, device=self.device
            ),
            "second_per_grid_ts": torch.tensor([s for c in clips for s in c.seconds], device=self.device),
        }
        if features is not None:
            out["video_features"] = [f for c in clips for f in features[id(c)]]
        else:
            dtype = next(self.model.get_submodule(self.family.vision.rstrip(".")).parameters()).dtype
            pixels = self.family.video_pixels([c.patches for c in clips])
            out["pixel_values_videos"] = torch.from_numpy(pixels).to(self.device, dtype)
        return out

    def save_pretrained(self, path: str | Path, metadata: dict[str, Any] | None = None) -> None:
        """Write the VLM's checkpoint, its tokenizer and image processor, and ``value_head.safetensors``."""
        self.metadata.update(metadata or {})
        self.metadata["kind"] = self.kind

        def extra(folder: Path) -> None:
            self.processor.save_pretrained(str(folder))
            bias = self.head.bias if self.head.bias is not None else torch.zeros(1)  # a bias-free head's: 0
            head = {f"{HEAD}.weight": self.head.weight, f"{HEAD}.bias": bias}
            save_file(
                {k: v.detach().float().cpu().contiguous() for k, v in head.items()},
                str(folder / VALUE_HEAD_FILES[0]),
            )

        save_model(self.model, self.tokenizer, self.metadata, Path(path), extra=extra)


def _media(row: VisionRow) -> list[Any]:
    """The image and video sets of ``row`` (its patches, its clips): what the encoder runs once a set."""
    return [m for m in (row.patches, row.videos) if m is not None]


def _backbone(config: Any) -> Any:
    """The transformers class of the checkpoint: its own ``...ForSequenceClassification`` (Gemma3's standard
    RM checkpoint, whose ``score`` is the head: the VLM's ``model`` plus ``score.weight``), else the VLM."""
    import transformers

    names = [a for a in config.architectures or [] if a.endswith("ForSequenceClassification")]
    if names and hasattr(transformers, names[0]):
        if getattr(config, "num_labels", 1) != 1:
            raise RMKitError(f"{names[0]} with {config.num_labels} labels: a reward model has one")
        return getattr(transformers, names[0])
    return AutoModelForImageTextToText
