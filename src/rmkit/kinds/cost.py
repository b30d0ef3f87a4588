"""Safety cost models (Safe RLHF): one cost a response, lower is safer; below 0 safe, above 0 unsafe.

A cost model is the standard one-label sequence classifier; what makes it one is rmkit's settings
(``"rmkit": {"kind": "cost"}``, which ``rmkit train --objective cost`` writes) or safe-rlhf's
``score_type: cost`` in ``config.json`` (the Beaver cost models). ``rmkit score`` and ``rank`` write ``cost``
(``cost_chosen``/``cost_rejected``, ``costs``) where a reward model writes ``score``, and the summary says
lower is safer; the server answers with the end cost, not normalised unless asked.

Its data is safety-labelled responses (:mod:`rmkit.data.safety`): BeaverTails rows always, PKU-SafeRLHF rows
with ``--objective cost`` (they are preference pairs too). Its evaluation (``rmkit eval``)::

    metrics.json         per model and data set: rmkit.metrics.safety's figures, and the most confidently
                         wrong responses (a safe one's highest cost, an unsafe one's lowest)
    scores.jsonl         one line per row: data set, row, each response's safety sign and cost
    plots/costs_*.png    the costs of safe and of unsafe responses, a histogram each, a panel per data set
    report.md            the table, the most wrong responses and the plots
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from rmkit.data import Example
from rmkit.data.safety import detect_safety_format, holds_safety, iter_safety
from rmkit.kinds.base import Checkpoint, Kind, Raw, Reading
from rmkit.kinds.pairwise import PairwiseKind
from rmkit.metrics.safety import COST_METRICS, CostStats, most_wrong
from rmkit.reporting.report import figure_table

MEANING = "costs: lower is safer (below 0 safe, above 0 unsafe)"
_RENAMED = {
    "score": "cost",
    "score_chosen": "cost_chosen",
    "score_rejected": "cost_rejected",
    "scores": "costs",
}
FIGURES = ("responses", *(f for f in COST_METRICS if not f.endswith("_ci")))
WRONG = 10  # the most confidently wrong responses a report lists, per model and data set


class CostKind(PairwiseKind):
    """A one-label :class:`rmkit.RewardModel` whose output is a safety cost (module docstring)."""

    name = "cost"
    data = "safety-labelled responses"
    meaning = MEANING
    ranks_by = -1.0  # a benchmark ranks by -cost, as RewardBench does with the Beaver cost models

    def recognises(self, checkpoint: Checkpoint) -> bool:
        return checkpoint.config.get("score_type") == "cost"

    def owns(self, model: Any) -> bool:
        """A one-label RM whose rmkit settings name this kind, or converted from safe-rlhf's ``score_type:
        cost`` (:mod:`rmkit.layouts` keeps it under ``converted_from``)."""
        metadata = getattr(model, "metadata", None) or {}
        source = metadata.get("converted_from") or {}
        named = metadata.get("kind") == self.name or source.get("score_type") == "cost"
        return super().owns(model) and named

    def holds(self, path: str | Path, reading: Reading) -> bool:
        """BeaverTails rows; any data with ``--objective cost`` (rows without safety labels are then named)."""
        return reading.objective == "cost" or holds_safety(
            path, format=reading.format, columns=reading.columns
        )

    def rows(self, path: str | Path, reading: Reading, rejects: Any = None) -> Iterator[Any]:
        return iter_safety(path, format=reading.format, columns=reading.columns, rejects=rejects)

    def detect(self, record: dict[str, Any], reading: Reading) -> str | None:
        return detect_safety_format(record)

    def evaluates(self, kind: Kind) -> bool:
        return isinstance(kind, CostKind)

    def row(
        self, model: Any, example: Example, raw: Raw, values: list[Any], reading: Reading
    ) -> dict[str, Any]:
        """The outcome row with its score columns named for costs (``cost``, ``cost_chosen``, ``costs``). A
        best-of-N row's ``ranking`` is safest first (lowest cost; ``--min-score`` is then the highest cost
        kept)."""
        if not example.best_of_n:
            row = super().row(model, example, raw, values, reading)
            return {_RENAMED.get(k, k): v for k, v in row.items()}
        floor = None if reading.min_score is None else -reading.min_score
        flipped = replace(reading, min_score=floor)
        row = super().row(model, example, raw, [None if v is None else -v for v in values], flipped)
        return {**{_RENAMED.get(k, k): v for k, v in row.items()}, "costs": values}

    def evaluation(self, config: Any, labels: list[str], names: list[str]) -> CostEvaluation:
        return CostEvaluation(self, config, labels, names)


class CostEvaluation:
    """``rmkit eval`` of cost models on safety-labelled responses (module docstring), the interface of
    :class:`rmkit.kinds.pairwise.PairEvaluation`."""

    def __init__(self, judge: Kind, config: Any, labels: list[str], names: list[str]):
        self.judge, self.config, self.labels = judge, config, labels
        self.reading = Reading.of(config)
        self.paths = dict(zip(names, config.data, strict=True))
        # (label, name) -> each row's (row, signs, costs or None when dropped, responses)
        self.scored: dict[tuple[str, str], list[tuple[int, list[float], list[float] | None, list[str]]]] = {}

    def add(self, kind: Kind, model: Any, label: str, name: str, rejects: Any) -> None:
        """Every row of data set ``name`` (a pair or a lone response) and ``model``'s costs of its responses."""
        rows = list(self.judge.rows(self.paths[name], self.reading, rejects))
        examples = [Example(ex.row, ex.prompt, ex.responses, ex.is_pair, extra=ex.extra) for ex in rows]
        costs = [
            None if raw is None else kind.values(model, raw)
            for _, raw in kind.score(model, examples, self.reading)
        ]
        self.scored[(label, name)] = [
            (ex.row, ex.signs, c, ex.responses) for ex, c in zip(rows, costs, strict=True)
        ]

    def _figures(self, scored: list) -> dict[str, Any]:
        kept = [
            (signs, costs, responses, row) for row, signs, costs, responses in scored if costs is not None
        ]
        pairs = [costs for signs, costs, _, _ in kept if len(costs) == 2]
        flat = [
            (s, c, text, row, i)
            for signs, costs, texts, row in kept
            for i, (s, c, text) in enumerate(zip(signs, costs, texts, strict=True))
        ]
        signs = np.array([f[0] for f in flat], dtype=float)
        costs = np.array([f[1] for f in flat], dtype=float)
        stats = CostStats.of(costs, signs, [p[0] for p in pairs], [p[1] for p in pairs])
        figures = stats.metrics(bootstrap=self.config.bootstrap, seed=self.config.seed)
        figures["dropped"] = len(scored) - len(kept)
        figures["most_wrong"] = [
            {
                "row": flat[i][3],
                "response": flat[i][4],
                "sign": flat[i][0],
                "cost": flat[i][1],
                "text": flat[i][2][:200],
            }
            for i in most_wrong(costs, signs, WRONG)
        ]
        return figures

    def metrics(self) -> dict[str, Any]:
        results: dict[str, dict[str, Any]] = {label: {} for label in self.labels}
        for (label, name), scored in self.scored.items():
            results[label][name] = self._figures(scored)
        return {
            "kind": "cost",
            "meaning": MEANING,
            "models": dict(zip(self.labels, self.config.model, strict=True)),
            "data": {name: {"path": path} for name, path in self.paths.items()},
            "objective": self.reading.objective,  # which labels of the data were read (report.html reads them again)
            "bootstrap": {"samples": self.config.bootstrap, "seed": self.config.seed, "level": 0.95},
            "results": results,
        }

    def lines(self) -> Iterator[dict[str, Any]]:
        for (label, name), scored in self.scored.items():
            for row, signs, costs, _ in scored:
                yield {"model": label, "data": name, "row": row, "signs": signs, "costs": costs}

    def plots(self, out: Path, metrics: dict[str, Any]) -> dict[str, list[str]]:
        """The costs of safe and unsafe responses, overlaid histograms, a panel per data set."""
        from rmkit.reporting.plots import _figure, _title, save_in  # matplotlib only where plots are drawn

        drawn: dict[str, list[str]] = {label: [] for label in self.labels}
        for label in self.labels:
            names = [n for (m, n) in self.scored if m == label]
            fig, axes = _figure(max(len(names), 1), f"{label}: costs by safety label (lower is safer)")
            for ax, name in zip(axes, names, strict=False):
                pairs = [
                    (s, c)
                    for _, signs, costs, _ in self.scored[(label, name)]
                    if costs is not None
                    for s, c in zip(signs, costs, strict=True)
                ]
                for side, colour, chosen in (("safe", "tab:green", 1), ("unsafe", "tab:red", -1)):
                    values = [c for s, c in pairs if np.sign(s) == chosen]
                    ax.hist(values, bins=20, alpha=0.55, color=colour, label=f"{side} ({len(values)})")
                ax.axvline(0.0, color="black", linewidth=0.8)
                m = metrics["results"][label][name]
                sign = "-" if m["sign_accuracy"] is None else f"{m['sign_accuracy']:.3f}"
                _title(ax, name, f"sign accuracy {sign}")
                ax.set_xlabel("cost")
                ax.legend()
            drawn[label].append(save_in(fig, out, f"costs_{label}"))
        return drawn

    def report(self, metrics: dict[str, Any], drawn: dict[str, list[str]]) -> str:
        text = ["# Cost-model evaluation", "", f"Cost {MEANING}.", "", self.tables(metrics)[0], ""]
        for label, per_data in metrics["results"].items():
            for name, m in per_data.items():
                text += [f"## {label} on {name}: the most confidently wrong responses", ""]
                text += ["| row | response | label | cost | text |", "|---|---|---|---|---|"]
                for w in m["most_wrong"]:
                    flat = w["text"].replace("\n", " ").replace("|", "\\|")
                    text.append(
                        f"| {w['row']} | {w['response']} | {'safe' if w['sign'] > 0 else 'unsafe'} | {w['cost']:.3f} | {flat} |"
                    )
                text.append("")
        return "\n".join(text + [f"![{m}]({p})" for m, paths in drawn.items() for p in paths]) + "\n"

    def files(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """Files besides the evaluation's own (a benchmark's results files): none."""
        return {}

    def tables(self, metrics: dict[str, Any]) -> list[str]:
        groups = [
            ([label, name], m)
            for label, per_data in metrics["results"].items()
            for name, m in per_data.items()
        ]
        return [figure_table(["model", "data"], groups, FIGURES)]
