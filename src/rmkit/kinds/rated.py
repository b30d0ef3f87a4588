"""Multi-attribute reward models: K outputs a response (``num_labels = K``, the names in ``id2label``), one
score their weighted sum (:mod:`rmkit.attributes`), judged on rated responses.

Recognised by a sequence classifier's K > 1 labels (unless ``--dimension`` picks one output). ``rmkit score``
writes each response's ``attribute_scores`` beside the combined ``score``; the server replies the combined
score. Rated data (:mod:`rmkit.data.ratings`) is this kind's: ``rmkit train`` fits a regression on it and
``rmkit eval`` judges any outcome RM on it.

Its evaluation: every response of every data set is scored by every model. Each of the data's attributes is
compared with the model's output for it: the attribute's own output for a multi-attribute RM that has it (then
the MAE counts too), else the model's one score. The figures are :func:`rmkit.metrics.graded.rating_metrics`,
per attribute: Pearson and Spearman with bootstrap intervals, MAE, and the accuracy on the pairs the ratings
imply (two responses to one prompt whose ratings differ). Written::

    metrics.json         per model, data set and attribute: the numbers of rating_metrics
    scores.jsonl         one line per response: data set, row, the ratings and the model's outputs
    plots/ratings_*.png  the model's output against each attribute's ratings, a panel per attribute
    report.md            the table and the plots
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from rmkit.data import Example
from rmkit.data.ratings import RATED_FORMATS, detect_rated_format, holds_rated, iter_rated
from rmkit.kinds.base import Checkpoint, Kind, Raw, Reading
from rmkit.kinds.pairwise import PairwiseKind
from rmkit.metrics.graded import rating_metrics
from rmkit.reporting.report import figure_table

FIGURES = ("responses", "pearson", "spearman", "mae", "pair_accuracy")


class RatedKind(PairwiseKind):
    """A K-output :class:`rmkit.RewardModel` (K > 1): raw outputs are K floats a response."""

    name = "rated"
    data = "rated responses"
    attributes = True

    def recognises(self, checkpoint: Checkpoint) -> bool:
        classifier = any(a.endswith("ForSequenceClassification") for a in checkpoint.architectures)
        return classifier and checkpoint.labels > 1 and checkpoint.options.get("dimension") is None

    def owns(self, model: Any) -> bool:
        return Kind.owns(self, model) and bool(model.attributes)

    def holds(self, path: str | Path, reading: Reading) -> bool:
        return holds_rated(
            path, format=reading.format, columns=reading.columns, attributes=reading.attributes
        )

    def rows(self, path: str | Path, reading: Reading, rejects: Any = None) -> Iterator[Any]:
        rated_format = reading.format if reading.format in RATED_FORMATS else None
        return iter_rated(
            path, format=rated_format, columns=reading.columns, rejects=rejects, attributes=reading.attributes
        )

    def detect(self, record: dict[str, Any], reading: Reading) -> str | None:
        return detect_rated_format(record, reading.attributes)

    def tally(self, row: Any) -> str:
        return "rated_responses"

    def values(self, model: Any, raw: Raw) -> list[float]:
        """Each response's score, the model's own (the first of its raw outputs): the weighted sum of its K
        outputs, or a gated head's mix of them."""
        return [outputs[0] for outputs in raw]

    def row(
        self, model: Any, example: Example, raw: Raw, values: list[Any], reading: Reading
    ) -> dict[str, Any]:
        """The outcome row plus ``attribute_scores``: one ``{name: value}`` for a response, a list of them
        (one a response) for a pair or best-of-N row."""
        row = super().row(model, example, raw, values, reading)
        per_response = [dict(zip(model.attributes, outputs[1:], strict=True)) for outputs in raw]
        row["attribute_scores"] = per_response if example.is_pair or example.best_of_n else per_response[0]
        return row

    def answer(self, model: Any, raw: list[Any], reading: Reading) -> tuple[list[float], dict[str, Any]]:
        """The server reads the combined score at the end (the model's weighted sum), one float an item."""
        return list(raw), {}

    def evaluation(self, config: Any, labels: list[str], names: list[str]) -> RatedEvaluation:
        return RatedEvaluation(self, config, labels, names)


def _attributes(kind: Kind, model: Any) -> list[str]:
    """The attributes ``model`` gives an output for ([] for a one-score RM)."""
    return list(model.attributes) if isinstance(kind, RatedKind) else []


