"""Examples with audio to Qwen2-Audio's input: text rendered and tokenised as for a text RM, each clip through
the model's feature extractor, each clip's ``<|AUDIO|>`` token expanded to its count of audio features.

What transformers' ``Qwen2AudioProcessor`` does, step by step (it builds here, and a test checks rmkit's
inputs equal its own)::

    rendered text ─ tokenizer ─> ids with one <|AUDIO|> a clip ─ expand ─> ids with the clip's count each
    clips ─ resampled to the extractor's rate ─ WhisperFeatureExtractor (padded to its window) ─>
            log-mel features (N, mel, frames) and the real frames of each clip (``feature_attention_mask``)

A clip of ``l`` real frames takes ``((l - 1) // 2 + 1 - 2) // 2 + 1`` audio tokens: the encoder's stride-2
convolution, then its stride-2 pooling (``processing_qwen2_audio.py``'s rule). A clip longer than the
extractor's window (30 s for Qwen2-Audio) is a :class:`rmkit.errors.DataError`, where the processor would cut
it silently. Without a chat template an audio part is written as ``<|audio_bos|><|AUDIO|><|audio_eos|>``.
Truncation is :class:`rmkit.data.processing.VisionTokenizer`'s: the prompt cut from the left, never into a
clip's tokens or an answer.

Each row is a :class:`rmkit.data.processing.VisionRow` whose ``patches`` are its example's clips' features,
frames by mel bins stacked (N·frames, mel), shared by the example's answers, and whose ``grids`` are each
clip's count of real frames.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rmkit.data.formats import Example
from rmkit.data.processing import ImageTokens, VisionTokenizer
from rmkit.errors import DataError

AUDIO_TEXT = "<|audio_bos|><|AUDIO|><|audio_eos|>"


def audio_tokens(frames: int) -> int:
    """The count of audio tokens of a clip of ``frames`` real frames (module docstring)."""
    return ((frames - 1) // 2 + 1 - 2) // 2 + 1


def tokens_of(audio_id: int) -> ImageTokens:
    """How Qwen2-Audio's text marks a clip: ``audio_id`` (``<|AUDIO|>``) repeated :func:`audio_tokens` times."""
    return ImageTokens(audio_id, AUDIO_TEXT, audio_tokens)


class AudioTokenizer(VisionTokenizer):
    """A :class:`VisionTokenizer` whose media are the clips of an :class:`rmkit.data.audio.AudioExample`,
    read by the model's feature extractor (module docstring)."""

    part = "audio"

    def _media(self, ex: Example) -> tuple[Any, list[int]]:
        if getattr(ex, "images", None):  # its chat template would drop them without a word
            raise DataError("an audio RM reads no images: this row holds some", row=ex.row, field="images")
        sounds = getattr(ex, "audios", [])
        if not sounds:
            return None, []
        extractor = self.processor
        rate, window = extractor.sampling_rate, extractor.n_samples / extractor.sampling_rate
        for i, sound in enumerate(sounds):
            if sound.seconds > window:
                raise DataError(
                    f"audio {i + 1} lasts {sound.seconds:.1f} s; the model hears {window:g} s",
                    row=ex.row,
                    field="audios",
                )
        done = extractor(
            [s.at(rate) for s in sounds],
            sampling_rate=rate,
            padding="max_length",
            return_attention_mask=True,
            return_tensors="np",
        )
        features = done["input_features"]  # (N, mel, frames)
        frames = [int(n) for n in done["attention_mask"].sum(-1)]
        stacked = np.ascontiguousarray(features.transpose(0, 2, 1).reshape(-1, features.shape[1]))
        return stacked.astype(np.float32), frames
