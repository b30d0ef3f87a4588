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

MM-RLHF's pairs (``prompt``, ``chosen``, ``rejected``, ``image`` or ``video``) are the ``trl`` rows with an
``image`` or a ``video``. VLFeedback's rows (their
``completions`` rated on helpfulness, visual faithfulness and ethical considerations) are scored as
best-of-N rows, and binarised by ``rmkit pairs`` as any rated data is (its
``completions`` are UltraFeedback's shape): the pairs it writes keep ``img_path``, read here as the image.

**Video** (:mod:`rmkit.data.video`: a file, a folder of frames, a list of frames, an animated GIF) comes as
``{"type": "video"}`` parts, the record's ``videos`` in their order: align-anything's text-video-to-text rows
(``aa_tv2t``: ``prompt``, ``video_path``, ``response_1``, ``response_2``, ``overall_response``; the prompt's
``<video>`` mark dropped and the video put before it, as its template does), TRL's messages with ``{"type":
"video"}`` parts and a ``videos`` column, and any text format with a ``videos`` (or ``video``, ``video_path``)
column: at ``<video>`` marks, else before the first user text (after its images).

Rows without images are read as their text format is (:mod:`rmkit.data.formats`), with no images.
Images are opened as :mod:`rmkit.data.images` says; a count of image parts or ``<image>`` marks that
differs from the count of images is a :class:`rmkit.errors.DataError` naming the row and field.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rmkit.data.formats import _NORMALISERS, Example, detect_format
from rmkit.data.images import MAX_IMAGE_PIXELS, Picture, open_image
from rmkit.data.readers import read_records
from rmkit.data.rejects import Rejects
from rmkit.data.rows import RowReader, each_record
from rmkit.data.video import Video, open_video

IMAGE_MARK = "<image>"  # LLaMA-Factory's and rmkit's mark of where an image goes in a text
VIDEO_MARK = "<video>"  # and of a video
MARKS = {"image": IMAGE_MARK, "video": VIDEO_MARK}
VISION_FORMATS = ("aa_ti2t", "rlaif_v", "trl_vision", "vlfeedback", "aa_tv2t")
IMAGE_COLUMNS = ("images", "image", "img_path")  # img_path: VLFeedback's
VIDEO_COLUMNS = ("videos", "video", "video_path")  # video_path: align-anything's TV2T


@dataclass
class VisionExample(Example):
    """An :class:`Example` whose prompt may hold image parts (module docstring), with its ``images`` in the
    order of those parts."""

    images: list[Picture] = field(default_factory=list)
    videos: list[Video] = field(default_factory=list)

    @property
    def image_refs(self) -> list[str]:
        """The images as the data file named them (paths, URLs, ``<N bytes>``), for output rows."""
        return [p.ref for p in self.images]

    @property
    def video_refs(self) -> list[str]:
        """The videos as the data file named them (paths, ``<N frames>``), for output rows."""
        return [v.ref for v in self.videos]


def image_count(messages: Iterable[dict[str, Any]], kind: str = "image") -> int:
    """How many image parts (or parts of type ``kind``: ``video``) ``messages`` hold."""
    return sum(
        1
        for m in messages
        if isinstance(m.get("content"), list)
        for part in m["content"]
        if isinstance(part, dict) and part.get("type") == kind
    )


