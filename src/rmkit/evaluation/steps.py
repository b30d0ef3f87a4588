"""``rmkit eval`` with process reward models: step-labelled solutions in, step and ProcessBench figures out.

Every solution of every data set is scored by every PRM through the inference core
(:func:`rmkit.process.score_step_examples`); the figures are :func:`rmkit.metrics.step_metrics` of those
scores, per data set ("all") and per subset. Written to the output directory::

    metrics.json       per model, per data set and per subset: the numbers of step_metrics
    scores.jsonl       one line per solution, in input order: data set, row, subset, step scores, labels,
                       the first wrong step and the PRM's predicted one
    plots/steps_*.png  mean score by step position, right steps against wrong ones, per data set
    report.md          the table and the plots
"""

from __future__ import annotations

import json
import logging
from contextlib import nullcontext
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from rmkit import runtime
from rmkit.data import Rejects
from rmkit.data.steps import StepExample, iter_step_examples
from rmkit.evaluation.plots import CHOSEN, REJECTED, _figure, _title, save_in
from rmkit.evaluation.report import figure_table
from rmkit.files import atomic_write, write_json, write_text
from rmkit.metrics.graded import first_below, step_metrics
from rmkit.process import ProcessRewardModel, score_step_examples

log = logging.getLogger(__name__)

CHUNK = 512
FIGURES = ("solutions", "step_accuracy", "wrong_f1", "error_accuracy", "correct_accuracy", "processbench_f1")
MAX_POSITION = 30  # steps plotted; later ones share the last position


def evaluate_steps(config: Any, labels: list[str], names: list[str]) -> dict[str, Any]:
    """The PRM evaluation of :mod:`rmkit.evaluation.run`'s ``evaluate``, for models that are PRMs."""
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    scored: dict[str, dict[str, tuple[list[StepExample], list[list[float]]]]] = {}
    with runtime.start(config.device, config.threads) as rt:
        for k, (label, path) in enumerate(zip(labels, config.model, strict=True)):
            prm = ProcessRewardModel.from_pretrained(
                path,
                dtype=config.dtype,
                device=rt.device,
                allow_pickle=config.allow_pickle,
                trust_remote_code=config.trust_remote_code,
                **config.step_format(),
            )
            scored[label] = {
                name: _score(prm, data, config, first=k == 0)
                for name, data in zip(names, config.data, strict=True)
            }
    results = {label: {name: _grouped(*scored[label][name], config) for name in names} for label in labels}
    metrics = {
        "kind": "process",
        "models": dict(zip(labels, config.model, strict=True)),
        "data": dict(zip(names, config.data, strict=True)),
        "threshold": config.threshold,
        "results": results,
    }
    _write_scores(out / "scores.jsonl", scored, config.threshold)
    drawn = {label: [_plot(out, label, scored[label])] for label in labels} if config.plots else {}
    write_json(out / "metrics.json", metrics)
    table = step_table(metrics)
    write_text(out / "report.md", _report(table, drawn, config.threshold))
    print(table)
    print(f"wrote metrics.json, scores.jsonl, report.md{' and plots/' if drawn else ''} to {out}")
    return metrics


def _score(
    prm: ProcessRewardModel, data: str, config: Any, *, first: bool
) -> tuple[list[StepExample], list[list[float]]]:
    """The labelled solutions of ``data`` and their step scores (bad rows named, or skipped on the first
    model's pass and written to the rejects file)."""
    skip = config.on_error == "skip"
    examples, scores = [], []
    with Rejects(config.rejects if first else None) if skip else nullcontext() as rejects:
        rows = iter_step_examples(
            data, format=config.format, columns=config.columns, rejects=rejects, neutral=config.neutral_steps
        )
        while chunk := list(islice(rows, CHUNK)):
            chunk = [ex for ex in chunk if ex.labels is not None]
            examples += chunk
            scores += score_step_examples(
                prm, chunk, batch_tokens=config.batch_tokens, max_length=config.max_length
            )
    log.info("eval: %d labelled solutions of %s", len(examples), data)
    return examples, scores


