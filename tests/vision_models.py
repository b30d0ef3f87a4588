"""Tiny vision-language models for the tests and the benchmark (:func:`rmkit.demo_vision.tiny_vlm`: hidden size
32, 2 layers, random weights, a tokenizer trained on the test corpus) and small images drawn in code."""

from __future__ import annotations

from pathlib import Path

from conftest import CORPUS

from rmkit.data.synthetic import COLOURS, picture
from rmkit.demo_vision import tiny_vlm

__all__ = ["COLOURS", "make_vlm", "mixed_examples", "picture", "saved_rm"]


def make_vlm(path: Path, family: str = "qwen2_vl", **options) -> Path:
    """A tiny VLM of ``family`` saved to ``path`` (options: :func:`rmkit.demo_vision.tiny_vlm`'s)."""
    return tiny_vlm(path, family, corpus=CORPUS, **options)


def saved_rm(tmp_path_factory, family: str = "qwen2_vl", seed: int = 1):
    """``(rm, path)``: a tiny VLM of ``family`` given a value head seeded by ``seed``, saved by rmkit and read
    back (as a user's trained checkpoint is)."""
    import torch

    from rmkit.vlm import VisionRewardModel

    backbone = make_vlm(tmp_path_factory.mktemp(family), family)
    torch.manual_seed(seed)
    out = tmp_path_factory.mktemp(f"{family}_rm")
    VisionRewardModel.from_pretrained(backbone).save_pretrained(out)
    return VisionRewardModel.from_pretrained(out), out


def mixed_examples(question):
    """Rows of different lengths, their user turns written by ``question(text, images)``: one and two images
    (of different sizes: the processor resizes them), and a text-only row."""
    from rmkit.data.images import Picture
    from rmkit.data.vision import VisionExample

    red, blue = picture("red"), picture("blue", (84, 56), seed=1)
    return [
        VisionExample(1, question("What colour is it?"), ["red", "It is blue, the colour of the sky today"],
                      True, images=[Picture(red, "r.png")]),
        VisionExample(2, question("Which two?", 2), ["red and blue"], False,
                      images=[Picture(red, "r.png"), Picture(blue, "b.png")]),
        VisionExample(3, [{"role": "user", "content": "hello how can I help"}], ["Paris"], False),
    ]  # fmt: skip
