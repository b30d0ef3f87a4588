"""One rule and one set of figures in every command: train's eval, rmkit eval and the score summary agree."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from rmkit import evaluate, score, train
from rmkit.training import TrainConfig

GOOD = ["Two plus two is four.", "The capital of France is Paris.", "Paris is a city in Europe."]
BAD = ["I cannot help with that request.", "It could hurt someone.", "The weather is sunny and warm."]


def write_pairs(path: Path, n: int, seed: int, columns) -> Path:
    """Pairs whose extra columns come from ``columns(i)``: a subset, a category, a topic, or none."""
    rng = random.Random(seed)
    rows = [
        {
            "prompt": "Say something true.",
            "chosen": rng.choice(GOOD),
            "rejected": rng.choice(BAD),
            **columns(i),
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("subsets")
    return {
        "train": write_pairs(d / "train.jsonl", 32, 0, lambda i: {}),
        # category only on most rows, subset (which wins) on every fourth, nothing on every seventh
        "mixed": write_pairs(
            d / "mixed.jsonl",
            28,
            1,
            lambda i: (
                {}
                if i % 7 == 0
                else {"category": ["math", "chat"][i % 2], **({"subset": "safety"} if i % 4 == 0 else {})}
            ),
        ),
        "topic": write_pairs(d / "topic.jsonl", 12, 2, lambda i: {"topic": f"t{i % 3}", "subset": "ignored"}),
    }


def trained(llama_path: Path, files: dict[str, Path], out: Path, eval_file: str, **kw) -> dict:
    return train(
        TrainConfig(
            model=str(llama_path), data=str(files["train"]), eval_data=str(files[eval_file]), output_dir=str(out),
            batch_size=8, max_steps=4, learning_rate=3e-3, warmup_ratio=0.0, **kw,
        )
    )  # fmt: skip


@pytest.mark.parametrize("column", [None, "topic"])
def test_train_and_eval_read_the_same_subsets(llama_path, files, tmp_path, column):
    eval_file = "topic" if column else "mixed"
    metrics = trained(llama_path, files, tmp_path / "rm", eval_file, subset_column=column)
    result = evaluate(
        model=str(tmp_path / "rm"), data=str(files[eval_file]), output_dir=str(tmp_path / "eval"),
        subset_column=column, plots=False, bootstrap=0,
    )["results"]["rm"][eval_file]  # fmt: skip
    named = {k: v for k, v in result["subsets"].items() if k != eval_file}  # the rest: the file's name
    expected = {"t0", "t1", "t2"} if column else {"math", "chat", "safety"}
    assert set(metrics["eval"]["subset_accuracy"]) == set(named) == expected
    for name, accuracy in metrics["eval"]["subset_accuracy"].items():
        assert accuracy == pytest.approx(named[name]["accuracy"]), name
    if not column:  # rows with neither column: counted under the file's name by eval, not by train
        assert result["subsets"]["mixed"]["pairs"] == 4
        assert sum(m["pairs"] for m in named.values()) == 24


def test_train_eval_and_score_report_the_same_pair_figures(llama_path, files, tmp_path):
    final = trained(llama_path, files, tmp_path / "rm", "mixed")["eval"]
    data = str(files["mixed"])
    evaluated = evaluate(model=str(tmp_path / "rm"), data=data, output_dir=str(tmp_path / "e"), plots=False)
    figures = evaluated["results"]["rm"]["mixed"]["all"]
    summary = score(model=str(tmp_path / "rm"), input=data, output=str(tmp_path / "scores.jsonl"))
    assert final["pairs"] == figures["pairs"] == summary["rows"] == 28
    assert final["accuracy"] == pytest.approx(figures["accuracy"]) == pytest.approx(summary["chosen_wins"])
    assert final["ties"] * 28 == pytest.approx(figures["ties"])
    assert final["margin"] == pytest.approx(figures["margin_mean"], abs=1e-5)
    for side in ("chosen", "rejected"):
        column = summary["scores"][f"score_{side}"]
        assert final[f"{side}_mean"] == pytest.approx(figures[f"{side}_mean"], abs=1e-5)
        assert figures[f"{side}_mean"] == pytest.approx(column["mean"], abs=1e-5)
        assert final[f"{side}_std"] == pytest.approx(figures[f"{side}_std"], abs=1e-5)
        assert figures[f"{side}_std"] == pytest.approx(column["std"], abs=1e-5)
