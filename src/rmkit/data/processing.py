"""Multimodal examples to a vision-language model's input: text rendered and tokenised as for a text RM,
images through the model's image processor, each image's placeholder token expanded to its features' count.

rmkit does what transformers' ``Qwen2VLProcessor`` does, without building it (it cannot be built without a
video processor, which needs torchvision): the image processor (a PIL one, ``Qwen2VLImageProcessorPil``)
gives each image's patches and ``(t, h, w)`` grid, and the one ``<|image_pad|>`` token the chat template
writes for an image becomes ``t·h·w / merge²`` of them, the count of the vision encoder's merged features::

    rendered text ─ tokenizer ─> ids with one image token an image ─ expand ─> ids with t·h·w/merge² each
    images ─ image processor (min/max pixels) ─> patches (P, C·T·14·14) and grids (N, 3)

The model's ``mm_token_type_ids`` (1 at image tokens, 0 elsewhere) are read from the ids when a batch runs
(:meth:`rmkit.vlm.VisionRewardModel.forward`). Without a chat template an image part is written as the model's
``<|vision_start|><|image_pad|><|vision_end|>`` text. Truncation cuts the prompt from the left as for text,
but never into an image: a row too long to keep its images whole is dropped and counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rmkit.data.formats import Example, Message
from rmkit.data.rendering import ExampleTokenizer, Tokenized, render_plain
from rmkit.errors import DataError


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
    """What a vision-language model's text marks an image with: the placeholder token expanded per image,
    the text an image part renders as without a chat template, and the merge of the encoder's patches."""

    image_id: int
    text: str
    merge: int


class VisionTokenizer(ExampleTokenizer):
    """An :class:`ExampleTokenizer` for multimodal examples (module docstring); ``tokenize`` gives a list of
    :class:`VisionRow`, one a response, for each example (``None``: dropped)."""

    def __init__(self, tokenizer: Any, processor: Any, tokens: ImageTokens, **options: Any):
        self.limit = options.pop("max_length", None)
        super().__init__(tokenizer, max_length=None, **options)
        self.processor, self.tokens = processor, tokens

    def render(self, prompt: Sequence[Message], response: str) -> str:
        if self.use_chat:
            return super().render(prompt, response)
        flat = [{**m, "content": self._plain(m["content"])} for m in prompt]
        return render_plain([*flat, {"role": "assistant", "content": response}])

    def _plain(self, content: Any) -> str:
        if isinstance(content, str):
            return content
        return "".join(self.tokens.text if p.get("type") == "image" else p.get("text", "") for p in content)

    def tokenize(self, examples: Sequence[Example]) -> list[list[Tokenized] | None]:  # type: ignore[override]
        rows = super().tokenize(examples)
        out: list[list[Tokenized] | None] = []
        for ex, row in zip(examples, rows, strict=True):
            images = [p.image for p in getattr(ex, "images", [])]
            patches, grids = self._images(images)
            seqs = [self._expanded(ex, t.ids, grids, patches) for t in row or []]
            out.append(None if any(s is None for s in seqs) else seqs)
        return out

    def truncate(self, ids: list[int]) -> VisionRow:
        """A row of token ids alone (a server's pre-tokenised input: no images) cut by the rule above."""
        return self._cut(list(ids), None, []) or VisionRow(ids[-self.limit :], truncated=True)

    def _images(self, images: list[Any]) -> tuple[Any, list[tuple[int, int, int]]]:
        """Every image of one example through the image processor: ``(patches, grids)``."""
        if not images:
            return None, []
        done = self.processor(images=images, return_tensors="np")
        return done["pixel_values"], [tuple(int(x) for x in g) for g in done["image_grid_thw"]]

    def _expanded(self, ex: Example, ids: list[int], grids: list, patches: Any) -> VisionRow | None:
        """``ids`` with each image token expanded to its image's count, then cut to ``max_length``."""
        image_id, merge = self.tokens.image_id, self.tokens.merge
        places = [i for i, t in enumerate(ids) if t == image_id]
        if len(places) != len(grids):
            raise DataError(
                f"the rendered text has {len(places)} image tokens for {len(grids)} images (the model's "
                "chat template must write one image token an image part)",
                row=ex.row,
                field="images",
            )
        out: list[int] = []
        start = 0
        for at, (t, h, w) in zip(places, grids, strict=True):
            out += ids[start:at] + [image_id] * (t * h * w // (merge * merge))
            start = at + 1
        out += ids[start:]
        return self._cut(out, patches, grids)

    def _cut(self, ids: list[int], patches: Any, grids: list) -> VisionRow | None:
        """The truncation rule (module docstring): the prompt cut from the left, never into an image."""
        if self.limit is None or len(ids) <= self.limit:
            return VisionRow(ids, patches=patches, grids=grids)
        if self.truncation == "drop":
            return None
        head = 0
        while head < len(ids) and ids[head] in self._special and head < self.limit // 2:
            head += 1
        cut = ids[:head] + ids[len(ids) - (self.limit - head) :]
        kept = sum(1 for t in cut if t == self.tokens.image_id)
        if kept != sum(1 for t in ids if t == self.tokens.image_id):
            return None
        return VisionRow(cut, truncated=True, patches=patches, grids=grids)
