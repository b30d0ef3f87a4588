"""``rmkit eval``: does the RM rank answers the way people do? Accuracy, score statistics, plots, a report.

Every pair of every data set is scored by every model with :func:`rmkit.scoring.score_examples`; the
metrics are pure functions of the scores (:func:`pair_metrics`), so they can be checked on hand-made
numbers. Written to the output directory::

    metrics.json   per model, per data set ("all") and per subset: the numbers of pair_metrics
    scores.jsonl   one line per pair, in input order: data set, row, subset, lengths, scores and margin
    plots/*.png    chosen vs rejected score histograms, margin histograms, score vs length, model vs model
    report.md      the tables and the plots, readable on GitHub

A subset is the ``subset`` (else ``category``) column of a row; rows without one belong to a subset
named after their file. Length is the response's length in characters (model-independent, so two RMs
with different tokenizers are checked against the same numbers); for rows scored verbatim as rendered
text it is the whole text's length.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rmkit.config import DataOptions, option
from rmkit.data import Rejects, iter_examples
from rmkit.errors import RMKitError
from rmkit.modeling import RewardModel
from rmkit.scoring import ScoreStats, score_examples

log = logging.getLogger(__name__)

SUBSET_COLUMNS = ("subset", "category")
LENGTH_UNIT = "characters"


@dataclass(kw_only=True)
class EvalConfig(DataOptions):
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
    batch_tokens: int = option(16384, help="padded tokens per forward pass")
    dtype: str = option("fp32", help="model dtype", choices=["fp32", "bf16", "fp16"])
    device: str | None = option(None, help="torch device; default: cuda when available, else cpu")
    bootstrap: int = option(
        1000, help="bootstrap resamples for the 95 percent confidence interval of accuracy"
    )
    seed: int = option(0, help="seed of the bootstrap")
    plots: bool = option(True, help="draw the PNG plots (--no-plots skips them)")

    def __post_init__(self) -> None:
        # Python callers may pass one path as a string.
        self.model = [self.model] if isinstance(self.model, str) else list(self.model)
        self.data = [self.data] if isinstance(self.data, str) else list(self.data)
        if not self.model or not self.data:
            raise RMKitError("eval needs at least one --model and one --data file")


# ---------------------------------------------------------------------------------------------------------
# Metrics on scored pairs


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson correlation; ``None`` when it is undefined (fewer than two points, or a constant input)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2:
        return None
    dx, dy = x - x.mean(), y - y.mean()
    denom = math.sqrt(float((dx * dx).sum()) * float((dy * dy).sum()))
    return float((dx * dy).sum() / denom) if denom > 0 else None


def ranks(x: Sequence[float]) -> np.ndarray:
    """1-based ranks, ties sharing their average rank (``[10, 20, 20, 30] -> [1, 2.5, 2.5, 4]``)."""
    x = np.asarray(x, dtype=float)
    order = np.argsort(x, kind="stable")
    positions = np.empty(len(x))
    positions[order] = np.arange(1, len(x) + 1)
    _, group = np.unique(x, return_inverse=True)
    return (np.bincount(group, weights=positions) / np.bincount(group))[group]


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman rank correlation: Pearson of the average ranks; ``None`` when undefined."""
    return pearson(ranks(x), ranks(y)) if len(x) >= 2 else None


def accuracy_interval(
    correct: int, n: int, *, samples: int = 1000, seed: int = 0, level: float = 0.95
) -> list[float] | None:
    """Percentile bootstrap interval of an accuracy of ``correct`` out of ``n`` pairs.

    Resampling ``n`` pairs with replacement and counting the correct ones draws from
    ``Binomial(n, correct / n)`` exactly, so the resamples are drawn from that distribution directly.
    """
    if n == 0 or samples <= 0:
        return None
    draws = np.random.default_rng(seed).binomial(n, correct / n, size=samples) / n
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


