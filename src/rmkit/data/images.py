"""Images of multimodal rows: every way a data file gives one, opened and checked before a model sees it.

An image value may be:

- a path, relative to the data file's folder (or absolute);
- a ``data:image/...;base64,...`` URL;
- raw bytes (a Parquet or Arrow column of images);
- what ``datasets`` gives for an ``Image`` feature: a dict with ``bytes`` and/or ``path``, or a PIL image.

Remote ``http(s)`` URLs are never fetched while data is read: such a value is a named error saying so.
Every image is decoded whole when its row is read, so a bad one is a :class:`rmkit.errors.DataError`
naming the file, row and field: a missing file, bytes that are not an image or are cut short, and an image
of more than ``max_pixels`` pixels (a decompression bomb: its size is read from the header, before the
pixels are decoded). PIL is imported where an image is opened, so reading text data never loads it.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rmkit.data.rows import RowReader
from rmkit.errors import DataError

# The most pixels an image may have (PIL warns at about 89 million and refuses at twice that: a
# decompression bomb). A vision encoder resizes to far fewer, so anything this large is refused.
MAX_IMAGE_PIXELS = 50_000_000


class ImageTooLarge(DataError):
    """An image over the pixel limit (a server answers it 413)."""


@dataclass
class Picture:
    """An opened image (``image``: a PIL image in RGB) and what the data file called it (``ref``: its path or
    URL as given, or ``"<N bytes>"``), which output rows carry instead of the pixels."""

    image: Any
    ref: str


def describe(value: Any) -> str:
    """How an image value is written back out (output rows, rejects): a path or URL as given, else a size."""
    if isinstance(value, str):
        return value if not value.startswith("data:") else f"<data URL, {len(value)} characters>"
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if isinstance(value, dict):
        if value.get("path"):
            return str(value["path"])
        return describe(value.get("bytes") or b"")
    return f"<{type(value).__name__}>"


def open_image(
    value: Any,
    reader: RowReader,
    field: str,
    *,
    base: Path | None,
    max_pixels: int = MAX_IMAGE_PIXELS,
    files: bool = True,
) -> Picture:
    """The image ``value`` (module docstring) of field ``field`` of the row ``reader`` reads, decoded whole
    and in RGB; paths are read relative to ``base`` (the data file's folder), and refused without ``files``
    (a request to a server names no file of the server's)."""
    from PIL import Image

    if isinstance(value, Image.Image):
        return Picture(_checked(value, reader, field, max_pixels), describe(value))
    if not files and not (isinstance(value, str) and value.startswith("data:")):
        raise reader.error(field, "a request's image must be a data URL (data:image/...;base64,...)")
    raw = _bytes(value, reader, field, base)
    try:
        with Image.open(io.BytesIO(raw)) as opened:
            _check_size(opened.size, reader, field, max_pixels)
            opened.load()
            image = opened.convert("RGB")
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(
            f"image refused as a decompression bomb: {e}", file=reader.source, row=reader.row, field=field
        ) from None
    except (OSError, ValueError, SyntaxError) as e:  # PIL's word for bytes it cannot decode or that end early
        raise reader.error(field, f"cannot decode the image {describe(value)}: {e}") from None
    return Picture(image, describe(value))


def _checked(image: Any, reader: RowReader, field: str, max_pixels: int) -> Any:
    _check_size(image.size, reader, field, max_pixels)
    return image.convert("RGB") if image.mode != "RGB" else image


def _check_size(size: tuple[int, int], reader: RowReader, field: str, max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        message = f"image of {width}x{height} = {width * height} pixels, over the limit of {max_pixels}"
        raise ImageTooLarge(message, file=reader.source, row=reader.row, field=field)
    if width == 0 or height == 0:
        raise reader.error(field, f"empty image ({width}x{height})")


def _bytes(value: Any, reader: RowReader, field: str, base: Path | None) -> bytes:
    """The encoded bytes of an image value that is not yet a PIL image."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, dict):
        if value.get("bytes"):
            return bytes(value["bytes"])
        if value.get("path"):
            return _bytes(str(value["path"]), reader, field, base)
        raise reader.error(field, "an image object needs 'bytes' or 'path'")
    if not isinstance(value, str) or not value.strip():
        raise reader.error(field, f"expected an image (path, data URL, bytes), got {type(value).__name__}")
    if value.startswith("data:"):
        head, _, body = value.partition(",")
        if not head.endswith(";base64") or not body:
            raise reader.error(field, "a data URL image must be base64 encoded (data:image/...;base64,...)")
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as e:
            raise reader.error(field, f"the data URL's base64 is malformed: {e}") from None
    if value.startswith(("http://", "https://")):
        raise reader.error(field, f"remote image {value} is not fetched: download it and give its path")
    path = Path(value) if base is None or Path(value).is_absolute() else base / value
    try:
        return path.read_bytes()
    except OSError as e:
        raise reader.error(field, f"cannot read the image file {path}: {e.strerror or e}") from None
