"""RM-Bench, JudgeBench and ProcessBench (rules in :mod:`rmkit.metrics.benchmarks`).

- RM-Bench (``THU-KEG/RM-Bench``, ``total_dataset.json`` or a domain's file): ``id``, ``prompt``, three
  ``chosen`` and three ``rejected`` answers (concise, detailed plain, detailed markdown) and ``domain``
  (chat, math, code, safety-refuse, safety-response: the four domains by prefix). The six answers are
  scored each after the prompt.
- JudgeBench (``ScalerLab/JudgeBench``, a ``data/dataset=judgebench,...jsonl`` file or the hub's splits):
  ``pair_id``, ``question``, ``response_A``, ``response_B``, ``label`` (``A>B`` or ``B>A``), ``source``.
- ProcessBench (``Qwen/ProcessBench``: one file a split, gsm8k, math, olympiadbench, omnimath): ``problem``,
  ``steps``, ``label`` (the first wrong step, -1 for none), scored by a process RM.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from rmkit.data import Rejects
from rmkit.data.rows import RowReader
from rmkit.metrics.benchmarks import (
    JUDGEBENCH_SOURCES,
    PROCESSBENCH_SPLITS,
    RMBENCH_DOMAINS,
    harmonic,
    judgebench_right,
    rmbench_figures,
    rmbench_matrix,
)
from rmkit.suites.base import Item, Suite, answers, candidates, stem, text

STYLES = 3  # RM-Bench's styles of each answer


def _domain(value: Any, r: RowReader, field: str) -> str:
    name = str(value).lower()
    found = next((d for d in RMBENCH_DOMAINS if name.startswith(d)), None)
    if found is None:
        raise r.error(field, f"unknown domain {value!r}: RM-Bench's are {', '.join(RMBENCH_DOMAINS)}")
    return found


class RMBench(Suite):
    name = "rm-bench"
    title = "RM-Bench"
    source = "THU-KEG/RM-Bench: scripts/utils.py compute_accuracy"
    subsets = RMBENCH_DOMAINS
    columns = ("chat", "math", "code", "safety", "easy", "normal", "hard")

    def recognises(self, record: dict[str, Any]) -> bool:
        chosen = record.get("chosen")
        return (
            {"prompt", "chosen", "rejected"} <= set(record)
            and not isinstance(chosen, str)
            and len(list(chosen)) == STYLES
            and ("domain" in record or "subset" not in record)
        )

    def item(self, record: dict[str, Any], r: RowReader, name: str) -> Item:
        chosen = answers(r, record, "chosen", at_least=STYLES)
        rejected = answers(r, record, "rejected", at_least=STYLES)
        if len(chosen) != STYLES or len(rejected) != STYLES:
            raise r.error("rejected" if len(chosen) == STYLES else "chosen", f"expected {STYLES} styles")
        domain = _domain(record["domain"], r, "domain") if "domain" in record else _domain(name, r, "file")
        return Item(
            r.row, str(record.get("id", r.row)), domain, candidates(r, record, "prompt", chosen + rejected)
        )

    def units(self, items: Sequence[Item], values: Sequence[Sequence[float]]) -> dict[str, np.ndarray]:
        out: dict[str, list[np.ndarray]] = {}
        for item, v in zip(items, values, strict=True):
            out.setdefault(item.subset, []).append(rmbench_matrix(v[:STYLES], v[STYLES:]))
        return {k: np.stack(v) for k, v in out.items()}

    def figure(self, subset: str, units: np.ndarray) -> dict[str, float | None]:
        return rmbench_figures(units)

    def combine(self, figures: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """The mean of the four domains' scores (``total_avg_acc``) and of each tier over them."""
        out = super().combine(figures)
        if out["score"] is not None:
            out["tiers"] = {
                t: sum(figures[d][t] for d in RMBENCH_DOMAINS) / 4 for t in ("easy", "normal", "hard")
            }
        return out

    def results(
        self, model: str, items: Sequence[Item], values: Sequence[Sequence[float]], official: dict
    ) -> Any:
        """RM-Bench's ``scripts/run_rm.py`` output: the rows with their ``score_chosen`` and
        ``score_rejected`` lists (what its ``compute_accuracy`` reads)."""
        rows = [
            {
                "id": item.id,
                "domain": item.facts.get("domain", item.subset),
                "score_chosen": list(v[:STYLES]),
                "score_rejected": list(v[STYLES:]),
            }
            for item, v in zip(items, values, strict=True)
        ]
        return f"{self.name}_results.json", rows

    def lookup(self, official: dict[str, Any]) -> dict[str, float | None]:
        subsets, overall = official["subsets"], official.get("tiers", {})
        out = {d: (subsets.get(d) or {}).get("score") for d in RMBENCH_DOMAINS}
        return {**out, **{t: overall.get(t) for t in ("easy", "normal", "hard")}}


