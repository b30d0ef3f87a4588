"""Rated responses: rows that score answers on attributes instead of ranking two, and pairs made from them.

Two formats, one :class:`RatedExample` (a prompt, its rated responses, each response's ratings):

- ``rated``: one response a row, ``prompt`` (or ``messages`` before it) and ``response``, with numeric
  attribute columns: the ``attributes`` named, else HelpSteer2's (helpfulness, correctness, coherence,
  complexity, verbosity) that the row has. Rows of one prompt are grouped when pairs are made.
- ``completions``: UltraFeedback's several answers a row, ``instruction`` (or ``prompt``) and
  ``completions``, each with ``response`` and its ratings: the numbers ``overall_score`` and
  ``fine-grained_score``, and ``annotations.<aspect>.Rating`` (helpfulness, honesty, instruction_following,
  truthfulness), read as the attribute ``<aspect>``.

A rating must be a finite number (a numeric string counts), within ``rating_range`` when one is given;
anything else is a bad row, named by file, row and field.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rmkit.data.readers import first_record, read_records
from rmkit.data.rejects import Rejects
from rmkit.data.rows import Message, RowMixin, RowReader, each_record
from rmkit.errors import DataError

RATED_FORMATS = ("rated", "completions")
HELPSTEER = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
STRATEGIES = ("best_vs_rest", "best_vs_worst", "all")


@dataclass
class RatedExample(RowMixin):
    """A prompt with its rated ``responses``; ``ratings[i]`` maps attribute names to response ``i``'s numbers."""

    row: int
    prompt: list[Message]
    responses: list[str]
    ratings: list[dict[str, float]]
    extra: dict[str, Any] = field(default_factory=dict)


def detect_rated_format(record: dict[str, Any], attributes: Sequence[str] | None = None) -> str | None:
    keys = set(record)
    completions = record.get("completions")
    # (a list of strings is a PRM's steps, not rated completions)
    if (
        keys & {"instruction", "prompt"}
        and isinstance(completions, list)
        and completions
        and isinstance(completions[0], dict)
    ):
        return "completions"
    if "response" in keys and keys & {"prompt", "messages"} and set(attributes or HELPSTEER) & keys:
        return "rated"
    return None


def holds_rated(
    path: str | Path, *, format: str | None = None, columns: dict[str, str] | None = None, attributes=None
) -> bool:
    """Whether ``path`` holds rated responses: by ``format`` when one is named, else by its first record
    (columns renamed first)."""
    if format:
        return format in RATED_FORMATS
    first = first_record(path)
    return (
        first is not None
        and detect_rated_format({(columns or {}).get(k, k): v for k, v in first.items()}, attributes)
        is not None
    )


def iter_rated(
    path: str | Path,
    *,
    format: str | None = None,
    columns: dict[str, str] | None = None,
    rejects: Rejects | None = None,
    attributes: Sequence[str] | None = None,
    rating_range: tuple[float, float] | None = None,
) -> Iterator[RatedExample]:
    """Stream the rated examples of a data file in file order (bad rows raise, or go to ``rejects``)."""
    fmt = format

    def convert(record: dict[str, Any], reader: RowReader) -> RatedExample:
        nonlocal fmt
        fmt = fmt or detect_rated_format(record, attributes)
        if fmt is None:
            raise reader.error(
                None,
                f"not rated data: columns {sorted(record)}; expected prompt/response with rating columns "
                "(--attributes, or HelpSteer2's) or instruction/completions (UltraFeedback)",
            )
        read = _rated if fmt == "rated" else _completions
        return read(record, reader, attributes, rating_range)

    yield from each_record(
        read_records(path), source=str(path), columns=columns, rejects=rejects, convert=convert
    )


