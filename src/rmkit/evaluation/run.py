"""``rmkit eval``: does the RM rank answers the way people do? Accuracy, score statistics, plots, a report.

Every pair of every data set is scored by every model through the inference core
(:func:`rmkit.inference.score_examples`); the figures are pure functions of the scores
(:func:`rmkit.metrics.pair_metrics`), so they can be checked on hand-made numbers. Written to the output
directory::

    metrics.json   per model, per data set ("all") and per subset: the numbers of pair_metrics
    scores.jsonl   one line per pair, in input order: data set, row, subset, lengths, scores and margin
    plots/*.png    chosen vs rejected score histograms, margin histograms, score vs length, model vs model
    report.md      the tables and the plots, readable on GitHub (:mod:`rmkit.evaluation.report`)

A pair's subset follows the rule of every command (:meth:`rmkit.data.Example.subset`: ``--subset-column``,
else ``subset``, else ``category``); rows without one belong to a subset named after their file. Length is
the response's length in characters (model-independent, so two RMs with different tokenizers are checked
against the same numbers); for rows scored verbatim as rendered text it is the whole text's length.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rmkit import runtime
from rmkit.data import Rejects, RowCounts, iter_examples
from rmkit.data.ratings import holds_rated
from rmkit.errors import RMKitError
from rmkit.evaluation import plots
from rmkit.evaluation.ratings import evaluate_ratings
from rmkit.evaluation.report import accuracy_table, comparison_table, report
from rmkit.evaluation.steps import evaluate_steps
from rmkit.files import atomic_write, write_json, write_text
from rmkit.inference import score_examples
from rmkit.metrics import compare_pairs, pair_metrics
from rmkit.modeling import RewardModel
from rmkit.options import InferenceOptions, ModelOptions, PairOptions, RuntimeOptions, StepOptions, option
from rmkit.process import is_process_model

log = logging.getLogger(__name__)

LENGTH_UNIT = "characters"


@dataclass(kw_only=True)
class EvalConfig(PairOptions, RuntimeOptions, InferenceOptions, ModelOptions, StepOptions):
    model: list[str] = option(
        help="reward model(s) to evaluate: a checkpoint directory or hub name; two or more to compare "
        "them on the same pairs (--model A B, or --model A --model B)"
    )
    data: list[str] = option(
        help="preference pair file(s): .json, .jsonl, .csv, .parquet or a save_to_disk directory"
    )
    output_dir: str = option(help="directory for metrics.json, scores.jsonl, plots/ and report.md")
    max_length: int | None = option(
        None, help="longest sequence in tokens; default: the model's (its rmkit metadata, else its config)"
    )
    truncation: str = option(
        "left",
        help="over-length pairs: 'left' cuts the prompt from the left, 'drop' leaves the pair out (counted)",
        choices=["left", "drop"],
    )
    prefix_sharing: bool = option(
        True, help="score chosen and rejected after one pass over their shared prompt (causal models; exact)"
    )
    bootstrap: int = option(
        1000, help="bootstrap resamples for the 95 percent confidence interval of accuracy"
    )
    seed: int = option(0, help="seed of the bootstrap")
    plots: bool = option(True, help="draw the PNG plots (--no-plots skips them)")
    attributes: list[str] | None = option(
        None, help="rated data: the rating columns (default: HelpSteer2's, or all)"
    )
    threshold: float = option(
        0.5, help="process reward models: a step counts as right when it scores at least this"
    )

    def __post_init__(self) -> None:
        # Python callers may pass one path as a string.
        self.model = [self.model] if isinstance(self.model, str) else list(self.model)
        self.data = [self.data] if isinstance(self.data, str) else list(self.data)
        if not self.model or not self.data:
            raise RMKitError("eval needs at least one --model and one --data file")


@dataclass
class DataSet:
    """The pairs of one data file: row ids, subsets and lengths, then each model's scores (N×2, NaN for a
    pair dropped by the truncation rule)."""

    name: str
    path: str
    rows: list[int] = field(default_factory=list)
    subsets: list[str] = field(default_factory=list)
    lengths: list[tuple[int, int]] = field(default_factory=list)
    has_subset_column: bool = False
    skipped: int = 0
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    truncated: dict[str, int] = field(default_factory=dict)

    def scored(self) -> np.ndarray:
        """Mask of the pairs every model scored (the same pairs for every model, so comparisons are fair)."""
        mask = np.ones(len(self.rows), dtype=bool)
        for s in self.scores.values():
            mask &= ~np.isnan(s).any(axis=1)
        return mask


def _labels(paths: Sequence[str]) -> list[str]:
    """Short unique names for paths: the last path component, made file-name safe, numbered on a clash."""
    labels: list[str] = []
    for p in paths:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(p).rstrip("/")).name)
        base = Path(base).stem if Path(base).suffix in (".json", ".jsonl", ".csv", ".parquet") else base
        label, k = base or "model", 2
        while label in labels:
            label, k = f"{base}-{k}", k + 1
        labels.append(label)
    return labels


def _score_data(
    rm: RewardModel, label: str, ds: DataSet, config: EvalConfig, rejects: Rejects | None
) -> None:
    """Score every pair of ``ds`` with ``rm``; the first model also records rows, subsets and lengths."""
    first = not ds.scores
    examples = iter_examples(
        ds.path, kind="pairs", format=config.format, columns=config.columns, rejects=rejects
    )
    tokenizer = rm.example_tokenizer(max_length=config.max_length, truncation=config.truncation)
    stats = RowCounts()
    values: list[list[float]] = []
    for i, (ex, scores) in enumerate(
        score_examples(
            rm,
            examples,
            tokenizer,
            batch_tokens=config.batch_tokens,
            stats=stats,
            share_prefixes=config.prefix_sharing,
        )
    ):
        if first:
            subset = ex.subset(config.subset_column)
            ds.has_subset_column |= subset is not None
            ds.rows.append(ex.row)
            ds.subsets.append(subset or ds.name)
            ds.lengths.append((len(ex.responses[0]), len(ex.responses[1])))
        elif i >= len(ds.rows) or ds.rows[i] != ex.row:
            raise RMKitError(f"{ds.path}: the file changed while it was being evaluated")
        values.append(scores if scores is not None else [math.nan, math.nan])
    if len(values) != len(ds.rows):
        raise RMKitError(f"{ds.path}: the file changed while it was being evaluated")
    ds.scores[label] = np.asarray(values, dtype=float).reshape(-1, 2)
    ds.truncated[label] = stats.truncated
    if first and rejects is not None:
        ds.skipped = rejects.count


# ---------------------------------------------------------------------------------------------------------
# The command


def evaluate(config: EvalConfig | None = None, **options: Any) -> dict[str, Any]:
    """Evaluate one or more RMs on preference pairs; write the files above and return the metrics.

    Call with an :class:`EvalConfig` or its fields: ``evaluate(model="rm", data="pairs.json",
    output_dir="out")``. The returned dict is what ``metrics.json`` holds; the numbers of a model on a
    data set are ``metrics["results"][model][data]["all"]`` and, per subset,
    ``...["subsets"][subset]`` (keys are listed at :func:`pair_metrics`). With several models,
    ``metrics["comparisons"]["B vs A"][data]`` compares each later model B with the first, A
    (:func:`compare_pairs`).
    """
    config = config if config is not None else EvalConfig(**options)
    labels = _labels(config.model)
    process = [is_process_model(m, config.step_format()) for m in config.model]
    if any(process):
        if not all(process):
            raise RMKitError(
                "eval compares outcome reward models on pairs, or process reward models on steps; not both"
            )
        return evaluate_steps(config, labels, _labels(config.data))
    if all(
        holds_rated(d, format=config.format, columns=config.columns, attributes=config.attributes)
        for d in config.data
    ):
        return evaluate_ratings(config, labels, _labels(config.data))
    datasets = [DataSet(name, path) for name, path in zip(_labels(config.data), config.data, strict=True)]
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    with runtime.start(config.device, config.threads) as rt:
        for k, (label, path) in enumerate(zip(labels, config.model, strict=True)):
            rm = RewardModel.from_pretrained(path, dtype=config.dtype, device=rt.device, **config.loading())
            for ds in datasets:
                log.info("eval: scoring %s with %s", ds.path, label)
                # Bad rows are reported once, on the first model's pass; later passes skip them quietly.
                skip = config.on_error == "skip"
                with Rejects(config.rejects if k == 0 else None) if skip else nullcontext() as rejects:
                    _score_data(rm, label, ds, config, rejects)
            del rm

    metrics = _metrics(labels, datasets, config)
    _write_scores(out / "scores.jsonl", labels, datasets)
    drawn = _plots(out, labels, datasets, metrics) if config.plots else {}
    write_json(out / "metrics.json", metrics)
    write_text(out / "report.md", report(metrics, drawn))
    print(accuracy_table(metrics))
    if metrics["comparisons"]:
        print("\n" + comparison_table(metrics))
    print(f"wrote metrics.json, scores.jsonl, report.md{' and plots/' if drawn else ''} to {out}")
    return metrics


def _metrics(labels: list[str], datasets: list[DataSet], config: EvalConfig) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for label in labels:
        results[label] = {}
        for ds in datasets:
            mask = ds.scored()
            s, lengths = ds.scores[label], np.asarray(ds.lengths, dtype=float).reshape(-1, 2)
            subsets = np.asarray(ds.subsets, dtype=object)

            def group(m: np.ndarray, s=s, lengths=lengths) -> dict[str, Any]:
                return pair_metrics(
                    s[m, 0],
                    s[m, 1],
                    lengths[m, 0],
                    lengths[m, 1],
                    bootstrap=config.bootstrap,
                    seed=config.seed,
                )

            results[label][ds.name] = {
                "all": group(mask),
                "subsets": {name: group(mask & (subsets == name)) for name in dict.fromkeys(ds.subsets)},
            }
    return {
        "models": dict(zip(labels, config.model, strict=True)),
        "data": {
            ds.name: {
                "path": ds.path,
                "pairs": len(ds.rows),
                "skipped": ds.skipped,
                "dropped": int((~ds.scored()).sum()),
                "truncated": ds.truncated,
                "subset_column": ds.has_subset_column,
            }
            for ds in datasets
        },
        "length_unit": LENGTH_UNIT,
        "bootstrap": {"samples": config.bootstrap, "seed": config.seed, "level": 0.95},
        "results": results,
        "comparisons": {
            f"{other} vs {labels[0]}": {
                ds.name: compare_pairs(
                    *(ds.scores[m][ds.scored()] @ [1.0, -1.0] for m in (labels[0], other)),
                    bootstrap=config.bootstrap,
                    seed=config.seed,
                )
                for ds in datasets
            }
            for other in labels[1:]
        },
    }


def _write_scores(path: Path, labels: list[str], datasets: list[DataSet]) -> None:
    """One line per pair in input order; with several models each score key carries the model's label."""

    def key(name: str, label: str) -> str:
        return name if len(labels) == 1 else f"{name}_{label}"

    def number(x: float) -> float | None:
        return None if math.isnan(x) else float(x)

    with atomic_write(path) as f:
        for ds in datasets:
            for i, row in enumerate(ds.rows):
                line: dict[str, Any] = {
                    "data": ds.name,
                    "row": row,
                    "subset": ds.subsets[i],
                    "chosen_length": ds.lengths[i][0],
                    "rejected_length": ds.lengths[i][1],
                }
                for label in labels:
                    c, r = ds.scores[label][i]
                    line[key("chosen_score", label)] = number(c)
                    line[key("rejected_score", label)] = number(r)
                    line[key("margin", label)] = number(c - r)
                f.write(json.dumps(line, ensure_ascii=False) + "\n")


