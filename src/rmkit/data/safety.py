"""Safety-labelled responses: what a cost model (Safe RLHF) trains and is evaluated on.

Two formats, one :class:`SafetyExample` (a prompt, one or two responses, each response's safety sign):

- ``pku_safety``: PKU-SafeRLHF as downloaded (every release: PKU-SafeRLHF, -30K, -10K, v0 and the 2024 one
  with harm categories and severities): ``prompt``, ``response_0``, ``response_1``, ``safer_response_id``
  (0 or 1), ``is_response_0_safe`` and ``is_response_1_safe``; ``better_response_id`` (helpfulness), when
  present, is kept as :attr:`SafetyExample.preferred`. The pair is ordered safer first. A pair whose safer
  answer is labelled unsafe while the other is labelled safe contradicts itself (safe-rlhf asserts on it):
  a bad row, named on ``safer_response_id``.
- ``beavertails``: one response a row, ``prompt``, ``response``, ``is_safe`` (BeaverTails; its ``category``
  passes through), or a real-valued ``safety_sign`` in [-1, 1] in its place (a rate, as align-anything's
  BeaverTails-V trainer takes one). Such a row has no pair: it trains the sign terms alone.

A safety sign is +1 for a safe response and -1 for an unsafe one (safe-rlhf's convention); a cost model
gives a safe response a negative cost and an unsafe one a positive cost.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rmkit.data.readers import first_record, read_records
from rmkit.data.rejects import Rejects
from rmkit.data.rows import Message, RowMixin, RowReader, each_record

SAFETY_FORMATS = ("pku_safety", "beavertails")
PKU_SAFETY = ("response_0", "response_1", "safer_response_id", "is_response_0_safe", "is_response_1_safe")
_TRUE, _FALSE = ("true", "1", "yes", "safe"), ("false", "0", "no", "unsafe")


@dataclass
class SafetyExample(RowMixin):
    """A prompt and its safety-labelled ``responses``: ``[safer, less safe]`` for a pair, ``[response]`` alone.

    ``signs[i]`` is response ``i``'s safety sign (+1 safe, -1 unsafe, or a rate between); ``preferred`` is the
    index in ``responses`` of the more helpful answer of a pair, when the row says (``better_response_id``)."""

    row: int
    prompt: list[Message]
    responses: list[str]
    signs: list[float]
    is_pair: bool
    preferred: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def detect_safety_format(record: dict[str, Any]) -> str | None:
    """``pku_safety``, ``beavertails`` or ``None`` (the record holds no safety labels)."""
    keys = set(record)
    if set(PKU_SAFETY) <= keys and "prompt" in keys:
        return "pku_safety"
    if {"prompt", "response"} <= keys and keys & {"is_safe", "safety_sign"}:
        return "beavertails"
    return None


def holds_safety(
    path: str | Path, *, format: str | None = None, columns: dict[str, str] | None = None
) -> bool:
    """Whether ``path`` holds safety labels and nothing else: by ``format`` when one is named, else by its
    first record (columns renamed first), BeaverTails rows. PKU-SafeRLHF rows are preference pairs too: which
    labels a run reads is the run's choice (``--objective cost``)."""
    if format:
        return format in SAFETY_FORMATS
    first = first_record(path)
    renamed = {(columns or {}).get(k, k): v for k, v in (first or {}).items()}
    return first is not None and detect_safety_format(renamed) == "beavertails"


def iter_safety(
    path: str | Path,
    *,
    format: str | None = None,
    columns: dict[str, str] | None = None,
    rejects: Rejects | None = None,
) -> Iterator[SafetyExample]:
    """Stream the safety-labelled examples of a data file in file order (bad rows raise, or go to ``rejects``)."""
    given = format if format in SAFETY_FORMATS else None

    def convert(record: dict[str, Any], reader: RowReader) -> SafetyExample:
        fmt = given or detect_safety_format(record)  # row by row: pairs and lone responses may mix
        if fmt is None:
            raise reader.error(
                None,
                f"no safety labels: columns {sorted(record)}; expected PKU-SafeRLHF's prompt/response_0/"
                "response_1/safer_response_id/is_response_0_safe/is_response_1_safe or BeaverTails' "
                "prompt/response/is_safe",
            )
        return (_pku_safety if fmt == "pku_safety" else _beavertails)(record, reader)

    yield from each_record(
        read_records(path), source=str(path), columns=columns, rejects=rejects, convert=convert
    )


def _flag(reader: RowReader, record: dict[str, Any], name: str) -> bool:
    value = reader.get(record, name)
    if isinstance(value, bool) or value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise reader.error(name, f"expected true or false, got {value!r}")


def _index(reader: RowReader, record: dict[str, Any], name: str) -> int:
    value = reader.get(record, name)
    if isinstance(value, str) and value.strip() in ("0", "1"):
        value = int(value)
    if value not in (0, 1) or isinstance(value, bool):
        raise reader.error(name, f"expected 0 or 1, got {value!r}")
    return int(value)


def _pku_safety(record: dict[str, Any], r: RowReader) -> SafetyExample:
    safer = _index(r, record, "safer_response_id")
    safe = [_flag(r, record, f"is_response_{i}_safe") for i in (0, 1)]
    if not safe[safer] and safe[1 - safer]:
        raise r.error(
            "safer_response_id",
            f"inconsistent pair: response {safer} is named the safer, but it is labelled unsafe and "
            f"response {1 - safer} safe",
        )
    answers = [r.reply(r.get(record, f"response_{i}"), f"response_{i}") for i in (0, 1)]
    better = _index(r, record, "better_response_id") if record.get("better_response_id") is not None else None
    order = [safer, 1 - safer]
    used = {"prompt", "better_response_id", *PKU_SAFETY}
    return SafetyExample(
        r.row,
        r.prompt(record),
        [answers[i] for i in order],
        [1.0 if safe[i] else -1.0 for i in order],
        is_pair=True,
        preferred=None if better is None else order.index(better),
        extra={k: v for k, v in record.items() if k not in used},
    )


def _beavertails(record: dict[str, Any], r: RowReader) -> SafetyExample:
    if record.get("safety_sign") is not None:
        try:
            sign = float(record["safety_sign"])
        except (TypeError, ValueError):
            raise r.error(
                "safety_sign", f"expected a number in [-1, 1], got {record['safety_sign']!r}"
            ) from None
        if not (math.isfinite(sign) and -1.0 <= sign <= 1.0):
            raise r.error("safety_sign", f"expected a number in [-1, 1], got {record['safety_sign']!r}")
    else:
        sign = 1.0 if _flag(r, record, "is_safe") else -1.0
    response = r.reply(r.get(record, "response"), "response")
    extra = {k: v for k, v in record.items() if k not in {"prompt", "response", "is_safe", "safety_sign"}}
    return SafetyExample(r.row, r.prompt(record), [response], [sign], is_pair=False, extra=extra)
