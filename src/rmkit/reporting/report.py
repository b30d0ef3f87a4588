"""The tables of ``rmkit eval`` (printed and in ``report.md``) and the report itself, from ``metrics.json``'s
dict alone: what was evaluated, accuracy with its interval, score statistics and length bias, the comparison
of several models, and the plots embedded by relative path."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


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


def figure_table(
    keys: list[str], groups: list[tuple[list[str], dict[str, Any]]], figures: Sequence[str]
) -> str:
    """The aligned table of ``(row names, figures)`` groups: a column per key, then the ``figures`` (the
    first a count, the rest to 3 decimals, "-" when undefined)."""
    rows = [
        [*names, str(m[figures[0]]), *("-" if m[k] is None else f"{m[k]:.3f}" for k in figures[1:])]
        for names, m in groups
    ]
    return _table([*keys, *figures], rows, len(keys))


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


def _ci(ci: Sequence[float] | None) -> str:
    return "–" if ci is None else f"{100 * ci[0]:.1f}–{100 * ci[1]:.1f}"


def leaderboard_table(block: dict[str, Any], columns: Sequence[str]) -> str:
    """A benchmark suite's leaderboard rows (percent, one decimal, as the leaderboards show them): each model's
    score, then the benchmark's columns; "–" where a part is missing."""
    rows = [
        [label, _pct(m["score"]), _ci(m["score_ci"]), *(_pct(m["leaderboard"][c]) for c in columns)]
        for label, m in block["models"].items()
    ]
    return _table(["Model", "Score", "95% CI", *columns], rows, 1)


def suite_report(metrics: dict[str, Any], columns: Sequence[str], plots: dict[str, list[str]]) -> str:
    """``report.md`` of a benchmark suite: the leaderboard row first, then every subset with its interval."""
    block = metrics["suite"]
    text = [f"# {block['title']}", "", leaderboard_table(block, columns), ""]
    text += [
        f"Scored as {block['rules']}. Intervals: 95% percentile bootstrap, "
        f"{metrics['bootstrap']['samples']} resamples of the rows within each subset (seed {metrics['bootstrap']['seed']}).",
    ]
    for label, m in block["models"].items():
        text += ["", f"## {label} ({metrics['models'][label]})", ""]
        if m["missing"]:
            text.append(
                f"**Missing subsets** (the score needs them; none is counted as 0): {', '.join(m['missing'])}.\n"
            )
        if m["non_finite"]["rows"]:
            ids = ", ".join(m["non_finite"]["ids"])
            text.append(
                f"**{m['non_finite']['rows']} rows** had a missing or non-finite score and count as wrong: {ids}.\n"
            )
        if m["sections"]:
            rows = [[name, _pct(s["score"]), _ci(s["score_ci"])] for name, s in m["sections"].items()]
            text += [_table(["Section", "Score", "95% CI"], rows, 1), ""]
        rows = [
            [name, str(s["rows"]), _pct(s["score"]), _ci(s["score_ci"])] for name, s in m["subsets"].items()
        ]
        text += [_table(["Subset", "Rows", "Score", "95% CI"], rows, 1)]
    for title, paths in plots.items():
        text += ["", f"## {title}", ""] + [f"![{title}]({p})" for p in paths]
    return "\n".join(text) + "\n"
