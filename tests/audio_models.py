"""A tiny Qwen2-Audio for the tests (a Whisper-shaped encoder of 2 layers, d_model 32, and a Qwen2 language
model of hidden size 32, random weights, a tokenizer trained on the test corpus, a feature extractor of 16 mel
bins and a 1 s window) and clips synthesised as sine WAVs."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np
from conftest import CORPUS

AUDIO_SPECIALS = ["<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>"]


def make_alm(
    path: Path, *, seed: int = 0, hidden: int = 32, layers: int = 2, mel: int = 16, seconds: int = 1
) -> Path:
    """A tiny Qwen2-Audio saved to ``path`` (module docstring; the benchmark's is larger: ``hidden`` in both
    parts, ``layers`` in each, ``mel`` bins, a window of ``seconds``), no value head and no chat template of
    its own (the processor's default, Qwen2-Audio's, is used)."""
    import torch
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration, WhisperFeatureExtractor

    from rmkit.demo_vision import _tokenizer

    tok = _tokenizer(CORPUS, None)
    tok.add_tokens(AUDIO_SPECIALS, special_tokens=True)
    tok.save_pretrained(str(path))
    extractor = WhisperFeatureExtractor(
        feature_size=mel, sampling_rate=16000, hop_length=160, chunk_length=seconds
    )
    extractor.save_pretrained(str(path))
    config = Qwen2AudioConfig(
        audio_config=dict(num_mel_bins=mel, encoder_layers=layers, encoder_attention_heads=4,
                          encoder_ffn_dim=2 * hidden, d_model=hidden, max_source_positions=50 * seconds),
        text_config=dict(model_type="qwen2", vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        audio_token_index=tok.convert_tokens_to_ids("<|AUDIO|>"),
    )  # fmt: skip
    torch.manual_seed(seed)
    Qwen2AudioForConditionalGeneration(config).save_pretrained(str(path))
    return path


def sine(seconds: float, hz: float = 440.0, rate: int = 16000) -> np.ndarray:
    """A sine of ``hz`` for ``seconds`` at ``rate``, amplitude 0.5."""
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def wav_bytes(samples: np.ndarray, rate: int = 16000, channels: int = 1) -> bytes:
    """``samples`` (in [-1, 1]) as a 16-bit PCM WAV, each sample written to every channel."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        pcm = np.round(np.clip(samples, -1, 1) * 32767).astype("<i2")
        w.writeframes(np.repeat(pcm, channels).tobytes())
    return buffer.getvalue()


def write_wav(path: Path, seconds: float, hz: float = 440.0, rate: int = 16000) -> Path:
    path.write_bytes(wav_bytes(sine(seconds, hz, rate), rate))
    return path
