"""What ``rmkit score`` and ``rmkit rank`` write for one scored example (the file job: :mod:`rmkit.jobs.score`)."""

from __future__ import annotations

from typing import Any

from rmkit.data import Example
from rmkit.metrics import ranking


def output_row(
    ex: Example, scores: list[float], *, top_k: int | None = None, min_score: float | None = None
) -> dict[str, Any]:
    """The object written for one scored example: its text, its score(s), then its pass-through columns.

    ``{prompt, response, score}`` for a response; ``{prompt, chosen, rejected, score_chosen,
    score_rejected}`` for a pair; ``{text, score}`` for pre-rendered text (and no ``prompt`` for rendered
    pairs); ``{prompt, responses, scores, best, ranking}`` for a best-of-N row, where ``ranking`` lists
    the responses' indices best first (ties in input order; ``top_k`` and ``min_score`` cut it) and
    ``best`` is its first (``None`` when ``min_score`` leaves none). The score columns win over input
    columns of the same name.
    """
    out: dict[str, Any] = {} if ex.rendered else {"prompt": ex.prompt_value()}
    if ex.rejected_prompt is not None:
        out["prompt_rejected"] = ex.rejected_prompt
    if ex.is_pair:
        out.update(chosen=ex.responses[0], rejected=ex.responses[1])
        out.update(score_chosen=scores[0], score_rejected=scores[1])
        if ex.margin is not None:
            out["margin"] = ex.margin
    elif ex.best_of_n:
        order = ranking(scores, top_k=top_k, min_score=min_score)
        out.update(responses=ex.responses, scores=scores, best=order[0] if order else None, ranking=order)
    else:
        out["text" if ex.rendered else "response"] = ex.responses[0]
        out["score"] = scores[0]
    for k, v in ex.extra.items():
        out.setdefault(k, v)
    return out


def attribute_row(
    row: dict[str, Any], names: list[str], outputs: list[list[float]], pair_or_many: bool
) -> None:
    """Add a multi-attribute RM's outputs to ``row``: ``attribute_scores``, one ``{name: value}`` for a
    response, a list of them (one a response) for a pair or best-of-N row."""
    per_response = [dict(zip(names, values, strict=True)) for values in outputs]
    row["attribute_scores"] = per_response if pair_or_many else per_response[0]
