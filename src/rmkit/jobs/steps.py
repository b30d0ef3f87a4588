"""``rmkit score`` with a process reward model: step-labelled rows in, ``step_scores`` and ``score`` out.

The file job is :mod:`rmkit.jobs.score`'s (shares, part files, resume, merge, summary); this module is
what changes for a PRM: which model loads, how rows are read, how a chunk is scored, what a row holds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

from rmkit.data import Example, RowCounts
from rmkit.data.steps import StepExample, normalise_steps
from rmkit.process import ProcessRewardModel, aggregate, score_step_examples, split_steps


def step_examples(records: Iterable, config: Any, rejects: Any) -> Iterator[StepExample]:
    return normalise_steps(
        records,
        source=str(config.input),
        format=config.format,
        columns=config.columns,
        rejects=rejects,
        neutral=config.neutral_steps,
    )


def scored_steps(
    prm: ProcessRewardModel, chunk: list[StepExample], config: Any, stats: RowCounts
) -> Iterator[tuple[StepExample, list[float]]]:
    scores = score_step_examples(
        prm, chunk, batch_tokens=config.batch_tokens, max_length=config.max_length, stats=stats
    )
    yield from zip(chunk, scores, strict=True)


def scored_candidates(
    prm: ProcessRewardModel, chunk: list[Example], config: Any, stats: RowCounts
) -> Iterator[tuple[Example, list[float]]]:
    """Best-of-N rows under a PRM: each candidate response is a solution whose steps are cut at the
    separator; its score is the aggregate of its step scores (NaN when no step fit the length limit), and
    the step scores go to the row's ``step_scores`` column."""
    solutions = [
        StepExample(ex.row, ex.prompt, split_steps(response, prm.steps.separator))
        for ex in chunk
        for response in ex.responses
    ]
    scores = iter(
        score_step_examples(
            prm, solutions, batch_tokens=config.batch_tokens, max_length=config.max_length, stats=stats
        )
    )
    for ex in chunk:
        steps = [next(scores) for _ in ex.responses]
        ex.extra["step_scores"] = steps
        yield ex, [math.nan if (a := aggregate(s, config.aggregate)) is None else a for s in steps]


def step_row(ex: StepExample, scores: list[float | None], how: str) -> dict[str, Any]:
    """The output object of one solution: ``prompt``, ``completions``, ``step_scores`` (one a step, null
    for a step cut by the length limit), ``score`` (the aggregate of the scored steps), its labels and
    every other input column."""
    scored = [s for s in scores if s is not None]
    out: dict[str, Any] = {
        "prompt": ex.prompt_value(),
        "completions": ex.steps,
        "step_scores": list(scores) + [None] * (len(ex.steps) - len(scores)),
        "score": aggregate(scored, how),
    }
    if ex.labels is not None:
        out["labels"] = ex.labels
    for k, v in ex.extra.items():
        out.setdefault(k, v)
    return out
