"""Pairwise outcome reward models: one score a response, judged on preference pairs.

The kind every one-label sequence classifier is (rmkit's, TRL's, OpenRLHF's, the leaderboard's plain heads),
and the fallback of the registry: a checkpoint no other kind recognises is read as one, and data no other
kind holds is read as preference pairs. Its scoring, rows and serving are :class:`rmkit.kinds.base.Kind`'s.

Its evaluation (``rmkit eval`` on pairs): every pair of every data set is scored by every model; the figures
are pure functions of the scores (:func:`rmkit.metrics.pair_metrics`). Written to the output directory::

    metrics.json   per model, per data set ("all") and per subset: the numbers of pair_metrics
    scores.jsonl   one line per pair, in input order: data set, row, subset, lengths, scores and margin
    plots/*.png    chosen vs rejected score histograms, margin histograms, score vs length, model vs model
    report.md      the tables and the plots, readable on GitHub (:mod:`rmkit.reporting.report`)

A pair's subset follows the rule of every command (:meth:`rmkit.data.Example.subset`: ``--subset-column``,
else ``subset``, else ``category``); rows without one belong to a subset named after their file. Length is
the response's length in characters (model-independent, so two RMs with different tokenizers are checked
against the same numbers); for rows scored verbatim as rendered text it is the whole text's length.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rmkit.data import RowCounts
from rmkit.errors import RMKitError
from rmkit.kinds.base import Kind, Reading
from rmkit.metrics import compare_pairs, pair_metrics
from rmkit.metrics.safety import safer_metrics
from rmkit.reporting.report import accuracy_table, comparison_table, figure_table, report

LENGTH_UNIT = "characters"


class PairwiseKind(Kind):
    """A one-label outcome RM (:class:`rmkit.RewardModel` without attributes); the registry's fallback."""

    name = "pairwise"

    def owns(self, model: Any) -> bool:
        return super().owns(model) and not model.attributes

    def evaluation(self, config: Any, labels: list[str], names: list[str]) -> PairEvaluation:
        return PairEvaluation(config, labels, names)


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