class RatedEvaluation:
    """``rmkit eval`` on rated responses (module docstring), the interface of
    :class:`rmkit.kinds.pairwise.PairEvaluation`."""

    def __init__(self, judge: Kind, config: Any, labels: list[str], names: list[str]):
        self.judge, self.config, self.labels = judge, config, labels
        self.reading = Reading.of(config)
        self.paths = dict(zip(names, config.data, strict=True))
        self.results: dict[str, dict[str, Any]] = {label: {} for label in labels}
        self.scored: dict[
            tuple[str, str], tuple[list[str], list, list]
        ] = {}  # (label, name): names, rows, outputs

    def add(self, kind: Kind, model: Any, label: str, name: str, rejects: Any) -> None:
        """Every rated response of data set ``name`` (with its prompt's group) and ``model``'s outputs."""
        rows: list[tuple[int, int, dict[str, float]]] = []  # (row, group, ratings)
        examples: list[Example] = []
        groups: dict[str, int] = {}
        reading = self.reading
        for ex in self.judge.rows(self.paths[name], reading, rejects):
            group = groups.setdefault(
                repr(ex.prompt) if len(ex.responses) == 1 else f"#{ex.row}", len(groups)
            )
            for response, ratings in zip(ex.responses, ex.ratings, strict=True):
                rows.append((ex.row, group, ratings))
                examples.append(Example(ex.row, ex.prompt, [response], False))
        names = _attributes(kind, model)
        outputs, scores = [], []  # each response's outputs (its K, else its one score) and its score
        for _, raw in kind.score(model, examples, reading):
            values = None if raw is None else kind.values(model, raw)
            outputs.append(None if raw is None else list(raw[0][1:]) if names else values)
            scores.append(None if raw is None else values[0])
        self.scored[(label, name)] = (names, rows, list(zip(outputs, scores, strict=True)))
        self.results[label][name] = self._figures(names, rows, outputs, scores)

    def _figures(self, names: list[str], rows: list, outputs: list, scores: list) -> dict[str, Any]:
        kept = [(r, o, s) for r, o, s in zip(rows, outputs, scores, strict=True) if o is not None]
        figures = {}
        for a in list(dict.fromkeys(a for (_, _, ratings), _, _ in kept for a in ratings)):
            chosen = [
                (_output_for(names, a, o, s), ratings[a], group)
                for (_, group, ratings), o, s in kept
                if a in ratings
            ]
            regression = bool(chosen) and chosen[0][0][1]
            figures[a] = rating_metrics(
                [v for (v, _), _, _ in chosen], [r for _, r, _ in chosen], [g for _, _, g in chosen],
                regression=regression, bootstrap=self.config.bootstrap, seed=self.config.seed,
            )  # fmt: skip
        return figures

    def metrics(self) -> dict[str, Any]:
        models = dict(zip(self.labels, self.config.model, strict=True))
        return {"kind": "ratings", "models": models, "data": self.paths, "results": self.results}

    def lines(self) -> Iterator[dict[str, Any]]:
        for (label, name), (names, rows, outputs) in self.scored.items():
            keys = names or ["score"]
            for (row, _, ratings), (o, _) in zip(rows, outputs, strict=True):
                out = None if o is None else dict(zip(keys, o, strict=True))
                yield {"model": label, "data": name, "row": row, "ratings": ratings, "outputs": out}

    def plots(self, out: Path, metrics: dict[str, Any]) -> dict[str, list[str]]:
        """The model's output against each attribute's ratings, a panel per attribute."""
        from rmkit.reporting.plots import _figure, _title, save_in  # matplotlib only where plots are drawn

        drawn: dict[str, list[str]] = {label: [] for label in self.labels}
        for (label, name), (names, rows, outputs) in self.scored.items():
            kept = [(r, o) for r, o in zip(rows, outputs, strict=True) if o[0] is not None]
            attributes = list(dict.fromkeys(a for (_, _, ratings), _ in kept for a in ratings))
            fig, axes = _figure(max(len(attributes), 1), f"{label} on {name}: outputs against ratings")
            for ax, a in zip(axes, attributes, strict=False):
                points = [
                    (ratings[a], _output_for(names, a, *o)[0]) for (_, _, ratings), o in kept if a in ratings
                ]
                x, y = np.array(points).T if points else (np.zeros(0), np.zeros(0))
                jitter = np.random.default_rng(0).uniform(
                    -0.12, 0.12, len(x)
                )  # ratings are few distinct values
                ax.scatter(x + jitter, y, s=12, alpha=0.5)
                _title(ax, a, f"{len(x)} responses")
                ax.set_xlabel(f"{a} rating (jittered)")
                ax.set_ylabel("model output")
            drawn[label].append(save_in(fig, out, f"ratings_{label}_{name}"))
        return drawn

    def report(self, metrics: dict[str, Any], drawn: dict[str, list[str]]) -> str:
        text = ["# Rated-data evaluation", "", self.tables(metrics)[0]]
        return "\n".join(text + [f"![{m}]({p})" for m, paths in drawn.items() for p in paths]) + "\n"

    def files(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """Files besides the evaluation's own (a benchmark's results files): none."""
        return {}

    def tables(self, metrics: dict[str, Any]) -> list[str]:
        groups = [
            ([label, name, a], m)
            for label, per_data in metrics["results"].items()
            for name, per_attribute in per_data.items()
            for a, m in per_attribute.items()
        ]
        return [figure_table(["model", "data", "attribute"], groups, FIGURES)]


def _output_for(names: list[str], attribute: str, outputs: list[float], score: float) -> tuple[float, bool]:
    """The model's output compared with ``attribute``: its own (a regression of it), else the one score."""
    if attribute in names:
        return outputs[names.index(attribute)], True
    return score, False
