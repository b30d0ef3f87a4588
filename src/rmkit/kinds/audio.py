"""Audio-language reward models: one score a response to a prompt that may hold audio clips.

Recognised by a checkpoint's ``model_type`` (``qwen2_audio``), or rmkit's settings naming the kind ``audio``;
loaded as :class:`rmkit.alm.AudioRewardModel` (Qwen2-Audio plus a value head). Its data is rows with audio
(:mod:`rmkit.data.audio`: align-anything TA2T, messages with audio or ``input_audio`` parts, an ``audios``
column beside any text format), and text rows too (no audio). ``score``, ``rank`` and ``eval`` run as for a
vision RM, whose machinery it shares (:class:`rmkit.kinds.vision.VisionKind`): the rows written carry each
row's ``audios`` as the data file named them; ``eval`` reports the usual pair figures; ``rmkit inspect``
names the modality ``audio+text`` and counts the clips. ``rmkit serve`` reads OpenAI's ``input_audio`` parts
(:mod:`rmkit.serving.protocols`). ``rmkit train`` on audio pairs: :class:`rmkit.training.vision.AudioPairTask`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from rmkit.data import Example, RowCounts
from rmkit.data.audio import detect_audio, flat_prompt, iter_audio_examples, normalise_audio
from rmkit.kinds.base import Checkpoint, Reading
from rmkit.kinds.pairwise import PairwiseKind
from rmkit.kinds.vision import VisionKind

MODEL_TYPES = ("qwen2_audio",)  # rmkit.alm.AudioRewardModel.families, named here without importing torch
# Examples prepared at a time: each holds its clips' samples and features until its chunk is scored (a 30 s
# clip: 1.9 MB of samples at 16 kHz, 1.5 MB of features at 128 mel bins), so 256 hold about 1 GB at most.
CHUNK_ROWS = 256


class AudioKind(VisionKind):
    """A :class:`rmkit.alm.AudioRewardModel`: raw outputs are one float a response."""

    name = "audio"
    data = "preference pairs with audio"
    modality = "audio+text"

    def recognises(self, checkpoint: Checkpoint) -> bool:
        return checkpoint.config.get("model_type") in MODEL_TYPES

    def load(self, checkpoint: Checkpoint, dtype: Any, device: Any) -> Any:
        from rmkit.alm import AudioRewardModel

        allow_pickle = checkpoint.options.get("allow_pickle", False)
        return AudioRewardModel.from_pretrained(
            checkpoint.path, dtype=dtype, device=device, allow_pickle=allow_pickle
        )

    def owns(self, model: Any) -> bool:
        return type(model).__name__ == "AudioRewardModel"

    def detect(self, record: dict[str, Any], reading: Reading) -> str | None:
        return detect_audio({(reading.columns or {}).get(k, k): v for k, v in record.items()})

    def rows(self, path: str | Path, reading: Reading, rejects: Any = None) -> Iterator[Any]:
        return iter_audio_examples(path, format=reading.format, columns=reading.columns, rejects=rejects)

    def pairs(self, path: str | Path, reading: Reading, rejects: Any = None) -> Iterator[Any]:
        return iter_audio_examples(
            path, format=reading.format, columns=reading.columns, rejects=rejects, pairs=True
        )

    def tallies(self, row: Any) -> dict[str, int]:
        return {self.tally(row): 1, "audios": len(getattr(row, "audios", []))}

    def examples(self, records: Any, source: str, reading: Reading, rejects: Any) -> Iterator[Any]:
        return normalise_audio(
            records, source=source, format=reading.format, columns=reading.columns, rejects=rejects
        )

    def score(
        self,
        model: Any,
        examples: Iterable[Any],
        reading: Reading,
        stats: RowCounts | None = None,
        memo: dict[Any, dict[int, Any]] | None = None,
    ) -> Iterator[tuple[Any, Any]]:
        """:meth:`Kind.score` in chunks of at most :data:`CHUNK_ROWS` examples (memory, above)."""
        chunked = replace(reading, chunk_rows=min(reading.chunk_rows, CHUNK_ROWS))
        return super().score(model, examples, chunked, stats, memo)

    def row(
        self, model: Any, example: Example, raw: Any, values: list[Any], reading: Reading
    ) -> dict[str, Any]:
        out = PairwiseKind.row(self, model, example, raw, values, reading)
        if "prompt" in out:
            out["prompt"] = flat_prompt(example.prompt)
        refs = getattr(example, "audio_refs", [])
        return {**out, "audios": refs} if refs else out
