"""Format detection and normalisation: every supported row shape becomes one :class:`Example`.

Preference formats (a pair: ``responses == [chosen, rejected]``):

- ``pku``: PKU-SafeRLHF, ``prompt``, ``response_0``, ``response_1``, ``better_response_id`` (0 or 1).
- ``trl``: TRL explicit prompt, ``prompt``, ``chosen``, ``rejected``; strings or lists of ``{role, content}``.
- ``trl_implicit``: TRL implicit prompt, ``chosen`` and ``rejected`` hold whole conversations as message
  lists; the messages they share become the prompt. As plain strings they are scored verbatim as text.
- ``hh``: Anthropic HH-RLHF transcripts, ``"\\n\\nHuman: ...\\n\\nAssistant: ..."`` strings in ``chosen`` and
  ``rejected`` that share every turn but the last assistant reply.
- ``sharegpt``: ``conversations`` (``{from, value}`` messages, ``from`` in human/gpt/system), ``chosen``
  and ``rejected`` (one ``{from: gpt, value}`` message each, or a string).

Scoring formats (one response, ``responses == [response]``):

- ``prompt_response``: ``prompt`` (string or messages) and ``response`` strings.
- ``messages``: a whole conversation ending with the assistant turn that is scored.
- ``text``: already rendered text, scored verbatim.

Columns not consumed by the format pass through in ``Example.extra`` (ids, subsets, metadata); a
``margin`` column on a pair becomes ``Example.margin``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rmkit.data.readers import read_records
from rmkit.data.rejects import Rejects
from rmkit.data.rows import Message, RowMixin, RowReader, each_record
from rmkit.errors import DataError, RMKitError

PAIR_FORMATS = ("pku", "trl", "trl_implicit", "hh", "sharegpt")
SCORE_FORMATS = ("prompt_response", "messages", "text", "responses")
FORMATS = PAIR_FORMATS + SCORE_FORMATS

_HH_TURN = re.compile(r"\n\n(Human|Assistant): ")


@dataclass
class Example(RowMixin):
    """One normalised row.

    ``prompt`` is the conversation before the answer (``[]`` for pre-rendered text); ``responses`` is
    ``[response]`` for scoring, ``[chosen, rejected]`` for a pair, or the N candidates of a best-of-N row; with ``rendered`` the responses are
    complete texts to score verbatim. ``row`` is the 1-based record number in the source file.
    """

    row: int
    prompt: list[Message]
    responses: list[str]
    is_pair: bool
    rendered: bool = False
    best_of_n: bool = False  # candidates to rank (the ``responses`` format), even when there is one
    margin: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # A pair whose answers follow different histories (HH rows where one side has an extra turn): the
    # rejected answer's own history; each answer is scored after its own.
    rejected_prompt: list[Message] | None = None
    notes: frozenset[str] = frozenset()  # "empty_reply", "split_history": accepted, and counted

    def prompt_of(self, i: int) -> list[Message]:
        """The history response ``i`` answers."""
        return self.rejected_prompt if i == 1 and self.rejected_prompt is not None else self.prompt


def examples_from(
    prompts: Sequence[str | list[Message]] | None = None,
    responses: Sequence[str] | None = None,
    *,
    messages: Sequence[list[Message]] | None = None,
    texts: Sequence[str] | None = None,
) -> list[Example]:
    """Examples of Python values, numbered from 0: responses to prompts (strings or message lists), whole
    conversations (the last message is the response), or already rendered texts (scored verbatim)."""
    if texts is not None:
        return [Example(i, [], [t], is_pair=False, rendered=True) for i, t in enumerate(texts)]
    if messages is not None:
        return [Example(i, list(m[:-1]), [m[-1]["content"]], is_pair=False) for i, m in enumerate(messages)]
    if prompts is None or responses is None:
        raise RMKitError("score() needs prompts and responses, messages, or texts")
    if len(prompts) != len(responses):
        raise RMKitError(f"{len(prompts)} prompts but {len(responses)} responses")
    return [
        Example(i, p if isinstance(p, list) else [{"role": "user", "content": p}], [r], is_pair=False)
        for i, (p, r) in enumerate(zip(prompts, responses, strict=True))
    ]


def detect_format(record: dict[str, Any]) -> str:
    """Name the format of a record from its columns (and, for ``chosen``/``rejected`` strings, their text)."""
    keys = set(record)
    if {"conversations", "chosen", "rejected"} <= keys:
        return "sharegpt"
    if {"response_0", "response_1"} <= keys:
        return "pku"
    if {"prompt", "chosen", "rejected"} <= keys:
        return "trl"
    if {"chosen", "rejected"} <= keys:
        chosen = record["chosen"]
        if isinstance(chosen, str) and _HH_TURN.search(chosen) and "Assistant: " in chosen:
            return "hh"
        return "trl_implicit"
    if "responses" in keys and keys & {"prompt", "messages"}:
        return "responses"
    if {"prompt", "response"} <= keys:
        return "prompt_response"
    if "messages" in keys:
        return "messages"
    if "text" in keys:
        return "text"
    raise ValueError(
        f"cannot tell the format from columns {sorted(keys)}; expected one of: "
        "prompt/response_0/response_1/better_response_id (pku), prompt/chosen/rejected (trl), "
        "chosen/rejected (trl_implicit or hh), conversations/chosen/rejected (sharegpt), "
        "prompt/response, prompt/responses (best-of-N), messages or text; use --format or --columns"
    )


def iter_examples(
    path: str | Path,
    *,
    format: str | None = None,
    columns: dict[str, str] | None = None,
    rejects: Rejects | None = None,
    kind: str | None = None,
) -> Iterator[Example]:
    """Stream the normalised examples of a data file, in file order.

    ``format`` overrides detection; ``columns`` maps source column names to rmkit's (``{"question":
    "prompt"}``). ``kind`` is ``"pairs"`` to insist on preference data. A bad row raises
    :class:`DataError` unless ``rejects`` is given, in which case it is counted and written there.
    """
    yield from normalise_records(
        read_records(path), source=str(path), format=format, columns=columns, rejects=rejects, kind=kind
    )


def normalise_records(
    records: Iterable[tuple[int, dict[str, Any]]],
    *,
    source: str = "<input>",
    format: str | None = None,
    columns: dict[str, str] | None = None,
    rejects: Rejects | None = None,
    kind: str | None = None,
) -> Iterator[Example]:
    """Normalise ``(row, record)`` pairs; see :func:`iter_examples`."""
    if format is not None and format not in FORMATS:
        raise DataError(f"unknown format '{format}': expected one of {', '.join(FORMATS)}", file=source)
    fmt = format

    def convert(record: dict[str, Any], reader: RowReader) -> Example:
        nonlocal fmt
        if fmt is None:
            try:
                fmt = detect_format(record)
            except ValueError as e:
                raise reader.error(None, str(e)) from None
            if kind == "pairs" and fmt not in PAIR_FORMATS:
                raise reader.error(None, f"expected preference pairs, but the columns look like '{fmt}' rows")
        return _NORMALISERS[fmt](record, reader)

    yield from each_record(records, source=source, columns=columns, rejects=rejects, convert=convert)


def _rest(record: dict[str, Any], used: set[str]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in used}


def _margin(record: dict[str, Any], r: RowReader) -> float | None:
    if record.get("margin") is None:
        return None
    try:
        value = float(record["margin"])
    except (TypeError, ValueError):
        raise r.error("margin", f"expected a number, got {record['margin']!r}") from None
    if not math.isfinite(value):
        raise r.error("margin", f"expected a finite number, got {record['margin']!r}")
    return value


def _pair(
    record: dict,
    r: RowReader,
    prompt: list[Message],
    chosen: str,
    rejected: str,
    used: set[str],
    rendered: bool = False,
) -> Example:
    return Example(
        r.row,
        prompt,
        [chosen, rejected],
        is_pair=True,
        rendered=rendered,
        margin=_margin(record, r),
        extra=_rest(record, used | {"margin"}),
    )


def _pku(record: dict, r: RowReader) -> Example:
    better = r.get(record, "better_response_id")
    if isinstance(better, str) and better.strip() in ("0", "1"):
        better = int(better)
    if better not in (0, 1) or isinstance(better, bool):
        raise r.error("better_response_id", f"expected 0 or 1, got {better!r}")
    answers = [r.reply(r.get(record, f"response_{i}"), f"response_{i}") for i in (0, 1)]
    used = {"prompt", "response_0", "response_1", "better_response_id"}
    return _pair(record, r, r.prompt(record), answers[better], answers[1 - better], used)


def _trl(record: dict, r: RowReader) -> Example:
    chosen = r.reply(r.get(record, "chosen"), "chosen")
    rejected = r.reply(r.get(record, "rejected"), "rejected")
    return _pair(record, r, r.prompt(record), chosen, rejected, {"prompt", "chosen", "rejected"})


def _trl_implicit(record: dict, r: RowReader) -> Example:
    chosen, rejected = r.get(record, "chosen"), r.get(record, "rejected")
    used = {"chosen", "rejected"}
    if isinstance(chosen, str):
        return _pair(record, r, [], r.text(record, "chosen"), r.text(record, "rejected"), used, rendered=True)
    chosen, rejected = r.messages(chosen, "chosen"), r.messages(rejected, "rejected")
    shared = 0
    while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
        shared += 1
    if shared != len(chosen) - 1 or shared != len(rejected) - 1:
        raise r.error("rejected", "chosen and rejected must share every message but the last")
    for name, conv in (("chosen", chosen), ("rejected", rejected)):
        if conv[-1]["role"] != "assistant":
            raise r.error(name, "the last message must be the assistant's answer")
    return _pair(
        record,
        r,
        chosen[:-1],
        r.reply(chosen[-1]["content"], "chosen"),
        r.reply(rejected[-1]["content"], "rejected"),
        used,
    )


def _hh_turns(text: str, r: RowReader, field: str) -> list[Message]:
    parts = _HH_TURN.split(text)
    if parts[0].strip() or len(parts) < 3:
        raise r.error(field, "expected an HH transcript '\\n\\nHuman: ...\\n\\nAssistant: ...'")
    roles = {"Human": "user", "Assistant": "assistant"}
    turns = [{"role": roles[parts[i]], "content": parts[i + 1]} for i in range(1, len(parts), 2)]
    if turns[-1]["role"] != "assistant":
        raise r.error(field, "the transcript must end with an Assistant turn")
    return turns


def _hh(record: dict, r: RowReader) -> Example:
    """An Anthropic HH pair. An empty final reply is a reply (it is scored), and sides whose histories differ
    before the last reply are two conversations, each answer scored after its own; both are counted."""
    chosen = _hh_turns(r.text(record, "chosen"), r, "chosen")
    rejected = _hh_turns(r.text(record, "rejected"), r, "rejected")
    replies = [conv[-1]["content"] for conv in (chosen, rejected)]
    example = _pair(record, r, chosen[:-1], replies[0], replies[1], {"chosen", "rejected"})
    notes = {"empty_reply"} if not all(x.strip() for x in replies) else set()
    if chosen[:-1] != rejected[:-1]:
        example.rejected_prompt = rejected[:-1]
        notes.add("split_history")
    example.notes = frozenset(notes)
    return example


def _sharegpt(record: dict, r: RowReader) -> Example:
    prompt = r.messages(r.get(record, "conversations"), "conversations")
    chosen = r.reply(r.get(record, "chosen"), "chosen")
    rejected = r.reply(r.get(record, "rejected"), "rejected")
    return _pair(record, r, prompt, chosen, rejected, {"conversations", "chosen", "rejected"})


def _prompt_response(record: dict, r: RowReader) -> Example:
    response = r.reply(r.get(record, "response"), "response")
    return Example(
        r.row, r.prompt(record), [response], is_pair=False, extra=_rest(record, {"prompt", "response"})
    )


def _messages(record: dict, r: RowReader) -> Example:
    conv = r.messages(r.get(record, "messages"), "messages")
    if conv[-1]["role"] != "assistant":
        raise r.error("messages", "the last message must be the assistant's answer to score")
    return Example(
        r.row,
        conv[:-1],
        [r.reply(conv[-1]["content"], "messages")],
        is_pair=False,
        extra=_rest(record, {"messages"}),
    )


def _responses(record: dict, r: RowReader) -> Example:
    """Best-of-N: a prompt (``prompt``, or the messages before the answers in ``messages``) and a list of
    candidate ``responses``."""
    field = "prompt" if "prompt" in record else "messages"
    prompt = r.prompt(record, field)
    answers = r.get(record, "responses")
    if not isinstance(answers, list) or not answers:
        raise r.error("responses", f"expected a non-empty list of responses, got {type(answers).__name__}")
    responses = [r.reply(a, f"responses[{i}]") for i, a in enumerate(answers)]
    return Example(
        r.row, prompt, responses, is_pair=False, best_of_n=True, extra=_rest(record, {field, "responses"})
    )


def _text(record: dict, r: RowReader) -> Example:
    return Example(
        r.row, [], [r.text(record, "text")], is_pair=False, rendered=True, extra=_rest(record, {"text"})
    )


_NORMALISERS = {
    "pku": _pku,
    "trl": _trl,
    "trl_implicit": _trl_implicit,
    "hh": _hh,
    "sharegpt": _sharegpt,
    "prompt_response": _prompt_response,
    "messages": _messages,
    "text": _text,
    "responses": _responses,
}
