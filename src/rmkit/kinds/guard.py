"""Safety classifiers read as cost models: Llama Guard 3/4 and ShieldGemma (:mod:`rmkit.data.guards`).

A guard is a readout judge (``--judge verifier --judge-template llama-guard`` or ``shieldgemma``) whose
settings say ``meaning: cost``: it is read as the judge kind reads it (one forward pass, the verdict tokens'
logits at the last position) and answered for as the cost kind answers (``cost`` columns, lower is safer,
ranked by ``-cost``, judged by the cost evaluation on safety-labelled data and as the cost model beside a
reward model). A verifier converted from a guard (``rmkit convert --verifier``) keeps its judge settings and
is a guard too. Its data is the cost kind's: it holds none of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rmkit.kinds.base import Checkpoint, Reading
from rmkit.kinds.cost import CostEvaluation, CostKind
from rmkit.kinds.judge import JudgeKind, judge_of


class GuardKind(JudgeKind, CostKind):
    """A judge whose readout is a safety cost (module docstring): loaded and scored as a judge, written,
    served and evaluated as a cost model."""

    name = "guard"
    data = CostKind.data

    def recognises(self, checkpoint: Checkpoint) -> bool:
        from rmkit.data.judging import Judge

        settings = judge_of(checkpoint)
        return settings is not None and Judge.of(settings).kind == self.name

    def owns(self, model: Any) -> bool:
        from rmkit.kinds.judge import judge_of_model

        return JudgeKind.owns(self, model) and judge_of_model(model).kind == self.name

    def holds(self, path: str | Path, reading: Reading) -> bool:
        """Safety-labelled data is the cost kind's (its evaluation judges guards too)."""
        return False

    def evaluation(self, config: Any, labels: list[str], names: list[str]) -> CostEvaluation:
        return CostEvaluation(self, config, labels, names)
