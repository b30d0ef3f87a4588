"""Where a training run reports: ``train_log.jsonl`` (one JSON object a line) and the trackers of
``--report-to`` (TensorBoard, Weights & Biases), on the main process only."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rmkit.training.config import TrainConfig


class TrainLog:
    """Write records to ``out/train_log.jsonl`` (appending when a run resumes) and to the trackers."""

    def __init__(self, out: Path, config: TrainConfig, main: bool, *, append: bool):
        self.main = main
        self.file = open(out / "train_log.jsonl", "a" if append else "w", encoding="utf-8") if main else None  # noqa: SIM115
        self.trackers: list[Any] = []
        for name in config.report_to if main else []:
            if name == "tensorboard":
                from torch.utils.tensorboard import SummaryWriter

                self.trackers.append(SummaryWriter(str(out / "runs")))
            else:
                import wandb

                self.trackers.append(wandb.init(config=asdict(config), dir=str(out)))

    def __enter__(self) -> TrainLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log(self, record: dict[str, Any]) -> None:
        """One record: ``step`` and numbers (and, for eval, a dict of subset accuracies)."""
        if not self.main:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
        for t in self.trackers:
            if hasattr(t, "add_scalar"):
                for k, v in scalars.items():
                    t.add_scalar(k, v, record["step"])
            else:
                t.log(scalars, step=record["step"])

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        for t in self.trackers:
            (t.close if hasattr(t, "close") else t.finish)()
        self.trackers = []