def _grouped(examples: list[StepExample], scores: list[list[float]], config: Any) -> dict[str, Any]:
    subsets = [ex.subset(config.subset_column) for ex in examples]

    def of(keep: list[bool]) -> dict[str, Any]:
        picked = [i for i, k in enumerate(keep) if k]
        return step_metrics(
            [scores[i] for i in picked], [examples[i].labels for i in picked], threshold=config.threshold
        )

    names = [s for s in dict.fromkeys(subsets) if s is not None]
    return {"all": of([True] * len(examples)), "subsets": {n: of([s == n for s in subsets]) for n in names}}


def _write_scores(path: Path, scored: dict, threshold: float) -> None:
    several = len(scored) > 1
    with atomic_write(path) as f:
        for label, per_data in scored.items():
            for name, (examples, scores) in per_data.items():
                for ex, s in zip(examples, scores, strict=True):
                    line = {
                        "data": name,
                        "row": ex.row,
                        "subset": ex.subset(),
                        "step_scores": s,
                        "labels": ex.labels,
                    }
                    line.update(first_error=ex.first_error, predicted_error=first_below(s, threshold))
                    f.write(
                        json.dumps({"model": label, **line} if several else line, ensure_ascii=False) + "\n"
                    )


def _positions(
    examples: list[StepExample], scores: list[list[float]], want: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Step positions (1-based, capped) and scores of the labelled steps whose label is ``want``."""
    pos, val = [], []
    for ex, s in zip(examples, scores, strict=True):
        for i, (score, label) in enumerate(zip(s, ex.labels or [], strict=False)):
            if label is want:
                pos.append(min(i + 1, MAX_POSITION))
                val.append(score)
    return np.asarray(pos), np.asarray(val, dtype=float)


def _plot(out: Path, label: str, per_data: dict) -> str:
    """Mean step score by position, right steps against wrong ones, with the interquartile band."""
    fig: Figure
    fig, axes = _figure(len(per_data), f"{label}: step scores by position")
    for ax, (name, (examples, scores)) in zip(axes, per_data.items(), strict=True):
        for want, colour, text in ((True, CHOSEN, "right steps"), (False, REJECTED, "wrong steps")):
            pos, val = _positions(examples, scores, want)
            at = sorted(set(pos.tolist()))
            if not at:
                continue
            groups = [val[pos == p] for p in at]
            ax.plot(at, [g.mean() for g in groups], marker="o", color=colour, label=f"{text} ({len(val)})")
            lo, hi = zip(*(np.quantile(g, [0.25, 0.75]) for g in groups), strict=True)
            ax.fill_between(at, lo, hi, color=colour, alpha=0.2)
        _title(ax, name, f"{len(examples)} solutions")
        ax.set_xlabel(f"step (positions past {MAX_POSITION} shown at {MAX_POSITION})")
        ax.set_ylabel("step score")
        ax.set_ylim(-0.02, 1.02)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=9, loc="best")
    return save_in(fig, out, f"steps_{label}")


def step_table(metrics: dict[str, Any]) -> str:
    """A Markdown table of every model, data set and subset."""
    groups = [
        ([label, name, subset], m)
        for label, per_data in metrics["results"].items()
        for name, groups in per_data.items()
        for subset, m in [("all", groups["all"]), *groups["subsets"].items()]
    ]
    return figure_table(["model", "data", "subset"], groups, FIGURES)


def _report(table: str, drawn: dict[str, list[str]], threshold: float) -> str:
    text = [
        "# Process reward model evaluation",
        "",
        f"A step counts as right when its score is at least {threshold}. `step_accuracy` and `wrong_f1` are "
        "over the labelled steps (wrong steps the positive class); `error_accuracy` is the share of solutions "
        "with a wrong step whose first wrong step the PRM finds exactly, `correct_accuracy` the share of "
        "solutions without one that it passes whole, `processbench_f1` their harmonic mean (ProcessBench).",
        "",
        table,
    ]
    for label, paths in drawn.items():
        text += ["", f"## {label}", ""] + [f"![{label}]({p})" for p in paths]
    return "\n".join(text) + "\n"
