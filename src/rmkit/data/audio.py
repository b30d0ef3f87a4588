"""Rows with audio: the formats that give audio with text, normalised to one record.

The record is an :class:`AudioExample`: an :class:`rmkit.data.Example` whose prompt messages may hold audio
parts, and the decoded clips (:class:`rmkit.data.sounds.Sound`) in the order of those parts. A user turn with
audio reads::

    {"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "What is that sound?"}]}

Where the audio comes from (any text format of :mod:`rmkit.data.formats` around it, detected or named with
``--format``):

==================  ===========================================================  ========================
rows                columns                                                      the audio
==================  ===========================================================  ========================
``aa_ta2t``         align-anything text-audio-to-text: ``prompt``,                 one, before the prompt,
                    ``audio_path``, ``response_1``, ``response_2``,                after its system prompt
                    ``overall_response`` (1|2)                                     ("You are a helpful
                                                                                   assistant.")
parts               ``prompt`` or ``messages`` whose contents hold audio parts:    at the parts
                    ``{"type": "audio", "audio": value}`` (or ``audio_url``, the
                    spelling of Qwen2-Audio's processor and align-anything), or
                    OpenAI's ``{"type": "input_audio", "input_audio": {"data",
                    "format"}}``
an audio column     ``audios`` (a list), ``audio`` or ``audio_path`` beside a      at bare ``{"type":
                    text format (``prompt``/``response``, ``chosen``/``rejected``,  "audio"}`` parts or
                    ...)                                                           ``<audio>`` marks, else
                                                                                   before the first user
                                                                                   text
==================  ===========================================================  ========================

Each value is read as :mod:`rmkit.data.sounds` says (a path relative to the data file, a data URL, bytes,
``input_audio``, ``datasets``' decoded ``{"array", "sampling_rate"}``). A count of audio parts or marks that
differs from the count of clips, an answer holding audio, and a bad clip are :class:`rmkit.errors.DataError`
naming the row and field. Rows without audio are read as their text format is, with no audio.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rmkit.data.formats import _NORMALISERS, Example, detect_format
from rmkit.data.readers import read_records
from rmkit.data.rejects import Rejects
from rmkit.data.rows import RowReader, each_record
from rmkit.data.sounds import MAX_AUDIO_SECONDS, Sound, open_audio

AUDIO_MARK = "<audio>"  # where a clip goes in a text (as LLaMA-Factory's <audio>)
AUDIO_COLUMNS = ("audios", "audio", "audio_path")  # audio_path: align-anything's TA2T
AUDIO_PARTS = ("audio", "input_audio")
MESSAGE_COLUMNS = ("prompt", "messages")
AA_TA2T = {"prompt", "audio_path", "response_1", "response_2", "overall_response"}
AA_SYSTEM = "You are a helpful assistant."  # align-anything's AA_TA2T system prompt


@dataclass
class AudioExample(Example):
    """An :class:`Example` whose prompt may hold audio parts (module docstring), with its ``audios`` in the
    order of those parts."""

    audios: list[Sound] = field(default_factory=list)

    @property
    def audio_refs(self) -> list[str]:
        """The clips as the data file named them (paths, ``<N bytes>``), for output rows."""
        return [s.ref for s in self.audios]


def _audio_parts(record: dict[str, Any]) -> int:
    return sum(
        1
        for column in MESSAGE_COLUMNS
        if isinstance(record.get(column), list)
        for m in record[column]
        if isinstance(m, dict) and isinstance(m.get("content"), list)
        for p in m["content"]
        if isinstance(p, dict) and p.get("type") in AUDIO_PARTS
    )


def detect_audio(record: dict[str, Any]) -> str | None:
    """The format of a row with audio (``aa_ta2t``, or the text format around its audio), ``None`` for a row
    without audio."""
    keys = set(record)
    if keys >= AA_TA2T:
        return "aa_ta2t"
    if not (keys & set(AUDIO_COLUMNS) or _audio_parts(record)):
        return None
    try:
        return detect_format({k: v for k, v in record.items() if k not in AUDIO_COLUMNS})
    except ValueError:
        return None


def iter_audio_examples(
    path: str | Path,
    *,
    format: str | None = None,
    columns: dict[str, str] | None = None,
    rejects: Rejects | None = None,
    pairs: bool = False,
    max_seconds: float = MAX_AUDIO_SECONDS,
) -> Iterator[Example]:
    """The normalised examples of the data file ``path`` (audio read relative to its folder), in order."""
    yield from normalise_audio(
        read_records(path), source=str(path), format=format, columns=columns, rejects=rejects, pairs=pairs,
        max_seconds=max_seconds,
    )  # fmt: skip


def normalise_audio(
    records: Iterable[tuple[int, dict[str, Any]]],
    *,
    source: str = "<input>",
    format: str | None = None,
    columns: dict[str, str] | None = None,
    rejects: Rejects | None = None,
    pairs: bool = False,
    max_seconds: float = MAX_AUDIO_SECONDS,
) -> Iterator[Example]:
    """Normalise ``(row, record)`` pairs of any format, with audio or text (module docstring); with ``pairs``
    a row that is not a preference pair is an error. Paths are read relative to ``source``'s folder."""
    base = Path(source).parent if source != "<input>" else None

    def convert(record: dict[str, Any], r: RowReader) -> Example:
        fmt = format or detect_audio(record)
        if fmt is None:
            try:
                fmt = detect_format(record)
            except ValueError as e:
                raise r.error(None, str(e)) from None
        if fmt == "aa_ta2t":
            fmt, record = "trl", _aa_ta2t(record, r)
        text, values = _flattened(record, r)
        plain = _NORMALISERS[fmt](text, r) if fmt in _NORMALISERS else None
        if plain is None:
            raise r.error(None, f"unknown format '{fmt}'")
        example = _with_audio(plain, values, r, base, max_seconds) if values else plain
        if pairs and not example.is_pair:
            raise r.error(None, f"expected preference pairs, but the columns look like '{fmt}' rows")
        return example

    yield from each_record(records, source=source, columns=columns, rejects=rejects, convert=convert)


