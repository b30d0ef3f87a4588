"""``rmkit convert --layout`` between the checkpoint layouts of vision-language RMs: the VLM with
``value_head.safetensors``, align-anything's ``score_head.weight`` among the VLM's weights, and transformers'
Gemma3ForSequenceClassification. Each conversion scores as its source (1e-5); a head with a bias is refused
the bias-free layouts, and a family without a sequence-classification class that layout, in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from vision_models import make_vlm, mixed_examples

from rmkit.cli import main


def question(text: str, images: int = 1) -> list[dict]:
    return [{"role": "user", "content": [*[{"type": "image"}] * images, {"type": "text", "text": text}]}]


def value_head_rm(tmp_path_factory, family: str, bias: float) -> Path:
    """A tiny VLM of ``family`` with a seeded value head whose bias is ``bias``, saved by rmkit."""
    from rmkit.vlm import VisionRewardModel

    rm = VisionRewardModel.from_pretrained(make_vlm(tmp_path_factory.mktemp(family), family))
    torch.manual_seed(4)
    with torch.no_grad():
        rm.head.weight.normal_()
        rm.head.bias.fill_(bias)
    out = tmp_path_factory.mktemp(f"{family}_rm")
    rm.save_pretrained(out)
    return out


def scores(path: Path) -> list[float]:
    """End scores of the mixed rows (images of two sizes, two images, a text row) by the checkpoint at ``path``."""
    from rmkit import kinds

    kind, rm = kinds.load(path)
    assert kind.name == "vision"
    rows = [r for row in rm.example_tokenizer().tokenize(mixed_examples(question)) for r in row]
    return rm.score_rows(rows, batch_tokens=64)


def convert(source: Path, out: Path, layout: str) -> int:
    return main(["convert", str(source), str(out), "--layout", layout])


def test_value_head_to_align_anything_and_back_scores_the_same(tmp_path_factory, tmp_path):
    source = value_head_rm(tmp_path_factory, "qwen2_vl", 0.0)
    expected = scores(source)
    aa, back = tmp_path / "aa", tmp_path / "back"
    assert convert(source, aa, "align-anything") == 0
    weights = load_file(str(aa / "model.safetensors"))
    assert weights["score_head.weight"].shape == (1, 32) and not (aa / "value_head.safetensors").exists()
    assert json.loads((aa / "config.json").read_text())["architectures"] == [
        "Qwen2VLForConditionalGeneration"
    ]
    assert scores(aa) == pytest.approx(expected, abs=1e-5)
    assert convert(aa, back, "value-head") == 0
    head = load_file(str(back / "value_head.safetensors"))
    assert head["v_head.summary.bias"].tolist() == [0.0] and "score_head.weight" not in load_file(
        str(back / "model.safetensors")
    )
    assert scores(back) == pytest.approx(expected, abs=1e-5)


def test_gemma3_value_head_to_sequence_classification_and_back_scores_the_same(tmp_path_factory, tmp_path):
    from transformers import Gemma3ForConditionalGeneration, Gemma3ForSequenceClassification

    source = value_head_rm(tmp_path_factory, "gemma3", 0.0)
    expected = scores(source)
    cls, back = tmp_path / "cls", tmp_path / "back"
    assert convert(source, cls, "sequence-classification") == 0
    model, info = Gemma3ForSequenceClassification.from_pretrained(cls, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and model.config.num_labels == 1
    assert not (cls / "value_head.safetensors").exists()
    assert scores(cls) == pytest.approx(expected, abs=1e-5)
    assert convert(cls, back, "auto") == 0  # the value-head layout: the VLM itself, its LM head tied
    vlm, info = Gemma3ForConditionalGeneration.from_pretrained(back, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert scores(back) == pytest.approx(expected, abs=1e-5)


def test_inexact_conversions_are_refused_in_one_line(tmp_path_factory, tmp_path, capsys):
    biased = value_head_rm(tmp_path_factory, "qwen2_vl", 0.25)
    capsys.readouterr()
    assert convert(biased, tmp_path / "a", "align-anything") == 2
    err = capsys.readouterr().err.strip()
    assert "its value head has a bias (v_head.summary.bias = 0.25)" in err and len(err.splitlines()) == 1
    assert convert(biased, tmp_path / "b", "sequence-classification") == 2
    assert "v_head.summary.bias" in capsys.readouterr().err
    unbiased = value_head_rm(tmp_path_factory, "qwen2_vl", 0.0)
    assert convert(unbiased, tmp_path / "c", "sequence-classification") == 2
    err = capsys.readouterr().err.strip()
    assert "transformers has no Qwen2VLForSequenceClassification" in err and len(err.splitlines()) == 1


def test_a_text_rm_is_written_as_a_sequence_classifier_only(rm_path, tmp_path, capsys):
    capsys.readouterr()
    assert convert(rm_path, tmp_path / "v", "value-head") == 2
    err = capsys.readouterr().err.strip()
    assert "written as a one-label sequence classifier only" in err and len(err.splitlines()) == 1
    assert convert(rm_path, tmp_path / "s", "sequence-classification") == 0
