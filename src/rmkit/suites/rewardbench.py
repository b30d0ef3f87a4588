"""RewardBench and RewardBench 2 (allenai/reward-bench; rules in :mod:`rmkit.metrics.benchmarks`).

RewardBench's files (``allenai/reward-bench``, split ``filtered``; the prior sets of
``allenai/pref-test-sets``) hold one pair a row: ``prompt``, ``chosen``, ``rejected``, ``subset``, ``id``.
RewardBench 2's (``allenai/reward-bench-2``, split ``test``) hold one prompt a row with its ``chosen`` list
(one answer, or several in Ties) and its ``rejected`` list, ``num_correct``, ``subset`` and ``id`` (Ties ids
are ``ref:N`` or ``tied:N``). Every completion is scored on its own, the chosen ones first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rmkit.data.formats import Example
from rmkit.data.rows import RowReader
from rmkit.metrics.benchmarks import (
    OTHER_PRIOR_SETS,
    PRIOR_SETS,
    REWARDBENCH2_SUBSETS,
    REWARDBENCH_COUNTS,
    REWARDBENCH_SECTIONS,
    best_of_n_result,
    pair_right,
    ties_score,
    ties_units,
    weighted_sections,
)
from rmkit.suites.base import Item, Suite, answers, candidates, text

V1_SUBSETS = (*REWARDBENCH_COUNTS, *PRIOR_SETS, *OTHER_PRIOR_SETS)
_V2_NAMES = {s.lower(): s for s in REWARDBENCH2_SUBSETS}


def _subset(r: RowReader, record: dict[str, Any], known: dict[str, str]) -> str:
    value = r.get(record, "subset")
    if not isinstance(value, str) or value.lower() not in known:
        raise r.error(
            "subset", f"unknown subset {value!r}: this suite's subsets are {', '.join(known.values())}"
        )
    return known[value.lower()]


def _id(record: dict[str, Any], r: RowReader) -> str:
    return str(record.get("id", r.row))


def _results_file(model: str, official: dict[str, Any]) -> dict[str, Any]:
    """The results file of reward-bench's runners (``results/eval-set/<model>.json``): the model, its type,
    the chat template ("tokenizer": the tokenizer's own) and each subset's score."""
    out: dict[str, Any] = {"model": model, "model_type": "Seq. Classifier", "chat_template": "tokenizer"}
    out.update({name: s["score"] for name, s in sorted(official["subsets"].items())})
    return out


class RewardBench(Suite):
    name = "rewardbench"
    title = "RewardBench"
    source = "allenai/reward-bench v0.1.4: scripts/run_rm.py, rewardbench/constants.py"
    subsets = tuple(REWARDBENCH_COUNTS)
    columns = tuple(REWARDBENCH_SECTIONS)

    def recognises(self, record: dict[str, Any]) -> bool:
        return (
            {"prompt", "chosen", "rejected", "subset"} <= set(record)
            and isinstance(record["chosen"], str)
            and record["subset"] in V1_SUBSETS
        )

    def item(self, record: dict[str, Any], r: RowReader, name: str) -> Item:
        subset = _subset(r, record, {s.lower(): s for s in V1_SUBSETS})
        chosen, rejected = text(r, record, "chosen"), text(r, record, "rejected")
        example = Example(r.row, r.prompt(record, "prompt"), [chosen, rejected], is_pair=True)
        return Item(r.row, _id(record, r), subset, example)

    def units(self, items: Sequence[Item], values: Sequence[Sequence[float]]) -> dict[str, np.ndarray]:
        out: dict[str, list[float]] = {}
        for item, v in zip(items, values, strict=True):
            out.setdefault(item.subset, []).append(pair_right(v[0], v[1]))
        return {k: np.asarray(v) for k, v in out.items()}

    def combine(self, figures: dict[str, dict[str, Any]]) -> dict[str, Any]:
        return weighted_sections({name: f["score"] for name, f in figures.items()})

    def results(
        self, model: str, items: Sequence[Item], values: Sequence[Sequence[float]], official: dict
    ) -> Any:
        return f"{self.name}_results.json", _results_file(model, official)


class RewardBench2(Suite):
    name = "rewardbench2"
    title = "RewardBench 2"
    source = "allenai/reward-bench v0.1.4: scripts/run_v2.py, rewardbench/utils.py (Ties: v0.1.4's formula)"
    subsets = REWARDBENCH2_SUBSETS
    columns = REWARDBENCH2_SUBSETS

    def recognises(self, record: dict[str, Any]) -> bool:
        return (
            {"prompt", "chosen", "rejected", "subset"} <= set(record)
            and not isinstance(record["chosen"], str)
            and str(record["subset"]).lower() in _V2_NAMES
        )

    def item(self, record: dict[str, Any], r: RowReader, name: str) -> Item:
        subset = _subset(r, record, _V2_NAMES)
        chosen = answers(r, record, "chosen", at_least=1)
        rejected = answers(r, record, "rejected", at_least=0)
        row_id = _id(record, r)
        facts: dict[str, Any] = {"num_correct": len(chosen)}
        if subset == "Ties":
            kind, _, number = row_id.partition(":")
            if kind not in ("ref", "tied") or not number.isdigit():
                raise r.error("id", f"a Ties id is 'ref:N' or 'tied:N', got {row_id!r}")
        return Item(r.row, row_id, subset, candidates(r, record, "prompt", chosen + rejected, subset), facts)

    def units(self, items: Sequence[Item], values: Sequence[Sequence[float]]) -> dict[str, np.ndarray]:
        rows: dict[str, list[float]] = {}
        ties = []
        for item, v in zip(items, values, strict=True):
            if item.subset == "Ties":
                ties.append((item.id, list(v), item.facts["num_correct"]))
            else:
                rows.setdefault(item.subset, []).append(best_of_n_result(v))
        out = {k: np.asarray(v) for k, v in rows.items()}
        if ties:
            out["Ties"] = ties_units(ties)[1]
        return out

    def figure(self, subset: str, units: np.ndarray) -> dict[str, float | None]:
        return ties_score(units) if subset == "Ties" else super().figure(subset, units)

    def results(
        self, model: str, items: Sequence[Item], values: Sequence[Sequence[float]], official: dict
    ) -> Any:
        return f"{self.name}_results.json", _results_file(model, official)