class JudgeBench(Suite):
    name = "judgebench"
    title = "JudgeBench"
    source = "ScalerLab/JudgeBench: run_judge.py, utils/judges.py, utils/metrics.py"
    subsets = JUDGEBENCH_SOURCES
    columns = JUDGEBENCH_SOURCES

    def recognises(self, record: dict[str, Any]) -> bool:
        return {"question", "response_A", "response_B", "label"} <= set(record)

    def item(self, record: dict[str, Any], r: RowReader, name: str) -> Item:
        label = r.get(record, "label")
        if label not in ("A>B", "B>A"):
            raise r.error("label", f"expected 'A>B' or 'B>A', got {label!r}")
        source = str(r.get(record, "source"))
        family = next((s for s in JUDGEBENCH_SOURCES if source.startswith(s)), source)
        pair = [text(r, record, "response_A"), text(r, record, "response_B")]
        facts = {"label": label, "source": source, "pair_id": record.get("pair_id", r.row)}
        return Item(r.row, str(facts["pair_id"]), family, candidates(r, record, "question", pair), facts)

    def units(self, items: Sequence[Item], values: Sequence[Sequence[float]]) -> dict[str, np.ndarray]:
        out: dict[str, list[float]] = {}
        for item, v in zip(items, values, strict=True):
            out.setdefault(item.subset, []).append(judgebench_right(v[0], v[1], item.facts["label"]))
        return {k: np.asarray(v) for k, v in out.items()}

    def combine(self, figures: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """The accuracy over all pairs (micro-averaged: each source weighs its pairs)."""
        rows = sum(f["rows"] for f in figures.values())
        return {
            "sections": {},
            "score": sum(f["score"] * f["rows"] for f in figures.values()) / rows if rows else None,
        }

    def results(
        self, model: str, items: Sequence[Item], values: Sequence[Sequence[float]], official: dict
    ) -> Any:
        """JudgeBench's ``outputs/...,judge_name=reward_model,judge_model=<model>.jsonl``: each pair with its
        two judgements (both orders), as its ``compute_final_metrics`` reads them."""
        lines = []
        for item, (a, b) in zip(items, values, strict=True):
            judged = [
                {"judgment": {"judge_model": model, "scores": [a, b]}, "decision": "A>B" if a > b else "B>A"},
                {"judgment": {"judge_model": model, "scores": [b, a]}, "decision": "A>B" if b > a else "B>A"},
            ]
            lines.append(
                {
                    "pair_id": item.facts["pair_id"],
                    "source": item.facts["source"],
                    "label": item.facts["label"],
                    "judge_name": "reward_model",
                    "judgments": judged,
                }  # fmt: skip
            )
        return f"{self.name}_results.jsonl", lines


class ProcessBench(Suite):
    name = "processbench"
    title = "ProcessBench"
    source = "QwenLM/ProcessBench: code/run_eval.py (F1 of error and correct accuracy per split)"
    unit = "steps"
    subsets = PROCESSBENCH_SPLITS
    columns = PROCESSBENCH_SPLITS
    threshold = 0.5  # a step is predicted right when it scores at least this (the evaluation's --threshold)

    def recognises(self, record: dict[str, Any]) -> bool:
        return {"problem", "steps", "label"} <= set(record)

    def items(
        self, path: str, name: str, columns: dict[str, str] | None, rejects: Rejects | None
    ) -> Iterator[Item]:
        """The solutions of a split's file through the process kind's reader (steps and first wrong step)."""
        from rmkit.data.steps import iter_step_examples

        split = next((s for s in PROCESSBENCH_SPLITS if s == stem(path) or stem(path).startswith(s)), None)
        for ex in iter_step_examples(path, format="processbench", columns=columns, rejects=rejects):
            subset = split or stem(path)
            yield Item(ex.row, str(ex.extra.get("id", ex.row)), subset, ex, {"first_error": ex.first_error})

    def units(self, items: Sequence[Item], values: Sequence[Sequence[float]]) -> dict[str, np.ndarray]:
        from rmkit.metrics.graded import first_below

        out: dict[str, list[tuple[float, float]]] = {}
        for item, v in zip(items, values, strict=True):
            error = item.facts["first_error"]
            out.setdefault(item.subset, []).append(
                (float(error >= 0), float(first_below(v, self.threshold) == error))
            )
        return {k: np.asarray(v).reshape(-1, 2) for k, v in out.items()}

    def figure(self, subset: str, units: np.ndarray) -> dict[str, float | None]:
        erroneous, match = units[:, 0] > 0, units[:, 1]
        error_acc = float(match[erroneous].mean()) if erroneous.any() else None
        correct_acc = float(match[~erroneous].mean()) if (~erroneous).any() else None
        return {
            "score": harmonic(error_acc, correct_acc),
            "error_accuracy": error_acc,
            "correct_accuracy": correct_acc,
        }

    def results(
        self, model: str, items: Sequence[Item], values: Sequence[Sequence[float]], official: dict
    ) -> Any:
        """ProcessBench's printed figures, per split: error and correct accuracy and F1, in percent."""
        return f"{self.name}_results.json", {
            split: {k: None if v is None else 100 * v for k, v in numbers.items()}
            for split, numbers in official["subsets"].items()
        }