def _number(reader: RowReader, value: Any, where: str, rating_range: tuple[float, float] | None) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise reader.error(where, f"expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise reader.error(where, f"expected a finite number, got {value!r}")
    if rating_range is not None and not rating_range[0] <= number <= rating_range[1]:
        raise reader.error(
            where, f"{number:g} is outside the rating range {rating_range[0]:g}..{rating_range[1]:g}"
        )
    return number


def _rated(
    record: dict[str, Any], reader: RowReader, attributes: Sequence[str] | None, rating_range
) -> RatedExample:
    names = list(attributes) if attributes else [a for a in HELPSTEER if a in record]
    missing = [a for a in names if record.get(a) is None]
    if missing:
        raise reader.error(missing[0], f"missing rating (the row's columns: {', '.join(sorted(record))})")
    ratings = {a: _number(reader, record[a], a, rating_range) for a in names}
    if "messages" in record and "prompt" not in record:
        prompt = reader.messages(record["messages"], "messages")
    else:
        prompt = reader.prompt(record)
    response = reader.text(record, "response")
    extra = {k: v for k, v in record.items() if k not in {"prompt", "messages", "response", *names}}
    return RatedExample(reader.row, prompt, [response], [ratings], extra)


def _completions(
    record: dict[str, Any], reader: RowReader, attributes: Sequence[str] | None, rating_range
) -> RatedExample:
    field_name = "instruction" if "instruction" in record else "prompt"
    prompt = reader.prompt(record, field_name)
    responses, ratings = [], []
    completions = reader.get(record, "completions")
    if not isinstance(completions, list):
        raise reader.error("completions", f"expected a list of completions, got {type(completions).__name__}")
    for i, c in enumerate(completions):
        where = f"completions[{i}]"
        if not isinstance(c, dict):
            raise reader.error(where, f"expected a completion object, got {type(c).__name__}")
        responses.append(reader.text(c, "response") if "response" in c else reader.text(c, "text"))
        found: dict[str, Any] = {k: c[k] for k in ("overall_score", "fine-grained_score") if k in c}
        for aspect, note in (c.get("annotations") or {}).items():
            if isinstance(note, dict) and "Rating" in note:
                found[aspect] = note["Rating"]
        names = list(attributes) if attributes else list(found)
        values = {}
        for a in names:
            if a not in found:
                raise reader.error(f"{where}.{a}", "missing rating")
            path = (
                f"{where}.annotations.{a}.Rating"
                if a not in ("overall_score", "fine-grained_score")
                else f"{where}.{a}"
            )
            values[a] = _number(reader, found[a], path, rating_range)
        ratings.append(values)
    if not responses:
        raise reader.error("completions", "no completions")
    extra = {k: v for k, v in record.items() if k not in {field_name, "completions"}}
    return RatedExample(reader.row, prompt, responses, ratings, extra)


def rating_of(ratings: dict[str, float], weights: dict[str, float] | None, attribute: str | None) -> float:
    """One number for a response: the ``weights``' weighted sum, else ``attribute``, else the only one."""
    missing = sorted({*(weights or {}), *([attribute] if attribute and not weights else [])} - set(ratings))
    if missing:
        raise DataError(
            f"the rows have no rating {', '.join(missing)} (they rate {', '.join(sorted(ratings))})"
        )
    if weights:
        return sum(w * ratings[a] for a, w in weights.items())
    if attribute is None:
        if len(ratings) != 1:
            raise DataError(
                f"the rows rate {sorted(ratings)}: name the rating to compare (--attribute or --weights)"
            )
        return next(iter(ratings.values()))
    return ratings[attribute]


@dataclass
class PairCounts:
    """What making pairs did: groups read, pairs written, ties left out, groups with one response."""

    groups: int = 0
    pairs: int = 0
    ties: int = 0
    single: int = 0


def grouped(examples: Iterable[RatedExample]) -> list[RatedExample]:
    """Rows of the same prompt as one example (in the order prompts first appear); a multi-completion row
    is its own group."""
    groups: dict[str, RatedExample] = {}
    for ex in examples:
        key = repr(ex.prompt) if len(ex.responses) == 1 else f"#{ex.row}"
        if key in groups:
            groups[key].responses += ex.responses
            groups[key].ratings += ex.ratings
        else:
            groups[key] = RatedExample(
                ex.row, ex.prompt, list(ex.responses), list(ex.ratings), dict(ex.extra)
            )
    return list(groups.values())


def make_pairs(
    group: RatedExample, values: list[float], strategy: str, rng: random.Random, counts: PairCounts
) -> list[tuple[int, int]]:
    """``(chosen, rejected)`` indices of one group's pairs: the best against each other response, the best
    against the worst, or every pair with different ratings. Ties are left out and counted; a tie for best
    or worst is broken by ``rng`` (so the same seed gives the same pairs)."""
    counts.groups += 1
    n = len(values)
    if n < 2:
        counts.single += 1
        return []
    order = list(range(n))
    rng.shuffle(order)  # ties for best or worst go to a seeded random one
    best = max(order, key=lambda i: values[i])
    worst = min(order, key=lambda i: values[i])
    if strategy == "best_vs_worst":
        candidates = [(best, worst)]
    elif strategy == "best_vs_rest":
        candidates = [(best, i) for i in range(n) if i != best]
    elif strategy == "all":
        candidates = [(i, j) for i in range(n) for j in range(n) if values[i] > values[j]]
        counts.ties += sum(values[i] == values[j] for i in range(n) for j in range(i + 1, n))
    else:
        raise DataError(f"unknown pair strategy '{strategy}': expected one of {', '.join(STRATEGIES)}")
    pairs = [(c, r) for c, r in candidates if values[c] > values[r]]
    if strategy != "all":
        counts.ties += len(candidates) - len(pairs)
    counts.pairs += len(pairs)
    return pairs
