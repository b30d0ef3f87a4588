"""Vision-language judges (:mod:`rmkit.vision_judges`): a Qwen2-VL or Qwen2.5-VL checkpoint given
``--judge pairwise|rating|verifier`` (templates: :mod:`rmkit.data.vision_templates`, or the text judges').

It reads the data a vision RM reads (image rows, the vision suites) and answers as a readout judge does: its
raw outputs are one readout a judge prompt, and :meth:`values` turns a pairwise judge's two orders of each
pair into one score an answer (:func:`rmkit.kinds.judge.pairwise_scores`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rmkit.data.judging import Judge
from rmkit.kinds.base import Checkpoint, Reading
from rmkit.kinds.judge import JudgeKind, judge_of
from rmkit.kinds.vision import MODEL_TYPES, VisionKind


class VisionJudgeKind(VisionKind):
    name = "vision-judge"

    def recognises(self, checkpoint: Checkpoint) -> bool:
        return checkpoint.config.get("model_type") in MODEL_TYPES and judge_of(checkpoint) is not None

    def load(self, checkpoint: Checkpoint, dtype: Any, device: Any) -> Any:
        from rmkit.vision_judges import load_vision_judge

        options = checkpoint.options
        return load_vision_judge(
            checkpoint.path,
            Judge.of(judge_of(checkpoint) or {}),
            dtype=dtype,
            device=device,
            allow_pickle=options.get("allow_pickle", False),
            **(options.get("images") or {}),
        )

    def owns(self, model: Any) -> bool:
        return type(model).__name__ == "VisionJudge"

    def holds(self, path: str | Path, reading: Reading) -> bool:
        return False  # image data is the vision kind's; this kind scores it too

    values = JudgeKind.values
    servable = JudgeKind.servable
