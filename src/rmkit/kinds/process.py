"""Process reward models (:class:`rmkit.process.ProcessRewardModel`): a score for every step of a solution.

Recognised by good/bad tokens given (``--good-token``: a causal LM read as Math-Shepherd), a token-classifier
architecture, or rmkit's step settings in the config. Rows are step-labelled solutions
(:mod:`rmkit.data.steps`), each rendered with its step positions (:class:`rmkit.data.steps.SolutionEncoder`)
and read by the inference core at those positions: one pass a solution. ``rmkit score`` writes
``step_scores`` and their aggregate ``score`` (``--aggregate``); best-of-N rows, and each item the server
gets, are solutions cut into steps at the separator and scored by that aggregate.

Its evaluation (``rmkit eval`` on step-labelled solutions): the figures are
:func:`rmkit.metrics.graded.step_metrics` of the step scores, per data set ("all") and per subset::

    metrics.json       per model, per data set and per subset: the numbers of step_metrics
    scores.jsonl       one line per solution, in input order: data set, row, subset, step scores, labels,
                       the first wrong step and the PRM's predicted one
    plots/steps_*.png  mean score by step position, right steps against wrong ones, per data set
    report.md          the table and the plots
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rmkit.data import Example, RowCounts, normalise_records
from rmkit.data.steps import (
    STEP_FORMATS,
    Solution,
    StepExample,
    aggregate,
    detect_step_format,
    holds_steps,
    iter_step_examples,
    normalise_steps,
    split_steps,
)
from rmkit.defaults import PRM_KEY
from rmkit.errors import RMKitError
from rmkit.kinds.base import Checkpoint, Kind, Raw, Reading, Sequences
from rmkit.metrics.graded import first_below, step_metrics
from rmkit.reporting.report import figure_table

CHUNK = 512  # solutions an evaluation scores together
FIGURES = ("solutions", "step_accuracy", "wrong_f1", "error_accuracy", "correct_accuracy", "processbench_f1")
MAX_POSITION = 30  # steps plotted; later ones share the last position


class SolutionTokenizer:
    """A process RM's :meth:`Kind.tokenizer`: a :class:`StepExample` becomes one :class:`Solution`; an
    outcome row (best-of-N, a served item) a list of them, each response cut into steps at the separator."""

    def __init__(self, prm: Any, max_length: int | None):
        self.prm, self.max_length = prm, max_length

    def tokenize(self, chunk: Sequence[Any]) -> list[Any]:
        return [self._solution(ex) if isinstance(ex, StepExample) else self._candidates(ex) for ex in chunk]

    def _solution(self, ex: StepExample) -> Solution:
        ids, positions = self.prm.encode(ex.prompt, ex.steps, self.max_length)
        return Solution(ids, positions, len(ex.steps))

    def _candidates(self, ex: Example) -> list[Solution]:
        steps = [split_steps(response, self.prm.steps.separator) for response in ex.responses]
        return [self._solution(StepExample(ex.row, ex.prompt, s)) for s in steps]

    def truncate(self, ids: list[int]) -> Any:
        raise RMKitError("a process reward model needs text, to find the steps; not token ids")


class ProcessKind(Kind):
    """Process RMs: raw is a solution's step scores (a best-of-N row's: each candidate's aggregate)."""

    name = "process"
    unit = "steps"
    data = "step-labelled solutions"

    def recognises(self, checkpoint: Checkpoint) -> bool:
        if checkpoint.steps.get("good_token") or checkpoint.steps.get("bad_token"):
            return True
        token_classifier = any(
            a.endswith(("ForTokenClassification", "ForProcessRewardModel")) for a in checkpoint.architectures
        )
        return token_classifier or PRM_KEY in checkpoint.metadata

    def load(self, checkpoint: Checkpoint, dtype: Any, device: Any) -> Any:
        from rmkit.process import ProcessRewardModel  # torch loads with the model (rmkit.kinds.base)

        given = checkpoint.options
        return ProcessRewardModel.from_pretrained(
            checkpoint.path,
            dtype=dtype,
            device=device,
            allow_pickle=given.get("allow_pickle", False),
            trust_remote_code=given.get("trust_remote_code", False),
            **checkpoint.steps,
        )

    def owns(self, model: Any) -> bool:
        from rmkit.process import ProcessRewardModel

        return isinstance(model, ProcessRewardModel)

    def compile(self, model: Any) -> Any:
        raise RMKitError("--compile is not supported for process reward models yet")

    def holds(self, path: str | Path, reading: Reading) -> bool:
        return holds_steps(path, format=reading.format, columns=reading.columns)

    def rows(self, path: str | Path, reading: Reading, rejects: Any = None) -> Iterator[StepExample]:
        step_format = reading.format if reading.format in STEP_FORMATS else None
        return iter_step_examples(
            path, format=step_format, columns=reading.columns, rejects=rejects, neutral=reading.neutral_steps
        )

    def detect(self, record: dict[str, Any], reading: Reading) -> str | None:
        return detect_step_format(record)

    def tally(self, row: Any) -> str:
        return "solutions"

    def examples(
        self, records: Iterable[tuple[int, dict[str, Any]]], source: str, reading: Reading, rejects: Any
    ) -> Iterator[Any]:
        """Step-labelled solutions; best-of-N rows (``responses``) as the outcome rows they are."""
        if reading.format == "responses":
            return normalise_records(
                records, source=source, format="responses", columns=reading.columns, rejects=rejects
            )
        step_format = reading.format if reading.format in STEP_FORMATS else None
        return normalise_steps(
            records,
            source=source,
            format=step_format,
            columns=reading.columns,
            rejects=rejects,
            neutral=reading.neutral_steps,
        )

    def tokenizer(self, model: Any, reading: Reading) -> SolutionTokenizer:
        return SolutionTokenizer(model, reading.max_length)

    def score_prepared(
        self, model: Any, chunk: Sequence[Any], prepared: list[Any], reading: Reading, stats: RowCounts
    ) -> Iterator[tuple[Any, Raw | None]]:
        """Every solution's step scores in one run of batches; a candidate row's scores are its candidates'
        aggregates (NaN when no step fit the length limit), their step scores going to its ``step_scores``."""
        from rmkit.process import score_solutions

        solutions = [s for row in prepared for s in (row if isinstance(row, list) else [row])]
        scores = iter(score_solutions(model, solutions, batch_tokens=reading.batch_tokens, stats=stats))
        for ex, row in zip(chunk, prepared, strict=True):
            if not isinstance(row, list):
                yield ex, next(scores)
                continue
            steps = [next(scores) for _ in row]
            ex.extra["step_scores"] = steps
            yield ex, [math.nan if (a := aggregate(s, reading.aggregate)) is None else a for s in steps]

    def summarised(self, example: Any, values: list[float], reading: Reading) -> list[float]:
        """A solution counts once, by its aggregate (none when no step was scored)."""
        if not isinstance(example, StepExample):
            return values
        summary = aggregate(values, reading.aggregate)
        return [] if summary is None else [summary]

    def row(self, model: Any, example: Any, raw: Raw, values: list[Any], reading: Reading) -> dict[str, Any]:
        """A solution's object: ``prompt``, ``completions``, ``step_scores`` (one a step, null for a step cut
        by the length limit), ``score`` (the aggregate of the scored steps), its labels and every other input
        column; a best-of-N row's is the outcome row (:meth:`Kind.row`)."""
        if not isinstance(example, StepExample):
            return super().row(model, example, raw, values, reading)
        scored = [s for s in values if s is not None]
        out: dict[str, Any] = {
            "prompt": example.prompt_value(),
            "completions": example.steps,
            "step_scores": list(values) + [None] * (len(example.steps) - len(values)),
            "score": aggregate(scored, reading.aggregate),
        }
        if example.labels is not None:
            out["labels"] = example.labels
        for k, v in example.extra.items():
            out.setdefault(k, v)
        return out

    def sequences(self, prepared: list[Any]) -> Sequences:
        """Each served item is one solution: its ids and step positions; cut when steps were left out."""
        solutions = [row[0] for row in prepared]
        cut = [None if not s.positions else len(s.positions) < s.steps for s in solutions]
        return Sequences([s.ids for s in solutions], [s.positions for s in solutions], cut)

    def answer(self, model: Any, raw: list[Any], reading: Reading) -> tuple[list[float], dict[str, Any]]:
        """A solution's score is the aggregate of its steps'; the reply adds ``step_scores``."""
        return [aggregate(s, reading.aggregate) for s in raw], {"step_scores": raw}

    def evaluation(self, config: Any, labels: list[str], names: list[str]) -> StepEvaluation:
        return StepEvaluation(self, config, labels, names)


