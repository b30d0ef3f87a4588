"""Vision-language reward models: one score a response to a prompt that may hold images.

Recognised by a checkpoint's ``model_type`` (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, LLaVA, LLaVA-NeXT, LLaVA-OneVision, Idefics3, Gemma3: :data:`rmkit.vlm_families.FAMILIES`), or rmkit's
settings naming the kind ``vision``; loaded as :class:`rmkit.vlm.VisionRewardModel` (the VLM plus a value
head). Its data is multimodal rows (:mod:`rmkit.data.vision`: align-anything TI2T, RLAIF-V, TRL's vision
format, LLaMA-Factory's sharegpt with ``<image>``, rmkit's own with an ``images`` column), and text rows too
(no images), and rows with videos (Qwen2-VL, Qwen2.5-VL: :mod:`rmkit.data.video`). ``score``, ``rank`` and
``eval`` run as for a pairwise RM: the rows written carry each row's ``images`` (and ``videos``) as the data
file named them; ``eval`` reports the usual pair figures; ``inspect`` counts images and videos.

``rmkit serve`` reads OpenAI-style ``image_url`` parts holding data URLs (:mod:`rmkit.serving.protocols`),
and ``http(s)`` URLs with ``--allow-remote-images`` (:mod:`rmkit.serving.remote_images`).
Each example's images run through the vision encoder once for all its answers (:mod:`rmkit.vlm`), and with
prefix sharing (on unless ``--no-prefix-sharing``) its prompt, images and all, runs once through the language
model before its answers (:mod:`rmkit.vlm_sharing`). ``rmkit train`` on image pairs: :mod:`rmkit.training.vision`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rmkit.data import Example, RowCounts, first_record
from rmkit.data.vision import detect_vision, iter_vision_examples, normalise_vision
from rmkit.errors import RMKitError
from rmkit.kinds.base import Checkpoint, Kind, Raw, Reading, Sequences
from rmkit.kinds.pairwise import PairwiseKind

# rmkit.vlm_families.FAMILIES, named here without importing torch
MODEL_TYPES = (
    "qwen2_vl",
    "qwen2_5_vl",
    "qwen3_vl",
    "qwen3_vl_moe",
    "llava",
    "llava_next",
    "llava_onevision",
    "llava_next_video",
    "idefics3",
    "gemma3",
)


class VisionKind(PairwiseKind):
    """A :class:`rmkit.vlm.VisionRewardModel`: raw outputs are one float a response."""

    name = "vision"
    data = "preference pairs with images"
    modality = "image+text"

    def recognises(self, checkpoint: Checkpoint) -> bool:
        return checkpoint.config.get("model_type") in MODEL_TYPES

    def load(self, checkpoint: Checkpoint, dtype: Any, device: Any) -> Any:
        from rmkit.vlm import VisionRewardModel

        options = checkpoint.options
        return VisionRewardModel.from_pretrained(
            checkpoint.path,
            dtype=dtype,
            device=device,
            allow_pickle=options.get("allow_pickle", False),
            **(options.get("images") or {}),
        )

    def owns(self, model: Any) -> bool:
        return type(model).__name__ == "VisionRewardModel"

    def evaluates(self, kind: Kind) -> bool:
        return kind.modality == self.modality  # a vision RM, or a vision judge

    def holds(self, path: str | Path, reading: Reading) -> bool:
        record = first_record(path)
        return record is not None and self.detect(record, reading) is not None

    def detect(self, record: dict[str, Any], reading: Reading) -> str | None:
        return detect_vision({(reading.columns or {}).get(k, k): v for k, v in record.items()})

    def rows(self, path: str | Path, reading: Reading, rejects: Any = None) -> Iterator[Any]:
        return iter_vision_examples(path, format=reading.format, columns=reading.columns, rejects=rejects)

    def pairs(self, path: str | Path, reading: Reading, rejects: Any = None) -> Iterator[Any]:
        return iter_vision_examples(
            path, format=reading.format, columns=reading.columns, rejects=rejects, pairs=True
        )

    def tallies(self, row: Any) -> dict[str, int]:
        videos = len(getattr(row, "videos", []))
        return {
            self.tally(row): 1,
            "images": len(getattr(row, "images", [])),
            **({"videos": videos} if videos else {}),
        }

    def examples(self, records: Any, source: str, reading: Reading, rejects: Any) -> Iterator[Any]:
        return normalise_vision(
            records, source=source, format=reading.format, columns=reading.columns, rejects=rejects
        )

    def score_prepared(
        self, model: Any, chunk: Sequence[Any], prepared: list[Any], reading: Reading, stats: RowCounts
    ) -> Iterator[tuple[Any, Raw | None]]:
        rows = [t for row in prepared if row is not None for t in row]
        groups = _groups(chunk, prepared, reading.share_across_rows) if reading.prefix_sharing else []
        scores = iter(
            model.score_rows(
                rows, reading.batch_tokens, groups=groups, stats=stats, batch_cost=reading.batch_cost
            )
        )
        for example, row in zip(chunk, prepared, strict=True):
            stats.add(row, example.notes)
            yield example, None if row is None else [next(scores) for _ in row]

    def row(
        self, model: Any, example: Example, raw: Raw, values: list[Any], reading: Reading
    ) -> dict[str, Any]:
        out = super().row(model, example, raw, values, reading)
        if "prompt" in out:
            out["prompt"] = _flat(example.prompt)
        refs, videos = getattr(example, "image_refs", []), getattr(example, "video_refs", [])
        return {**out, **({"images": refs} if refs else {}), **({"videos": videos} if videos else {})}

    def convert(self, model: Any, out: Path, layout: str = "auto") -> dict[str, str]:
        """The VLM with ``value_head.safetensors`` (``auto``), align-anything's ``score_head`` or transformers'
        sequence classifier, where exact (:mod:`rmkit.vlm_layouts`)."""
        from rmkit.vlm_layouts import layout_of, why_not, write

        layout = "value-head" if layout == "auto" else layout
        why = why_not(model, layout)
        if why is not None:
            raise RMKitError(why)
        source = layout_of(model)
        return {"layout": source, "architecture": write(model, out, layout)}

    def sequences(self, prepared: list[Any]) -> Sequences:
        """A request's rows with their images (:class:`rmkit.data.processing.VisionRow`), one an item."""
        rows = [t for row in prepared if row is not None for t in row]
        return Sequences(rows, None, [t.truncated for t in rows])


def _flat(prompt: list[dict[str, Any]]) -> Any:
    """The prompt written back with its image parts as ``<image>`` marks (a single user turn as a string)."""
    from rmkit.data.vision import flat_messages

    flat = flat_messages(prompt)
    return flat[0]["content"] if len(flat) == 1 and flat[0]["role"] == "user" else flat


def _groups(chunk: Sequence[Any], prepared: list[Any], across: bool) -> list[list[int]]:
    """:func:`rmkit.inference.answer_groups` keyed also by each example's images (their grids and a sample of
    their pixels: cheap; :mod:`rmkit.vlm_sharing` shares only among rows whose images are equal); rows with
    videos keep their own group (they run whole)."""
    from rmkit.inference import answer_groups

    def images(example: Any, rows: list[Any]) -> Any:
        first = rows[0]
        if first.videos is not None:
            return ("videos", id(first))
        if first.patches is None:
            return None
        sample = first.patches.reshape(-1)[:: 1 + first.patches.size // 4096]
        return first.patches.shape, repr(first.grids), hash(sample.tobytes())

    return answer_groups(chunk, prepared, across, images)
