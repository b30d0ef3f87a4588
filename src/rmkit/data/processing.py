"""Multimodal examples to a vision-language model's input: text rendered and tokenised as for a text RM,
images through the model's image processor, each image's placeholder token expanded to its features' count.

rmkit does what transformers' ``Qwen2VLProcessor`` does, without building it (it cannot be built without a
video processor, which needs torchvision): the image processor (a PIL one, ``Qwen2VLImageProcessorPil``)
gives each image's patches and ``(t, h, w)`` grid, and the one ``<|image_pad|>`` token the chat template
writes for an image becomes ``t·h·w / merge²`` of them, the count of the vision encoder's merged features::

    rendered text ─ tokenizer ─> ids with one image token an image ─ expand ─> ids with t·h·w/merge² each
    images ─ image processor (min/max pixels) ─> patches (P, C·T·14·14) and grids (N, 3)

LLaVA's ``<image>`` and Gemma3's ``<start_of_image>`` are expanded by their processors' rules the same way
(:class:`ImageTokens`, :class:`rmkit.vlm_families.Family`). The model's ``mm_token_type_ids`` (Gemma3's
``token_type_ids``: 1 at image tokens, 0 elsewhere) are read from the ids when a batch runs
(:meth:`rmkit.vlm.VisionRewardModel.forward`). Without a chat template an image part is written as the
family's image text (Qwen's ``<|vision_start|><|image_pad|><|vision_end|>``). Truncation cuts the prompt from the left as for text,
once for all the answers of an example, after the images are expanded; never into an image or an answer:
an example too long to keep its images whole is dropped and counted.

A video part (Qwen2-VL, Qwen2.5-VL) is sampled to frames by the rule of :mod:`rmkit.data.video` (the
tokenizer's ``fps`` and ``max_frames``), each frame resized and normalised by the image processor as an image
is (its ``smart_resize`` rule, min and max pixels), then grouped as transformers' ``Qwen2VLVideoProcessor``
groups them: the frames padded to a multiple of the temporal patch size by repeating the last, and each
temporal patch's pixels flattened ``(channel, time, patch row, patch column)`` under the same spatial order as
an image's patches; its grid is ``(frames / 2, h, w)`` and its one ``<|video_pad|>`` token becomes
``t·h·w / merge²`` of them (:class:`Clips`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rmkit.data.formats import Example, Message
from rmkit.data.rendering import ExampleTokenizer, Tokenized, render_plain
from rmkit.data.video import FPS, MAX_FRAMES, sample
from rmkit.errors import DataError, RMKitError


@dataclass
class Clips:
    """The videos of one example: their ``patches`` (P, C·T·patch²), one ``(t, h, w)`` grid a video and the
    ``seconds`` each temporal patch spans (Qwen2.5-VL's ``second_per_grid_ts``: temporal patch size / fps)."""

    patches: Any
    grids: list[tuple[int, int, int]]
    seconds: list[float]


@dataclass
class VisionRow(Tokenized):
    """One sequence of a multimodal example: its ``ids`` (image tokens expanded), its images' ``patches``
    (P, D) and ``grids`` (one ``(t, h, w)`` an image); ``patches`` is ``None`` for a row without images."""

    patches: Any = None
    grids: list[tuple[int, int, int]] = field(default_factory=list)
    videos: Clips | None = None

    def __len__(self) -> int:  # its tokens, as a row of ids counts in a token budget (the server's queue)
        return len(self.ids)


@dataclass(frozen=True)
class ImageTokens:
    """What a vision-language model's text marks an image with: the token its features take the place of
    (``image_id``), the text an image part renders as without a chat template, the count of an image's
    tokens from its grid (``(t, h, w)``: Qwen's patch grid, else ``(1, height, width)`` of its pixels), the
    token the chat template writes for an image when it is not ``image_id`` (Gemma3's ``<start_of_image>``),
    the ids written before an image's tokens in its place (Gemma3's ``<start_of_image>`` again),
    and the text written around an image's text before tokenising (Gemma3's ``\\n\\n`` before and
    ``<end_of_image>\\n\\n`` after: tokenised with the text beside them, as its processor does); ``images``:
    how one example's images go through the image processor to ``(patches, grids)``, where the family's
    differs from one call on the list (LLaVA-OneVision's, Idefics3's); ``run``: the ids an image's placeholder
    becomes, where they are more than ``before`` and ``count`` image tokens (Idefics3's tiles)."""

    image_id: int
    text: str
    count: Callable[[tuple[int, int, int]], int]
    placeholder: int | None = None
    before: tuple[int, ...] = ()
    wrap: tuple[str, str] = ("", "")
    images: Callable[[Any, list[Any]], tuple[Any, list[tuple[int, int, int]]]] | None = None
    run: Callable[[tuple[int, int, int]], list[int]] | None = None
    video_id: int | None = None  # the token a video's features take the place of (None: no video read)
    video_text: str = ""  # what a video part renders as without a chat template
    video_count: Callable[[tuple[int, int, int]], int] | None = (
        None  # a video's tokens, where not ``count``'s
    )
    frames: Callable[[Any, list[Any]], tuple[Any, tuple[int, int, int]]] | None = None  # a video's frames to
    # (pixels, grid), where not Qwen2-VL's grouping (LLaVA-NeXT-Video's, rmkit.vlm_families)


class VisionTokenizer(ExampleTokenizer):
    """An :class:`ExampleTokenizer` for multimodal examples (module docstring); ``tokenize`` gives a list of
    :class:`VisionRow`, one a response, for each example (``None``: dropped). ``part`` is the type of the
    message parts its media take (a subclass reads other media: :mod:`rmkit.data.audio_processing`). A video
    is sampled at ``fps`` frames a second, at most ``max_frames`` (:mod:`rmkit.data.video`)."""

    part = "image"

    fps, max_frames = FPS, MAX_FRAMES

    def __init__(
        self,
        tokenizer: Any,
        processor: Any,
        tokens: ImageTokens,
        fps: float = FPS,
        max_frames: int = MAX_FRAMES,
        **options: Any,
    ):
        super().__init__(tokenizer, **options)
        self.processor, self.tokens, self.fps, self.max_frames = processor, tokens, fps, max_frames

    def render(self, prompt: Sequence[Message], response: str) -> str:
        if self.use_chat:
            text = super().render(prompt, response)
        else:
            flat = [{**m, "content": self._plain(m["content"])} for m in prompt]
            text = render_plain([*flat, {"role": "assistant", "content": response}])
        before, after = self.tokens.wrap
        return text.replace(self.tokens.text, before + self.tokens.text + after) if before or after else text

    def _plain(self, content: Any) -> str:
        if isinstance(content, str):
            return content
        texts = {self.part: self.tokens.text, "video": self.tokens.video_text}
        return "".join(texts.get(p.get("type"), "") or p.get("text", "") for p in content)

    def tokenize(self, examples: Sequence[Example]) -> list[list[Tokenized] | None]:  # type: ignore[override]
        rows = super().tokenize(examples)
        out: list[list[Tokenized] | None] = []
        for ex, row in zip(examples, rows, strict=True):
            patches, grids = self._media(ex)
            clips = self._videos(ex) if row is not None else None
            seqs = [self._expanded(ex, t.ids, grids, clips) for t in row or []]
            first = self._first_image(row)
            out.append(self._cut(seqs, patches, grids, clips, first) if row is not None else None)
        return out

    def _truncated(self, rows: list[list[int]], one_prompt: bool) -> list[Tokenized]:
        return [Tokenized(r) for r in rows]  # cut once the images are expanded (_cut)

    def truncate(self, ids: list[int]) -> VisionRow:
        """A row of token ids alone (a server's pre-tokenised input: no images) cut by the rule above. Ids that
        hold an image's (or a video's) token are refused: what they stand for did not come with them."""
        marks = {self.tokens.image_id, self.tokens.placeholder, self.tokens.video_id} - {None}
        if any(t in marks for t in ids):
            raise RMKitError(
                "the token ids hold an image's (or a video's) placeholder and no image came with them: token ids "
                "cannot carry an image; send the conversation as messages whose user turn holds image_url parts"
            )
        cut = self._cut([list(ids)], None, [], None)
        return cut[0] if cut else VisionRow(list(ids[-self.max_length :]), truncated=True)

    def _media(self, ex: Example) -> tuple[Any, list]:
        """One example's media through the model's processor: ``(patches, grids)``."""
        return self._images([p.image for p in getattr(ex, "images", [])])

    def _images(self, images: list[Any]) -> tuple[Any, list[tuple[int, int, int]]]:
        """Every image of one example through the image processor: ``(patches, grids)``."""
        if not images:
            return None, []
        if self.tokens.images is not None:
            return self.tokens.images(self.processor, images)
        done = self.processor(images=images, return_tensors="np")
        patches = done["pixel_values"]
        if "image_grid_thw" not in done:  # one (C, H, W) array an image (LLaVA, Gemma3)
            return patches, [(1, int(p.shape[-2]), int(p.shape[-1])) for p in patches]
        return patches, [tuple(int(x) for x in g) for g in done["image_grid_thw"]]

    def _videos(self, ex: Example) -> Clips | None:
        """Every video of one example sampled, through the image processor frame by frame and grouped as
        Qwen2-VL's video processor groups them (module docstring)."""
        videos = getattr(ex, "videos", [])
        if not videos:
            return None
        if self.tokens.video_id is None:
            raise DataError(
                "this model reads no video (Qwen2-VL, Qwen2.5-VL and LLaVA-NeXT-Video do)",
                row=ex.row,
                field="videos",
            )
        group = self.tokens.frames or _grouped
        patches, grids, seconds = [], [], []
        for video in videos:
            frames = sample(video, self.fps, self.max_frames)
            pixels, grid = group(self.processor, frames.images)
            patches.append(pixels)
            grids.append(grid)
            seconds.append(getattr(self.processor, "temporal_patch_size", 1) / frames.fps)
        return Clips(np.concatenate(patches), grids, seconds)

    def _first_image(self, row: Sequence[Tokenized] | None) -> int | None:
        """Where the first image's ids begin in an example's rows (its placeholder's place: nothing before it
        is expanded), ``None`` without images."""
        mark = self.tokens.image_id if self.tokens.placeholder is None else self.tokens.placeholder
        ids = row[0].ids if row else []
        return ids.index(mark) if mark in ids else None

    def _expanded(self, ex: Example, ids: list[int], grids: list, clips: Clips | None = None) -> list[int]:
        """``ids`` with each image (and video) token expanded to its count of features (and the ids around
        them)."""
        tokens = self.tokens
        mark = tokens.image_id if tokens.placeholder is None else tokens.placeholder
        if mark in ids and not grids:
            raise DataError(
                f"the text holds {ids.count(mark)} image placeholder(s) and no image came with it: a text (or "
                "token ids) cannot carry an image; send the conversation with its images (messages whose user "
                "turn holds image_url parts, or the row's images column)",
                row=ex.row,
                field="images",
            )
        runs = {mark: [self._run(g) for g in grids]}
        if clips is not None:
            count = tokens.video_count or tokens.count
            runs[tokens.video_id] = [[tokens.video_id] * count(g) for g in clips.grids]
        for at_id, kind in ((mark, self.part), (tokens.video_id, "video")):
            found, wanted = ids.count(at_id) if at_id is not None else 0, len(runs.get(at_id, []))
            if found != wanted:
                raise DataError(
                    f"the rendered text has {found} {kind} tokens for {wanted} {kind}s (the model's chat "
                    f"template must write one {kind} token a{'n' * (kind[0] in 'aeiou')} {kind} part)",
                    row=ex.row,
                    field=f"{kind}s",
                )
        queues = {k: iter(v) for k, v in runs.items()}
        out: list[int] = []
        for t in ids:
            if t in queues:
                out += next(queues[t])
            else:
                out.append(t)
        return out

    def _run(self, grid: tuple[int, int, int]) -> list[int]:
        """The ids an image's placeholder becomes."""
        tokens = self.tokens
        return tokens.run(grid) if tokens.run else [*tokens.before, *[tokens.image_id] * tokens.count(grid)]

    def _cut(
        self,
        rows: list[list[int]],
        patches: Any,
        grids: list,
        clips: Clips | None = None,
        first: int | None = None,
    ) -> list[Tokenized] | None:
        """One example's rows cut to ``max_length`` (module docstring): one cut of the prompt they share, from
        the left after the leading special tokens, for all; ``None`` (dropped) where that would reach an image
        (its tokens, or the ids written with them from ``first`` on: Idefics3's tile tags) or an answer, or
        with ``truncation="drop"``."""
        longest = max(map(len, rows))
        if self.max_length is None or longest <= self.max_length:
            return [VisionRow(r, patches=patches, grids=grids, videos=clips) for r in rows]
        if self.truncation == "drop":
            return None
        head = 0
        while head < len(rows[0]) and rows[0][head] in self._special and head < self.max_length // 2:
            head += 1
        cut = longest - self.max_length
        if first is not None and head + cut > first:
            return None
        marks, out = (self.tokens.image_id, self.tokens.video_id), []
        for row in rows:
            kept = row[:head] + row[head + cut :]
            if len(kept) > self.max_length or any(
                kept.count(m) != row.count(m) for m in marks if m is not None
            ):
                return None
            out.append(
                VisionRow(
                    kept, truncated=True, group_cut=len(rows) > 1, patches=patches, grids=grids, videos=clips
                )
            )
        if len(rows) > 1 and len(os.path.commonprefix(rows)) < head + cut:  # the cut would reach an answer
            return None
        return out


def _grouped(processor: Any, frames: list[Any]) -> tuple[np.ndarray, tuple[int, int, int]]:
    """A video's frames through Qwen2-VL's image processor one by one and grouped as its video processor groups
    them (module docstring): ``(t·h·w, C·T·patch²)`` and ``(t, h, w)``."""
    span = int(processor.temporal_patch_size)
    images = frames + frames[-1:] * (-len(frames) % span)
    done = processor(images=images, temporal_patch_size=1, return_tensors="np")
    _, h, w = (int(x) for x in done["image_grid_thw"][0])
    flat = done["pixel_values"]  # (frames·h·w, C·patch²): each frame's patches, in the image order
    t = len(images) // span
    channels = flat.shape[1] // int(processor.patch_size) ** 2
    grouped = flat.reshape(t, span, h * w, channels, -1).transpose(0, 2, 3, 1, 4)
    return grouped.reshape(t * h * w, -1), (t, h, w)
