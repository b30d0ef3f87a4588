"""Readout judges (:mod:`rmkit.judges`): a causal LM given with ``--judge verifier|rating|pairwise``, or a
checkpoint whose rmkit settings hold a judge (a verifier written by ``rmkit convert --verifier``).

A judge is scored as any outcome RM is, one score a response, through the same core: its tokenizer renders
the judge prompts (:class:`rmkit.data.judging.JudgeTokenizer`). A pairwise judge reads one sequence per
ordered pair of an example's candidates; its raw output is those pairs' log-odds, and :meth:`values` turns
them into one score a candidate: each pair's two orders averaged (the position bias cancels), then the
Bradley-Terry fit of the judged probabilities (:func:`rmkit.metrics.graded.bradley_terry`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from rmkit.data import RowCounts
from rmkit.data.judging import JUDGE_KEY
from rmkit.errors import RMKitError
from rmkit.kinds.base import Checkpoint, Kind, Raw, Reading
from rmkit.kinds.pairwise import PairEvaluation

DECIDED = 1e-3  # a generating judge's verdict of certainty, as a probability kept off 0 and 1 for the fit


@dataclass
class Judgment:
    """A generating judge's reading of one sequence: its verdict (``nan`` when masked) and what it wrote."""

    value: float
    texts: list[str]
    order: list[int] | None = None  # a four-way judgment: where each answer was shown


def judge_of(checkpoint: Checkpoint) -> dict[str, Any] | None:
    """The judge settings of ``checkpoint``: given to the command (``--judge``), else stored in it."""
    return checkpoint.options.get(JUDGE_KEY) or checkpoint.metadata.get(JUDGE_KEY)


class JudgeKind(Kind):
    name = "judge"
    data = "preference pairs"

    def recognises(self, checkpoint: Checkpoint) -> bool:
        return judge_of(checkpoint) is not None

    def load(self, checkpoint: Checkpoint, dtype: Any, device: Any) -> Any:
        from rmkit.data.judging import Judge

        given = {k: v for k, v in checkpoint.options.items() if k != JUDGE_KEY}
        if JUDGE_KEY not in checkpoint.options:  # a judge written as a classifier (rmkit convert --verifier)
            return super().load(
                Checkpoint(checkpoint.path, checkpoint.config, given, checkpoint.steps), dtype, device
            )
        from rmkit.judges import load_judge

        judge = Judge.of(checkpoint.options[JUDGE_KEY])
        return load_judge(
            checkpoint.path,
            judge,
            dtype=dtype,
            device=device,
            trust_remote_code=given.get("trust_remote_code", False),
            allow_pickle=given.get("allow_pickle", False),
        )

    def owns(self, model: Any) -> bool:
        return JUDGE_KEY in (getattr(model, "metadata", None) or {})

    def score_prepared(
        self, model: Any, chunk: Sequence[Any], prepared: list[Any], reading: Reading, stats: RowCounts
    ) -> Iterator[tuple[Any, Raw | None]]:
        """A readout judge through the inference core; a generating one through its ``judgments``: each
        sequence's judgments parsed into a :class:`Judgment` (failures counted, or an error that names the
        row under the ``error`` policy)."""
        if not getattr(model, "generates", False):
            yield from super().score_prepared(model, chunk, prepared, reading, stats)
            return
        judge = model.judge
        written = iter(
            model.judgments([t.ids for row in prepared if row is not None for t in row], reading.batch_tokens)
        )
        for example, row in zip(chunk, prepared, strict=True):
            stats.add(row, example.notes)
            if row is None:
                yield example, None
                continue
            raw = []
            four_way = judge.choice and not judge.rates_alone(example)
            parser = judge.parser if not judge.choice or four_way else "rating"
            for texts in (next(written) for _ in row):
                value, failed = judge.verdict(texts, parser)
                stats.parse_failures += failed
                if failed == len(texts) and judge.on_parse_failure == "error":
                    raise RMKitError(
                        f"row {example.row}: the judge's verdict could not be read by the '{judge.parser}' parser "
                        f"(it wrote {texts[-1][-200:]!r}); --on-parse-failure mask or score=X to go on"
                    )
                raw.append(
                    Judgment(
                        value, texts, judge.order(example.row, len(example.responses)) if four_way else None
                    )
                )
            yield example, raw

    def values(self, model: Any, raw: Raw) -> list[float]:
        """One score a candidate: a pointwise judge's readouts (or parsed verdicts) as they are; a pairwise
        judge's pair log-odds or verdicts (one a sequence, in :meth:`rmkit.data.judging.Judge.pairs`'s order)
        fitted into one score each."""
        judge = judge_of_model(model)
        if judge.readout == "generate":
            if raw and not isinstance(raw[0], Judgment):  # verdicts read alone (the server's path)
                return list(raw)
            if raw and raw[0].order is not None:
                return picked(raw[0])
            verdicts = [j.value for j in raw]
            return pairwise_scores(judge, verdicts, verdicts=True) if judge.pairwise else verdicts
        if judge.readout != "pairwise":
            return list(raw)
        return pairwise_scores(judge, list(raw))

    def row(self, model: Any, example: Any, raw: Raw, values: list[Any], reading: Reading) -> dict[str, Any]:
        """The row of every outcome RM; a generating judge's also keeps what it wrote (``judgments``)."""
        out = super().row(model, example, raw, values, reading)
        if raw and isinstance(raw[0], Judgment):
            out["judgments"] = [j.texts if len(j.texts) > 1 else j.texts[0] for j in raw]
        return out

    def servable(self, model: Any) -> str | None:
        """The server scores each sample on its own and must answer each with a number: any pointwise judge
        (a generating one with ``--on-parse-failure score=X``), never a pairwise one."""
        judge = judge_of_model(model)
        if judge.pairwise:
            return "rmkit serve scores each sample alone: a pairwise judge needs two answers to compare"
        if judge.readout == "generate" and not judge.on_parse_failure.startswith("score="):
            return (
                "rmkit serve must answer every sample with a number: give a generating judge "
                "--on-parse-failure score=X (the score of a verdict it cannot read)"
            )
        return None

    def recorded(self, model: Any) -> dict[str, Any]:
        """A judge's settings but its prompt's text (its ``template`` names it): readout, votes, seed, order."""
        return {
            "judge": {k: v for k, v in judge_of_model(model).stored().items() if k not in ("text", "policy")}
        }

    def evaluation(self, config: Any, labels: list[str], names: list[str]) -> PairEvaluation:
        return PairEvaluation(config, labels, names)


