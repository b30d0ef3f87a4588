"""Rated data: the two formats, bad ratings, and the pairs each strategy makes from them."""

from __future__ import annotations

import json

import pytest
from conftest import write_jsonl

from rmkit.cli import main
from rmkit.data import Rejects
from rmkit.data.ratings import iter_rated
from rmkit.errors import DataError


def helpsteer(tmp_path):
    rows = [  # prompt A: four responses rated on helpfulness and verbosity; prompt B: one
        {"prompt": "A", "response": "a1", "helpfulness": 4, "verbosity": 1},
        {"prompt": "A", "response": "a2", "helpfulness": 2, "verbosity": 3},
        {"prompt": "B", "response": "b1", "helpfulness": 3, "verbosity": 2},
        {"prompt": "A", "response": "a3", "helpfulness": 2, "verbosity": 0},
        {"prompt": "A", "response": "a4", "helpfulness": 0, "verbosity": 4},
    ]
    return write_jsonl(tmp_path / "hs.jsonl", rows)


def read_pairs(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def run_pairs(data, out, *flags: str) -> list[dict]:
    """``rmkit pairs`` on ``data``; the pairs it wrote."""
    assert main(["pairs", "--input", str(data), "--output", str(out), *flags]) == 0
    return read_pairs(out)


@pytest.mark.parametrize(
    "strategy, expected, ties",
    [
        ("best_vs_rest", [("a1", "a2", 2), ("a1", "a3", 2), ("a1", "a4", 4)], 0),
        ("best_vs_worst", [("a1", "a4", 4)], 0),
        ("all", [("a1", "a2", 2), ("a1", "a3", 2), ("a1", "a4", 4), ("a2", "a4", 2), ("a3", "a4", 2)], 1),
    ],
)
def test_pairs_from_ratings_match_hand_made_expectations(tmp_path, capsys, strategy, expected, ties):
    out = tmp_path / "pairs.jsonl"
    args = ["pairs", "--input", str(helpsteer(tmp_path)), "--output", str(out), "--strategy", strategy]
    assert main([*args, "--attribute", "helpfulness"]) == 0
    got = [(p["chosen"], p["rejected"], p["margin"]) for p in read_pairs(out)]
    assert sorted(got) == sorted(expected)
    printed = capsys.readouterr().out
    assert f"{ties} ties left out" in printed and "1 prompts with one response" in printed
    assert all(p["prompt"] == "A" for p in read_pairs(out))


def test_a_weighted_sum_of_attributes_and_a_tie_for_best(tmp_path, capsys):
    out = tmp_path / "pairs.jsonl"
    base = ["pairs", "--input", str(helpsteer(tmp_path)), "--output", str(out)]
    # helpfulness - verbosity: a1 3, a2 -1, a3 2, a4 -4
    assert main([*base, "--weights", "helpfulness=1,verbosity=-1", "--strategy", "best_vs_worst"]) == 0
    (pair,) = read_pairs(out)
    assert (pair["chosen"], pair["rejected"], pair["margin"]) == ("a1", "a4", 7.0)
    tied = write_jsonl(
        tmp_path / "tied.jsonl", [{"prompt": "Q", "response": r, "helpfulness": 3} for r in "xyz"]
    )
    assert main(["pairs", "--input", str(tied), "--output", str(out), "--attribute", "helpfulness"]) == 0
    assert read_pairs(out) == [] and "2 ties left out" in capsys.readouterr().out
    firsts = set()
    for seed in range(6):  # a tie for best is broken by the seed, the same way each time
        rows = [{"prompt": "Q", "response": r, "helpfulness": v} for r, v in (("x", 3), ("y", 3), ("z", 1))]
        data = write_jsonl(tmp_path / "t2.jsonl", rows)
        runs = [run_pairs(data, out, "--seed", str(seed), "--strategy", "best_vs_worst") for _ in range(2)]
        assert runs[0] == runs[1]
        firsts.add(runs[0][0]["chosen"])
    assert firsts == {"x", "y"}


def test_ultrafeedback_completions_are_one_group_each(tmp_path):
    def completion(text, overall, honesty):
        return {"response": text, "overall_score": overall, "annotations": {"honesty": {"Rating": honesty}}}

    row = {
        "instruction": "Say hi",
        "completions": [completion("hi", 7.5, "5"), completion("yo", 6, "3"), completion("no", 2, "1")],
    }
    data = write_jsonl(tmp_path / "uf.jsonl", [row, {**row, "instruction": "Again"}])
    (ex, _) = list(iter_rated(data))
    assert ex.responses == ["hi", "yo", "no"] and ex.ratings[0] == {"overall_score": 7.5, "honesty": 5.0}
    got = run_pairs(data, tmp_path / "p.jsonl", "--attribute", "honesty", "--strategy", "best_vs_worst")
    assert [(p["prompt"], p["chosen"], p["rejected"], p["margin"]) for p in got] == [
        ("Say hi", "hi", "no", 4.0),
        ("Again", "hi", "no", 4.0),
    ]


@pytest.mark.parametrize(
    "row, field, reason",
    [
        ({"prompt": "q", "response": "r", "helpfulness": "lots"}, "helpfulness", "expected a number"),
        ({"prompt": "q", "response": "r", "helpfulness": float("nan")}, "helpfulness", "finite"),
        ({"prompt": "q", "response": "r", "helpfulness": 7}, "helpfulness", "outside the rating range 0..4"),
        (
            {
                "instruction": "q",
                "completions": [{"response": "r", "annotations": {"honesty": {"Rating": "N/A"}}}],
            },
            "completions[0].annotations.honesty.Rating",
            "expected a number",
        ),
    ],
)
def test_bad_ratings_are_named_or_skipped_and_counted(tmp_path, row, field, reason):
    path = tmp_path / "bad.jsonl"
    good = {"prompt": "q", "response": "ok", "helpfulness": 2}
    if "completions" in row:  # a file holds one format
        good = {
            "instruction": "q",
            "completions": [{"response": "ok", "annotations": {"honesty": {"Rating": "4"}}}],
        }
    path.write_text(json.dumps(row) + "\n" + json.dumps(good) + "\n")
    with pytest.raises(DataError) as err:
        list(iter_rated(path, rating_range=(0, 4)))
    assert err.value.row == 1 and err.value.field == field and reason in str(err.value)
    with Rejects(tmp_path / "rejects.jsonl") as rejects:
        kept = list(iter_rated(path, rating_range=(0, 4), rejects=rejects))
    assert len(kept) == 1 and rejects.count == 1


def test_the_pairs_file_is_preference_data_rmkit_train_reads_with_its_margins(tmp_path):
    from rmkit.data import iter_examples

    out = tmp_path / "pairs.jsonl"
    assert (
        main(
            ["pairs", "--input", str(helpsteer(tmp_path)), "--output", str(out), "--attribute", "helpfulness"]
        )
        == 0
    )
    examples = list(iter_examples(out, kind="pairs"))
    assert [ex.margin for ex in examples] == [2.0, 2.0, 4.0]
    assert [ex.responses for ex in examples] == [["a1", "a2"], ["a1", "a3"], ["a1", "a4"]]


# --- multi-attribute reward models ------------------------------------------------------------------------

NAMES = ["helpfulness", "correctness", "verbosity"]


@pytest.fixture(scope="module")
def attribute_rm(llama_path, tmp_path_factory):
    """A tiny Llama with a 3-output head, attribute names in id2label, saved by rmkit."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rmkit import RewardModel

    torch.manual_seed(2)
    model = AutoModelForSequenceClassification.from_pretrained(
        llama_path,
        num_labels=3,
        id2label=dict(enumerate(NAMES)),
        label2id={n: i for i, n in enumerate(NAMES)},
    )
    out = tmp_path_factory.mktemp("attributes")
    RewardModel(model, AutoTokenizer.from_pretrained(llama_path)).save_pretrained(out)
    return out


TEXTS = ["What is two plus two? Two plus two is four.", "The capital of France is Paris."]


def plain_outputs(path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    plain = AutoModelForSequenceClassification.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    with torch.no_grad():
        return [plain(**tok(t, return_tensors="pt")).logits[0].tolist() for t in TEXTS]


def test_a_k_attribute_rm_loads_in_plain_transformers_with_the_same_outputs_and_scores_their_weighted_sum(
    attribute_rm,
):
    from transformers import AutoConfig

    from rmkit import RewardModel
    from rmkit.inference import score_sequences

    assert AutoConfig.from_pretrained(attribute_rm).num_labels == 3
    outputs = plain_outputs(attribute_rm)
    rm = RewardModel.from_pretrained(attribute_rm)
    assert rm.attributes == NAMES
    ids = [rm.tokenizer(t)["input_ids"] for t in TEXTS]
    scored = score_sequences(rm, ids, attributes=True)  # each: its score, then its K outputs
    assert [s[1:] for s in scored] == [pytest.approx(o, abs=1e-5) for o in outputs]
    assert [s[0] for s in scored] == pytest.approx([sum(o) / 3 for o in outputs], abs=1e-5)
    assert rm.score(texts=TEXTS) == pytest.approx(
        [sum(o) / 3 for o in outputs], abs=1e-5
    )  # default: the mean
    weighted = RewardModel.from_pretrained(attribute_rm, weights={"helpfulness": 1, "verbosity": -0.2})
    assert weighted.score(texts=TEXTS) == pytest.approx([o[0] - 0.2 * o[2] for o in outputs], abs=1e-5)
    with pytest.raises(Exception, match="honesty, which this model does not score"):
        RewardModel.from_pretrained(attribute_rm, weights={"honesty": 1})


def test_score_writes_every_attribute_and_the_combined_score(attribute_rm, tmp_path):
    data = write_jsonl(tmp_path / "texts.jsonl", [{"text": t} for t in TEXTS])
    out = tmp_path / "scored.jsonl"
    args = ["score", "--model", str(attribute_rm), "--input", str(data), "--output", str(out)]
    assert main([*args, "--weights", "helpfulness=1,correctness=1"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    outputs = plain_outputs(attribute_rm)
    for row, o in zip(rows, outputs, strict=True):
        assert [row["attribute_scores"][n] for n in NAMES] == pytest.approx(o, abs=1e-5)
        assert row["score"] == pytest.approx(o[0] + o[1], abs=1e-5)


# --- rmkit train on rated responses ---------------------------------------------------------------------

GOOD = ["two plus two is four", "the capital of France is Paris", "five thousand metres"]
BAD = ["I cannot help", "the weather is sunny", "it could hurt someone"]


def rated_rows(n: int, seed: int) -> list[dict]:
    """A learnable rating: helpfulness counts the good sentences, verbosity the sentences."""
    import random

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        good, bad = rng.randint(0, 3), rng.randint(0, 2)
        parts = [rng.choice(GOOD) for _ in range(good)] + [rng.choice(BAD) for _ in range(bad)]
        rng.shuffle(parts)
        text = ". ".join(parts) or "ok"
        rows.append(
            {"prompt": "Tell me a fact.", "response": text, "helpfulness": good, "verbosity": good + bad}
        )
    return rows


def test_rmkit_trains_a_two_attribute_regression_rm_plain_transformers_loads(llama_path, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rmkit import RewardModel, train
    from rmkit.training import TrainConfig

    data = write_jsonl(tmp_path / "train.jsonl", rated_rows(96, 0))
    held = write_jsonl(tmp_path / "eval.jsonl", rated_rows(32, 1))
    out = tmp_path / "out"
    config = TrainConfig(
        model=str(llama_path), data=str(data), eval_data=str(held), output_dir=str(out), batch_size=8,
        learning_rate=3e-3, warmup_ratio=0.0, epochs=4, logging_steps=4,
    )  # fmt: skip
    train(config)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train"]["responses"] == 96
    assert set(metrics["eval"]["attributes"]) == {"helpfulness", "verbosity"}
    assert metrics["eval"]["attributes"]["helpfulness"]["spearman"] > 0.5  # it learnt something checkable
    lines = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in lines if "loss" in x]
    assert losses[-1] < losses[0]

    plain, info = AutoModelForSequenceClassification.from_pretrained(out, output_loading_info=True)
    assert plain.config.num_labels == 2 and plain.config.id2label == {0: "helpfulness", 1: "verbosity"}
    assert not info["missing_keys"] and not info["unexpected_keys"]
    rm = RewardModel.from_pretrained(out)
    text = "User: Tell me a fact.\n\nAssistant: two plus two is four"
    with torch.no_grad():
        logits = plain.eval()(**AutoTokenizer.from_pretrained(out)(text, return_tensors="pt")).logits[0]
    from rmkit.inference import score_sequences

    ids = rm.tokenizer(text)["input_ids"]
    assert score_sequences(rm, [ids], attributes=True)[0][1:] == pytest.approx(logits.tolist(), abs=1e-5)


def test_eval_on_rated_data_reports_correlations_mae_and_implied_pair_accuracy(attribute_rm, tmp_path):
    from rmkit import RewardModel
    from rmkit.data import Example
    from rmkit.data.ratings import iter_rated
    from rmkit.inference import score_examples
    from rmkit.metrics.graded import rating_metrics

    rows = rated_rows(18, 3)
    data = write_jsonl(tmp_path / "rated.jsonl", rows)
    out = tmp_path / "eval"
    assert (
        main(
            [
                "eval",
                "--model",
                str(attribute_rm),
                "--data",
                str(data),
                "--output-dir",
                str(out),
                "--bootstrap",
                "50",
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    (per_attribute,) = [per["rated"] for per in metrics["results"].values()]
    rm = RewardModel.from_pretrained(attribute_rm)

    examples = [Example(ex.row, ex.prompt, ex.responses, False) for ex in iter_rated(data)]
    outputs = [s[0][1:] for _, s in score_examples(rm, examples, rm.example_tokenizer(), attributes=True)]
    helpfulness = rating_metrics(
        [o[0] for o in outputs], [r["helpfulness"] for r in rows], [0] * 18, regression=True, bootstrap=50
    )
    assert per_attribute["helpfulness"]["spearman"] == pytest.approx(helpfulness["spearman"])
    assert per_attribute["helpfulness"]["mae"] == pytest.approx(
        helpfulness["mae"]
    )  # its own output: a regression
    assert per_attribute["helpfulness"]["pair_accuracy"] == pytest.approx(helpfulness["pair_accuracy"])
    assert list((out / "plots").glob("ratings_*.png")) and "pair_accuracy" in (out / "report.md").read_text()


def test_standardised_ratings_train_in_z_units_and_score_on_the_ratings_scale(llama_path, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rmkit import RewardModel, train
    from rmkit.inference import score_sequences
    from rmkit.training import TrainConfig

    rows = rated_rows(48, 4)
    data = write_jsonl(tmp_path / "train.jsonl", rows)
    out = tmp_path / "out"
    train(
        TrainConfig(
            model=str(llama_path),
            data=str(data),
            output_dir=str(out),
            batch_size=8,
            max_steps=3,
            standardize_ratings=True,
        )
    )
    meta = json.loads((out / "config.json").read_text())["rmkit"]
    helpfulness = [r["helpfulness"] for r in rows]
    mean = sum(helpfulness) / len(helpfulness)
    assert meta["rating_mean"][0] == pytest.approx(mean, rel=1e-5)
    rm = RewardModel.from_pretrained(out)
    text = "User: Tell me a fact.\n\nAssistant: two plus two is four"
    with torch.no_grad():  # plain transformers gives z-units; rmkit maps them back with the stored scale
        z = (
            AutoModelForSequenceClassification.from_pretrained(out)
            .eval()(**AutoTokenizer.from_pretrained(out)(text, return_tensors="pt"))
            .logits[0]
        )
    expected = [float(v) * s + m for v, s, m in zip(z, meta["rating_std"], meta["rating_mean"], strict=True)]
    assert score_sequences(rm, [rm.tokenizer(text)["input_ids"]], attributes=True)[0][1:] == pytest.approx(
        expected, abs=1e-4
    )


def test_pairs_by_weights_read_the_weighted_ratings_and_a_missing_one_is_named(tmp_path, capsys):
    rows = [
        {"prompt": "Q", "response": r, "safety": s, "helpfulness": h}
        for r, s, h in (("x", 1, 3), ("y", 4, 1))
    ]
    data = write_jsonl(tmp_path / "custom.jsonl", rows)
    got = run_pairs(data, tmp_path / "p.jsonl", "--weights", "safety=1", "--strategy", "best_vs_worst")
    assert [(p["chosen"], p["rejected"], p["margin"]) for p in got] == [
        ("y", "x", 3.0)
    ]  # not a HelpSteer2 name
    args = [
        "pairs",
        "--input",
        str(data),
        "--output",
        str(tmp_path / "q.jsonl"),
        "--attributes",
        "helpfulness",
    ]
    assert main([*args, "--weights", "safety=1"]) == 2
    assert "no rating safety" in capsys.readouterr().err


def test_rank_eval_and_the_server_use_a_multi_attribute_rms_combined_score(attribute_rm, tmp_path):
    import urllib.request

    from rmkit import RewardModel
    from rmkit.serving import ServeConfig, running
    from rmkit.serving.app import create_app, load

    rm = RewardModel.from_pretrained(attribute_rm, weights={"helpfulness": 1, "verbosity": -0.5})
    prompt, responses = "Tell me a fact.", ["two plus two is four", "I cannot help", "the weather is sunny"]
    combined = rm.score([prompt] * 3, responses)
    weights = ["--weights", "helpfulness=1,verbosity=-0.5"]
    data = write_jsonl(tmp_path / "bon.jsonl", [{"prompt": prompt, "responses": responses}])
    out = tmp_path / "ranked.jsonl"
    assert (
        main(["rank", "--model", str(attribute_rm), "--input", str(data), "--output", str(out), *weights])
        == 0
    )
    (row,) = read_pairs(out)
    assert row["scores"] == pytest.approx(combined, abs=1e-5) and len(row["attribute_scores"]) == 3

    pairs = write_jsonl(
        tmp_path / "pairs.jsonl", [{"prompt": prompt, "chosen": responses[0], "rejected": responses[1]}]
    )
    ev = tmp_path / "ev"
    assert (
        main(
            [
                "eval",
                "--model",
                str(attribute_rm),
                "--data",
                str(pairs),
                "--output-dir",
                str(ev),
                "--no-plots",
                *weights,
            ]
        )
        == 0
    )
    line = json.loads((ev / "scores.jsonl").read_text())
    assert (line["chosen_score"], line["rejected_score"]) == pytest.approx(tuple(combined[:2]), abs=1e-5)

    config = ServeConfig(model=str(attribute_rm), weights={"helpfulness": "1", "verbosity": "-0.5"})
    with running(create_app(load(config), config)) as base:
        body = json.dumps({"prompts": [prompt] * 3, "responses": responses}).encode()
        request = urllib.request.Request(
            f"{base}/score", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request) as reply:
            assert json.loads(reply.read())["scores"] == pytest.approx(combined, abs=1e-5)


def test_rated_training_packed_equals_training_padded(llama_path, tmp_path):
    from rmkit import train
    from rmkit.training import TrainConfig

    data = write_jsonl(tmp_path / "train.jsonl", rated_rows(32, 0))
    held = write_jsonl(tmp_path / "eval.jsonl", rated_rows(8, 1))
    logs = {}
    for packing in ("off", "on"):
        out = tmp_path / packing
        train(
            TrainConfig(
                model=str(llama_path), data=str(data), eval_data=str(held), output_dir=str(out),
                batch_size=8, micro_batch_size=3, max_steps=3, logging_steps=1, learning_rate=3e-3,
                packing=packing,
            )
        )  # fmt: skip
        logs[packing] = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
        assert json.loads((out / "metrics.json").read_text())["train"]["packed"] == (packing == "on")
    steps = [(r["loss"], r["grad_norm"]) for r in logs["on"] if "loss" in r]
    assert len(steps) == 3
    for (a, ga), (b, gb) in zip(
        [(r["loss"], r["grad_norm"]) for r in logs["off"] if "loss" in r], steps, strict=True
    ):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-6) and gb == pytest.approx(ga, rel=1e-4)