def _aa_ta2t(record: dict[str, Any], r: RowReader) -> dict[str, Any]:
    """An align-anything TA2T row as a ``trl`` row: its system prompt, then the clip and the prompt."""
    better = str(r.get(record, "overall_response")).strip()
    if better not in ("1", "2"):
        raise r.error("overall_response", f"expected 1 or 2, got {record['overall_response']!r}")
    chosen, rejected = ("response_1", "response_2")[:: 1 if better == "1" else -1]
    prompt = [{"role": "system", "content": AA_SYSTEM},
              {"role": "user", "content": AUDIO_MARK + r.text(record, "prompt")}]  # fmt: skip
    rest = {k: v for k, v in record.items() if k not in AA_TA2T}
    return {**rest, "prompt": prompt, "chosen": r.get(record, chosen), "rejected": r.get(record, rejected),
            "audio_path": r.get(record, "audio_path")}  # fmt: skip


def _flattened(record: dict[str, Any], r: RowReader) -> tuple[dict[str, Any], list[tuple[Any, str]]]:
    """``record`` for its text format (message parts as text with ``<audio>`` marks, the audio column out)
    and its clips' values with their fields: the parts' own, else the audio column's."""
    text, inline = dict(record), []
    for column in MESSAGE_COLUMNS:
        if isinstance(record.get(column), list):
            text[column] = [_message(m, r, f"{column}[{j}]", inline) for j, m in enumerate(record[column])]
    bare = sum(1 for value, _ in inline if value is None)
    column = next((c for c in AUDIO_COLUMNS if c in record), None)
    if column is not None:
        del text[column]
    if inline and not bare:
        if column is not None:
            raise r.error(column, "the audio is given twice: in the message parts and in this column")
        return text, inline
    if bare and bare != len(inline):
        raise r.error(inline[0][1], "some audio parts hold their audio and some do not")
    if column is None:
        if bare:
            raise r.error(
                inline[0][1], f"an audio part without its audio, and no {'/'.join(AUDIO_COLUMNS)} column"
            )
        return text, []
    values = r.get(record, column)
    values = values if isinstance(values, list) else [values]
    return text, [(v, f"{column}[{i}]" if len(values) > 1 else column) for i, v in enumerate(values)]