def judge_of_model(model: Any) -> Any:
    """The :class:`rmkit.data.judging.Judge` of a loaded judge, parsed from its settings once (not per row)."""
    from rmkit.data.judging import Judge

    if getattr(model, "_rmkit_judge", None) is None:
        model._rmkit_judge = Judge.of(model.metadata[JUDGE_KEY])
    return model._rmkit_judge


def picked(judgment: Judgment) -> list[float]:
    """A four-way judgment as one score an answer: 1 for the answer shown where the judge pointed, 0 for the
    others (no score for any when its verdict was masked; the failure policy's score for all otherwise)."""
    order, value = judgment.order or [], judgment.value
    if not math.isfinite(value) or value != int(value) or not 0 <= value < len(order):
        return [value] * len(order)
    scores = [0.0] * len(order)
    scores[order[int(value)]] = 1.0
    return scores


def candidates(judge: Any, pairs: int) -> int:
    """How many candidates give ``pairs`` ordered pairs under ``judge``'s schedule."""
    n = 2
    while len(judge.pairs(n)) < pairs:
        n += 1
    return n


def pairwise_scores(judge: Any, judged: list[float], verdicts: bool = False) -> list[float]:
    """Each candidate's Bradley-Terry score from the ordered pairs' judgements: the log-odds that the first
    is better (readout), or with ``verdicts`` the parsed verdict (1 the first, 0 the second, 0.5 a tie). Each
    pair's two orders are averaged: the probability that i beats j."""
    from rmkit.metrics.graded import bradley_terry

    n = candidates(judge, len(judged))
    by_pair = dict(zip(judge.pairs(n), judged, strict=True))
    comparisons = []
    for (i, j), ab in by_pair.items():
        if i < j:
            ba = by_pair[(j, i)]
            if not (math.isfinite(ab) and math.isfinite(ba)):
                return [math.nan] * n
            if verdicts:
                p = min(max((ab + 1 - ba) / 2, DECIDED), 1 - DECIDED)
            else:
                p = 1 / (1 + math.exp(-(ab - ba) / 2))
            comparisons.append((i, j, p))
    return bradley_terry(n, comparisons)
