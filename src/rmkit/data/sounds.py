"""Audio of multimodal rows: every way a data file or a request gives one, decoded and checked before a model
hears it.

An audio value may be:

- a path, relative to the data file's folder (or absolute);
- a ``data:audio/...;base64,...`` URL;
- raw bytes (a Parquet or Arrow column);
- OpenAI's ``input_audio`` object, ``{"data": base64, "format": "wav"}``;
- what ``datasets`` gives for an ``Audio`` feature: a dict with ``array`` and ``sampling_rate`` (decoded
  already), or with ``bytes`` and/or ``path``.

Remote ``http(s)`` URLs are never fetched: such a value is a named error saying so. WAV files of integer PCM
(8, 16, 24 or 32 bits) are decoded by the standard library's ``wave``; anything else (FLAC, OGG, MP3, float
WAV) by ``soundfile`` (the ``audio`` extra: ``pip install "rmkit[audio]"``), imported only then. Channels are
averaged to mono, samples scaled to [-1, 1]. A bad audio is a :class:`rmkit.errors.DataError` naming the file,
row and field: a missing file, bytes that do not decode, an empty clip, and a clip longer than ``max_seconds``
(:class:`AudioTooLong`, answered 413 by a server).

Resampling (:func:`resample`) is linear interpolation: the output's sample ``k`` is the input read at time
``k / target_rate`` seconds, between its two nearest samples; ``floor(n · target / rate)`` samples come out. It
does not low-pass first, so downsampling folds content above the new Nyquist frequency (8 kHz at Whisper's
16 kHz) back into the band; resample with a band-limited filter beforehand (librosa, sox) where that matters.
"""

from __future__ import annotations

import base64
import binascii
import io
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rmkit.data.images import describe as describe_media
from rmkit.data.rows import RowReader
from rmkit.errors import DataError, RMKitError

# The longest clip read. Qwen2-Audio's feature extractor keeps 30 s (Whisper's window) and cuts the rest, so a
# longer clip would be heard in part; the model's own window is checked again when it is prepared.
MAX_AUDIO_SECONDS = 30.0


class AudioTooLong(DataError):
    """A clip over the length limit (a server answers it 413)."""


@dataclass
class Sound:
    """A decoded clip: ``samples`` (mono float32 in [-1, 1]) at ``rate`` Hz, and what the data file called it
    (``ref``: its path as given, else a size), which output rows carry instead of the samples."""

    samples: np.ndarray
    rate: int
    ref: str

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate

    def at(self, rate: int) -> np.ndarray:
        """The samples at ``rate`` Hz (:func:`resample`)."""
        return resample(self.samples, self.rate, rate)


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """``samples`` at ``rate`` Hz read at ``target`` Hz by linear interpolation (module docstring)."""
    if rate == target:
        return samples
    count = len(samples) * target // rate
    times = np.arange(count, dtype=np.float64) * (rate / target)
    return np.interp(times, np.arange(len(samples)), samples).astype(np.float32)


def describe(value: Any) -> str:
    """How an audio value is written back out (output rows, rejects): as an image value is
    (:func:`rmkit.data.images.describe`), and a ``datasets`` Audio dict's decoded samples or OpenAI's
    ``input_audio`` ``data`` by their size."""
    if isinstance(value, dict) and not value.get("path"):
        if "array" in value:
            return f"<{len(value['array'])} samples at {value.get('sampling_rate')} Hz>"
        return describe_media(value.get("data") or value.get("bytes") or b"")
    return describe_media(value)


def open_audio(
    value: Any,
    reader: RowReader,
    field: str,
    *,
    base: Path | None,
    max_seconds: float = MAX_AUDIO_SECONDS,
    files: bool = True,
) -> Sound:
    """The clip ``value`` (module docstring) of field ``field`` of the row ``reader`` reads, decoded whole;
    paths are read relative to ``base`` (the data file's folder), and refused without ``files`` (a request to
    a server names no file of the server's)."""
    if isinstance(value, dict) and "array" in value:
        samples, rate = _array(value, reader, field)
    else:
        if (
            not files
            and not (isinstance(value, dict) and value.get("data"))
            and not str(value).startswith("data:")
        ):
            raise reader.error(field, "a request's audio must be input_audio data or a data URL")
        samples, rate = _decode(_bytes(value, reader, field, base), value, reader, field)
    if len(samples) == 0:
        raise reader.error(field, f"empty audio {describe(value)}")
    sound = Sound(samples, rate, describe(value))
    if sound.seconds > max_seconds:
        raise AudioTooLong(
            f"audio of {sound.seconds:.1f} s, over the limit of {max_seconds:g} s",
            file=reader.source, row=reader.row, field=field,
        )  # fmt: skip
    return sound