def _plots(
    out: Path, labels: list[str], datasets: list[DataSet], metrics: dict[str, Any]
) -> dict[str, list[str]]:
    """Draw every plot; returns ``{section title: [paths relative to out]}`` for the report."""
    (out / "plots").mkdir(exist_ok=True)
    drawn: dict[str, list[str]] = {}
    for label in labels:
        panels = []
        for ds in datasets:
            m = ds.scored()
            lengths = np.asarray(ds.lengths, dtype=float).reshape(-1, 2)[m]
            panels.append(
                plots.Panel(ds.name, ds.scores[label][m], lengths, metrics["results"][label][ds.name]["all"])
            )
        names = [f"plots/scores_{label}.png", f"plots/margins_{label}.png", f"plots/length_{label}.png"]
        plots.score_histograms(panels, label, out / names[0])
        plots.margin_histograms(panels, label, out / names[1])
        plots.length_scatter(panels, label, out / names[2], unit=LENGTH_UNIT)
        drawn[label] = names
    base = labels[0]
    for other in labels[1:]:
        name = f"plots/compare_{base}_vs_{other}.png"
        pairs = []
        for ds in datasets:
            m = ds.scored()
            a, b = ds.scores[base][m], ds.scores[other][m]
            pairs.append((ds.name, a[:, 0] - a[:, 1], b[:, 0] - b[:, 1]))
        plots.margin_scatter(pairs, base, other, out / name)
        drawn[f"{base} vs {other}"] = [name]
    return drawn
