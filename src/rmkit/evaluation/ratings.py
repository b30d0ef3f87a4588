"""``rmkit eval`` on rated responses: does the RM's output follow each attribute's ratings?

Every response of every data set (:mod:`rmkit.data.ratings`) is scored by every model through the inference
core. Each of the data's attributes is compared with the model's output for it: the attribute's own output
for a multi-attribute RM that has it (then the MAE counts too), else the model's one score. The figures are
:func:`rmkit.metrics.rating_metrics`, per attribute: Pearson and Spearman with bootstrap intervals, MAE, and
the accuracy on the pairs the ratings imply (two responses to one prompt whose ratings differ). Written::

    metrics.json         per model, data set and attribute: the numbers of rating_metrics
    scores.jsonl         one line per response: data set, row, the ratings and the model's outputs
    plots/ratings_*.png  the model's output against each attribute's ratings, a panel per attribute
    report.md            the table and the plots
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from rmkit import runtime
from rmkit.data import Example, Rejects
from rmkit.data.ratings import iter_rated
from rmkit.evaluation.plots import _figure, _title, save_in
from rmkit.evaluation.report import figure_table
from rmkit.files import atomic_write, write_json, write_text
from rmkit.inference import score_examples
from rmkit.metrics.graded import rating_metrics
from rmkit.modeling import RewardModel

FIGURES = ("responses", "pearson", "spearman", "mae", "pair_accuracy")


def evaluate_ratings(config: Any, labels: list[str], names: list[str]) -> dict[str, Any]:
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    lines: list[dict[str, Any]] = []
    drawn: dict[str, list[str]] = {}
    with runtime.start(config.device, config.threads) as rt:
        for k, (label, path) in enumerate(zip(labels, config.model, strict=True)):
            rm = RewardModel.from_pretrained(path, dtype=config.dtype, device=rt.device, **config.loading())
            results[label], drawn[label] = {}, []
            for name, data in zip(names, config.data, strict=True):
                rows, outputs = _score(rm, data, config, first=k == 0)
                results[label][name] = _figures(rm, rows, outputs, config)
                lines += [{"model": label, "data": name, **line} for line in _lines(rm, rows, outputs)]
                if config.plots:
                    drawn[label].append(_plot(out, label, name, rm, rows, outputs))
    metrics = {"kind": "ratings", "models": dict(zip(labels, config.model, strict=True)), "results": results}
    with atomic_write(out / "scores.jsonl") as f:
        f.writelines(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    write_json(out / "metrics.json", metrics)
    table = rating_table(metrics)
    text = ["# Rated-data evaluation", "", table] + [
        f"![{m}]({p})" for m, paths in drawn.items() for p in paths
    ]
    write_text(out / "report.md", "\n".join(text) + "\n")
    print(table)
    print(f"wrote metrics.json, scores.jsonl, report.md{' and plots/' if config.plots else ''} to {out}")
    return metrics


def _score(rm: RewardModel, data: str, config: Any, *, first: bool):
    """Every rated response of ``data`` (with its prompt's group) and the model's outputs for it."""
    skip = config.on_error == "skip"
    rows: list[tuple[int, int, dict[str, float]]] = []  # (row, group, ratings)
    examples: list[Example] = []
    with Rejects(config.rejects if first else None) if skip else nullcontext() as rejects:
        groups: dict[str, int] = {}
        for ex in iter_rated(
            data, format=None, columns=config.columns, rejects=rejects, attributes=config.attributes
        ):
            group = groups.setdefault(
                repr(ex.prompt) if len(ex.responses) == 1 else f"#{ex.row}", len(groups)
            )
            for response, ratings in zip(ex.responses, ex.ratings, strict=True):
                rows.append((ex.row, group, ratings))
                examples.append(Example(ex.row, ex.prompt, [response], False))
    tokenizer = rm.example_tokenizer(max_length=config.max_length, truncation=config.truncation)
    scored = score_examples(
        rm, examples, tokenizer, batch_tokens=config.batch_tokens, attributes=bool(rm.attributes)
    )
    outputs = [None if s is None else (s[0] if rm.attributes else [s[0]]) for _, s in scored]
    return rows, outputs


def _output_for(rm: RewardModel, attribute: str, values: list[float]) -> tuple[float, bool]:
    """The model's output compared with ``attribute``: its own (a regression of it), else the one score."""
    if attribute in rm.attributes:
        return values[rm.attributes.index(attribute)], True
    if rm.attributes:
        return rm.combine(values), False
    return values[0], False


def _figures(rm: RewardModel, rows, outputs, config: Any) -> dict[str, Any]:
    kept = [(r, o) for r, o in zip(rows, outputs, strict=True) if o is not None]
    attributes = list(dict.fromkeys(a for (_, _, ratings), _ in kept for a in ratings))
    figures = {}
    for a in attributes:
        chosen = [
            (rm_out, ratings[a], group)
            for (_, group, ratings), o in kept
            if a in ratings
            for rm_out in [_output_for(rm, a, o)]
        ]
        predicted = [v for (v, _), _, _ in chosen]
        regression = bool(chosen) and chosen[0][0][1]
        figures[a] = rating_metrics(
            predicted, [r for _, r, _ in chosen], [g for _, _, g in chosen], regression=regression,
            bootstrap=config.bootstrap, seed=config.seed,
        )  # fmt: skip
    return figures


def _lines(rm: RewardModel, rows, outputs) -> list[dict[str, Any]]:
    names = rm.attributes or ["score"]
    return [
        {"row": row, "ratings": ratings, "outputs": None if o is None else dict(zip(names, o, strict=True))}
        for (row, _, ratings), o in zip(rows, outputs, strict=True)
    ]


def _plot(out: Path, label: str, name: str, rm: RewardModel, rows, outputs) -> str:
    kept = [(r, o) for r, o in zip(rows, outputs, strict=True) if o is not None]
    attributes = list(dict.fromkeys(a for (_, _, ratings), _ in kept for a in ratings))
    fig, axes = _figure(max(len(attributes), 1), f"{label} on {name}: outputs against ratings")
    for ax, a in zip(axes, attributes, strict=False):
        points = [(ratings[a], _output_for(rm, a, o)[0]) for (_, _, ratings), o in kept if a in ratings]
        x, y = np.array(points).T if points else (np.zeros(0), np.zeros(0))
        jitter = np.random.default_rng(0).uniform(-0.12, 0.12, len(x))  # ratings are few distinct values
        ax.scatter(x + jitter, y, s=12, alpha=0.5)
        _title(ax, a, f"{len(x)} responses")
        ax.set_xlabel(f"{a} rating (jittered)")
        ax.set_ylabel("model output")
    return save_in(fig, out, f"ratings_{label}_{name}")


def rating_table(metrics: dict[str, Any]) -> str:
    groups = [
        ([label, name, a], m)
        for label, per_data in metrics["results"].items()
        for name, per_attribute in per_data.items()
        for a, m in per_attribute.items()
    ]
    return figure_table(["model", "data", "attribute"], groups, FIGURES)