def detect_vision(record: dict[str, Any]) -> str | None:
    """The multimodal format of ``record``, or ``None`` for a row that has no image column."""
    keys = set(record)
    if {"question", "image", "response_1", "response_2", "overall_response"} <= keys:
        return "aa_ti2t"
    if {"question", "image", "chosen", "rejected"} <= keys:
        return "rlaif_v"
    if {"prompt", "video_path", "response_1", "response_2", "overall_response"} <= keys:
        return "aa_tv2t"
    prompt = record.get("prompt")
    if isinstance(prompt, list) and any(
        column in keys and image_count(prompt, kind)
        for kind, column in (("image", "images"), ("video", "videos"))
    ):
        return "trl_vision"
    if {"prompt", "completions"} <= keys and keys & set(IMAGE_COLUMNS):
        return "vlfeedback"
    if keys & {*IMAGE_COLUMNS, *VIDEO_COLUMNS}:
        try:
            return detect_format(
                {k: v for k, v in record.items() if k not in (*IMAGE_COLUMNS, *VIDEO_COLUMNS)}
            )
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
    media = Media(r, base, limit)
    if fmt in ("aa_ti2t", "rlaif_v", "aa_tv2t"):
        chosen, rejected = ("chosen", "rejected") if fmt == "rlaif_v" else _better(record, r)
        question, column = ("prompt", "video_path") if fmt == "aa_tv2t" else ("question", "image")
        used = {question, column, chosen, rejected, "overall_response"}
        rest = {k: v for k, v in record.items() if k not in used}
        text = {**rest, "prompt": r.get(record, question), "chosen": record.get(chosen)}
        text["rejected"] = record.get(rejected)
        if fmt == "aa_tv2t":  # its template drops the mark and puts the video first
            text["prompt"] = r.text(record, question).replace(VIDEO_MARK, "").strip()
            return media.example("trl", text, record, used, None, column)
        return media.example("trl", text, record, used, "image", None)
    if fmt == "trl_vision":
        prompt = [_message_text(m, r, f"prompt[{i}]") for i, m in enumerate(r.get(record, "prompt"))]
        text = {k: v for k, v in record.items() if k not in ("images", "videos")} | {"prompt": prompt}
        images, videos = (
            ("images" if "images" in record else None),
            ("videos" if "videos" in record else None),
        )
        return media.example("trl", text, record, {"images", "videos"}, images, videos)
    column, video = _column(record, IMAGE_COLUMNS), _column(record, VIDEO_COLUMNS)
    if column and video and (record[column] is None) != (record[video] is None):  # MM-RLHF: one of them null
        column, video = (None, video) if record[column] is None else (column, None)
    if fmt == "vlfeedback" and column is not None:  # its completions' answers as a best-of-N row
        completions = r.get(record, "completions")
        if not isinstance(completions, list) or not all(isinstance(c, dict) for c in completions):
            raise r.error("completions", "expected a list of completion objects")
        answers = [r.text({f"completions[{i}].response": c.get("response")}, f"completions[{i}].response")
                   for i, c in enumerate(completions)]  # fmt: skip
        text = {k: v for k, v in record.items() if k not in ("completions", column)} | {"responses": answers}
        return media.example("responses", text, record, {"completions", column}, column, None)
    if fmt not in _NORMALISERS:
        raise r.error(None, f"unknown format '{fmt}'")
    if column is None and video is None:
        return _NORMALISERS[fmt](record, r)
    text = {k: v for k, v in record.items() if k not in (column, video)}
    return media.example(fmt, text, record, {column, video} - {None}, column, video)


def _column(record: dict[str, Any], names: tuple[str, ...]) -> str | None:
    """The first of the columns ``names`` that ``record`` gives a value, else the first it has (``None``)."""
    present = [c for c in names if c in record]
    return next((c for c in present if record[c] is not None), present[0] if present else None)


def _better(record: dict[str, Any], r: RowReader) -> tuple[str, str]:
    """align-anything's ``overall_response`` (1 or 2) as the chosen and rejected columns."""
    better = str(r.get(record, "overall_response")).strip()
    if better not in ("1", "2"):
        raise r.error("overall_response", f"expected 1 or 2, got {record['overall_response']!r}")
    return ("response_1", "response_2")[:: 1 if better == "1" else -1]