class PairEvaluation:
    """``rmkit eval`` on preference pairs (module docstring): :meth:`add` each model's scores of each data
    set, then the runner (:mod:`rmkit.evaluation.run`) writes what the other methods return."""

    def __init__(self, config: Any, labels: list[str], names: list[str]):
        self.config, self.labels = config, labels
        self.reading = Reading.of(config)
        self.costs: list[
            str
        ] = []  # cost models (--cost-model): judged by whether the chosen answer costs less
        self.datasets = {name: DataSet(name, path) for name, path in zip(names, config.data, strict=True)}

    def add(self, kind: Kind, model: Any, label: str, name: str, rejects: Any) -> None:
        """Score every pair of data set ``name`` with ``model``; the first model also records rows, subsets
        and lengths."""
        ds, reading = self.datasets[name], self.reading
        first = not ds.scores
        if kind.ranks_by < 0 and label not in self.costs:
            self.costs.append(label)
        examples = kind.pairs(ds.path, reading, rejects)
        stats = RowCounts()
        values: list[list[float]] = []
        for i, (ex, raw) in enumerate(kind.score(model, examples, reading, stats)):
            if first:
                subset = ex.subset(reading.subset_column)
                ds.has_subset_column |= subset is not None
                ds.rows.append(ex.row)
                ds.subsets.append(subset or ds.name)
                ds.lengths.append((len(ex.responses[0]), len(ex.responses[1])))
            elif i >= len(ds.rows) or ds.rows[i] != ex.row:
                raise RMKitError(f"{ds.path}: the file changed while it was being evaluated")
            values.append(kind.values(model, raw) if raw is not None else [math.nan, math.nan])
        if len(values) != len(ds.rows):
            raise RMKitError(f"{ds.path}: the file changed while it was being evaluated")
        ds.scores[label] = np.asarray(values, dtype=float).reshape(-1, 2)
        ds.truncated[label] = stats.truncated
        if first and rejects is not None:
            ds.skipped = rejects.count

    @property
    def rewards(self) -> list[str]:
        """The labels of the reward models (the others are cost models)."""
        return [label for label in self.labels if label not in self.costs]

    def metrics(self) -> dict[str, Any]:
        config, labels, datasets = self.config, self.rewards, list(self.datasets.values())
        paths = dict(zip(self.labels, config.model, strict=True))
        return {
            "models": {label: paths[label] for label in labels},
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
            "results": {label: {ds.name: self._grouped(label, ds) for ds in datasets} for label in labels},
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
            **self._safety(paths),
        }

    def _safety(self, paths: dict[str, str]) -> dict[str, Any]:
        """With cost models: ``cost_models`` and ``safety`` (:func:`rmkit.metrics.safety.safer_metrics` per
        cost model and data set, against every reward model)."""
        if not self.costs:
            return {}
        out: dict[str, Any] = {"cost_models": {c: paths[c] for c in self.costs}, "safety": {}}
        for c in self.costs:
            out["safety"][c] = {}
            for ds in self.datasets.values():
                m = ds.scored()
                rewards = {r: (ds.scores[r][m, 0], ds.scores[r][m, 1]) for r in self.rewards}
                out["safety"][c][ds.name] = safer_metrics(
                    ds.scores[c][m, 0], ds.scores[c][m, 1], rewards, bootstrap=self.config.bootstrap,
                    seed=self.config.seed,
                )  # fmt: skip
        return out

    def _grouped(self, label: str, ds: DataSet) -> dict[str, Any]:
        """The figures of ``label`` on ``ds``: all its scored pairs, and each subset's."""
        mask = ds.scored()
        s, lengths = ds.scores[label], np.asarray(ds.lengths, dtype=float).reshape(-1, 2)
        subsets = np.asarray(ds.subsets, dtype=object)

        def group(m: np.ndarray) -> dict[str, Any]:
            return pair_metrics(
                s[m, 0],
                s[m, 1],
                lengths[m, 0],
                lengths[m, 1],
                bootstrap=self.config.bootstrap,
                seed=self.config.seed,
            )

        return {
            "all": group(mask),
            "subsets": {name: group(mask & (subsets == name)) for name in dict.fromkeys(ds.subsets)},
        }

    def lines(self) -> Iterator[dict[str, Any]]:
        """One line per pair in input order; with several models each score key carries the model's label."""
        labels = self.labels

        def key(name: str, label: str) -> str:
            return name if len(labels) == 1 else f"{name}_{label}"

        def number(x: float) -> float | None:
            return None if math.isnan(x) else float(x)

        for ds in self.datasets.values():
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
                    if label in self.costs:
                        line[key("chosen_cost", label)] = number(c)
                        line[key("rejected_cost", label)] = number(r)
                        continue
                    line[key("chosen_score", label)] = number(c)
                    line[key("rejected_score", label)] = number(r)
                    line[key("margin", label)] = number(c - r)
                yield line

    def plots(self, out: Path, metrics: dict[str, Any]) -> dict[str, list[str]]:
        """Draw every plot; returns ``{section title: [paths relative to out]}`` for the report."""
        from rmkit.reporting import plots  # matplotlib only where plots are drawn

        (out / "plots").mkdir(exist_ok=True)
        drawn: dict[str, list[str]] = {}
        for label in self.rewards:
            panels = []
            for ds in self.datasets.values():
                m = ds.scored()
                lengths = np.asarray(ds.lengths, dtype=float).reshape(-1, 2)[m]
                result = metrics["results"][label][ds.name]["all"]
                panels.append(plots.Panel(ds.name, ds.scores[label][m], lengths, result))
            names = [f"plots/scores_{label}.png", f"plots/margins_{label}.png", f"plots/length_{label}.png"]
            plots.score_histograms(panels, label, out / names[0])
            plots.margin_histograms(panels, label, out / names[1])
            plots.length_scatter(panels, label, out / names[2], unit=LENGTH_UNIT)
            drawn[label] = names
        base = self.rewards[0] if self.rewards else None
        for other in self.rewards[1:]:
            name = f"plots/compare_{base}_vs_{other}.png"
            pairs = []
            for ds in self.datasets.values():
                m = ds.scored()
                a, b = ds.scores[base][m], ds.scores[other][m]
                pairs.append((ds.name, a[:, 0] - a[:, 1], b[:, 0] - b[:, 1]))
            plots.margin_scatter(pairs, base, other, out / name)
            drawn[f"{base} vs {other}"] = [name]
        return drawn

    def report(self, metrics: dict[str, Any], drawn: dict[str, list[str]]) -> str:
        safety = metrics.get("safety")
        if not safety:
            return report(metrics, drawn)
        text = (
            "\n## Cost models\n\n"
            + self._safety_table(metrics)
            + "\n\nchosen safer: the share of pairs whose "
            "chosen answer costs less (95% bootstrap interval); <model> safer: the share whose answer that reward "
            "model scores higher costs less.\n"
        )
        return report(metrics, drawn) + text

    def _safety_table(self, metrics: dict[str, Any]) -> str:
        figures = ("pairs", "chosen_safer", "cost_chosen_mean", "cost_rejected_mean")
        groups = [
            ([c, name], {**m, **{f"{r} safer": v for r, v in m["preferred_safer"].items()}})
            for c, per_data in metrics["safety"].items()
            for name, m in per_data.items()
        ]
        return figure_table(["cost model", "data"], groups, (*figures, *(f"{r} safer" for r in self.rewards)))

    def files(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """Files besides the evaluation's own (a benchmark's results files): none."""
        return {}

    def tables(self, metrics: dict[str, Any]) -> list[str]:
        """What the terminal shows: the accuracy table, and with several models their comparison."""
        return (
            [accuracy_table(metrics)]
            + (["\n" + comparison_table(metrics)] if metrics["comparisons"] else [])
            + (["\n" + self._safety_table(metrics)] if metrics.get("safety") else [])
        )
