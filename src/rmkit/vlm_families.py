"""The vision-language families rmkit reads (:data:`FAMILIES`, by ``model_type``): what differs between them.

Each :class:`Family` says the text an image part renders as without a chat template, the module names of the
vision encoder and its projector (for ``--freeze``), how an image's tokens are counted and marked (transformers'
processor rule of the family, applied by rmkit so no processor class, and no torchvision, is needed) and what
else the model's forward takes. :class:`rmkit.vlm.VisionRewardModel` asks its family; nothing else branches on
the model type.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import numpy as np
import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

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
    videos = True  # rmkit reads its videos (Qwen2-VL's frame grouping and M-RoPE rule)
    pixel_bounds = True  # its image processor reads min_pixels/max_pixels (--min-pixels, --max-pixels)

    def tokens(self, config: Any, processor: Any, tokenizer: Any) -> ImageTokens:
        """Qwen2-VL's rule: an image's ``<|image_pad|>`` (a video's ``<|video_pad|>``, where the tokenizer has
        the model's video token) becomes ``t·h·w / merge²`` tokens."""
        merge = int(processor.merge_size)
        video = getattr(config, "video_token_id", None)
        if not self.videos or video is None or tokenizer.get_vocab().get("<|video_pad|>") != video:
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

    def positions(
        self, model: Any, ids: torch.Tensor, mask: torch.Tensor, image_id: int, grids: torch.Tensor | None
    ) -> torch.Tensor:
        """Each token's position as the model's forward gives it (prefix sharing splits them): Qwen's M-RoPE
        (3, B, L) from the model's own ``get_rope_index`` with images, (B, L) among the real tokens without."""
        if grids is None:
            return _positions(mask)
        types = (ids == image_id).int()
        return model.get_rope_index(ids, types, image_grid_thw=grids, attention_mask=mask)[0]

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

    def video_pixels(self, patches: list[np.ndarray]) -> np.ndarray:
        """The ``pixel_values_videos`` of a batch from each row's (its videos' patches, one array a row)."""
        return np.concatenate(patches)

    def encoder_outputs(self, features: list[torch.Tensor]) -> Any:
        """What the model's ``mm_encoder_outputs["image"]`` takes for the features of :meth:`features`."""
        return BaseModelOutputWithPooling(pooler_output=features)

    def pixels(self, patches: list[np.ndarray]) -> np.ndarray:
        """The pixel values of a batch from each row's (its images' patches, one array a row)."""
        return np.concatenate(patches)


class Qwen3VL(Family):
    """Qwen3-VL: Qwen2-VL's image rule (its image processor with 16-pixel patches), and DeepStack: beside the
    merged features, the vision encoder's ``deepstack_merger_list`` gives features of some of its layers that
    are added to the language model's first layers' states at the image tokens (modeling_qwen3_vl). An
    image's features are kept as one (1 + layers, tokens, H) tensor: the merged ones, then each layer's."""

    projector = ("model.visual.merger.", "model.visual.deepstack_merger_list.")  # type: ignore[assignment]
    videos = False  # its videos take timestamps in the text and DeepStack features: not read yet

    def features(self, model: Any, pixel_values: torch.Tensor, grids: torch.Tensor) -> list[torch.Tensor]:
        out = model.get_image_features(pixel_values, grids)
        deep = out.deepstack_features
        return [torch.stack([f, *(layer[i] for layer in deep)]) for i, f in enumerate(out.pooler_output)]

    def encoder_outputs(self, features: list[torch.Tensor]) -> Any:
        from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures

        layers = range(1, len(features[0]))
        return BaseModelOutputWithDeepstackFeatures(
            pooler_output=[f[0] for f in features],
            deepstack_features=[[f[j] for f in features] for j in layers],
        )


class Llava(Family):
    """LLaVA: each ``<image>`` becomes ``(H/patch)·(W/patch)`` tokens, plus the CLIP encoder's class token,
    less one with the ``default`` feature selection (processing_llava's rule, read from the model's config)."""

    image_text = "<image>"
    vision, projector = "model.vision_tower.", "model.multi_modal_projector."
    pixel_bounds = False

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

    def positions(
        self, model: Any, ids: torch.Tensor, mask: torch.Tensor, image_id: int, grids: torch.Tensor | None
    ) -> torch.Tensor:
        return _positions(mask)

    def features(self, model: Any, pixel_values: torch.Tensor, grids: torch.Tensor) -> list[torch.Tensor]:
        return list(model.get_image_features(pixel_values).pooler_output)


class Gemma3(Llava):
    """Gemma3: the template's ``<start_of_image>`` becomes ``\\n\\n<start_of_image>``, ``mm_tokens_per_image``
    image tokens, ``<end_of_image>\\n\\n`` (processing_gemma3's rule: the text around the image tokens is
    written before tokenising, so its newlines merge with the text beside them as the processor's do);
    ``token_type_ids`` mark the image tokens, which attend to each other both ways (given where a batch has
    images: a text-only pass, a continuation after a shared prefix among them, is causal)."""

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
        types = {"token_type_ids": (ids == image_id).long()} if grids is not None else {}
        return {"position_ids": _positions(mask), **types}

    def encoder_outputs(self, features: list[torch.Tensor]) -> Any:
        return BaseModelOutputWithPooling(pooler_output=torch.stack(features))


class LlavaOnevision(Llava):
    """LLaVA-OneVision (processing_llava_onevision's rule): an example with one image has it cut into tiles of
    the image processor's size on the best of the ``image_grid_pinpoints`` grids, and its ``<image>`` becomes
    the base tile's features, then the tiles' unpadded to the image's aspect ratio (scaled down past
    ``vision_aspect_ratio``'s tile count) with one newline a row; an example with several images has each read
    as its base tile alone, plus one newline. rmkit gives the image processor one example's images as one
    sample (so the model's ``batch_num_images`` is its count) and keeps each image's grid as
    ``(images in its example, height, width)`` of the image as given. Its projector is the multi-modal
    projector and the learned newline feature."""

    projector = ("model.multi_modal_projector.", "model.image_newline")  # type: ignore[assignment]

    def tokens(self, config: Any, processor: Any, tokenizer: Any) -> ImageTokens:
        vision = config.vision_config
        side = int(vision.image_size) // int(vision.patch_size)
        tile = (int(processor.size["height"]), int(processor.size["width"]))
        most = int(config.vision_aspect_ratio.removeprefix("anyres_max_"))
        less = int(config.vision_feature_select_strategy == "default")

        def count(grid: tuple[int, int, int]) -> int:
            images, height, width = grid
            extra = (
                1 if images != 1 else _anyres(height, width, side, tile, processor.image_grid_pinpoints, most)
            )
            return side * side + extra - less

        return ImageTokens(int(config.image_token_id), self.image_text, count, images=_one_sample)

    def inputs(
        self, ids: torch.Tensor, mask: torch.Tensor, image_id: int, grids: torch.Tensor | None
    ) -> dict[str, Any]:
        out: dict[str, Any] = {"position_ids": _positions(mask)}
        if grids is not None:
            out.update(image_sizes=grids[:, 1:], batch_num_images=_per_example(grids[:, 0]))
        return out

    def features(self, model: Any, pixel_values: torch.Tensor, grids: torch.Tensor) -> list[torch.Tensor]:
        out = model.get_image_features(pixel_values, grids[:, 1:], batch_num_images=_per_example(grids[:, 0]))
        return list(out.pooler_output)

    def pixels(self, patches: list[np.ndarray]) -> np.ndarray:
        """Each row's (images, tiles, C, H, W) padded with zero tiles to the batch's most (the model reads
        each image's own count of tiles, from its size)."""
        most = max(p.shape[1] for p in patches)
        return np.concatenate([np.pad(p, [(0, 0), (0, most - p.shape[1])] + [(0, 0)] * 3) for p in patches])


class LlavaNext(LlavaOnevision):
    """LLaVA-NeXT (processing_llava_next's rule): every image is cut into tiles of the image processor's crop
    size on the best ``image_grid_pinpoints`` grid, and its ``<image>`` becomes the base tile's features (plus
    CLIP's class token, less one with the ``default`` feature selection), then the tiles' with the padding of
    the image's aspect ratio removed and one newline a row (no several-image mode, no scaling down). Its
    grid is ``(images in its example, height, width)`` as LLaVA-OneVision's; the forward takes
    ``image_sizes``."""

    def tokens(self, config: Any, processor: Any, tokenizer: Any) -> ImageTokens:
        vision = config.vision_config
        tile = (int(processor.crop_size["height"]), int(processor.crop_size["width"]))
        side = tile[0] // int(vision.patch_size)  # square tiles (the processor counts each side alike)
        extra = int(vision.model_type == "clip_vision_model") - int(
            config.vision_feature_select_strategy == "default"
        )

        def count(grid: tuple[int, int, int]) -> int:
            _, height, width = grid
            return (
                side * side + extra + _anyres(height, width, side, tile, processor.image_grid_pinpoints, None)
            )

        return ImageTokens(int(config.image_token_id), self.image_text, count, images=_one_sample)

    def inputs(
        self, ids: torch.Tensor, mask: torch.Tensor, image_id: int, grids: torch.Tensor | None
    ) -> dict[str, Any]:
        out: dict[str, Any] = {"position_ids": _positions(mask)}
        if grids is not None:
            out["image_sizes"] = grids[:, 1:]
        return out

    def features(self, model: Any, pixel_values: torch.Tensor, grids: torch.Tensor) -> list[torch.Tensor]:
        return list(model.get_image_features(pixel_values, grids[:, 1:]).pooler_output)


class LlavaNextVideo(LlavaNext):
    """LLaVA-NeXT-Video: its images as LLaVA-NeXT's; a video's sampled frames each resized to the image
    processor's ``size`` (shortest edge), centre-cropped to its ``crop_size``, rescaled and normalised (the rule
    of transformers' ``LlavaNextVideoVideoProcessor``, with the image processor's settings: rmkit runs it
    without torchvision), one ``(frames, C, H, W)`` array a video, its grid ``(frames, H, W)``. Each frame runs
    through the vision tower alone; its patch features, the class token dropped, are pooled
    ``spatial_pool_stride``-fold a side (``spatial_pool_mode``), so the ``<video>`` token becomes
    ``frames · (H/patch)·(W/patch) / 4`` tokens (processing_llava_next_video's count, for its stride 2). The
    forward takes ``pixel_values_videos`` (videos, frames, C, H, W): rmkit gives a batch's videos as one of
    all their frames (the tower reads each frame alone, so the features are those of one a video)."""

    projector = ("model.multi_modal_projector.", "model.image_newline", "model.vision_resampler.")  # type: ignore

    def tokens(self, config: Any, processor: Any, tokenizer: Any) -> ImageTokens:
        images = super().tokens(config, processor, tokenizer)
        patch, video = int(config.vision_config.patch_size), int(config.video_token_id)
        return dataclasses.replace(
            images,
            video_id=video if tokenizer.get_vocab().get("<video>") == video else None,
            video_text="<video>",
            video_count=lambda g: g[0] * ((g[1] // patch) * (g[2] // patch) // 4),
            frames=_frames,
        )

    def with_videos(self, inputs: dict[str, Any], *_: Any) -> dict[str, Any]:
        return inputs  # its video tokens are found from the ids, its positions from the mask

    def video_features(
        self, model: Any, pixel_values: torch.Tensor, grids: torch.Tensor
    ) -> list[torch.Tensor]:
        (out,) = model.get_video_features(pixel_values).pooler_output  # (all frames' tokens, H)
        per_frame = len(out) // len(pixel_values[0])
        return list(torch.split(out, [int(g[0]) * per_frame for g in grids.tolist()]))

    def video_pixels(self, patches: list[np.ndarray]) -> np.ndarray:
        """A batch's videos' frames as one video's (1, frames, C, H, W)."""
        return np.concatenate(patches)[None]


def _frames(processor: Any, frames: list[Any]) -> tuple[np.ndarray, tuple[int, int, int]]:
    """A video's frames by LlavaNextVideoVideoProcessor's rule with ``processor``'s settings (LlavaNextVideo's
    docstring): ``(frames, C, H, W)`` and ``(frames, H, W)``."""
    from transformers import CLIPImageProcessorPil

    keys = ("size", "crop_size", "resample", "rescale_factor", "image_mean", "image_std")
    clip = CLIPImageProcessorPil(**{k: getattr(processor, k) for k in keys})
    pixels = clip(images=frames, return_tensors="np")["pixel_values"]
    return pixels, (len(pixels), int(pixels.shape[-2]), int(pixels.shape[-1]))


class Idefics3(Llava):
    """Idefics3 (processing_idefics3's rule): the image processor cuts an image larger than its tile size into
    ``rows x cols`` tiles plus the whole image as a global tile (all tiles square, so the pixel attention mask
    of the real tiles is all ones and is not passed), and its ``<image>`` becomes, for each tile,
    ``<fake_token_around_image><row_i_col_j>`` then ``image_seq_len`` image tokens, a newline after each row,
    then ``\\n<fake_token_around_image><global-img>``, the global tile's image tokens and
    ``<fake_token_around_image>`` (an image not cut: that last part alone, without the newline). The text is
    tokenised alone: it begins and ends on special tokens, so its ids are those it has in the processor's text.
    An image's grid is ``(1, rows, cols)``."""

    vision, projector = "model.vision_model.", "model.connector."

    def tokens(self, config: Any, processor: Any, tokenizer: Any) -> ImageTokens:
        seq = _idefics3_seq_len(config)
        fake, image = "<fake_token_around_image>", "<image>" * seq

        @functools.cache
        def run(grid: tuple[int, int, int]) -> list[int]:
            _, rows, cols = grid
            tiles = "".join(
                "".join(f"{fake}<row_{r + 1}_col_{c + 1}>{image}" for c in range(cols)) + "\n"
                for r in range(rows)
            )
            lead = "\n" if rows else ""
            text = f"{tiles}{lead}{fake}<global-img>{image}{fake}"
            return tokenizer(text, add_special_tokens=False)["input_ids"]

        count = lambda grid: _idefics3_tiles(grid) * seq  # noqa: E731
        return ImageTokens(int(config.image_token_id), self.image_text, count, images=_split, run=run)

    def features(self, model: Any, pixel_values: torch.Tensor, grids: torch.Tensor) -> list[torch.Tensor]:
        """One (tokens, H) tensor an image: its tiles' features, the global tile's last."""
        seq = _idefics3_seq_len(model.config)
        (out,) = model.get_image_features(pixel_values).pooler_output
        sizes = [_idefics3_tiles(grid) * seq for grid in grids.tolist()]
        return list(torch.split(out, sizes))

    def pixels(self, patches: list[np.ndarray]) -> np.ndarray:
        """Every row's tiles (T, C, H, W) as one sample's (1, T, C, H, W): the model reads them in order."""
        return np.concatenate(patches)[None]


def _idefics3_tiles(grid: Any) -> int:
    """An image's tiles from its ``(1, rows, cols)``: each cut tile and the global one, or the image alone."""
    _, rows, cols = grid
    return rows * cols + 1 if rows else 1


def _idefics3_seq_len(config: Any) -> int:
    """Image tokens a tile: its patches, over scale_factor² (the connector's pixel shuffle)."""
    vision = config.vision_config
    return (int(vision.image_size) // int(vision.patch_size)) ** 2 // int(config.scale_factor) ** 2


def _split(processor: Any, images: list[Any]) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """One example's images through Idefics3's image processor as one sample: all their tiles (T, C, H, W)
    in order and each image's ``(1, rows, cols)``."""
    done = processor(images=[images], return_tensors="np", return_row_col_info=True)
    (rows,), (cols,) = done["rows"], done["cols"]
    return done["pixel_values"][0], [(1, int(r), int(c)) for r, c in zip(rows, cols, strict=True)]


def _one_sample(processor: Any, images: list[Any]) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """One example's images through LLaVA-OneVision's image processor as one sample: (images, tiles, C, H, W)
    and each image's ``(images, height, width)``."""
    done = processor(images=[images], return_tensors="np")
    return done["pixel_values"], [(len(images), int(h), int(w)) for h, w in done["image_sizes"]]


def _per_example(counts: torch.Tensor) -> torch.Tensor:
    """``batch_num_images`` from each image's count of images in its example (an example's images come
    together): ``[1, 2, 2, 1]`` -> ``[1, 2, 1]``."""
    out, i, each = [], 0, counts.tolist()
    while i < len(each):
        out.append(each[i])
        i += each[i]
    return torch.tensor(out, device=counts.device)


def _anyres(
    height: int, width: int, side: int, tile: tuple[int, int], pinpoints: Any, most: int | None
) -> int:
    """The features of an image's tiles past the base one (processing_llava_next, processing_llava_onevision):
    the best grid for its size, ``side`` features a tile side, the padding of the image's aspect ratio
    removed, one newline a row; with ``most`` (LLaVA-OneVision), scaled down by ``ratio`` where the tiles hold
    more than ``most`` tiles' features by over 1.1."""
    from transformers.image_processing_utils import select_best_resolution

    best_h, best_w = select_best_resolution([height, width], pinpoints)
    rows, cols = side * (best_h // tile[0]), side * (best_w // tile[1])
    if width / height > cols / rows:
        rows -= 2 * ((rows - int(round(height * (cols / width), 7))) // 2)
    else:
        cols -= 2 * ((cols - int(round(width * (rows / height), 7))) // 2)
    ratio = math.sqrt(rows * cols / (most * side * side)) if most else 0.0
    if ratio > 1.1:
        return int(rows // ratio) * int(cols // ratio) + int(rows // ratio)
    return rows * cols + rows


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Each token's position among the real tokens of its row (so either padding gives the same positions)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


class Qwen25(Family):
    """Qwen2.5-VL: Qwen2-VL's rules; a video's temporal positions are spaced by its ``second_per_grid_ts``."""

    timed = True


FAMILIES: dict[str, Family] = {
    "qwen2_vl": Family(), "qwen2_5_vl": Qwen25(), "qwen3_vl": Qwen3VL(),
    "qwen3_vl_moe": Qwen3VL(), "llava": Llava(),
    "llava_next": LlavaNext(), "llava_next_video": LlavaNextVideo(), "llava_onevision": LlavaOnevision(),
    "idefics3": Idefics3(), "gemma3": Gemma3(),
}  # fmt: skip
