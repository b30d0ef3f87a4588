"""``rmkit eval --suite``: a public benchmark's official numbers from rmkit's scores (:mod:`rmkit.suites`).

Every item of the benchmark's files is scored by every model through its kind (the inference core: length-
sorted batches, the completions of one prompt after one pass over it); the suite turns the scores into the
benchmark's numbers, exactly as its own code does, with a 95% bootstrap interval for each (rows resampled
within their subset). Written besides the files of every evaluation::

    metrics.json               the suite block: per model, the score, sections and subsets with intervals
    scores.jsonl               one line per row: data set, row, id, subset and every completion's score
    <suite>_results.json(l)    what the benchmark's own runner writes, per model (a directory per model)
    report.md                  the leaderboard row, then every subset

Resume: each model's scores of each file are appended, row by row, to ``.partial/`` in the output directory;
``--resume`` reads them back and scores only the rest, so a killed run loses at most the rows in flight. A
later model whose tokenizer prepares the rows alike reuses the first one's tokenisation.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rmkit.data import RowCounts
from rmkit.errors import RMKitError
from rmkit.kinds import Reading
from rmkit.metrics.benchmarks import bootstrap_intervals
from rmkit.suites import Item, Suite

log = logging.getLogger(__name__)
SHOWN_IDS = 20  # ids of non-finite rows listed in metrics.json
CHUNK = 512  # rows tokenised, sorted and scored together: at most this many are lost to a kill


class SuiteEvaluation:
    """The interface of :class:`rmkit.kinds.pairwise.PairEvaluation`, for a benchmark suite."""

    def __init__(self, suite: Suite, config: Any, labels: list[str], names: list[str]):
        self.suite, self.config, self.labels = suite, config, labels
        self.reading = Reading.of(config, chunk_rows=CHUNK)
        self.paths = dict(zip(names, config.data, strict=True))
        self.items: dict[str, list[Item]] = {}
        self.skipped: dict[str, int] = {}
        self.values: dict[str, dict[str, list[list[float]]]] = {label: {} for label in labels}
        self.resumed: dict[str, int] = dict.fromkeys(labels, 0)
        self.recorded: dict[str, dict[str, Any]] = {}  # each model's settings its kind records
        self.parse_failures: dict[str, int] = dict.fromkeys(labels, 0)  # a generating judge's unread verdicts
        self.memo: dict[Any, dict[int, Any]] = {}  # tokenisation shared by models that prepare alike
        self.negated: list[str] = []  # models whose numbers rank lower-is-better (costs), negated to rank
        self.partial = Path(config.output_dir) / ".partial"
        if hasattr(suite, "threshold"):
            suite.threshold = getattr(config, "threshold", suite.threshold)

    # --- scoring -------------------------------------------------------------------------------------------

    def add(self, kind: Any, model: Any, label: str, name: str, rejects: Any) -> None:
        """Score the items of data set ``name`` with ``model`` (those a resumed run has not scored yet)."""
        if name not in self.items:
            self.items[name] = list(self.suite.items(self.paths[name], name, self.reading.columns, rejects))
            self.skipped[name] = rejects.count if rejects is not None else 0
        if kind.ranks_by < 0 and label not in self.negated:
            self.negated.append(label)
            log.info(
                "eval: %s is a %s model; its numbers are negated to rank, as RewardBench does",
                label,
                kind.name,
            )
        items = self.items[name]
        path = self.partial / f"{label}--{name}.jsonl"
        done = self._resume(path, label, name, len(items))
        todo = [i for i in range(len(items)) if i not in done]
        stats = RowCounts()
        self.partial.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            if f.tell() == 0:  # a new file (a resumed one keeps its header, scored rows or not)
                f.write(json.dumps({"model": self._model(label), "rows": len(items)}) + "\n")
            scored = kind.score(model, (items[i].example for i in todo), self.reading, stats, memo=self.memo)
            for i, (example, raw) in zip(todo, scored, strict=True):
                values = kind.values(model, raw) if raw is not None else [math.nan] * _size(example)
                done[i] = [kind.ranks_by * float(v) for v in values]
                f.write(json.dumps({"i": i, "values": [_number(v) for v in done[i]]}) + "\n")
                f.flush()
        self.recorded[label] = kind.recorded(model)
        self.parse_failures[label] += stats.parse_failures
        self.values[label][name] = [done[i] for i in range(len(items))]

    def _model(self, label: str) -> str:
        return self.config.model[self.labels.index(label)]

    def _resume(self, path: Path, label: str, name: str, rows: int) -> dict[int, list[float]]:
        """The rows of ``path`` a killed run scored (none without ``--resume``, which starts the file anew)."""
        if not getattr(self.config, "resume", False) or not path.exists():
            path.unlink(missing_ok=True)
            return {}
        lines = path.read_text(encoding="utf-8").splitlines()
        head = json.loads(lines[0]) if lines else {}
        model = self._model(label)
        if head and (head.get("model") != model or head.get("rows") != rows):
            raise RMKitError(
                f"{path}: the run being resumed scored {head.get('rows')} rows with {head.get('model')}, not "
                f"{rows} with {model}: resume it with the same --model and --data, or start anew with --overwrite"
            )
        done: dict[int, list[float]] = {}
        for line in lines[1:]:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # the line a kill cut short
                continue
            done[entry["i"]] = [math.nan if v is None else v for v in entry["values"]]
        self.resumed[label] += len(done)
        return done

    # --- the numbers ---------------------------------------------------------------------------------------

    def _pooled(self, label: str) -> tuple[list[Item], list[list[float]]]:
        items = [it for name in self.items for it in self.items[name]]
        values = [v for name in self.items for v in self.values[label][name]]
        return items, values

    def official(self, label: str) -> dict[str, Any]:
        """One model's official numbers, each with its interval (``<key>_ci``)."""
        suite, config = self.suite, self.config
        items, values = self._pooled(label)
        units = suite.units(items, values)
        subsets = {name: {**suite.figure(name, u), "rows": len(u)} for name, u in units.items()}
        combined = suite.combine({k: v for k, v in subsets.items() if v.get("score") is not None})
        ci = bootstrap_intervals(
            units, suite.figure, suite.combine, samples=config.bootstrap, seed=config.seed
        )
        for name, numbers in subsets.items():
            for key in [k for k in numbers if k != "rows"]:
                numbers[f"{key}_ci"] = ci.get(f"subset/{name}/{key}")
        sections = {
            k: {"score": v, "score_ci": ci.get(f"section/{k}")} for k, v in combined["sections"].items()
        }
        out: dict[str, Any] = {
            "score": combined["score"],
            "score_ci": ci.get("overall"),
            "sections": sections,
        }
        for key, value in combined.items():
            if key in ("score", "sections"):
                continue
            if isinstance(value, dict):
                out[key] = {k: v for k, v in value.items()} | {f"{k}_ci": ci.get(f"{key}/{k}") for k in value}
            else:
                out[key], out[f"{key}_ci"] = value, ci.get(key)
        bad = [it.id for it, v in zip(items, values, strict=True) if not all(math.isfinite(x) for x in v)]
        out["subsets"] = subsets
        out["missing"] = [s for s in suite.subsets if s not in units]
        out["non_finite"] = {"rows": len(bad), "ids": bad[:SHOWN_IDS]}
        if bad:
            log.warning("%s: %d rows with a missing or non-finite score count as wrong (ids %s)", label, len(bad),
                        ", ".join(bad[:5]))  # fmt: skip
        out["leaderboard"] = suite.lookup(out)
        out["parse_failures"] = self.parse_failures[label]
        return {**out, **self.recorded.get(label, {})}

    def metrics(self) -> dict[str, Any]:
        suite, config = self.suite, self.config
        return {
            "kind": "suite",
            "models": dict(zip(self.labels, config.model, strict=True)),
            "data": {
                name: {"path": self.paths[name], "rows": len(items), "skipped": self.skipped.get(name, 0)}
                for name, items in self.items.items()
            },
            "bootstrap": {"samples": config.bootstrap, "seed": config.seed, "level": 0.95},
            "suite": {
                "name": suite.name,
                "title": suite.title,
                "rules": suite.source,
                "resumed_rows": self.resumed,
                "negated": self.negated,  # cost models, ranked by -cost (their scores.jsonl holds -cost)
                "models": {label: self.official(label) for label in self.labels},
            },
        }

    # --- what is written -----------------------------------------------------------------------------------

    def lines(self) -> Iterator[dict[str, Any]]:
        several = len(self.labels) > 1
        for name, items in self.items.items():
            for i, item in enumerate(items):
                line: dict[str, Any] = {"data": name, "row": item.row, "id": item.id, "subset": item.subset}
                for label in self.labels:
                    line["scores_" + label if several else "scores"] = [
                        _number(v) for v in self.values[label][name][i]
                    ]
                yield line

    def files(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """The benchmark runner's results file of each model (``<model label>/<file>`` with several)."""
        out = {}
        for label, path in zip(self.labels, self.config.model, strict=True):
            items, values = self._pooled(label)
            official = metrics["suite"]["models"][label]
            name, content = self.suite.results(path, items, values, official)
            out[f"{label}/{name}" if len(self.labels) > 1 else name] = content
        return out

    def plots(self, out: Path, metrics: dict[str, Any]) -> dict[str, list[str]]:
        from rmkit.reporting.plots import subset_bars

        block = metrics["suite"]
        return {"Subsets": [subset_bars(block["models"], block["title"], out)]}

    def tables(self, metrics: dict[str, Any]) -> list[str]:
        from rmkit.reporting.report import leaderboard_table

        return [leaderboard_table(metrics["suite"], self.suite.columns)]

    def report(self, metrics: dict[str, Any], drawn: dict[str, list[str]]) -> str:
        from rmkit.reporting.report import suite_report

        return suite_report(metrics, self.suite.columns, drawn)


def _size(example: Any) -> int:
    return len(getattr(example, "responses", None) or getattr(example, "steps", []))


def _number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def cleanup(out: Path) -> None:
    """Remove the partial scores of a finished run."""
    partial = out / ".partial"
    if partial.is_dir():
        for f in partial.iterdir():
            f.unlink()
        partial.rmdir()


__all__ = ["SuiteEvaluation", "cleanup"]
