"""MM-RLHF's critique-then-score reward model (:mod:`rmkit.vision_critique`): a Qwen2-VL or Qwen2.5-VL
checkpoint whose weights hold MM-RLHF's ``rm_head`` (or whose rmkit settings name the kind ``vision-critique``),
or MM-RLHF's own checkpoint (model type ``llava_qwen``, read as transformers' LLaVA-OneVision:
:mod:`rmkit.llava_qwen`).

It reads a vision RM's data and writes one score an answer: the model writes a critique of the answer, then its
head reads the conversation holding it. Its rows also keep the critiques (``critiques``).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rmkit.data import RowCounts
from rmkit.errors import RMKitError
from rmkit.kinds.base import Checkpoint, Raw, Reading
from rmkit.kinds.judge import Judgment
from rmkit.kinds.vision import MODEL_TYPES, VisionKind

MM_RLHF_TYPE = "llava_qwen"  # MM-RLHF-Reward-7B's own config (LLaVA-NeXT's LlavaQwenForCausalLM)
HEAD_KEY = "rm_head.out_proj.weight"


class CritiqueKind(VisionKind):
    name = "vision-critique"

    def recognises(self, checkpoint: Checkpoint) -> bool:
        model_type = checkpoint.config.get("model_type")
        if model_type == MM_RLHF_TYPE:
            return True
        return model_type in MODEL_TYPES[:2] and HEAD_KEY in _weight_names(Path(checkpoint.path))

    def load(self, checkpoint: Checkpoint, dtype: Any, device: Any) -> Any:
        from rmkit.vision_critique import load_critique_rm

        options = checkpoint.options
        return load_critique_rm(
            checkpoint.path,
            dtype=dtype,
            device=device,
            allow_pickle=options.get("allow_pickle", False),
            max_new_tokens=(options.get("critique") or {}).get("max_new_tokens"),
            **(options.get("images") or {}),
        )

    def owns(self, model: Any) -> bool:
        return type(model).__name__ == "CritiqueRewardModel"

    def holds(self, path: str | Path, reading: Reading) -> bool:
        return False  # image data is the vision kind's; this kind scores it too

    def score_prepared(
        self, model: Any, chunk: Sequence[Any], prepared: list[Any], reading: Reading, stats: RowCounts
    ) -> Iterator[tuple[Any, Raw | None]]:
        """Each answer's critique written, then its conversation scored: one
        :class:`rmkit.kinds.judge.Judgment` an answer (its score, and the critique in ``texts``)."""
        critiques = model.critiques(
            [t for row in prepared if row is not None for t in row], reading.batch_tokens
        )
        kept = [ex for ex, row in zip(chunk, prepared, strict=True) if row is not None]
        conversations = iter(self.tokenizer(model, reading).scored(kept, critiques))
        read = [next(conversations) for _ in kept]
        scores = iter(
            model.score_rows([t for row in read if row is not None for t in row], reading.batch_tokens)
        )
        written, done = iter(critiques), iter(read)
        for example, row in zip(chunk, prepared, strict=True):
            stats.add(row, example.notes)
            if row is None:
                yield example, None
                continue
            texts, conversation = [next(written) for _ in row], next(done)
            values = [next(scores) for _ in row] if conversation is not None else [math.nan] * len(row)
            yield example, [Judgment(v, [t]) for v, t in zip(values, texts, strict=True)]

    def values(self, model: Any, raw: Raw) -> list[float]:
        return [j.value for j in raw]

    def row(self, model: Any, example: Any, raw: Raw, values: list[Any], reading: Reading) -> dict[str, Any]:
        return {**super().row(model, example, raw, values, reading), "critiques": [j.texts[0] for j in raw]}

    def servable(self, model: Any) -> str | None:
        return "rmkit serve reads each sample in one pass; a critique-then-score RM writes a critique first"

    def convertible(self, model: Any) -> str | None:
        return None

    def convert(self, model: Any, out: Path, layout: str = "auto") -> dict[str, str]:
        """The VLM as transformers writes it (MM-RLHF's ``llava_qwen`` checkpoint: a standard LLaVA-OneVision)
        with ``rm_head.safetensors`` beside it and rmkit's settings naming this kind."""
        from rmkit.vision_critique import save_critique_rm

        if layout != "auto":
            raise RMKitError(f"--layout {layout}: a critique-then-score RM is written in its own layout only")
        source = model.metadata.get("converted_from", {}).get("layout", "transformers")
        return {"layout": source, "architecture": save_critique_rm(model, out)}


def _weight_names(path: Path) -> set[str]:
    """The tensor names of the checkpoint's safetensors, read from their headers (no weight loads)."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            return set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}))
        except (OSError, ValueError):
            return set()
    names: set[str] = set()
    for f in sorted(path.glob("*.safetensors")):
        try:
            with open(f, "rb") as stream:
                (size,) = struct.unpack("<Q", stream.read(8))
                names |= set(json.loads(stream.read(size))) - {"__metadata__"}
        except (OSError, ValueError, struct.error):
            continue
    return names
