"""rmkit eval: metrics equal hand-computed values, and a run writes metrics, scores, plots and a report."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import write_jsonl
from PIL import Image

from rmkit import RewardModel, evaluate
from rmkit.cli import main
from rmkit.metrics import PairStats, accuracy_interval, compare_pairs, pair_metrics, pearson, ranks, spearman

# Five hand-made pairs: margins 1, 0, -1, 3, 0 (two right, two ties, one wrong).
CHOSEN = [2.0, 1.0, 0.5, 3.0, 1.0]
REJECTED = [1.0, 1.0, 1.5, 0.0, 1.0]
CHOSEN_LEN = [10, 20, 30, 40, 50]
REJECTED_LEN = [20, 20, 10, 10, 60]  # the longer answer: rejected, equal, chosen, chosen, rejected


def test_pair_metrics_equal_hand_computed_values():
    m = pair_metrics(CHOSEN, REJECTED, CHOSEN_LEN, REJECTED_LEN, bootstrap=500, seed=1)
    assert m["pairs"] == 5 and m["ties"] == 2
    assert m["accuracy"] == pytest.approx(2 / 5)  # ties count as wrong
    assert m["accuracy_ties_half"] == pytest.approx(3 / 5)  # ties count one half
    assert m["margin_mean"] == pytest.approx(0.6)
    assert m["margin_std"] == pytest.approx(math.sqrt(9.2 / 5))
    assert m["chosen_mean"] == pytest.approx(1.5) and m["chosen_std"] == pytest.approx(math.sqrt(0.8))
    assert m["rejected_mean"] == pytest.approx(0.9) and m["rejected_std"] == pytest.approx(math.sqrt(0.24))
    # longer answer chosen in pairs 3 and 4, equal lengths in pair 2: (2 + 0.5) / 5
    assert m["longer_wins_accuracy"] == pytest.approx(0.5)
    # the RM scores the longer answer higher in pair 4 only; pairs 2 and 5 are score ties: (1 + 2 * 0.5) / 5
    assert m["rm_prefers_longer"] == pytest.approx(0.4)
    scores, lengths = CHOSEN + REJECTED, CHOSEN_LEN + REJECTED_LEN
    assert m["length_pearson"] == pytest.approx(pearson(scores, lengths))
    assert m["length_spearman"] == pytest.approx(spearman(scores, lengths))
    lo, hi = m["accuracy_ci"]
    assert lo <= m["accuracy"] <= hi and lo < hi
    json.dumps(m)  # plain JSON types only


def test_pair_metrics_agree_with_the_training_metrics():
    rng = np.random.default_rng(0)
    chosen, rejected = rng.normal(size=50).round(1), rng.normal(size=50).round(1)  # rounding makes ties
    ours = pair_metrics(chosen, rejected, np.ones(50), np.ones(50))
    theirs = PairStats.of(torch.from_numpy(chosen), torch.from_numpy(rejected)).training_metrics()
    assert ours["ties"] > 0 and ours["ties"] / 50 == pytest.approx(theirs["ties"])
    assert ours["accuracy"] == pytest.approx(theirs["accuracy"])
    assert ours["margin_mean"] == pytest.approx(theirs["margin"])
    for key in ("chosen_mean", "chosen_std", "rejected_mean", "rejected_std"):
        assert ours[key] == pytest.approx(theirs[key])


def test_correlations_by_hand_and_undefined_cases():
    assert pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(15 / math.sqrt(228))
    assert list(ranks([10, 20, 20, 30])) == [1, 2.5, 2.5, 4]
    assert spearman([10, 20, 20, 30], [1, 3, 2, 4]) == pytest.approx(math.sqrt(0.9))
    assert spearman([1, 2, 3, 4], [1, 8, 27, 64]) == pytest.approx(1.0)
    assert pearson([1, 1, 1], [1, 2, 3]) is None and pearson([1], [2]) is None
    empty = pair_metrics([], [], [], [])
    assert empty["pairs"] == 0 and empty["accuracy"] is None and empty["accuracy_ci"] is None


def test_correlations_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 8, 60).astype(float), rng.normal(size=60)  # many ties in x
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0])
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0])


def test_bootstrap_interval_is_seeded_and_has_the_expected_width():
    assert accuracy_interval(700, 1000, seed=3) == accuracy_interval(700, 1000, seed=3)
    assert accuracy_interval(700, 1000, seed=3) != accuracy_interval(700, 1000, seed=4)
    lo, hi = accuracy_interval(700, 1000, samples=4000)
    assert lo < 0.7 < hi
    assert (hi - lo) / 2 == pytest.approx(1.96 * math.sqrt(0.7 * 0.3 / 1000), rel=0.15)
    assert accuracy_interval(5, 5) == [1.0, 1.0]


def test_compare_pairs_by_hand():
    # A right on pairs 1 and 3, B right on pairs 1, 2 and 4; same sign on pair 1 only (a tie has sign 0)
    c = compare_pairs([1, -1, 2, 0], [1, 1, -1, 2], bootstrap=500, seed=0)
    assert c["pairs"] == 4 and c["accuracy_difference"] == pytest.approx(0.25)
    assert c["same_sign"] == pytest.approx(0.25)
    lo, hi = c["difference_ci"]
    assert lo <= 0.25 <= hi and lo < hi
    assert compare_pairs([1, -1, 2, 0], [1, 1, -1, 2], bootstrap=500, seed=0) == c
    same = compare_pairs([1.0, -2.0, 3.0], [1.0, -2.0, 3.0])
    assert same["accuracy_difference"] == 0 and same["difference_ci"] == [0.0, 0.0]
    assert same["margin_pearson"] == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------------------
# Runs with tiny real models


@pytest.fixture(scope="module")
def rm_dirs(tmp_path_factory):
    """Two different tiny RMs saved by rmkit, in directories both named ``rm`` (their labels must differ)."""
    from conftest import make_llama

    root = tmp_path_factory.mktemp("eval_rms")
    dirs = []
    for seed, parent in ((0, "a"), (1, "b")):
        backbone = make_llama(root / f"backbone{seed}", seed=seed)
        torch.manual_seed(seed)
        rm = RewardModel.from_pretrained(backbone)
        rm.save_pretrained(root / parent / "rm")
        dirs.append(root / parent / "rm")
    return dirs


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_png(path):
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        width, height = im.size
        colours = len(set(im.convert("RGB").resize((64, 64)).getdata()))
    assert width >= 500 and height >= 400 and colours > 20, (path, im.size, colours)


def test_eval_on_pku_sample_writes_every_file(shared_data, rm_dirs, tmp_path, capsys):
    data = shared_data / "pku_saferlhf_sample.json"
    metrics = evaluate(model=str(rm_dirs[0]), data=str(data), output_dir=str(tmp_path), bootstrap=200)
    out = capsys.readouterr().out
    assert "| model | data" in out and "| rm    | pku_saferlhf_sample | all" in out

    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    m = metrics["results"]["rm"]["pku_saferlhf_sample"]["all"]
    assert m["pairs"] == 32 and metrics["length_unit"] == "characters"

    lines = read_jsonl(tmp_path / "scores.jsonl")
    assert [x["row"] for x in lines] == list(range(1, 33))
    assert all(x["margin"] == pytest.approx(x["chosen_score"] - x["rejected_score"]) for x in lines)
    assert m["accuracy"] == pytest.approx(np.mean([x["margin"] > 0 for x in lines]))
    assert m["chosen_mean"] == pytest.approx(np.mean([x["chosen_score"] for x in lines]))
    # the chosen answer of row 1 is response_0 (better_response_id 0), scored as RewardModel.score scores it
    row1 = json.loads(data.read_text())[0]
    rm = RewardModel.from_pretrained(rm_dirs[0])
    expected = rm.score(prompts=[row1["prompt"]], responses=[row1["response_0"]])[0]
    assert lines[0]["chosen_score"] == pytest.approx(expected, abs=1e-5)
    assert lines[0]["chosen_length"] == len(row1["response_0"])

    report = (tmp_path / "report.md").read_text()
    pngs = sorted((tmp_path / "plots").glob("*.png"))
    assert [p.name for p in pngs] == ["length_rm.png", "margins_rm.png", "scores_rm.png"]
    for png in pngs:
        assert f"](plots/{png.name})" in report
        assert_png(png)
    assert "## Accuracy" in report and "| rm    | pku_saferlhf_sample | all" in report


PAIRS = [
    ("What is two plus two?", "Two plus two is four.", "Five."),
    ("The capital of France?", "The capital of France is Paris.", "Europe."),
    ("Say hello.", "Hello there! How can I help you today?", "No."),
]


def test_two_models_per_subset_from_the_cli(rm_dirs, tmp_path):
    rows = [
        {"id": i, "subset": s, "prompt": p, "chosen": c, "rejected": r}
        for i, (s, (p, c, r)) in enumerate((s, pair) for s in ("math", "chat", "safety") for pair in PAIRS)
    ]
    with_subsets = write_jsonl(tmp_path / "mixed.jsonl", rows)
    plain = write_jsonl(
        tmp_path / "plain.jsonl", [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS]
    )
    out = tmp_path / "out"
    argv = ["eval", "--model", str(rm_dirs[0]), "--model", str(rm_dirs[1]), "--data", str(with_subsets)]
    assert main([*argv, str(plain), "--output-dir", str(out), "--bootstrap", "100"]) == 0

    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["models"]) == ["rm", "rm-2"]
    lines = read_jsonl(out / "scores.jsonl")
    assert [(x["data"], x["row"]) for x in lines] == [("mixed", i) for i in range(1, 10)] + [
        ("plain", i) for i in range(1, 4)
    ]
    for label in ("rm", "rm-2"):
        assert {f"chosen_score_{label}", f"rejected_score_{label}", f"margin_{label}"} <= set(lines[0])
        by_data = metrics["results"][label]
        assert list(by_data["mixed"]["subsets"]) == ["math", "chat", "safety"]
        for subset, m in by_data["mixed"]["subsets"].items():
            margins = [x[f"margin_{label}"] for x in lines if x["subset"] == subset]
            assert m["pairs"] == 3 and m["accuracy"] == pytest.approx(np.mean([v > 0 for v in margins]))
        assert by_data["mixed"]["all"]["pairs"] == 9
        assert list(by_data["plain"]["subsets"]) == ["plain"]  # no subset column: the file name
    # two different models give different scores on the same pairs
    assert [x["margin_rm"] for x in lines] != [x["margin_rm-2"] for x in lines]

    compared = metrics["comparisons"]["rm-2 vs rm"]
    assert compared["mixed"]["pairs"] == 9 and compared["plain"]["pairs"] == 3
    right = [(x["margin_rm-2"] > 0) - (x["margin_rm"] > 0) for x in lines if x["data"] == "mixed"]
    assert compared["mixed"]["accuracy_difference"] == pytest.approx(np.mean(right))

    report = (out / "report.md").read_text()
    assert "](plots/compare_rm_vs_rm-2.png)" in report and "## Comparison" in report
    assert "| rm-2  | mixed | safety |" in report
    for png in (out / "plots").glob("*.png"):
        assert_png(png)
    assert len(list((out / "plots").glob("*.png"))) == 7


def test_bad_rows_stop_with_one_line_or_are_skipped(rm_dirs, tmp_path, capsys):
    rows = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS]
    rows.insert(1, {"prompt": "p", "chosen": "a", "rejected": 5})
    data = write_jsonl(tmp_path / "bad.jsonl", rows)
    argv = ["eval", "--model", str(rm_dirs[0]), "--data", str(data), "--output-dir", str(tmp_path / "out")]
    assert main([*argv, "--no-plots"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"rmkit eval: error: {data}, row 2, field 'rejected': expected a string")
    assert "Traceback" not in "\n".join(err)

    rejects = tmp_path / "rejects.jsonl"
    assert main([*argv, "--no-plots", "--on-error", "skip", "--rejects", str(rejects)]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["data"]["bad"]["skipped"] == 1 and metrics["results"]["rm"]["bad"]["all"]["pairs"] == 3
    assert [x["row"] for x in read_jsonl(tmp_path / "out" / "scores.jsonl")] == [1, 3, 4]
    assert len(read_jsonl(rejects)) == 1


def test_dropped_pairs_are_left_out_for_every_model(rm_dirs, tmp_path):
    long = "The capital of France is Paris. " * 20
    rows = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS] + [
        {"prompt": "Tell me more.", "chosen": long, "rejected": "No."}
    ]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    metrics = evaluate(
        model=[str(d) for d in rm_dirs],
        data=[str(data)],
        output_dir=str(tmp_path / "out"),
        max_length=48,
        truncation="drop",
        plots=False,
    )
    assert metrics["data"]["pairs"]["dropped"] == 1
    assert all(metrics["results"][m]["pairs"]["all"]["pairs"] == 3 for m in ("rm", "rm-2"))
    last = read_jsonl(tmp_path / "out" / "scores.jsonl")[-1]
    assert last["row"] == 4 and last["margin_rm"] is None and last["chosen_score_rm-2"] is None
