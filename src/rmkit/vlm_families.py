"""The vision-language families rmkit reads (:data:`FAMILIES`, by ``model_type``): what differs between them.

Each :class:`Family` says the text an image part renders as without a chat template, the module names of the
vision encoder and its projector (for ``--freeze``), how an image's tokens are counted and marked (transformers'
processor rule of the family, applied by rmkit so no processor class, and no torchvision, is needed) and what
else the model's forward takes. :class:`rmkit.vlm.VisionRewardModel` asks its family; nothing else branches on
the model type.
"""

from __future__ import annotations

from typing import Any

import torch

from rmkit.data.processing import ImageTokens


class Family:
    """What differs between the vision-language families rmkit reads: the text an image part renders as
    without a chat template, the module names of the vision encoder and of its projector into the language
    model (for ``--freeze``), how an image's tokens are counted and marked (:meth:`tokens`, transformers'
    processor rule of the family) and what else the model's forward takes (:meth:`inputs`)."""

    image_text = "<|vision_start|><|image_pad|><|vision_end|>"
    video_text = "<|vision_start|><|video_pad|><|vision_end|>"
    vision, projector = "model.visual.", "model.visual.merger."
    timed = False  # its forward takes second_per_grid_ts (Qwen2.5-VL's temporal positions)

    def tokens(self, config: Any, processor: Any, tokenizer: Any) -> ImageTokens:
        """Qwen2-VL's rule: an image's ``<|image_pad|>`` (a video's ``<|video_pad|>``, where the tokenizer has
        the model's video token) becomes ``t·h·w / merge²`` tokens."""
        merge = int(processor.merge_size)
        video = getattr(config, "video_token_id", None)
        if video is None or tokenizer.get_vocab().get("<|video_pad|>") != video:
            video = None  # a tokenizer without the model's video token: its rows with video are refused
        return ImageTokens(
            int(config.image_token_id),
            self.image_text,
            lambda g: g[0] * g[1] * g[2] // merge**2,
            video_id=video,
            video_text=self.video_text,
        )

    def inputs(
        self, ids: torch.Tensor, mask: torch.Tensor, image_id: int, grids: torch.Tensor | None
    ) -> dict[str, Any]:
        """The forward's inputs beside ids and mask: Qwen's M-RoPE positions come from the mask and the
        ``image_grid_thw`` with images, from the mask alone without."""
        out: dict[str, Any] = {"mm_token_type_ids": (ids == image_id).int()}
        if grids is None:
            out["position_ids"] = _positions(mask)
        else:
            out["image_grid_thw"] = grids
        return out

    def with_videos(
        self,
        inputs: dict[str, Any],
        ids: torch.Tensor,
        video_id: int,
        grids: torch.Tensor,
        seconds: torch.Tensor,
    ) -> dict[str, Any]:
        """:meth:`inputs` of a batch with videos: their tokens marked 2 in ``mm_token_type_ids`` (transformers'
        rule: text 0, image 1, video 2), M-RoPE positions from the ``video_grid_thw`` too (and Qwen2.5-VL's
        ``second_per_grid_ts``)."""
        out = {k: v for k, v in inputs.items() if k != "position_ids"}
        out["mm_token_type_ids"] = inputs["mm_token_type_ids"] + 2 * (ids == video_id).int()
        out["video_grid_thw"] = grids
        if self.timed:
            out["second_per_grid_ts"] = seconds
        return out

    def features(self, model: Any, pixel_values: torch.Tensor, grids: torch.Tensor) -> list[torch.Tensor]:
        """One (tokens, H) tensor an image from the vision encoder and projector."""
        return list(model.get_image_features(pixel_values, grids).pooler_output)

    def video_features(
        self, model: Any, pixel_values: torch.Tensor, grids: torch.Tensor
    ) -> list[torch.Tensor]:
        """One (tokens, H) tensor a video from the vision encoder and projector."""
        return list(model.get_video_features(pixel_values, grids).pooler_output)

    def encoder_outputs(self, features: list[torch.Tensor]) -> Any:
        return features


class Llava(Family):
    """LLaVA: each ``<image>`` becomes ``(H/patch)·(W/patch)`` tokens, plus the CLIP encoder's class token,
    less one with the ``default`` feature selection (processing_llava's rule, read from the model's config)."""

    image_text = "<image>"
    vision, projector = "model.vision_tower.", "model.multi_modal_projector."

    def tokens(self, config: Any, processor: Any, tokenizer: Any) -> ImageTokens:
        vision = config.vision_config
        patch = int(vision.patch_size)
        extra = int(vision.model_type == "clip_vision_model") - int(
            config.vision_feature_select_strategy == "default"
        )
        return ImageTokens(
            int(config.image_token_id), self.image_text, lambda g: (g[1] // patch) * (g[2] // patch) + extra
        )

    def inputs(
        self, ids: torch.Tensor, mask: torch.Tensor, image_id: int, grids: torch.Tensor | None
    ) -> dict[str, Any]:
        return {"position_ids": _positions(mask)}

    def features(self, model: Any, pixel_values: torch.Tensor, grids: torch.Tensor) -> list[torch.Tensor]:
        return list(model.get_image_features(pixel_values).pooler_output)


class Gemma3(Llava):
    """Gemma3: the template's ``<start_of_image>`` becomes ``\\n\\n<start_of_image>``, ``mm_tokens_per_image``
    image tokens, ``<end_of_image>\\n\\n`` (processing_gemma3's rule: the text around the image tokens is
    written before tokenising, so its newlines merge with the text beside them as the processor's do);
    ``token_type_ids`` mark the image tokens, which attend to each other both ways."""

    image_text = "<start_of_image>"

    def tokens(self, config: Any, processor: Any, tokenizer: Any) -> ImageTokens:
        boi, count = int(config.boi_token_id), int(config.mm_tokens_per_image)
        return ImageTokens(
            int(config.image_token_id),
            self.image_text,
            lambda g: count,
            placeholder=boi,
            before=(boi,),
            wrap=("\n\n", "<end_of_image>\n\n"),
        )

    def inputs(
        self, ids: torch.Tensor, mask: torch.Tensor, image_id: int, grids: torch.Tensor | None
    ) -> dict[str, Any]:
        return {"position_ids": _positions(mask), "token_type_ids": (ids == image_id).long()}

    def encoder_outputs(self, features: list[torch.Tensor]) -> Any:
        return torch.stack(features)


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Each token's position among the real tokens of its row (so either padding gives the same positions)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


class Qwen25(Family):
    """Qwen2.5-VL: Qwen2-VL's rules; a video's temporal positions are spaced by its ``second_per_grid_ts``."""

    timed = True


FAMILIES: dict[str, Family] = {
    "qwen2_vl": Family(), "qwen2_5_vl": Qwen25(), "llava": Llava(), "gemma3": Gemma3()
}  # fmt: skip
