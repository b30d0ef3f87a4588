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
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rmkit.data.formats import Example, Message
from rmkit.data.rendering import ExampleTokenizer, Tokenized, render_plain
from rmkit.errors import DataError, RMKitError


@dataclass
class VisionRow(Tokenized):
    """One sequence of a multimodal example: its ``ids`` (image tokens expanded), its images' ``patches``
    (P, D) and ``grids`` (one ``(t, h, w)`` an image); ``patches`` is ``None`` for a row without images."""

    patches: Any = None
    grids: list[tuple[int, int, int]] = field(default_factory=list)

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


class VisionTokenizer(ExampleTokenizer):
    """An :class:`ExampleTokenizer` for multimodal examples (module docstring); ``tokenize`` gives a list of
    :class:`VisionRow`, one a response, for each example (``None``: dropped). ``part`` is the type of the
    message parts its media take (a subclass reads other media: :mod:`rmkit.data.audio_processing`)."""

    part = "image"

    def __init__(self, tokenizer: Any, processor: Any, tokens: ImageTokens, **options: Any):
        super().__init__(tokenizer, **options)
        self.processor, self.tokens = processor, tokens

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
        return "".join(self.tokens.text if p.get("type") == self.part else p.get("text", "") for p in content)

    def tokenize(self, examples: Sequence[Example]) -> list[list[Tokenized] | None]:  # type: ignore[override]
        rows = super().tokenize(examples)
        out: list[list[Tokenized] | None] = []
        for ex, row in zip(examples, rows, strict=True):
            patches, grids = self._media(ex)
            seqs = [self._expanded(ex, t.ids, grids) for t in row or []]
            out.append(self._cut(seqs, patches, grids, self._first_image(row)) if row is not None else None)
        return out

    def _truncated(self, rows: list[list[int]], one_prompt: bool) -> list[Tokenized]:
        return [Tokenized(r) for r in rows]  # cut once the images are expanded (_cut)

    def truncate(self, ids: list[int]) -> VisionRow:
        """A row of token ids alone (a server's pre-tokenised input: no images) cut by the rule above. Ids that
        hold an image's token are refused: the image they stand for did not come with them."""
        marks = {self.tokens.image_id, self.tokens.placeholder} - {None}
        if any(t in marks for t in ids):
            raise RMKitError(
                "the token ids hold an image's placeholder and no image came with them: token ids cannot carry "
                "an image; send the conversation as messages whose user turn holds image_url parts"
            )
        cut = self._cut([list(ids)], None, [])
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

    def _first_image(self, row: Sequence[Tokenized] | None) -> int | None:
        """Where the first image's ids begin in an example's rows (its placeholder's place: nothing before it
        is expanded), ``None`` without images."""
        mark = self.tokens.image_id if self.tokens.placeholder is None else self.tokens.placeholder
        ids = row[0].ids if row else []
        return ids.index(mark) if mark in ids else None

    def _expanded(self, ex: Example, ids: list[int], grids: list) -> list[int]:
        """``ids`` with each image token expanded to its image's count of features (and the ids around them)."""
        tokens = self.tokens
        mark = tokens.image_id if tokens.placeholder is None else tokens.placeholder
        places = [i for i, t in enumerate(ids) if t == mark]
        if places and not grids:
            raise DataError(
                f"the text holds {len(places)} image placeholder(s) and no image came with it: a text (or token "
                "ids) cannot carry an image; send the conversation with its images (messages whose user turn "
                "holds image_url parts, or the row's images column)",
                row=ex.row,
                field="images",
            )
        if len(places) != len(grids):
            raise DataError(
                f"the rendered text has {len(places)} {self.part} tokens for {len(grids)} {self.part}s (the "
                f"model's chat template must write one {self.part} token an {self.part} part)",
                row=ex.row,
                field=f"{self.part}s",
            )
        out: list[int] = []
        start = 0
        for at, grid in zip(places, grids, strict=True):
            run = (
                tokens.run(grid) if tokens.run else [*tokens.before, *[tokens.image_id] * tokens.count(grid)]
            )
            out += ids[start:at] + run
            start = at + 1
        return out + ids[start:]

    def _cut(
        self, rows: list[list[int]], patches: Any, grids: list, first: int | None = None
    ) -> list[Tokenized] | None:
        """One example's rows cut to ``max_length`` (module docstring): one cut of the prompt they share, from
        the left after the leading special tokens, for all; ``None`` (dropped) where that would reach an image
        (its tokens, or the ids written with them from ``first`` on: Idefics3's tile tags) or an answer, or
        with ``truncation="drop"``."""
        longest = max(map(len, rows))
        if self.max_length is None or longest <= self.max_length:
            return [VisionRow(r, patches=patches, grids=grids) for r in rows]
        if self.truncation == "drop":
            return None
        head = 0
        while head < len(rows[0]) and rows[0][head] in self._special and head < self.max_length // 2:
            head += 1
        cut = longest - self.max_length
        if first is not None and head + cut > first:
            return None
        image_id, out = self.tokens.image_id, []
        for row in rows:
            kept = row[:head] + row[head + cut :]
            if len(kept) > self.max_length or kept.count(image_id) != row.count(image_id):
                return None
            out.append(VisionRow(kept, truncated=True, group_cut=len(rows) > 1, patches=patches, grids=grids))
        if len(rows) > 1 and len(os.path.commonprefix(rows)) < head + cut:  # the cut would reach an answer
            return None
        return out
