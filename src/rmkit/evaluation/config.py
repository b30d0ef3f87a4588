"""The options of ``rmkit eval`` (:mod:`rmkit.options`), apart from the runner, which loads torch: ``rmkit eval
--help`` answers at once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rmkit.data import first_record
from rmkit.errors import RMKitError
from rmkit.files import claim_output_dir
from rmkit.jobs.config import PassCostOptions
from rmkit.options import (
    InferenceOptions,
    ModelOptions,
    PairOptions,
    ReadingOptions,
    RuntimeOptions,
    ScaleOptions,
    StepOptions,
    option,
)


@dataclass(kw_only=True)
class EvalConfig(
    PairOptions, RuntimeOptions, InferenceOptions, PassCostOptions, ScaleOptions, ModelOptions, StepOptions
):
    model: list[str] = option(
        path="model",
        help="reward model(s) to evaluate: a checkpoint directory or hub name; two or more to compare "
        "them on the same pairs (--model A B, or --model A --model B)",
    )
    data: list[str] = option(
        path="data",
        help="data file(s), all of one kind: preference pairs, step-labelled solutions (process RMs) or rated "
        "responses; .json, .jsonl, .csv, .parquet or a save_to_disk directory",
        aliases=["--input"],
    )
    output_dir: str = option(help="directory for metrics.json, scores.jsonl, plots/ and report.md")
    max_length: int | None = option(
        None, help="longest sequence in tokens; default: the model's (its rmkit metadata, else its config)"
    )
    truncation: str = option(
        "left",
        help="over-length pairs: 'left' cuts the prompt from the left, once for both answers (so the longer "
        "fits), 'drop' leaves the pair out (counted)",
        choices=["left", "drop"],
    )
    prefix_sharing: bool = option(
        True, help="score chosen and rejected after one pass over their shared prompt (causal models; exact)"
    )
    bootstrap: int = option(
        1000, help="bootstrap resamples for the 95 percent confidence interval of accuracy"
    )
    seed: int = option(0, help="seed of the bootstrap")
    cost_model: str | None = option(
        None,
        help="a safety cost model judged beside --model on preference pairs: both numbers on every row of "
        "scores.jsonl, and the share of pairs whose chosen answer (and each reward model's preferred one) is "
        "also the safer, costing less",
        path="model",
    )
    objective: str = option(
        "reward",
        help="which labels of data that carries two kinds: 'reward', the preferences; 'cost', the safety labels "
        "(PKU-SafeRLHF), judged on cost models (BeaverTails rows are safety labels either way)",
        choices=["reward", "cost"],
    )
    plots: bool = option(True, help="draw the PNG plots (--no-plots skips them)")
    page: bool = option(
        True,
        help="write report.html, the page to look at (--no-page skips it; rmkit report DIR writes it later)",
    )
    page: bool = option(
        True,
        help="write report.html, the page to look at (--no-page skips it; rmkit report DIR writes it later)",
    )
    attributes: list[str] | None = option(
        None, help="rated data: the rating columns (default: HelpSteer2's, or all)"
    )
    threshold: float = option(
        0.5, help="process reward models: a step counts as right when it scores at least this"
    )
    overwrite: bool = option(
        False, help="write over an --output-dir that holds another run's files (without it: refused)"
    )
    suite: str = option(
        "auto",
        help="score the data as a public benchmark does: rewardbench, rewardbench2, rm-bench, judgebench, "
        "processbench, or with images vl-rewardbench, multimodal-rewardbench, mm-rlhf-rewardbench; auto "
        "(default) when the files are unmistakably one; none for plain pairs",
        choices=[
            "auto",
            "none",
            "rewardbench",
            "rewardbench2",
            "rm-bench",
            "judgebench",
            "processbench",
            "vl-rewardbench",
            "multimodal-rewardbench",
            "mm-rlhf-rewardbench",
        ],
    )
    resume: bool = option(
        False,
        help="continue a killed --suite run in the same --output-dir: rows it scored are not scored again",
    )

    def __post_init__(self) -> None:
        # Python callers may pass one path as a string.
        self.model = [self.model] if isinstance(self.model, str) else list(self.model)
        self.data = [self.data] if isinstance(self.data, str) else list(self.data)
        if not self.model or not self.data:
            raise RMKitError("eval needs at least one --model and one --data file")

    def validate(self) -> None:
        """Refuse, before any model loads, a data file that cannot be read and an output directory that
        holds another run's files (without ``--overwrite``)."""
        for path in self.data:
            first_record(path)
        self.replica_range()
        self.check_batch_cost()
        if not self.resume:
            claim_output_dir(self.output_dir, overwrite=self.overwrite, resumable=True)


@dataclass(kw_only=True)
class ReportConfig(ReadingOptions):
    """Options of ``rmkit report``: the page of an existing ``rmkit eval`` directory, built again."""

    directory: str = option(
        help="an rmkit eval output directory (metrics.json, scores.jsonl); report.html is written there",
        positional=True,
    )

    def validate(self) -> None:
        """Refuse, in one line, a directory that holds no evaluation."""
        for name in ("metrics.json", "scores.jsonl"):
            if not (Path(self.directory) / name).is_file():
                raise RMKitError(
                    f"{self.directory} holds no {name}: it is not an rmkit eval output directory"
                )
