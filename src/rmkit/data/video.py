"""Videos of multimodal rows: found and checked when a row is read, sampled to frames when it is tokenised.

A video value may be:

- a path to a video file (any container and codec FFmpeg decodes, read with PyAV: ``pip install av``, rmkit's
  ``video`` extra) or to an animated GIF (read with PIL), relative to the data file's folder (or absolute);
- a path to a folder of frames: its image files, in the order of their names;
- a list of frames, each an image value of :mod:`rmkit.data.images` (a path, a data URL, bytes);
- a ``data:video/...;base64,...`` URL, or raw bytes (a request's video: a server reads no file);
- what ``datasets`` stores for a ``Video`` feature: a dict with ``bytes`` and/or ``path``.

Remote ``http(s)`` URLs are never fetched. When its row is read a video is opened and checked, its frames not
yet decoded: a missing file, bytes no decoder reads (its first frame is decoded), a video without frames and
frames over the pixel limit (from the header) are each a :class:`rmkit.errors.DataError` naming the file, row
and field, as a bad image is.

**Sampling** (:func:`frame_indices`: Qwen2-VL's rule, qwen-vl-utils' ``smart_nframes``): a video of ``total``
frames at ``rate`` frames a second, read at ``fps`` (``--video-fps``, default 2.0) with at most ``max_frames``
(``--max-frames``, default 768) keeps ``n = total / rate × fps`` frames, at least 4, at most ``max_frames`` and
``total``, rounded down to a multiple of 2 (the temporal patch size), at least 1; they are the frames at the
evenly spaced timestamps ``round(linspace(0, total - 1, n))``. The frames a model then sees run at
``n / total × rate`` frames a second (Qwen2.5-VL's ``second_per_grid_ts`` is 2 over it). Frames given as images
(a folder, a list) are all kept, as qwen-vl-utils keeps them, and taken as shown at ``fps``; over
``max_frames`` they are thinned by the same evenly spaced rule.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rmkit.data.images import MAX_IMAGE_PIXELS, ImageTooLarge, open_image
from rmkit.data.rows import RowReader
from rmkit.errors import DataError, RMKitError

FPS = 2.0  # qwen-vl-utils' FPS: frames a second read from a video
MIN_FRAMES = 4  # its FPS_MIN_FRAMES
MAX_FRAMES = 768  # its FPS_MAX_FRAMES
FRAME_FACTOR = 2  # its FRAME_FACTOR: Qwen2-VL's temporal patch size
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
INSTALL = "reading a video file needs PyAV: pip install 'rmkit[video]' (or pip install av)"


@dataclass
class Video:
    """A checked video, its frames not yet decoded: ``source`` (a file's path or bytes, or a list of frame
    values), ``total`` frames at ``rate`` frames a second (``None``: frames given as images), ``kind`` (``av``,
    ``gif`` or ``frames``), what the data file called it (``ref``) and where it was read (``file``, ``row``,
    ``field``: the errors of decoding name them)."""

    source: Any
    total: int
    rate: float | None
    kind: str
    ref: str
    file: str
    row: int | None
    field: str
    base: Path | None = None
    files: bool = True  # frames given as images may be files (not a request's)
    limit: int = MAX_IMAGE_PIXELS  # their pixel limit

    def error(self, message: str) -> DataError:
        return DataError(message, file=self.file, row=self.row, field=self.field)


@dataclass
class Frames:
    """A video's sampled frames (PIL images in RGB, all of one size) and the rate they run at."""

    images: list[Any]
    fps: float


def frame_indices(
    total: int, rate: float | None, fps: float = FPS, max_frames: int = MAX_FRAMES
) -> list[int]:
    """The indices of the frames kept of ``total`` (module docstring's rule); ``rate`` ``None``: frames given
    as images, all kept up to ``max_frames``."""
    if rate is None:
        n = total if total <= max_frames else max(FRAME_FACTOR, _floor(max_frames))
    else:
        n = min(max(total / rate * fps, MIN_FRAMES), _floor(min(max_frames, total)), total)
        n = max(1, _floor(n))
    if n == 1:
        return [0]
    step = (total - 1) / (n - 1)  # numpy's linspace: i × step, the last exactly total - 1
    return [round(i * step) for i in range(n - 1)] + [total - 1]