def flat_messages(prompt: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A normalised prompt with each message's image and video parts written as ``<image>`` and ``<video>``
    marks (its content one string)."""
    return [
        {**m, "content": m["content"] if isinstance(m["content"], str) else "".join(
            MARKS.get(p.get("type"), "") or p.get("text", "") for p in m["content"])}
        for m in prompt
    ]  # fmt: skip


def _message_text(message: Any, r: RowReader, where: str) -> dict[str, Any]:
    """A message whose content is TRL's list of parts, with its image and video parts as marks."""
    if not isinstance(message, dict) or not isinstance(message.get("content"), list):
        return message
    text = []
    for part in message["content"]:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in MARKS:
            text.append(MARKS[kind])
        elif kind == "text":
            text.append(str(part.get("text", "")))
        else:
            raise r.error(where, f"expected parts of type 'text', 'image' or 'video', got {part!r}")
    return {**message, "content": "".join(text)}


@dataclass
class Media:
    """Opens a row's images and videos (relative to ``base``, under the pixel ``limit``) and puts them in its
    prompt as parts."""

    r: RowReader
    base: Path | None
    limit: int

    def open(self, record: dict[str, Any], column: str | None, kind: str) -> list[Any]:
        """The images (or videos) of ``record[column]``, opened and checked."""
        if column is None:
            return []
        values = self.r.get(record, column)
        many = isinstance(values, list) and (kind == "image" or column == "videos")  # else one video's frames
        values = values if many else [values]
        where = [f"{column}[{i}]" if len(values) > 1 else column for i in range(len(values))]
        opener = open_image if kind == "image" else open_video
        return [
            opener(v, self.r, w, base=self.base, max_pixels=self.limit)
            for v, w in zip(values, where, strict=True)
        ]

    def example(
        self,
        fmt: str,
        text: dict[str, Any],
        record: dict[str, Any],
        used: set[str],
        images: str | None,
        videos: str | None,
    ) -> VisionExample:
        """The text example of ``text`` (format ``fmt``) with the images of ``record[images]`` and videos of
        ``record[videos]`` opened and put at its marks (before the first user text where it has none)."""
        plain = _NORMALISERS[fmt](text, self.r)
        found = {"image": self.open(record, images, "image"), "video": self.open(record, videos, "video")}
        leading = {}
        for kind, column in (("image", images), ("video", videos)):
            marks = sum(m["content"].count(MARKS[kind]) for m in plain.prompt)
            if marks and marks != len(found[kind]):
                where = f"{MARKS[kind]} marks or {kind} parts"
                raise self.r.error(column, f"{len(found[kind])} {kind}s for {marks} {where} in the prompt")
            if any(MARKS[kind] in response for response in plain.responses):
                raise self.r.error(column, f"an answer holds {MARKS[kind]}: {kind}s belong to the prompt")
            leading[kind] = 0 if marks else len(found[kind])
        first = next((k for k, m in enumerate(plain.prompt) if m["role"] == "user"), 0)
        prompt = [_parts(m, leading if i == first else {}) for i, m in enumerate(plain.prompt)]
        extra = {k: v for k, v in plain.extra.items() if k not in used}
        return VisionExample(
            plain.row, prompt, plain.responses, plain.is_pair, plain.rendered, plain.best_of_n, plain.margin,
            extra, plain.rejected_prompt, plain.notes, found["image"], found["video"],
        )  # fmt: skip


def _parts(message: dict[str, Any], leading: dict[str, int]) -> dict[str, Any]:
    """``message`` with its ``<image>`` and ``<video>`` marks (and the ``leading`` count of each before its
    text, images first) as parts; a message without either keeps its string content."""
    pieces = re.split(f"({re.escape(IMAGE_MARK)}|{re.escape(VIDEO_MARK)})", message["content"])
    if len(pieces) == 1 and not any(leading.values()):
        return message
    parts: list[dict[str, Any]] = [{"type": k} for k in ("image", "video") for _ in range(leading.get(k, 0))]
    for piece in pieces:
        if piece in (IMAGE_MARK, VIDEO_MARK):
            parts.append({"type": "image" if piece == IMAGE_MARK else "video"})
        elif piece:
            parts.append({"type": "text", "text": piece})
    return {"role": message["role"], "content": parts}


def opened(example: Example, source: str = "<request>", max_pixels: int = MAX_IMAGE_PIXELS) -> Example:
    """``example`` (a request's) whose image and video parts carry their media (``{"type": "image", "image":
    data URL}``: OpenAI's ``image_url`` parts; ``{"type": "video", "video": data URL or a list of frames' data
    URLs}``: ``video_url`` parts) as a :class:`VisionExample`, the media opened and the parts bare; an example
    without such parts as it is. Only data URLs are read (never a file or a remote URL)."""
    if not image_count(example.prompt) and not image_count(example.prompt, "video"):
        return example
    reader, found, prompt = RowReader(source, example.row), {"image": [], "video": []}, []
    for j, message in enumerate(example.prompt):
        if isinstance(message["content"], str):
            prompt.append(message)
            continue
        parts = []
        for k, part in enumerate(message["content"]):
            kind = part.get("type")
            if kind in found:
                opener = open_image if kind == "image" else open_video
                where = f"messages[{j}].content[{k}]"
                found[kind].append(
                    opener(part.get(kind), reader, where, base=None, max_pixels=max_pixels, files=False)
                )
                part = {"type": kind}
            parts.append(part)
        prompt.append({**message, "content": parts})
    return VisionExample(
        example.row, prompt, example.responses, example.is_pair, images=found["image"], videos=found["video"]
    )