def _array(value: dict[str, Any], reader: RowReader, field: str) -> tuple[np.ndarray, int]:
    """``datasets``' decoded audio: ``array`` (samples, or samples × channels) at ``sampling_rate``."""
    rate = value.get("sampling_rate")
    if not isinstance(rate, int) or rate <= 0:
        raise reader.error(field, f"a decoded audio needs a positive integer 'sampling_rate', got {rate!r}")
    try:
        samples = np.asarray(value["array"], dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise reader.error(field, f"its 'array' is not numbers: {e}") from None
    return (samples.mean(axis=1) if samples.ndim == 2 else samples.reshape(-1)), rate


def _bytes(value: Any, reader: RowReader, field: str, base: Path | None) -> bytes:
    """The encoded bytes of an audio value."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, dict):
        if value.get("data") or value.get("bytes"):
            data = value.get("data") or value["bytes"]
            return _base64(data, reader, field) if isinstance(data, str) else bytes(data)
        if value.get("path"):
            return _bytes(str(value["path"]), reader, field, base)
        raise reader.error(field, "an audio object needs 'data', 'bytes', 'array' or 'path'")
    if not isinstance(value, str) or not value.strip():
        raise reader.error(field, f"expected an audio (path, data URL, bytes), got {type(value).__name__}")
    if value.startswith("data:"):
        head, _, body = value.partition(",")
        if not head.endswith(";base64") or not body:
            raise reader.error(field, "a data URL audio must be base64 encoded (data:audio/...;base64,...)")
        return _base64(body, reader, field)
    if value.startswith(("http://", "https://")):
        raise reader.error(field, f"remote audio {value} is not fetched: download it and give its path")
    path = Path(value) if base is None or Path(value).is_absolute() else base / value
    try:
        return path.read_bytes()
    except OSError as e:
        raise reader.error(field, f"cannot read the audio file {path}: {e.strerror or e}") from None


def _base64(text: str, reader: RowReader, field: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise reader.error(field, f"the audio's base64 is malformed: {e}") from None


def _decode(raw: bytes, value: Any, reader: RowReader, field: str) -> tuple[np.ndarray, int]:
    """Mono float32 samples and their rate: ``wave`` for integer PCM WAV, else ``soundfile``."""
    try:
        return _wav(raw)
    except EOFError as e:  # a WAV cut short (or bytes too few to be any audio)
        raise reader.error(
            field, f"cannot decode the audio {describe(value)}: {e or 'it ends early'}"
        ) from None
    except (wave.Error, ValueError):
        pass  # not integer PCM WAV: soundfile reads it, or says why not
    try:
        import soundfile
    except ImportError:
        raise RMKitError(
            f"{describe(value)} is not integer PCM WAV; reading other audio needs soundfile: "
            'pip install "rmkit[audio]"'
        ) from None
    try:
        samples, rate = soundfile.read(io.BytesIO(raw), dtype="float32", always_2d=True)
    except (RuntimeError, TypeError, ValueError) as e:  # soundfile's LibsndfileError is a RuntimeError
        raise reader.error(field, f"cannot decode the audio {describe(value)}: {e}") from None
    return samples.mean(axis=1), int(rate)


def _wav(raw: bytes) -> tuple[np.ndarray, int]:
    """Integer PCM WAV by the standard library: samples scaled by the full range of their width."""
    with wave.open(io.BytesIO(raw)) as w:
        width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
        frames = w.readframes(w.getnframes())
    if len(frames) != w.getnframes() * width * channels:
        raise EOFError("the WAV data ends early")
    if width == 1:  # 8-bit WAV is unsigned
        data = np.frombuffer(frames, np.uint8).astype(np.float32) - 128.0
    elif width == 3:  # 24-bit: little-endian triplets, widened to int32 by the top three bytes
        triplets = np.frombuffer(frames, np.uint8).reshape(-1, 3).astype(np.int32)
        data = ((triplets[:, 0] << 8 | triplets[:, 1] << 16 | triplets[:, 2] << 24) >> 8).astype(np.float32)
    elif width in (2, 4):
        data = np.frombuffer(frames, f"<i{width}").astype(np.float32)
    else:
        raise ValueError(f"{width}-byte samples")
    scale = float(1 << (8 * width - 1))
    return (data / scale).reshape(-1, channels).mean(axis=1), rate
