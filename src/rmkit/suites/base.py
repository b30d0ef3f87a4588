"""What every benchmark suite answers: how its files are recognised and read, and how per-example scores
become its official numbers (:mod:`rmkit.metrics.benchmarks` holds the rules themselves).

A suite reads the benchmark's files as users download them (any format :func:`rmkit.data.read_records`
reads) into :class:`Item` s, each one example for the inference core (a pair, the completions of one prompt,
or a solution's steps) with its benchmark id and subset. ``rmkit eval --suite`` scores every item's example
with every model (:mod:`rmkit.evaluation.suite`) and asks the suite for:

- ``units(items, values)``: per subset, an array of what its number is computed from, one entry a row (or a
  prompt, for RewardBench 2's Ties), the unit that the bootstrap resamples within the subset;
- ``figure(subset, units)``: that subset's numbers, ``score`` (its official number) first;
- ``combine({subset: score})``: the sections and the overall score (``None`` where a part is missing);
- ``results(...)``: the file the benchmark's own runner writes, so a user can submit it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rmkit.data import Rejects, read_records
from rmkit.data.formats import Example
from rmkit.data.rows import RowReader, each_record


@dataclass
class Item:
    """One row of a benchmark: the ``example`` the model scores, its ``id`` and ``subset``, and what the
    suite's rule needs besides the scores (``facts``: the number of correct completions, a label...)."""

    row: int
    id: str
    subset: str
    example: Any
    facts: dict[str, Any] = field(default_factory=dict)


class Suite:
    """A public benchmark (module docstring). Subclasses set the class attributes and the methods."""

    name = ""  # the value of --suite
    title = ""  # as the benchmark names itself
    source = ""  # where the rules were read
    unit = "responses"  # what the models score: "responses" (outcome RMs) or "steps" (process RMs)
    subsets: tuple[str, ...] = ()  # the subsets the published score needs (missing ones are reported)
    columns: tuple[str, ...] = ()  # the leaderboard's columns, after the score

    @property
    def data(self) -> str:
        """What its files hold, for messages."""
        return f"{self.title} rows"

    def evaluates(self, kind: Any) -> bool:
        """Whether models of ``kind`` score what this suite's rows hold (responses, or a PRM's steps)."""
        return kind.unit == self.unit

    # --- reading -------------------------------------------------------------------------------------------

    def recognises(self, record: dict[str, Any]) -> bool:
        """Whether a file whose first record is ``record`` is unmistakably this benchmark's."""
        return False

    def item(self, record: dict[str, Any], r: RowReader, name: str) -> Item:
        """The item of one record (``r`` names file and row in errors; ``name`` is the data set's name)."""
        raise NotImplementedError

    def items(
        self, path: str, name: str, columns: dict[str, str] | None, rejects: Rejects | None
    ) -> Iterator[Item]:
        """The items of the file ``path``, in file order; bad rows raise, or go to ``rejects``."""
        return each_record(
            read_records(path),
            source=str(path),
            columns=columns,
            rejects=rejects,
            convert=lambda record, r: self.item(record, r, name),
        )

    # --- the numbers ---------------------------------------------------------------------------------------

    def units(self, items: Sequence[Item], values: Sequence[Sequence[float]]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def figure(self, subset: str, units: np.ndarray) -> dict[str, float | None]:
        """A subset's numbers from its units: by default ``score``, their mean (an accuracy)."""
        return {"score": float(units.mean())}

    def combine(self, figures: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """The sections and the ``score`` of the subsets' numbers (each with ``score`` and ``rows``): by default
        the unweighted mean of the subsets' scores, ``None`` while a subset of :attr:`subsets` is missing."""
        missing = [s for s in self.subsets if s not in figures]
        values = [figures[s]["score"] for s in (self.subsets or figures) if s in figures]
        return {"sections": {}, "score": None if missing or not values else sum(values) / len(values)}

    def results(
        self, model: str, items: Sequence[Item], values: Sequence[Sequence[float]], official: dict
    ) -> Any:
        """What the benchmark's own runner writes for ``model`` (``(file name, JSON-able content)``)."""
        raise NotImplementedError

    def lookup(self, official: dict[str, Any]) -> dict[str, float | None]:
        """The leaderboard's columns of one model's official numbers: ``subset`` or ``section`` names."""
        subsets, sections = official["subsets"], official["sections"]
        return {
            c: (sections.get(c) or {}).get("score") if c in sections else (subsets.get(c) or {}).get("score")
            for c in self.columns
        }


def text(r: RowReader, record: dict[str, Any], name: str) -> str:
    """A required string field, possibly empty (benchmarks hold empty answers on purpose)."""
    value = r.get(record, name)
    if not isinstance(value, str):
        raise r.error(name, f"expected a string, got {type(value).__name__}")
    return value


def answers(r: RowReader, record: dict[str, Any], name: str, at_least: int = 0) -> list[str]:
    """A list of answer strings (``chosen`` or ``rejected`` of a several-completion benchmark)."""
    value = r.get(record, name)
    if isinstance(value, str) or not isinstance(value, (list, tuple)) and not hasattr(value, "tolist"):
        raise r.error(name, f"expected a list of answers, got {type(value).__name__}")
    value = list(value.tolist() if hasattr(value, "tolist") else value)
    if len(value) < at_least:
        raise r.error(name, f"expected at least {at_least} answer(s), got {len(value)}")
    for i, v in enumerate(value):
        if not isinstance(v, str):
            raise r.error(f"{name}[{i}]", f"expected a string, got {type(v).__name__}")
    return value


def candidates(
    r: RowReader, record: dict[str, Any], field: str, responses: list[str], subset: str | None = None
) -> Example:
    """The completions of the prompt in ``record[field]`` (a string or messages), each scored on its own after
    the prompt (its pass shared where that pays); ``subset`` is kept for a judge's protocol."""
    extra = {"subset": subset} if subset else {}
    return Example(r.row, r.prompt(record, field), responses, is_pair=False, best_of_n=True, extra=extra)


def stem(path: str) -> str:
    """A data file's name without its suffix (a save_to_disk directory's name)."""
    return Path(str(path).rstrip("/")).stem.lower()