def _floor(n: float) -> int:
    return math.floor(n / FRAME_FACTOR) * FRAME_FACTOR


def describe_video(value: Any) -> str:
    """How a video value is written back out (output rows): a path as given, else its kind and size."""
    if isinstance(value, list):
        return f"<{len(value)} frames>"
    if isinstance(value, str) and value.startswith("data:"):
        return f"<data URL, {len(value)} characters>"
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if isinstance(value, dict):
        return describe_video(value.get("path") or value.get("bytes") or b"")
    return str(value)


def open_video(
    value: Any,
    reader: RowReader,
    field: str,
    *,
    base: Path | None,
    max_pixels: int = MAX_IMAGE_PIXELS,
    files: bool = True,
) -> Video:
    """The video ``value`` (module docstring) of field ``field`` of the row ``reader`` reads, checked; paths
    relative to ``base``, refused without ``files`` (a request's video is a data URL or a list of them)."""
    ref = describe_video(value)
    if isinstance(value, dict) and files:  # datasets' Video feature: its bytes, else its path
        value = value.get("bytes") or value.get("path")
    where = {"ref": ref, "file": reader.source, "row": reader.row, "field": field, "base": base,
             "files": files, "limit": max_pixels}  # fmt: skip
    if isinstance(value, list):
        return _frame_list(value, reader, field, where, max_pixels, files)
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        raise reader.error(field, f"remote video {value} is not fetched: download it and give its path")
    if isinstance(value, str) and value.startswith("data:"):
        source: Any = _data_url(value, reader, field)
    elif isinstance(value, (bytes, bytearray)):
        source = bytes(value)
    elif isinstance(value, str) and value.strip() and files:
        source = Path(value) if base is None or Path(value).is_absolute() else base / value
        if source.is_dir():
            frames = sorted(p for p in source.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
            return _frame_list([str(p) for p in frames], reader, field, where, max_pixels, True)
        if not source.is_file():
            raise reader.error(field, f"cannot read the video {source}: no such file or folder")
    elif isinstance(value, str) and not files:
        raise reader.error(field, "a request's video must be a data URL (data:video/...;base64,...)")
    else:
        raise reader.error(
            field, f"expected a video (path, folder, frames, data URL), got {type(value).__name__}"
        )
    if _is_gif(source):
        return _gif(source, reader, field, where, max_pixels)
    return _av(source, reader, field, where, max_pixels)


def _frame_list(values: list, reader: RowReader, field: str, where: dict, limit: int, files: bool) -> Video:
    """Frames given as images: checked as their count, their files' presence and the first frame (each is
    opened when sampled)."""
    if not values:
        raise reader.error(field, f"the video {where['ref']} has no frames")
    open_image(values[0], reader, f"{field}[0]", base=where["base"], max_pixels=limit, files=files)
    for i, value in enumerate(values):
        if files and isinstance(value, str) and not value.startswith(("data:", "http://", "https://")):
            path = Path(value) if where["base"] is None else where["base"] / value
            if not path.is_file():
                raise reader.error(f"{field}[{i}]", f"cannot read the frame {path}: no such file")
    return Video(list(values), len(values), None, "frames", **where)


def _data_url(value: str, reader: RowReader, field: str) -> bytes:
    head, _, body = value.partition(",")
    if not head.endswith(";base64") or not body:
        raise reader.error(field, "a data URL video must be base64 encoded (data:video/...;base64,...)")
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as e:
        raise reader.error(field, f"the data URL's base64 is malformed: {e}") from None


def _is_gif(source: Path | bytes) -> bool:
    if isinstance(source, Path):
        with open(source, "rb") as f:
            return f.read(6) in (b"GIF87a", b"GIF89a")
    return source[:6] in (b"GIF87a", b"GIF89a")


def _stream(source: Path | bytes) -> Any:
    return io.BytesIO(source) if isinstance(source, bytes) else str(source)


def _check_size(width: int, height: int, reader: RowReader, field: str, ref: str, limit: int) -> None:
    if width * height > limit:
        message = (
            f"video {ref} has frames of {width}x{height} = {width * height} pixels, over the limit of {limit}"
        )
        raise ImageTooLarge(message, file=reader.source, row=reader.row, field=field)


def _gif(source: Path | bytes, reader: RowReader, field: str, where: dict, limit: int) -> Video:
    """An animated GIF: its frame count and rate (from its first frame's duration; 10 a second without)."""
    from PIL import Image

    try:
        with Image.open(_stream(source)) as gif:
            _check_size(*gif.size, reader, field, where["ref"], limit)
            gif.load()
            total, duration = int(getattr(gif, "n_frames", 1)), gif.info.get("duration") or 100
    except (OSError, ValueError, SyntaxError) as e:
        raise reader.error(field, f"cannot decode the video {where['ref']}: {e}") from None
    return Video(source, total, 1000.0 / duration, "gif", **where)


def _av(source: Path | bytes, reader: RowReader, field: str, where: dict, limit: int) -> Video:
    """A video file read with PyAV: its first video stream's frame count (counted from its packets where the
    header does not say) and rate, its first frame decoded."""
    av = _import_av()
    try:
        with av.open(_stream(source)) as container:
            if not container.streams.video:
                raise reader.error(field, f"the file {where['ref']} holds no video stream")
            stream = container.streams.video[0]
            _check_size(
                stream.codec_context.width, stream.codec_context.height, reader, field, where["ref"], limit
            )
            rate = float(stream.average_rate or stream.guessed_rate or 0) or None
            total = stream.frames or sum(1 for p in container.demux(stream) if p.size)
        with av.open(_stream(source)) as container:
            first = next(container.decode(video=0), None)
    except DataError:
        raise
    except (av.FFmpegError, OSError, ValueError) as e:
        raise reader.error(field, f"cannot decode the video {where['ref']}: {e}") from None
    if first is None or not total:
        raise reader.error(field, f"the video {where['ref']} has no frames")
    if rate is None:
        raise reader.error(field, f"the video {where['ref']} gives no frame rate")
    return Video(source, total, rate, "av", **where)


def _import_av() -> Any:
    try:
        import av
    except ImportError:
        raise RMKitError(INSTALL) from None
    return av


def sample(video: Video, fps: float = FPS, max_frames: int = MAX_FRAMES) -> Frames:
    """The frames of ``video`` kept by the sampling rule (module docstring), decoded, in RGB."""
    keep = frame_indices(video.total, video.rate, fps, max_frames)
    if video.kind == "frames":
        reader = RowReader(video.file, video.row)
        images = [
            open_image(
                video.source[i],
                reader,
                f"{video.field}[{i}]",
                base=video.base,
                max_pixels=video.limit,
                files=video.files,
            ).image
            for i in keep
        ]
    else:
        images = (_gif_frames if video.kind == "gif" else _av_frames)(video, sorted(set(keep)))
        if len(images) < len(set(keep)):
            raise video.error(f"the video {video.ref} ends after fewer frames than its {video.total}")
        by_index = dict(zip(sorted(set(keep)), images, strict=True))
        images = [by_index[i] for i in keep]
    if len({im.size for im in images}) > 1:
        raise video.error(f"the frames of {video.ref} differ in size: {sorted({im.size for im in images})}")
    rate = fps if video.rate is None else video.rate
    return Frames(images, len(keep) / video.total * rate)


def _gif_frames(video: Video, keep: list[int]) -> list[Any]:
    from PIL import Image

    out = []
    with Image.open(_stream(video.source)) as gif:
        for i in keep:
            gif.seek(i)
            out.append(gif.convert("RGB"))
    return out


def _av_frames(video: Video, keep: list[int]) -> list[Any]:
    """The frames at ``keep`` (sorted indices), decoded in one pass (FFmpeg's threads) that stops after the
    last; only those kept become images."""
    av, wanted, out = _import_av(), set(keep), []
    try:
        with av.open(_stream(video.source)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for i, frame in enumerate(container.decode(stream)):
                if i in wanted:
                    out.append(frame.to_image().convert("RGB"))
                if i >= keep[-1]:
                    break
    except (av.FFmpegError, OSError, ValueError) as e:
        raise video.error(f"cannot decode the video {video.ref}: {e}") from None
    return out