def _message(message: Any, r: RowReader, where: str, found: list[tuple[Any, str]]) -> Any:
    """A message whose content is a list of parts, as one string with its audio parts as ``<audio>`` marks;
    each audio part's value (``None`` for a bare part) and field appended to ``found``."""
    if not isinstance(message, dict) or not isinstance(message.get("content"), list):
        return message
    text = []
    for k, part in enumerate(message["content"]):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in AUDIO_PARTS:
            value = (
                part.get("input_audio") if kind == "input_audio" else part.get("audio", part.get("audio_url"))
            )
            found.append((value, f"{where}.content[{k}]"))
            text.append(AUDIO_MARK)
        elif kind == "text":
            text.append(str(part.get("text", "")))
        else:
            raise r.error(where, f"expected parts of type 'text', 'audio' or 'input_audio', got {part!r}")
    return {**message, "content": "".join(text)}


def _with_audio(
    plain: Example, values: list[tuple[Any, str]], r: RowReader, base: Path | None, limit: float
) -> AudioExample:
    """The text example ``plain`` with its clips decoded and put at its ``<audio>`` marks (before the first
    user text where it has none)."""
    sounds = [open_audio(v, r, where, base=base, max_seconds=limit) for v, where in values]
    marks = sum(m["content"].count(AUDIO_MARK) for m in plain.prompt if isinstance(m["content"], str))
    field_ = values[0][1].split("[")[0] if values else None
    if marks and marks != len(sounds):
        raise r.error(field_, f"{len(sounds)} audio clips for {marks} {AUDIO_MARK} marks or audio parts")
    if any(AUDIO_MARK in response for response in plain.responses):
        raise r.error(field_, f"an answer holds {AUDIO_MARK}: audio belongs to the prompt")
    first = next((k for k, m in enumerate(plain.prompt) if m["role"] == "user"), 0)
    prompt = [_parts(m, len(sounds) if not marks and i == first else 0) for i, m in enumerate(plain.prompt)]
    return AudioExample(
        plain.row, prompt, plain.responses, plain.is_pair, plain.rendered, plain.best_of_n, plain.margin,
        plain.extra, plain.rejected_prompt, plain.notes, sounds,
    )  # fmt: skip


def _parts(message: dict[str, Any], leading: int) -> dict[str, Any]:
    """``message`` with its ``<audio>`` marks (and ``leading`` clips before its text) as audio parts."""
    pieces = message["content"].split(AUDIO_MARK)
    if len(pieces) == 1 and not leading:
        return message
    parts: list[dict[str, Any]] = [{"type": "audio"} for _ in range(leading)]
    for k, piece in enumerate(pieces):
        if k:
            parts.append({"type": "audio"})
        if piece:
            parts.append({"type": "text", "text": piece})
    return {"role": message["role"], "content": parts}


def flat_prompt(prompt: list[dict[str, Any]]) -> Any:
    """A normalised prompt with its audio parts written as ``<audio>`` marks (a lone user turn: its text)."""
    flat = [{**m, "content": m["content"] if isinstance(m["content"], str) else "".join(
        AUDIO_MARK if p.get("type") == "audio" else p.get("text", "") for p in m["content"])}
        for m in prompt]  # fmt: skip
    return flat[0]["content"] if len(flat) == 1 and flat[0]["role"] == "user" else flat


def heard(example: Example, source: str = "<request>", max_seconds: float = MAX_AUDIO_SECONDS) -> Example:
    """``example`` (a request's) whose audio parts carry their audio (``input_audio`` data, or a data URL) as
    an :class:`AudioExample`, the clips decoded and the parts bare; an example without audio parts as it is.
    Never a file or a remote URL."""
    if not _audio_parts({"messages": example.prompt}):
        return example
    found: list[tuple[Any, str]] = []
    r = RowReader(source, example.row)
    if getattr(example, "images", None) or getattr(example, "videos", None):
        raise r.error(
            "messages",
            "a request mixes image and audio parts (or video and audio); rmkit's models read one of them",
        )
    prompt = [_message(m, r, f"messages[{j}]", found) for j, m in enumerate(example.prompt)]
    sounds = [open_audio(v, r, where, base=None, max_seconds=max_seconds, files=False) for v, where in found]
    parts = [_parts(m, 0) if isinstance(m["content"], str) else m for m in prompt]
    return AudioExample(example.row, parts, example.responses, example.is_pair, audios=sounds)
