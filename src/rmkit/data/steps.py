"""Step-labelled solutions for process reward models (PRMs): three formats, one :class:`StepExample`.

- ``stepwise``: TRL's stepwise supervision, ``prompt`` (a string or messages), ``completions`` (the list
  of steps) and ``labels`` (one boolean a step: True when the step is right). ``labels`` may be left out
  for scoring.
- ``math_shepherd``: Math-Shepherd's tagged text, ``input`` (the question, then steps that each end in the
  step tag ``ки``) and ``label`` (the same text with each tag replaced by ``+`` or ``-``).
- ``prm800k``: OpenAI's PRM800K, ``question.problem`` and ``label.steps``; each step's chosen completion
  (``chosen_completion``, else its only or first completion, which ends the solution) with its rating:
  1 is right, -1 wrong, and 0 (neutral) counts as ``neutral`` says: ``"good"`` (the default, as the PRM800K
  paper's positive class includes neutral steps), ``"bad"``, or ``"skip"`` (left unlabelled: no loss, not
  evaluated).
- ``processbench``: ProcessBench's ``problem``, ``steps`` and ``label``, the index of the first wrong step
  (-1: none). The steps before it are right, it is wrong, and those after it are unlabelled.

A label is ``True`` (right), ``False`` (wrong) or ``None`` (unlabelled).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rmkit.data.readers import first_record, read_records
from rmkit.data.rejects import Rejects
from rmkit.data.rendering import render_plain
from rmkit.data.rows import Message, RowMixin, RowReader, each_record
from rmkit.errors import DataError, RMKitError

STEP_FORMATS = ("stepwise", "math_shepherd", "prm800k", "processbench")
SHEPHERD_TAG = "ки"
NEUTRAL = ("good", "bad", "skip")


@dataclass
class StepExample(RowMixin):
    """One solution: ``prompt`` (messages), its ``steps`` and their ``labels`` (``None`` when unlabelled)."""

    row: int
    prompt: list[Message]
    steps: list[str]
    labels: list[bool | None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    is_pair = False  # a solution is one scored answer, in the statistics that pairs and best-of-N keep
    best_of_n = False

    subset_columns = (
        "subset",
        "category",
        "task",
        "generator",
    )  # Math-Shepherd's task, ProcessBench's generator

    @property
    def first_error(self) -> int:
        """Index of the first wrong step, or -1 when no labelled step is wrong (ProcessBench's label)."""
        return next((i for i, label in enumerate(self.labels or []) if label is False), -1)


def detect_step_format(record: dict[str, Any]) -> str | None:
    """The step format of a record, or ``None`` when it is not step-labelled data."""
    keys = set(record)
    if {"prompt", "completions"} <= keys and isinstance(record["completions"], list):
        return "stepwise"
    if {"input", "label"} <= keys and SHEPHERD_TAG in str(record["input"]):
        return "math_shepherd"
    if isinstance(record.get("question"), dict) and isinstance(record.get("label"), dict):
        return "prm800k"
    if {"problem", "steps", "label"} <= keys:
        return "processbench"
    return None


def holds_steps(
    path: str | Path, *, format: str | None = None, columns: dict[str, str] | None = None
) -> bool:
    """Whether ``path`` holds step-labelled solutions: by ``format`` when one is named, else by its first
    record (columns renamed first)."""
    if format:
        return format in STEP_FORMATS
    first = first_record(path)
    return (
        first is not None
        and detect_step_format({(columns or {}).get(k, k): v for k, v in first.items()}) is not None
    )


def iter_step_examples(
    path: str | Path,
    *,
    format: str | None = None,
    columns: dict[str, str] | None = None,
    rejects: Rejects | None = None,
    neutral: str = "good",
) -> Iterator[StepExample]:
    """Stream the step examples of a data file in file order; bad rows raise :class:`DataError`, or with
    ``rejects`` are counted and written there."""
    yield from normalise_steps(
        read_records(path), source=str(path), format=format, columns=columns, rejects=rejects, neutral=neutral
    )


def normalise_steps(
    records: Iterable[tuple[int, dict[str, Any]]],
    *,
    source: str = "<input>",
    format: str | None = None,
    columns: dict[str, str] | None = None,
    rejects: Rejects | None = None,
    neutral: str = "good",
) -> Iterator[StepExample]:
    if format is not None and format not in STEP_FORMATS:
        raise DataError(
            f"unknown step format '{format}': expected one of {', '.join(STEP_FORMATS)}", file=source
        )
    if neutral not in NEUTRAL:
        raise DataError(f"neutral steps count as one of {', '.join(NEUTRAL)}, not {neutral!r}", file=source)
    fmt = format

    def convert(record: dict[str, Any], reader: RowReader) -> StepExample:
        nonlocal fmt
        fmt = fmt or detect_step_format(record)
        if fmt is None:
            raise reader.error(
                None,
                f"not step-labelled data: columns {sorted(record)}; expected prompt/completions/labels, "
                "input/label (Math-Shepherd), question/label (PRM800K) or problem/steps/label (ProcessBench)",
            )
        return _NORMALISERS[fmt](record, reader, neutral)

    yield from each_record(records, source=source, columns=columns, rejects=rejects, convert=convert)


def _steps(reader: RowReader, value: Any, field_name: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise reader.error(field_name, f"expected a non-empty list of steps, got {type(value).__name__}")
    for i, step in enumerate(value):
        if not isinstance(step, str):
            raise reader.error(f"{field_name}[{i}]", f"expected a string step, got {type(step).__name__}")
        if not step.strip():
            raise reader.error(f"{field_name}[{i}]", "empty step")
    return list(value)


def _stepwise(record: dict[str, Any], reader: RowReader, neutral: str) -> StepExample:
    prompt = reader.prompt(record)
    steps = _steps(reader, record.get("completions"), "completions")
    labels = record.get("labels")
    if labels is not None:
        if not isinstance(labels, list) or len(labels) != len(steps):
            n = len(labels) if isinstance(labels, list) else type(labels).__name__
            raise reader.error("labels", f"{n} labels for {len(steps)} steps")
        for i, label in enumerate(labels):
            if not isinstance(label, bool) and label is not None:
                raise reader.error(f"labels[{i}]", f"expected true, false or null, got {label!r}")
    extra = {k: v for k, v in record.items() if k not in ("prompt", "completions", "labels")}
    return StepExample(reader.row, prompt, steps, labels, extra)


def _math_shepherd(record: dict[str, Any], reader: RowReader, neutral: str) -> StepExample:
    text, labelled = reader.text(record, "input"), reader.text(record, "label")
    pieces = text.split(SHEPHERD_TAG)
    if pieces[-1].strip():
        raise reader.error(
            "input", f"text after the last step tag {SHEPHERD_TAG!r}: every step must end in one"
        )
    start = pieces[0].find("Step 1")
    if start < 0:
        raise reader.error(
            "input", "no 'Step 1' before the first step tag: cannot tell the question from the steps"
        )
    question, pieces[0] = pieces[0][:start].strip(), pieces[0][start:]
    labels, pos = [], labelled.find(pieces[0])
    if pos < 0:
        raise reader.error("label", "its text does not follow 'input'")
    for i, piece in enumerate(pieces[:-1]):
        if not labelled.startswith(piece, pos):
            raise reader.error("label", f"its text does not follow 'input' at step {i + 1}")
        pos += len(piece)
        mark = labelled[pos : pos + 1]
        if mark not in ("+", "-"):
            raise reader.error("label", f"step {i + 1} is marked {mark!r}; expected '+' or '-'")
        labels.append(mark == "+")
        pos += 1
    steps = [p.strip() for p in pieces[:-1]]
    if not question or not all(steps):
        raise reader.error("input", "an empty question or step")
    extra = {k: v for k, v in record.items() if k not in ("input", "label")}
    return StepExample(reader.row, [{"role": "user", "content": question}], steps, labels, extra)


def _prm800k(record: dict[str, Any], reader: RowReader, neutral: str) -> StepExample:
    problem = record["question"].get("problem")
    if not isinstance(problem, str) or not problem.strip():
        raise reader.error("question.problem", "missing or empty problem")
    raw = record["label"].get("steps")
    if not isinstance(raw, list) or not raw:
        raise reader.error("label.steps", "expected a non-empty list of steps")
    steps, labels = [], []
    for i, step in enumerate(raw):
        where = f"label.steps[{i}]"
        completions = step.get("completions") if isinstance(step, dict) else None
        chosen = step.get("chosen_completion") if isinstance(step, dict) else None
        if not isinstance(completions, list) or not completions:
            raise reader.error(where, "no completions")
        pick = (
            completions[chosen]
            if isinstance(chosen, int) and 0 <= chosen < len(completions)
            else completions[0]
        )
        text, rating = pick.get("text"), pick.get("rating")
        if not isinstance(text, str) or not text.strip():
            raise reader.error(f"{where}.text", "empty step")
        if rating not in (-1, 0, 1, None):
            raise reader.error(f"{where}.rating", f"expected -1, 0 or 1, got {rating!r}")
        steps.append(text)
        labels.append(None if rating is None else _rating(rating, neutral))
        if chosen is None:  # the labeller stopped here: the solution ends with this step
            break
    extra = {"finish_reason": record["label"].get("finish_reason")}
    return StepExample(reader.row, [{"role": "user", "content": problem}], steps, labels, extra)


def _processbench(record: dict[str, Any], reader: RowReader, neutral: str) -> StepExample:
    problem = reader.text(record, "problem")
    steps = _steps(reader, record.get("steps"), "steps")
    error = record.get("label")
    if not isinstance(error, int) or isinstance(error, bool) or not -1 <= error < len(steps):
        raise reader.error(
            "label", f"expected the first wrong step's index, -1 to {len(steps) - 1}, got {error!r}"
        )
    labels: list[bool | None] = (
        [True] * len(steps) if error < 0 else [True] * error + [False] + [None] * (len(steps) - error - 1)
    )
    extra = {k: v for k, v in record.items() if k not in ("problem", "steps", "label")}
    return StepExample(reader.row, [{"role": "user", "content": problem}], steps, labels, extra)


def _rating(rating: int, neutral: str) -> bool | None:
    if rating == 0:
        return {"good": True, "bad": False, "skip": None}[neutral]
    return rating == 1


_NORMALISERS = {
    "stepwise": _stepwise,
    "math_shepherd": _math_shepherd,
    "prm800k": _prm800k,
    "processbench": _processbench,
}


class SolutionEncoder:
    """Token ids of a solution and where each step's score is read.

    The prompt is rendered as the chat template's generation prompt (else the plain template's
    ``"User: ...\n\nAssistant: "``); each step is tokenised on its own and followed by the separator's
    tokens, so step boundaries never merge; step *k* is read at the separator's last token, or at the step
    tag's token within it.
    """

    def __init__(self, tokenizer, separator: str = "\n", step_tag: str | None = None):
        self.tokenizer = tokenizer
        self.separator = tokenizer(separator, add_special_tokens=False)["input_ids"]
        if not self.separator:
            raise RMKitError(f"the separator {separator!r} tokenises to nothing")
        self.read = len(self.separator) - 1
        if step_tag is not None:
            tag = tokenizer(step_tag, add_special_tokens=False)["input_ids"]
            if len(tag) != 1 or tag[0] not in self.separator:
                raise RMKitError(
                    f"the step tag {step_tag!r} must be one token of the separator {separator!r}"
                )
            self.read = max(i for i, t in enumerate(self.separator) if t == tag[0])

    def prompt_ids(self, prompt: Sequence[Message]) -> list[int]:
        """The ids of a prompt up to where the first step starts."""
        if self.tokenizer.chat_template:
            text = self.tokenizer.apply_chat_template(
                list(prompt), add_generation_prompt=True, tokenize=False
            )
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self.tokenizer(render_plain([*prompt, {"role": "assistant", "content": ""}]))["input_ids"]

    def encode(
        self, prompt: Sequence[Message], steps: Sequence[str], max_length: int | None = None
    ) -> tuple[list[int], list[int]]:
        """``(ids, positions)``. Too long for ``max_length``: the prompt is cut from the left (its leading
        special token kept), then the steps that do not fit are left out (fewer positions than steps)."""
        head = self.prompt_ids(prompt)
        pieces = [self.tokenizer(s, add_special_tokens=False)["input_ids"] + self.separator for s in steps]
        limit = max_length
        if limit is not None and len(head) + sum(map(len, pieces)) > limit:
            room = max(limit - sum(map(len, pieces)), min(len(head), limit // 4))
            keep = 1 if head and head[0] in self.tokenizer.all_special_ids else 0
            head = head[:keep] + head[len(head) - max(room - keep, 0) :] if room < len(head) else head
        ids, positions = list(head), []
        for piece in pieces:
            if limit is not None and len(ids) + len(piece) > limit:
                break
            ids.extend(piece)
            positions.append(len(ids) - len(self.separator) + self.read)
        return ids, positions


AGGREGATES = ("min", "last", "mean", "prod")


def aggregate(scores: Sequence[float], how: str = "min") -> float | None:
    """One score for a solution from its step scores: ``min`` (the weakest step), ``last``, ``mean`` or
    ``prod`` (the chance every step is right, read as independent probabilities)."""
    if not scores:
        return None
    if how == "min":
        return min(scores)
    if how == "last":
        return scores[-1]
    if how == "mean":
        return sum(scores) / len(scores)
    if how == "prod":
        out = 1.0
        for s in scores:
            out *= s
        return out
    raise RMKitError(f"unknown aggregate '{how}': expected one of {', '.join(AGGREGATES)}")


@dataclass
class Solution:
    """A solution ready for the inference core: its token ids, where each step's score is read, and how
    many steps it has (more than positions when the length limit cut some)."""

    ids: list[int]
    positions: list[int]
    steps: int


def split_steps(solution: str | Sequence[str], separator: str) -> list[str]:
    """A solution's steps: a list as it is, or a text cut at the separator (empty pieces dropped)."""
    if isinstance(solution, str):
        return [s for s in solution.split(separator) if s.strip()] or [solution]
    return list(solution)