def compare_pairs(
    margin_a: Sequence[float], margin_b: Sequence[float], *, bootstrap: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Two RMs on the same N pairs (their margins, chosen - rejected).

    ``accuracy_difference`` is B's accuracy minus A's (ties wrong) and ``difference_ci`` its 95% paired
    bootstrap interval: the same resampled pairs for both models, so an interval that excludes zero means
    B really ranks these pairs differently. ``same_sign``: share of pairs where both margins have the same
    sign; ``margin_pearson``/``margin_spearman``: how alike the two margins are.
    """
    a, b = np.asarray(margin_a, dtype=float), np.asarray(margin_b, dtype=float)
    n = len(a)
    if not n:
        keys = ("accuracy_difference", "difference_ci", "same_sign", "margin_pearson", "margin_spearman")
        return {"pairs": 0, **dict.fromkeys(keys)}
    delta = (b > 0).astype(float) - (a > 0).astype(float)
    ci = None
    if bootstrap > 0:
        rng = np.random.default_rng(seed)
        block = max(1, 4_000_000 // n)  # resamples per block, to bound memory on large data sets
        means = np.concatenate(
            [
                delta[rng.integers(0, n, size=(min(block, bootstrap - done), n))].mean(axis=1)
                for done in range(0, bootstrap, block)
            ]
        )
        ci = [float(q) for q in np.quantile(means, [0.025, 0.975])]
    return {
        "pairs": n,
        "accuracy_difference": float(delta.mean()),
        "difference_ci": ci,
        "same_sign": float((np.sign(a) == np.sign(b)).mean()),
        "margin_pearson": pearson(a, b),
        "margin_spearman": spearman(a, b),
    }


def _half_credit(sign: np.ndarray) -> float:
    """Share of positive signs, a zero counting one half."""
    return float(((sign > 0) + 0.5 * (sign == 0)).mean())


def pair_metrics(
    chosen: Sequence[float],
    rejected: Sequence[float],
    chosen_length: Sequence[float],
    rejected_length: Sequence[float],
    *,
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """The metrics of N scored pairs (scores of the chosen and the rejected answer, and their lengths).

    - ``accuracy``: share of pairs with chosen > rejected, a tie counting as wrong (RewardBench's rule);
      ``accuracy_ties_half`` counts a tie as one half; ``ties`` counts pairs with equal scores;
      ``accuracy_ci``: 95% bootstrap interval of ``accuracy`` (seeded, so reproducible).
    - ``margin_mean``/``margin_std``: of chosen - rejected; ``chosen_mean``, ``chosen_std``,
      ``rejected_mean``, ``rejected_std``: of the scores. Standard deviations are population ones (ddof=0).
      Accuracy, ties, means and stds follow the same rules as the training metrics of
      :func:`rmkit.losses.metrics_from_sums`, so ``rmkit train``'s eval numbers and these agree.
    - Length bias: ``length_pearson``/``length_spearman`` correlate score with response length over all
      2N responses; ``longer_wins_accuracy`` is the accuracy of always picking the longer answer (a
      baseline an RM should beat); ``rm_prefers_longer`` is how often the RM scores the longer answer
      higher. In both, an equal length (or an equal score) counts one half.

    A value that is undefined (no pairs, constant input) is ``None``.
    """
    c, r = np.asarray(chosen, dtype=float), np.asarray(rejected, dtype=float)
    lc, lr = np.asarray(chosen_length, dtype=float), np.asarray(rejected_length, dtype=float)
    n = len(c)
    if not n:
        keys = ("accuracy", "accuracy_ties_half", "accuracy_ci", "margin_mean", "margin_std")
        keys += ("chosen_mean", "chosen_std", "rejected_mean", "rejected_std", "length_pearson")
        keys += ("length_spearman", "longer_wins_accuracy", "rm_prefers_longer")
        return {"pairs": 0, "ties": 0, **dict.fromkeys(keys)}
    margin = c - r
    wins, ties = int((margin > 0).sum()), int((margin == 0).sum())
    scores, lengths = np.concatenate([c, r]), np.concatenate([lc, lr])
    longer = np.sign(lc - lr)
    return {
        "pairs": n,
        "accuracy": wins / n,
        "accuracy_ties_half": (wins + 0.5 * ties) / n,
        "accuracy_ci": accuracy_interval(wins, n, samples=bootstrap, seed=seed),
        "ties": ties,
        "margin_mean": float(margin.mean()),
        "margin_std": float(margin.std()),
        "chosen_mean": float(c.mean()),
        "chosen_std": float(c.std()),
        "rejected_mean": float(r.mean()),
        "rejected_std": float(r.std()),
        "length_pearson": pearson(scores, lengths),
        "length_spearman": spearman(scores, lengths),
        "longer_wins_accuracy": _half_credit(longer),
        "rm_prefers_longer": _half_credit(np.sign(margin) * longer),
    }


# ---------------------------------------------------------------------------------------------------------
# Scoring the data sets


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


def _subset(extra: dict[str, Any]) -> str | None:
    for key in SUBSET_COLUMNS:
        if extra.get(key) not in (None, ""):
            return str(extra[key])
    return None


def _score_data(
    rm: RewardModel, label: str, ds: DataSet, config: EvalConfig, rejects: Rejects | None
) -> None:
    """Score every pair of ``ds`` with ``rm``; the first model also records rows, subsets and lengths."""
    first = not ds.scores
    examples = iter_examples(
        ds.path, kind="pairs", format=config.format, columns=config.columns, rejects=rejects
    )
    encoder = rm.encoder(max_length=config.max_length, truncation=config.truncation)
    stats = ScoreStats()
    values: list[list[float]] = []
    for i, (ex, scores) in enumerate(
        score_examples(rm, examples, encoder=encoder, batch_tokens=config.batch_tokens, stats=stats)
    ):
        if first:
            subset = _subset(ex.extra)
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


def _device(config: EvalConfig) -> str:
    return config.device or ("cuda" if torch.cuda.is_available() else "cpu")


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
    datasets = [DataSet(name, path) for name, path in zip(_labels(config.data), config.data, strict=True)]
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    for k, (label, path) in enumerate(zip(labels, config.model, strict=True)):
        rm = RewardModel.from_pretrained(path, dtype=config.dtype, device=_device(config))
        for ds in datasets:
            log.info("eval: scoring %s with %s", ds.path, label)
            # Bad rows are reported once, on the first model's pass; later passes skip the same rows quietly.
            rejects = None
            if config.on_error == "skip":
                rejects = Rejects(config.rejects if k == 0 else None)
            try:
                _score_data(rm, label, ds, config, rejects)
            finally:
                if rejects is not None:
                    rejects.close()
        del rm

    metrics = _metrics(labels, datasets, config)
    _write_scores(out / "scores.jsonl", labels, datasets)
    plots = _plots(out, labels, datasets, metrics) if config.plots else {}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(report(metrics, plots), encoding="utf-8")
    print(accuracy_table(metrics))
    if metrics["comparisons"]:
        print("\n" + comparison_table(metrics))
    print(f"wrote metrics.json, scores.jsonl, report.md{' and plots/' if plots else ''} to {out}")
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

    with open(path, "w", encoding="utf-8") as f:
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
    from rmkit import plots

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


# ---------------------------------------------------------------------------------------------------------
# Tables and the report


def _rows(metrics: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any]]]:
    """``(model, data, subset, numbers)`` rows, grouped by data set then subset so models sit together."""
    rows = []
    for data, info in metrics["data"].items():
        subsets = ["all"] + (
            list(metrics["results"][next(iter(metrics["models"]))][data]["subsets"])
            if info["subset_column"]
            else []
        )
        for subset in subsets:
            for model in metrics["models"]:
                result = metrics["results"][model][data]
                rows.append(
                    (model, data, subset, result["all"] if subset == "all" else result["subsets"][subset])
                )
    return rows


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:+.3g}"


def _table(header: list[str], rows: list[list[str]], numeric_from: int) -> str:
    """A markdown table padded to aligned columns, so it reads the same in a terminal and on GitHub."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        padded = [
            c.rjust(w) if i >= numeric_from else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * (w - 1) + ":" if i >= numeric_from else "-" * w for i, w in enumerate(widths)]
    return "\n".join([line(header), "| " + " | ".join(rule) + " |", *(line(r) for r in rows)])


def accuracy_table(metrics: dict[str, Any]) -> str:
    """The summary table (printed to the terminal and heading the report): accuracy with its interval."""
    header = ["model", "data", "subset", "pairs", "accuracy", "95% CI", "ties as ½", "ties", "longer wins"]
    rows = []
    for model, data, subset, m in _rows(metrics):
        ci = m["accuracy_ci"]
        rows.append(
            [
                model,
                data,
                subset,
                str(m["pairs"]),
                _pct(m["accuracy"]),
                "–" if ci is None else f"{100 * ci[0]:.1f}–{100 * ci[1]:.1f}%",
                _pct(m["accuracy_ties_half"]),
                str(m["ties"]),
                _pct(m["longer_wins_accuracy"]),
            ]
        )
    return _table(header, rows, numeric_from=3)


def score_table(metrics: dict[str, Any]) -> str:
    """Score statistics and the length-bias check."""
    header = [
        "model",
        "data",
        "subset",
        "chosen mean ± std",
        "rejected mean ± std",
        "mean margin",
        "r(score, length)",
        "ρ(score, length)",
        "RM prefers longer",
    ]
    rows = []
    for model, data, subset, m in _rows(metrics):

        def spread(kind: str, m=m) -> str:
            return "–" if m[f"{kind}_mean"] is None else f"{m[f'{kind}_mean']:+.3g} ± {m[f'{kind}_std']:.3g}"

        rows.append(
            [
                model,
                data,
                subset,
                spread("chosen"),
                spread("rejected"),
                _num(m["margin_mean"]),
                _num(m["length_pearson"]),
                _num(m["length_spearman"]),
                _pct(m["rm_prefers_longer"]),
            ]
        )
    return _table(header, rows, numeric_from=3)


def comparison_table(metrics: dict[str, Any]) -> str:
    """With several models: each later model against the first, on the same pairs."""
    header = ["model", "vs", "data", "pairs", "accuracy difference", "95% CI", "same sign", "r(margins)"]
    rows = []
    for key, by_data in metrics["comparisons"].items():
        model, base = key.split(" vs ", 1)
        for data, c in by_data.items():
            ci = c["difference_ci"]
            rows.append(
                [
                    model,
                    base,
                    data,
                    str(c["pairs"]),
                    "–"
                    if c["accuracy_difference"] is None
                    else f"{100 * c['accuracy_difference']:+.1f} points",
                    "–" if ci is None else f"{100 * ci[0]:+.1f} to {100 * ci[1]:+.1f}",
                    _pct(c["same_sign"]),
                    _num(c["margin_pearson"]),
                ]
            )
    return _table(header, rows, numeric_from=3)


def report(metrics: dict[str, Any], plots: dict[str, list[str]]) -> str:
    """``report.md``: what was evaluated, the two tables, the plots embedded by relative path."""
    boot = metrics["bootstrap"]
    models = _table(["model", "checkpoint"], [[k, f"`{v}`"] for k, v in metrics["models"].items()], 2)
    data = _table(
        ["data", "file", "pairs", "skipped", "dropped", "truncated"],
        [
            [
                name,
                f"`{d['path']}`",
                str(d["pairs"]),
                str(d["skipped"]),
                str(d["dropped"]),
                ", ".join(f"{m}: {n}" for m, n in d["truncated"].items()),
            ]
            for name, d in metrics["data"].items()
        ],
        numeric_from=2,
    )
    parts = [
        "# Reward model evaluation",
        "## What was evaluated",
        models,
        data,
        "Skipped: bad rows left out (`--on-error skip`). Dropped: over-length pairs left out "
        "(`--truncation drop`), for every model, so all models are judged on the same pairs. Truncated: "
        "pairs whose prompt was cut from the left to fit the model's max length.",
        "## Accuracy",
        accuracy_table(metrics),
        "Accuracy is the share of pairs where the chosen answer scores higher; a tie counts as wrong "
        f"(RewardBench's rule), and as one half in *ties as ½*. The 95% CI is a percentile bootstrap over "
        f"pairs ({boot['samples']} resamples, seed {boot['seed']}). *Longer wins* is the accuracy of always "
        "picking the longer answer: a baseline the RM should beat.",
        "## Scores and length",
        score_table(metrics),
        f"Length is the response's length in {metrics['length_unit']}. *r* (Pearson) and *ρ* (Spearman) "
        "correlate score with length over all chosen and rejected responses; *RM prefers longer* is how "
        "often the RM scores the longer answer of a pair higher (50% means no preference).",
    ]
    if metrics["comparisons"]:
        parts += [
            "## Comparison",
            comparison_table(metrics),
            "*Accuracy difference*: the model's accuracy minus the other's on the same pairs, with a paired "
            "bootstrap interval (the same resampled pairs for both); an interval that excludes zero is a real "
            "difference. *Same sign*: share of pairs both models rank the same way. *r*: Pearson correlation "
            "of their margins.",
        ]
    if plots:
        parts.append("## Plots")
        for title, paths in plots.items():
            parts.append(f"### {title}")
            parts.extend(f"![{Path(p).stem.replace('_', ' ')}]({p})" for p in paths)
    return "\n\n".join(parts) + "\n"
