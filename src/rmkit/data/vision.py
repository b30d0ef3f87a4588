"""Multimodal rows: the formats that give images with text, normalised to one record.

The record is a :class:`VisionExample`: an :class:`rmkit.data.Example` whose prompt messages may hold
image parts, and the opened images in the order of those parts. A user turn with an image reads::

    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is drawn?"}]}

Formats (detected from the columns, or named with ``--format``):

================  ==========================================================  ==========================
format            columns                                                     the images
================  ==========================================================  ==========================
``aa_ti2t``       align-anything text-image-to-text: ``question``, ``image``,  one, before the question
                  ``response_1``, ``response_2``, ``overall_response`` (1|2)
``rlaif_v``       RLAIF-V: ``question``, ``image``, ``chosen``, ``rejected``    one, before the question
``trl_vision``    TRL: ``images`` and ``prompt`` messages with                  at the image parts
                  ``{"type": "image"}`` parts, ``chosen``, ``rejected``
``vlfeedback``    VLFeedback: ``prompt``, ``completions`` (each a ``response``   one, before the prompt
                  with its ratings), ``img_path`` (or ``image``): best-of-N
``sharegpt``      LLaMA-Factory: ``conversations`` (or ``messages``) with       at the ``<image>`` marks
                  ``<image>`` marks, ``chosen``, ``rejected``, ``images``
``prompt_response``, ``responses``, ``trl``: rmkit's own with an ``images``   at ``<image>`` marks, else
                  column (or ``image``, ``img_path``)                         before the first user text
================  ==========================================================  ==========================

MM-RLHF's pairs (``prompt``, ``chosen``, ``rejected``, ``image``) are the ``trl`` rows with an ``image``; its
video rows (a ``video`` field) are refused, named, until video is read. VLFeedback's rows (their
``completions`` rated on helpfulness, visual faithfulness and ethical considerations) are scored as
best-of-N rows, and binarised by ``rmkit pairs`` as any rated data is (its
``completions`` are UltraFeedback's shape): the pairs it writes keep ``img_path``, read here as the image.

Rows without images are read as their text format is (:mod:`rmkit.data.formats`), with no images.
Images are opened as :mod:`rmkit.data.images` says; a count of image parts or ``<image>`` marks that
differs from the count of images is a :class:`rmkit.errors.DataError` naming the row and field.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rmkit.data.formats import _NORMALISERS, Example, detect_format
from rmkit.data.images import MAX_IMAGE_PIXELS, Picture, open_image
from rmkit.data.readers import read_records
from rmkit.data.rejects import Rejects
from rmkit.data.rows import RowReader, each_record

IMAGE_MARK = "<image>"  # LLaMA-Factory's and rmkit's mark of where an image goes in a text
VISION_FORMATS = ("aa_ti2t", "rlaif_v", "trl_vision", "vlfeedback")
IMAGE_COLUMNS = ("images", "image", "img_path")  # img_path: VLFeedback's


@dataclass
class VisionExample(Example):
    """An :class:`Example` whose prompt may hold image parts (module docstring), with its ``images`` in the
    order of those parts."""

    images: list[Picture] = field(default_factory=list)

    @property
    def image_refs(self) -> list[str]:
        """The images as the data file named them (paths, URLs, ``<N bytes>``), for output rows."""
        return [p.ref for p in self.images]


def image_count(messages: Iterable[dict[str, Any]]) -> int:
    """How many image parts ``messages`` hold."""
    return sum(
        1
        for m in messages
        if isinstance(m.get("content"), list)
        for part in m["content"]
        if isinstance(part, dict) and part.get("type") == "image"
    )


def detect_vision(record: dict[str, Any]) -> str | None:
    """The multimodal format of ``record``, or ``None`` for a row that has no image column."""
    keys = set(record)
    if {"question", "image", "response_1", "response_2", "overall_response"} <= keys:
        return "aa_ti2t"
    if {"question", "image", "chosen", "rejected"} <= keys:
        return "rlaif_v"
    if "images" in keys and isinstance(record.get("prompt"), list) and image_count(record["prompt"]):
        return "trl_vision"
    if {"prompt", "completions"} <= keys and keys & set(IMAGE_COLUMNS):
        return "vlfeedback"
    if keys & set(IMAGE_COLUMNS):
        try:
            return detect_format({k: v for k, v in record.items() if k not in IMAGE_COLUMNS})
        except ValueError:
            return None
    return None


def iter_vision_examples(
    path: str | Path,
    *,
    format: str | None = None,
    columns: dict[str, str] | None = None,
    rejects: Rejects | None = None,
    pairs: bool = False,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> Iterator[Example]:
    """The normalised examples of the data file ``path`` (images read relative to its folder), in order."""
    yield from normalise_vision(
        read_records(path), source=str(path), format=format, columns=columns, rejects=rejects, pairs=pairs,
        max_pixels=max_pixels,
    )  # fmt: skip


def normalise_vision(
    records: Iterable[tuple[int, dict[str, Any]]],
    *,
    source: str = "<input>",
    format: str | None = None,
    columns: dict[str, str] | None = None,
    rejects: Rejects | None = None,
    pairs: bool = False,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> Iterator[Example]:
    """Normalise ``(row, record)`` pairs of any format, multimodal or text (module docstring); with
    ``pairs`` a row that is not a preference pair is an error. Images are read relative to ``source``'s
    folder (none for ``"<input>"``: a request's images are data URLs)."""
    base = Path(source).parent if source != "<input>" else None

    def convert(record: dict[str, Any], reader: RowReader) -> Example:
        if record.get("video"):  # MM-RLHF's video rows: never read as their text alone
            raise reader.error("video", "video rows are not read yet (only images)")
        fmt = format or detect_vision(record)
        if fmt is None:
            try:
                fmt = detect_format(record)
            except ValueError as e:
                raise reader.error(None, str(e)) from None
        example = _normalise(fmt, record, reader, base, max_pixels)
        if pairs and not example.is_pair:
            raise reader.error(None, f"expected preference pairs, but the columns look like '{fmt}' rows")
        return example

    yield from each_record(records, source=source, columns=columns, rejects=rejects, convert=convert)


def _normalise(fmt: str, record: dict[str, Any], r: RowReader, base: Path | None, limit: int) -> Example:
    """One record of format ``fmt`` as a :class:`VisionExample`."""
    if fmt in ("aa_ti2t", "rlaif_v"):
        chosen, rejected = "chosen", "rejected"
        if fmt == "aa_ti2t":
            better = str(r.get(record, "overall_response")).strip()
            if better not in ("1", "2"):
                raise r.error("overall_response", f"expected 1 or 2, got {record['overall_response']!r}")
            chosen, rejected = ("response_1", "response_2")[:: 1 if better == "1" else -1]
        used = {"question", "image", chosen, rejected, "overall_response"}
        rest = {k: v for k, v in record.items() if k not in used}
        text = {**rest, "prompt": r.get(record, "question"), "chosen": record.get(chosen)}
        text["rejected"] = record.get(rejected)
        return _with_images("trl", text, record, used, "image", r, base, limit)
    if fmt == "trl_vision":
        prompt = [_message_text(m, r, f"prompt[{i}]") for i, m in enumerate(r.get(record, "prompt"))]
        text = {k: v for k, v in record.items() if k != "images"} | {"prompt": prompt}
        return _with_images("trl", text, record, {"images"}, "images", r, base, limit)
    column = next((c for c in IMAGE_COLUMNS if c in record), None)
    if fmt == "vlfeedback" and column is not None:  # its completions' answers as a best-of-N row
        completions = r.get(record, "completions")
        if not isinstance(completions, list) or not all(isinstance(c, dict) for c in completions):
            raise r.error("completions", "expected a list of completion objects")
        answers = [r.text({f"completions[{i}].response": c.get("response")}, f"completions[{i}].response")
                   for i, c in enumerate(completions)]  # fmt: skip
        text = {k: v for k, v in record.items() if k not in ("completions", column)} | {"responses": answers}
        return _with_images("responses", text, record, {"completions", column}, column, r, base, limit)
    if fmt not in _NORMALISERS:
        raise r.error(None, f"unknown format '{fmt}'")
    if column is None:
        return _NORMALISERS[fmt](record, r)
    text = {k: v for k, v in record.items() if k != column}
    return _with_images(fmt, text, record, {column}, column, r, base, limit)


def flat_messages(prompt: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A normalised prompt with each message's image parts written as ``<image>`` marks (its content one string)."""
    return [
        {**m, "content": m["content"] if isinstance(m["content"], str) else "".join(
            IMAGE_MARK if p.get("type") == "image" else p.get("text", "") for p in m["content"])}
        for m in prompt
    ]  # fmt: skip


def _message_text(message: Any, r: RowReader, where: str) -> dict[str, Any]:
    """A message whose content is TRL's list of parts, with its image parts as ``<image>`` marks."""
    if not isinstance(message, dict) or not isinstance(message.get("content"), list):
        return message
    text = []
    for part in message["content"]:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "image":
            text.append(IMAGE_MARK)
        elif kind == "text":
            text.append(str(part.get("text", "")))
        else:
            raise r.error(where, f"expected parts of type 'text' or 'image', got {part!r}")
    return {**message, "content": "".join(text)}


def _with_images(
    fmt: str,
    text: dict[str, Any],
    record: dict[str, Any],
    used: set[str],
    column: str,
    r: RowReader,
    base: Path | None,
    limit: int,
) -> VisionExample:
    """The text example of ``text`` (format ``fmt``) with the images of ``record[column]`` opened and put at
    its ``<image>`` marks (before the first user text where it has none)."""
    plain = _NORMALISERS[fmt](text, r)
    values = r.get(record, column)
    values = values if isinstance(values, list) else [values]
    images = [open_image(v, r, f"{column}[{i}]" if len(values) > 1 else column, base=base, max_pixels=limit)
              for i, v in enumerate(values)]  # fmt: skip
    marks = sum(m["content"].count(IMAGE_MARK) for m in plain.prompt)
    if marks and marks != len(images):
        where = f"{IMAGE_MARK} marks or image parts"
        raise r.error(column, f"{len(images)} images for {marks} {where} in the prompt")
    if any(IMAGE_MARK in response for response in plain.responses):
        raise r.error(column, f"an answer holds {IMAGE_MARK}: images belong to the prompt")
    first = next((k for k, m in enumerate(plain.prompt) if m["role"] == "user"), 0)
    prompt = [_parts(m, len(images) if not marks and i == first else 0) for i, m in enumerate(plain.prompt)]
    extra = {k: v for k, v in plain.extra.items() if k not in used}
    return VisionExample(
        plain.row, prompt, plain.responses, plain.is_pair, plain.rendered, plain.best_of_n, plain.margin,
        extra, plain.rejected_prompt, plain.notes, images,
    )  # fmt: skip


def _parts(message: dict[str, Any], leading: int) -> dict[str, Any]:
    """``message`` with its ``<image>`` marks (and ``leading`` images before its text) as image parts; a
    message without images keeps its string content."""
    pieces = message["content"].split(IMAGE_MARK)
    if len(pieces) == 1 and not leading:
        return message
    parts: list[dict[str, Any]] = [{"type": "image"} for _ in range(leading)]
    for k, piece in enumerate(pieces):
        if k:
            parts.append({"type": "image"})
        if piece:
            parts.append({"type": "text", "text": piece})
    return {"role": message["role"], "content": parts}


def opened(example: Example, source: str = "<request>", max_pixels: int = MAX_IMAGE_PIXELS) -> Example:
    """``example`` (a request's) whose image parts carry their images (``{"type": "image", "image": data
    URL}``: OpenAI's ``image_url`` parts) as a :class:`VisionExample`, the images opened and the parts bare;
    an example without image parts as it is. Only data URLs are read (never a file or a remote URL)."""
    if not image_count(example.prompt):
        return example
    reader, images, prompt = RowReader(source, example.row), [], []
    for j, message in enumerate(example.prompt):
        if isinstance(message["content"], str):
            prompt.append(message)
            continue
        parts = []
        for k, part in enumerate(message["content"]):
            if part.get("type") == "image":
                where = f"messages[{j}].content[{k}]"
                images.append(
                    open_image(
                        part.get("image"), reader, where, base=None, max_pixels=max_pixels, files=False
                    )
                )
                part = {"type": "image"}
            parts.append(part)
        prompt.append({**message, "content": parts})
    return VisionExample(example.row, prompt, example.responses, example.is_pair, images=images)