class StepEvaluation:
    """``rmkit eval`` on step-labelled solutions (module docstring), the interface of
    :class:`rmkit.kinds.pairwise.PairEvaluation`."""

    def __init__(self, judge: Kind, config: Any, labels: list[str], names: list[str]):
        self.judge, self.config, self.labels = judge, config, labels
        self.reading = Reading.of(config, chunk_rows=CHUNK)
        self.paths = dict(zip(names, config.data, strict=True))
        self.scored: dict[str, dict[str, tuple[list[StepExample], list[list[float]]]]] = {}

    def add(self, kind: Kind, model: Any, label: str, name: str, rejects: Any) -> None:
        """The labelled solutions of data set ``name`` and ``model``'s step scores of them."""
        rows = self.judge.rows(self.paths[name], self.reading, rejects)
        labelled = (ex for ex in rows if ex.labels is not None)
        pairs = list(kind.score(model, labelled, self.reading))
        self.scored.setdefault(label, {})[name] = ([ex for ex, _ in pairs], [s for _, s in pairs])

    def metrics(self) -> dict[str, Any]:
        config = self.config
        results = {
            label: {name: self._grouped(*scored) for name, scored in per_data.items()}
            for label, per_data in self.scored.items()
        }
        return {
            "kind": "process",
            "models": dict(zip(self.labels, config.model, strict=True)),
            "data": self.paths,
            "threshold": config.threshold,
            "results": results,
        }

    def _grouped(self, examples: list[StepExample], scores: list[list[float]]) -> dict[str, Any]:
        subsets = [ex.subset(self.reading.subset_column) for ex in examples]

        def of(keep: list[bool]) -> dict[str, Any]:
            picked = [i for i, k in enumerate(keep) if k]
            return step_metrics(
                [scores[i] for i in picked],
                [examples[i].labels for i in picked],
                threshold=self.config.threshold,
            )

        names = [s for s in dict.fromkeys(subsets) if s is not None]
        return {
            "all": of([True] * len(examples)),
            "subsets": {n: of([s == n for s in subsets]) for n in names},
        }

    def lines(self) -> Iterator[dict[str, Any]]:
        several, threshold = len(self.scored) > 1, self.config.threshold
        for label, per_data in self.scored.items():
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
                    yield {"model": label, **line} if several else line

    def plots(self, out: Path, metrics: dict[str, Any]) -> dict[str, list[str]]:
        return {label: [_plot(out, label, per_data)] for label, per_data in self.scored.items()}

    def report(self, metrics: dict[str, Any], drawn: dict[str, list[str]]) -> str:
        text = [
            "# Process reward model evaluation",
            "",
            f"A step counts as right when its score is at least {self.config.threshold}. `step_accuracy` and "
            "`wrong_f1` are over the labelled steps (wrong steps the positive class); `error_accuracy` is the "
            "share of solutions with a wrong step whose first wrong step the PRM finds exactly, "
            "`correct_accuracy` the share of solutions without one that it passes whole, `processbench_f1` their "
            "harmonic mean (ProcessBench).",
            "",
            self.tables(metrics)[0],
        ]
        for label, paths in drawn.items():
            text += ["", f"## {label}", ""] + [f"![{label}]({p})" for p in paths]
        return "\n".join(text) + "\n"

    def files(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """Files besides the evaluation's own (a benchmark's results files): none."""
        return {}

    def tables(self, metrics: dict[str, Any]) -> list[str]:
        groups = [
            ([label, name, subset], m)
            for label, per_data in metrics["results"].items()
            for name, groups in per_data.items()
            for subset, m in [("all", groups["all"]), *groups["subsets"].items()]
        ]
        return [figure_table(["model", "data", "subset"], groups, FIGURES)]


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
    from matplotlib.ticker import MaxNLocator  # matplotlib only where plots are drawn

    from rmkit.reporting.plots import CHOSEN, REJECTED, _figure, _title, save_in

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
