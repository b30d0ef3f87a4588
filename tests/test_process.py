"""Process reward models: step data formats, one forward pass for every step, and the published shapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY, kill_when_done, make_tokenizer, write_jsonl
from transformers import (
    AutoModelForTokenClassification,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForTokenClassification,
)

from rmkit.data.steps import StepExample, iter_step_examples
from rmkit.errors import DataError, RMKitError
from rmkit.process import ProcessRewardModel, aggregate

PROMPT = "What is two plus two?"
STEPS = ["Two plus two", "is four.", "So the answer is four."]


def tiny(path: Path, cls, num_labels: int | None = None, seed: int = 0) -> Path:
    tok = make_tokenizer(path)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok), **TINY, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id
    )
    if num_labels:
        config.num_labels = num_labels
    cls(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> Path:
    return tiny(tmp_path_factory.mktemp("prm_lm"), LlamaForCausalLM)


def test_one_forward_pass_gives_each_step_the_score_of_its_prefix_alone(backbone):
    torch.manual_seed(1)
    prm = ProcessRewardModel.from_pretrained(backbone)  # a fresh one-label token head
    prompt = [{"role": "user", "content": PROMPT}]
    ids, positions = prm.encode(prompt, STEPS)
    assert len(positions) == len(STEPS) and positions == sorted(positions)
    together = prm.step_scores(prompt, STEPS)
    alone = []
    with torch.no_grad():
        for p in positions:  # each prefix up to the step's read position, scored as a sequence of its own
            prefix = torch.tensor([ids[: p + 1]])
            alone.append(float(prm(prefix, torch.ones_like(prefix)).scores[0, -1]))
    assert together == pytest.approx(alone, abs=1e-5)
    assert all(0.0 < s < 1.0 for s in together)


def test_batched_solutions_score_as_each_alone(backbone):
    prm = ProcessRewardModel.from_pretrained(backbone)
    solutions = [STEPS, STEPS[:1], ["Four.", "Done because two and two make four, as counted."]]
    batched = prm.score_solutions([PROMPT] * 3, solutions)
    assert [len(s) for s in batched] == [3, 1, 2]
    for steps, scores in zip(solutions, batched, strict=True):
        assert scores == pytest.approx(prm.step_scores(PROMPT, steps), abs=1e-5)


def test_a_two_class_token_head_scores_the_good_class_probability_by_hand(tmp_path):
    path = tiny(tmp_path, LlamaForTokenClassification, num_labels=2, seed=2)
    prm = ProcessRewardModel.from_pretrained(path, separator="\n")
    ids, positions = prm.encode([{"role": "user", "content": PROMPT}], STEPS)
    plain = AutoModelForTokenClassification.from_pretrained(path).eval()
    with torch.no_grad():
        logits = plain(torch.tensor([ids])).logits[0]
    expected = [float(logits[p].softmax(-1)[1]) for p in positions]
    assert prm.step_scores(PROMPT, STEPS) == pytest.approx(expected, abs=1e-5)


def test_a_causal_lm_read_by_good_and_bad_token_logits_at_the_step_tag(tmp_path):
    path = tiny(tmp_path, LlamaForCausalLM, seed=3)
    kw = dict(separator=" plus\n", step_tag=" plus", good_token=" is", bad_token=" two")
    prm = ProcessRewardModel.from_pretrained(path, **kw)
    ids, positions = prm.encode([{"role": "user", "content": PROMPT}], STEPS)
    tok = prm.tokenizer
    tag, good, bad = (tok(t, add_special_tokens=False)["input_ids"][0] for t in (" plus", " is", " two"))
    assert [ids[p] for p in positions] == [tag] * 3  # read at the tag, not at the newline after it
    lm = LlamaForCausalLM.from_pretrained(path).eval()
    with torch.no_grad():
        logits = lm(torch.tensor([ids])).logits[0]
    expected = [float(logits[p, [good, bad]].softmax(-1)[0]) for p in positions]
    assert prm.step_scores(PROMPT, STEPS) == pytest.approx(expected, abs=1e-5)


def test_step_settings_are_checked(backbone):
    with pytest.raises(RMKitError, match="both --good-token and --bad-token"):
        ProcessRewardModel.from_pretrained(backbone, good_token="four")
    with pytest.raises(RMKitError, match="must be one token of the separator"):
        ProcessRewardModel.from_pretrained(backbone, separator="\n", step_tag=" plus")


def test_aggregates():
    assert aggregate([0.9, 0.2, 0.8], "min") == 0.2
    assert aggregate([0.9, 0.2, 0.8], "last") == 0.8
    assert aggregate([0.9, 0.2, 0.8], "mean") == pytest.approx(1.9 / 3)
    assert aggregate([0.9, 0.5], "prod") == pytest.approx(0.45)
    assert aggregate([], "min") is None


def test_a_long_solution_loses_its_prompt_head_first_then_whole_last_steps(backbone):
    prm = ProcessRewardModel.from_pretrained(backbone)
    prompt = [{"role": "user", "content": PROMPT}]
    full, positions = prm.encode(prompt, STEPS)
    cut, cut_positions = prm.encode(prompt, STEPS, max_length=len(full) - 2)
    assert len(cut) == len(full) - 2 and cut[0] == full[0] and cut[-20:] == full[-20:]  # BOS and steps kept
    assert [p - 2 for p in positions] == cut_positions
    short, short_positions = prm.encode(prompt, STEPS, max_length=16)
    assert len(short) <= 16 and 0 < len(short_positions) < len(STEPS)  # the last steps did not fit


# --- data formats ---------------------------------------------------------------------------------------


def test_the_three_step_formats_normalise_to_steps_and_labels(tmp_path):
    stepwise = write_jsonl(
        tmp_path / "s.jsonl",
        [{"prompt": PROMPT, "completions": STEPS, "labels": [True, True, False], "subset": "gsm8k"}],
    )
    (ex,) = iter_step_examples(stepwise)
    assert (
        ex.steps == STEPS
        and ex.labels == [True, True, False]
        and ex.first_error == 2
        and ex.subset() == "gsm8k"
    )

    question = "Janet has 3 eggs and buys 2. How many?"
    text = f"{question} Step 1: 3 + 2 = 5. ки\nStep 2: The answer is: 6 ки"
    label = f"{question} Step 1: 3 + 2 = 5. +\nStep 2: The answer is: 6 -"
    (ms,) = iter_step_examples(
        write_jsonl(tmp_path / "m.jsonl", [{"input": text, "label": label, "task": "GSM8K"}])
    )
    assert ms.prompt[0]["content"] == question
    assert ms.steps == ["Step 1: 3 + 2 = 5.", "Step 2: The answer is: 6"] and ms.labels == [True, False]

    prm800k = {
        "question": {"problem": question},
        "label": {
            "steps": [
                {"completions": [{"text": "3 + 2 = 5.", "rating": 1}], "chosen_completion": 0},
                {"completions": [{"text": "Check: yes.", "rating": 0}], "chosen_completion": 0},
                {
                    "completions": [{"text": "So 6.", "rating": -1}, {"text": "So 5.", "rating": 1}],
                    "chosen_completion": None,
                },
                {"completions": [{"text": "never read", "rating": 1}], "chosen_completion": 0},
            ],
            "finish_reason": "found_error",
        },
    }
    path = write_jsonl(tmp_path / "p.jsonl", [prm800k])
    (p,) = iter_step_examples(path)
    assert p.steps == ["3 + 2 = 5.", "Check: yes.", "So 6."] and p.labels == [True, True, False]
    (p,) = iter_step_examples(path, neutral="skip")
    assert p.labels == [True, None, False]
    (p,) = iter_step_examples(path, neutral="bad")
    assert p.labels == [True, False, False] and p.first_error == 1

    bench = [{"id": "a", "generator": "Qwen", "problem": question, "steps": ["s1", "s2", "s3"], "label": 1},
             {"id": "b", "generator": "Qwen", "problem": question, "steps": ["s1", "s2"], "label": -1}]  # fmt: skip
    a, b = iter_step_examples(write_jsonl(tmp_path / "pb.jsonl", bench))
    assert a.labels == [True, False, None] and a.first_error == 1 and a.subset() == "Qwen"
    assert b.labels == [True, True] and b.first_error == -1


@pytest.mark.parametrize(
    "row, field, reason",
    [
        ({"prompt": "q", "completions": ["a", "b"], "labels": [True]}, "labels", "1 labels for 2 steps"),
        ({"prompt": "q", "completions": ["a", " "], "labels": [True, True]}, "completions[1]", "empty step"),
        (
            {"prompt": "q", "completions": ["a"], "labels": ["yes"]},
            "labels[0]",
            "expected true, false or null",
        ),
        ({"input": "q Step 1: a ки", "label": "q Step 1: a ?"}, "label", "marked '?'"),
        (
            {"input": "q Step 1: a ки tail", "label": "q Step 1: a + tail"},
            "input",
            "text after the last step tag",
        ),
        ({"problem": "q", "steps": ["a", "b"], "label": 2}, "label", "-1 to 1, got 2"),
    ],
)
def test_bad_step_rows_are_named(tmp_path, row, field, reason):
    path = write_jsonl(tmp_path / "bad.jsonl", [row])
    with pytest.raises(DataError) as err:
        list(iter_step_examples(path))
    assert err.value.row == 1 and err.value.field == field and reason in str(err.value)


def test_bad_step_rows_can_be_skipped_and_counted(tmp_path):
    from rmkit.data import Rejects

    rows = [{"prompt": "q", "completions": ["a"], "labels": [True]}, {"prompt": "q", "completions": []}] * 2
    with Rejects(tmp_path / "rejects.jsonl") as rejects:
        kept = list(iter_step_examples(write_jsonl(tmp_path / "d.jsonl", rows), rejects=rejects))
    assert len(kept) == 2 and rejects.count == 2
    assert [json.loads(line)["row"] for line in (tmp_path / "rejects.jsonl").read_text().splitlines()] == [
        2,
        4,
    ]
    assert isinstance(kept[0], StepExample)


# --- rmkit score with a PRM -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prm_path(backbone, tmp_path_factory) -> Path:
    torch.manual_seed(4)
    out = tmp_path_factory.mktemp("prm")
    ProcessRewardModel.from_pretrained(backbone).save_pretrained(out)
    return out


def solutions(n: int) -> list[dict]:
    words = ["two", "plus", "is", "four", "the", "answer", "so", "Paris"]
    return [
        {
            "id": i,
            "prompt": PROMPT,
            "completions": [
                " ".join(words[(i + j + k) % 8] for k in range(2 + (i + j) % 5)) for j in range(1 + i % 4)
            ],
            "labels": [j % 3 != 2 for j in range(1 + i % 4)],
        }
        for i in range(n)
    ]


@pytest.mark.parametrize("lm_head", [False, True])
def test_a_bf16_prm_reads_its_steps_through_an_fp32_head(prm_path, tmp_path, lm_head):
    if lm_head:
        path, kw = tiny(tmp_path, LlamaForCausalLM, seed=3), dict(good_token=" is", bad_token=" two")
    else:
        path, kw = prm_path, {}
    fp32 = ProcessRewardModel.from_pretrained(path, dtype="fp32", **kw)
    bf16 = ProcessRewardModel.from_pretrained(path, dtype="bf16", **kw)
    assert bf16.model.model.embed_tokens.weight.dtype == torch.bfloat16
    if not lm_head:
        assert bf16.model.score.weight.dtype == torch.float32
    got, want = bf16.step_scores(PROMPT, STEPS), fp32.step_scores(PROMPT, STEPS)
    assert got == pytest.approx(want, abs=0.02) and got != want


def test_the_saved_prm_is_a_plain_token_classifier_with_its_step_settings(prm_path):
    config = json.loads((prm_path / "config.json").read_text())
    assert config["architectures"] == ["LlamaForTokenClassification"] and len(config["id2label"]) == 1
    assert config["rmkit"]["prm"]["separator"] == "\n"
    plain, info = AutoModelForTokenClassification.from_pretrained(prm_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


def test_score_writes_step_scores_and_the_aggregate_in_input_order(prm_path, tmp_path):
    from rmkit.cli import main

    rows = solutions(13)
    data = write_jsonl(tmp_path / "steps.jsonl", rows)
    out = tmp_path / "scored.jsonl"
    assert (
        main(
            [
                "score",
                "--model",
                str(prm_path),
                "--input",
                str(data),
                "--output",
                str(out),
                "--chunk-rows",
                "4",
                "--aggregate",
                "mean",
            ]
        )
        == 0
    )
    written = [json.loads(line) for line in out.read_text().splitlines()]
    prm = ProcessRewardModel.from_pretrained(prm_path)
    assert [w["id"] for w in written] == list(range(13))
    for row, w in zip(rows, written, strict=True):
        expected = prm.step_scores(PROMPT, row["completions"])
        assert w["step_scores"] == pytest.approx(expected, abs=1e-5)
        assert w["score"] == pytest.approx(sum(expected) / len(expected), abs=1e-5)
        assert w["completions"] == row["completions"] and w["labels"] == row["labels"]


@pytest.mark.slow
def test_a_killed_prm_score_run_resumes_to_the_identical_file(prm_path, tmp_path):
    from rmkit.cli import main

    data = write_jsonl(tmp_path / "steps.jsonl", solutions(120))
    args = ["--model", str(prm_path), "--input", str(data), "--chunk-rows", "4"]
    whole = tmp_path / "whole.json"
    assert main(["score", *args, "--output", str(whole)]) == 0
    out = tmp_path / "out.json"
    state = tmp_path / "out.json.rank0-of-1.part.state.json"
    assert 0 < kill_when_done(["score", *args, "--output", str(out)], state, 16) < 120
    assert main(["score", *args, "--output", str(out), "--resume"]) == 0
    assert out.read_bytes() == whole.read_bytes()


def test_eval_of_a_prm_reports_step_and_processbench_figures_per_subset(prm_path, tmp_path):
    from rmkit.cli import main
    from rmkit.metrics.graded import step_metrics

    rows = [{**r, "subset": "even" if r["id"] % 2 == 0 else "odd"} for r in solutions(24)]
    data = write_jsonl(tmp_path / "labelled.jsonl", rows)
    out = tmp_path / "eval"
    assert (
        main(
            [
                "eval",
                "--model",
                str(prm_path),
                "--data",
                str(data),
                "--output-dir",
                str(out),
                "--threshold",
                "0.5",
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    prm = ProcessRewardModel.from_pretrained(prm_path)
    scores = [prm.step_scores(PROMPT, r["completions"]) for r in rows]
    (result,) = [per_data["labelled"] for per_data in metrics["results"].values()]
    expected = step_metrics(scores, [r["labels"] for r in rows])
    for key in (
        "steps",
        "step_accuracy",
        "wrong_f1",
        "error_accuracy",
        "correct_accuracy",
        "processbench_f1",
    ):
        assert result["all"][key] == pytest.approx(expected[key]), key
    odd = [i for i, r in enumerate(rows) if r["subset"] == "odd"]
    assert result["subsets"]["odd"]["step_accuracy"] == pytest.approx(
        step_metrics([scores[i] for i in odd], [rows[i]["labels"] for i in odd])["step_accuracy"]
    )
    lines = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert [line["row"] for line in lines] == list(range(1, 25))
    assert lines[0]["step_scores"] == pytest.approx(scores[0], abs=1e-5)
    assert list((out / "plots").glob("steps_*.png")) and "processbench_f1" in (out / "report.md").read_text()


# --- rmkit train on step-labelled data ------------------------------------------------------------------

GOOD_STEPS = ["two plus two is four", "the answer is four", "Paris is the capital of France"]
BAD_STEPS = ["I cannot help", "the weather is sunny", "It could hurt someone"]


def labelled_solutions(n: int, seed: int) -> list[dict]:
    """A learnable task: a step is right when it is one of GOOD_STEPS."""
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        steps, labels = [], []
        for _ in range(rng.randint(1, 4)):
            good = rng.random() < 0.6
            steps.append(rng.choice(GOOD_STEPS if good else BAD_STEPS))
            labels.append(good)
        rows.append(
            {"prompt": PROMPT, "completions": steps, "labels": labels, "subset": "a" if i % 2 else "b"}
        )
    return rows


def test_the_loss_counts_only_labelled_steps_and_matches_a_hand_computation(backbone):
    import numpy as np
    import torch.nn.functional as F

    from rmkit.data import RowCounts
    from rmkit.training import TrainConfig
    from rmkit.training.process import StepTask, tokenize_steps

    torch.manual_seed(5)
    prm = ProcessRewardModel.from_pretrained(backbone)
    cfg = TrainConfig(model=str(backbone), data="unused", output_dir="unused", max_length=512)
    ex = StepExample(1, [{"role": "user", "content": PROMPT}], STEPS, [True, None, False])
    (item,) = tokenize_steps(prm, [ex], cfg, RowCounts())
    loss, _ = StepTask().forward(prm, [item], prm.pad_token_id, cfg, torch.device("cpu"))
    with torch.no_grad():
        logits = prm.model(torch.tensor([item.ids.tolist()])).logits[0, :, 0]
    at = logits[torch.tensor(item.positions)]
    expected = F.binary_cross_entropy_with_logits(at[[0, 2]], torch.tensor([1.0, 0.0]), reduction="none")
    assert loss.shape == (2,) and torch.allclose(loss.detach(), expected, atol=1e-6)
    first_only = TrainConfig(model=str(backbone), data="u", output_dir="u", first_error_only=True)
    wrong_first = StepExample(1, ex.prompt, STEPS, [False, True, True])
    (cut,) = tokenize_steps(prm, [wrong_first], first_only, RowCounts())
    assert np.isnan(cut.labels[1:]).all() and cut.labelled == 1


@pytest.fixture(scope="module")
def trained_prm(backbone, tmp_path_factory) -> Path:
    from rmkit import train
    from rmkit.training import TrainConfig

    d = tmp_path_factory.mktemp("prm_run")
    data = write_jsonl(d / "train.jsonl", labelled_solutions(96, 0))
    held = write_jsonl(d / "eval.jsonl", labelled_solutions(32, 1))
    out = d / "out"
    config = TrainConfig(
        model=str(backbone), data=str(data), eval_data=str(held), output_dir=str(out), batch_size=8,
        learning_rate=3e-3, warmup_ratio=0.0, epochs=3, logging_steps=4, eval_steps=12,
    )  # fmt: skip
    train(config)
    return out


def test_rmkit_trains_a_prm_that_learns_the_steps(trained_prm):
    metrics = json.loads((trained_prm / "metrics.json").read_text())
    assert metrics["train"]["solutions"] == 96 and metrics["train"]["steps"] == 36
    assert metrics["eval"]["step_accuracy"] >= 0.9 and metrics["eval"]["processbench_f1"] is not None
    lines = [json.loads(line) for line in (trained_prm / "train_log.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in lines if "loss" in x]
    assert losses[-1] < losses[0] and any("eval_step_accuracy" in x for x in lines)


def test_a_prm_trained_by_rmkit_loads_in_plain_transformers_with_the_same_step_logits(trained_prm):
    plain, info = AutoModelForTokenClassification.from_pretrained(trained_prm, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    prm = ProcessRewardModel.from_pretrained(trained_prm)
    ids, positions = prm.encode([{"role": "user", "content": PROMPT}], GOOD_STEPS[:1] + BAD_STEPS[:1])
    with torch.no_grad():
        logits = plain.eval()(torch.tensor([ids])).logits[0, positions, 0]
    scores = prm.step_scores(PROMPT, GOOD_STEPS[:1] + BAD_STEPS[:1])
    assert scores == pytest.approx(torch.sigmoid(logits).tolist(), abs=1e-5)
    assert scores[0] > 0.5 > scores[1]  # it learnt the task


@pytest.mark.slow
def test_prm_training_keeps_lora_and_two_process_torchrun(backbone, tmp_path):
    from test_training import torchrun_train

    from rmkit import train
    from rmkit.training import TrainConfig

    data = write_jsonl(tmp_path / "train.jsonl", labelled_solutions(32, 2))
    held = write_jsonl(tmp_path / "eval.jsonl", labelled_solutions(16, 3))
    base = dict(model=str(backbone), data=str(data), eval_data=str(held), batch_size=8, warmup_ratio=0.0)
    train(TrainConfig(**base, output_dir=str(tmp_path / "lora"), lora=True, max_steps=2, learning_rate=1e-2))
    plain, info = AutoModelForTokenClassification.from_pretrained(tmp_path / "lora", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]  # adapters merged: a plain checkpoint

    train(
        TrainConfig(
            **base, output_dir=str(tmp_path / "one"), max_steps=3, micro_batch_size=2, learning_rate=3e-3
        )
    )
    torchrun_train(backbone, (data, held), tmp_path / "two", "--max-steps", "3", "--micro-batch-size", "2")
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two["train"]["processes"] == 2 and two["eval"]["steps"] == one["eval"]["steps"]
    assert two["eval"]["loss"] == pytest.approx(one["eval"]["loss"], rel=1e-4)


def test_rank_with_a_prm_ranks_solutions_by_their_aggregate_step_score(trained_prm, tmp_path):
    from rmkit.cli import main

    candidates = ["\n".join(GOOD_STEPS[:2]), "\n".join([GOOD_STEPS[0], BAD_STEPS[0]]), BAD_STEPS[1]]
    data = write_jsonl(tmp_path / "bon.jsonl", [{"id": 7, "prompt": PROMPT, "responses": candidates}])
    out = tmp_path / "ranked.jsonl"
    assert main(["rank", "--model", str(trained_prm), "--input", str(data), "--output", str(out)]) == 0
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    prm = ProcessRewardModel.from_pretrained(trained_prm)
    steps = [prm.step_scores(PROMPT, c.split("\n")) for c in candidates]
    assert row["step_scores"] == [pytest.approx(s, abs=1e-5) for s in steps]
    assert row["scores"] == pytest.approx([min(s) for s in steps], abs=1e-5)
    assert row["best"] == 0 and row["ranking"][0] == 0 and row["id"] == 7


def test_the_server_scores_a_solution_by_its_steps(trained_prm):
    import urllib.request

    from rmkit.serving import ServeConfig, running
    from rmkit.serving.app import create_app, load

    config = ServeConfig(model=str(trained_prm), aggregate="min")
    prm = load(config)
    solutions = ["\n".join(GOOD_STEPS[:2]), "\n".join([GOOD_STEPS[0], BAD_STEPS[0]])]
    with running(create_app(prm, config)) as base:
        body = json.dumps({"prompts": [PROMPT, PROMPT], "responses": solutions}).encode()
        request = urllib.request.Request(
            f"{base}/score", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request) as reply:
            answer = json.loads(reply.read())
        openrlhf = json.dumps({"query": ["not split: a whole text"], "prompts": [""]}).encode()
        request = urllib.request.Request(
            f"{base}/get_reward", data=openrlhf, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request) as reply:
            rewards = json.loads(reply.read())["rewards"]
    steps = [prm.step_scores(PROMPT, s.split("\n")) for s in solutions]
    assert answer["step_scores"] == [pytest.approx(s, abs=1e-5) for s in steps]
    assert answer["scores"] == pytest.approx([min(s) for s in steps], abs=1e-5)
    assert len(rewards) == 1 and 0.0 < rewards[0] < 1.0


def test_an_outcome_rm_gives_each_step_the_score_of_its_prefix_in_one_pass(rm_path, minilm_path):
    from rmkit import RewardModel
    from rmkit.data.steps import SolutionEncoder

    rm = RewardModel.from_pretrained(rm_path)
    scores = rm.step_scores(PROMPT, STEPS)
    ids, positions = SolutionEncoder(rm.tokenizer).encode([{"role": "user", "content": PROMPT}], STEPS)
    assert scores == pytest.approx([rm.score_ids([ids[: p + 1]])[0] for p in positions], abs=1e-5)
    with pytest.raises(RMKitError, match="causal decoder"):
        RewardModel.from_pretrained(minilm_path).step_scores(PROMPT, STEPS)


def test_a_prm_run_resumed_from_a_checkpoint_ends_with_the_same_weights(backbone, tmp_path):
    import shutil

    from safetensors.torch import load_file

    from rmkit import train
    from rmkit.training import TrainConfig

    data = write_jsonl(tmp_path / "train.jsonl", labelled_solutions(40, 4))
    base = dict(
        model=str(backbone), data=str(data), batch_size=8, warmup_ratio=0.0, max_steps=6, save_steps=3
    )
    full, stopped = tmp_path / "full", tmp_path / "stopped"
    train(TrainConfig(**base, output_dir=str(full)))
    stopped.mkdir()
    shutil.copytree(full / "checkpoint-3", stopped / "checkpoint-3")  # a run killed before step 6
    train(TrainConfig(**base, output_dir=str(stopped), resume="auto"))
    a, b = load_file(full / "model.safetensors"), load_file(stopped / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_prm_trains_sharded_with_fsdp_as_in_one_process(backbone, tmp_path):
    from test_training import torchrun_train

    from rmkit import train
    from rmkit.training import TrainConfig

    data = write_jsonl(tmp_path / "train.jsonl", labelled_solutions(32, 5))
    held = write_jsonl(tmp_path / "eval.jsonl", labelled_solutions(12, 6))
    base = dict(model=str(backbone), data=str(data), eval_data=str(held), batch_size=8, warmup_ratio=0.0)
    train(TrainConfig(**base, output_dir=str(tmp_path / "one"), max_steps=3, learning_rate=3e-3))
    torchrun_train(backbone, (data, held), tmp_path / "fsdp", "--max-steps", "3", "--fsdp", "full_shard")
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())["eval"]
    fsdp = json.loads((tmp_path / "fsdp" / "metrics.json").read_text())["eval"]
    assert fsdp["loss"] == pytest.approx(one["loss"], rel=1e-4) and fsdp["steps"] == one["steps"]
    plain, info = AutoModelForTokenClassification.from_pretrained(tmp_path / "fsdp", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]  # gathered whole, a plain checkpoint


def test_prm_training_packed_equals_training_padded(backbone, tmp_path):
    from rmkit import train
    from rmkit.training import TrainConfig

    data = write_jsonl(tmp_path / "train.jsonl", labelled_solutions(24, 0))
    logs = {}
    for packing in ("off", "on"):
        out = tmp_path / packing
        config = TrainConfig(
            model=str(backbone), data=str(data), output_dir=str(out), batch_size=8, micro_batch_size=3,
            max_steps=3, logging_steps=1, learning_rate=3e-3, packing=packing,
        )  # fmt: skip
        train(config)
        logs[packing] = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
        assert json.loads((out / "metrics.json").read_text())["train"]["packed"] == (packing == "on")
    on = [(r["loss"], r["grad_norm"]) for r in logs["on"] if "loss" in r]
    off = [(r["loss"], r["grad_norm"]) for r in logs["off"] if "loss" in r]
    assert len(on) == 3
    for (a, ga), (b, gb) in zip(off, on, strict=True):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-6) and gb == pytest.approx(ga, rel=1e-4)


def test_a_wordpiece_backbone_trains_a_prm_with_the_default_separator_and_scores_alike(
    minilm_path, tmp_path, caplog
):
    """``rmkit train --model MiniLM --data steps.jsonl``: a newline tokenises to nothing in WordPiece, so each
    step ends with the tokenizer's [SEP]; the checkpoint says so, and score reads the same steps."""
    import logging

    from rmkit.cli import main

    data = write_jsonl(tmp_path / "steps.jsonl", labelled_solutions(24, 0))
    out = tmp_path / "prm"
    with caplog.at_level(logging.INFO, logger="rmkit.process"):
        argv = ["train", "--model", str(minilm_path), "--data", str(data), "--output-dir", str(out)]
        assert main([*argv, "--max-steps", "2", "--batch-size", "8", "--no-progress"]) == 0
    assert "a newline tokenises to nothing" in caplog.text and "'[SEP]'" in caplog.text
    stored = json.loads((out / "config.json").read_text())["rmkit"]["prm"]
    assert (stored["separator"], stored["marker"]) == ("\n", "[SEP]")
    scored = tmp_path / "scored.jsonl"
    assert main(["score", "--model", str(out), "--input", str(data), "--output", str(scored)]) == 0
    rows = [json.loads(line) for line in scored.read_text().splitlines()]
    assert all(len(r["step_scores"]) == len(r["completions"]) and None not in r["step_scores"] for r in rows)
    prm = ProcessRewardModel.from_pretrained(out)
    first = labelled_solutions(24, 0)[0]
    assert prm.step_scores(PROMPT, first["completions"]) == pytest.approx(rows[0]["step_scores"], abs=1e-5)
    with pytest.raises(RMKitError, match="the separator '\\\\n' tokenises to nothing"):
        ProcessRewardModel.from_pretrained(minilm_path, separator="\n")  # given explicitly: refused


def test_qwen2_math_prm_s_two_layer_two_class_head_read_at_each_step_token(tmp_path):
    """Qwen2.5-Math-PRM (``Qwen2ForProcessRewardModel``): a Qwen2Model with a ``Linear → ReLU → Linear`` head
    of two classes; a step's score is the softmax probability of class 1 at the step token that follows it.
    Read without its remote code, equal to the head applied by hand at the positions rmkit reads."""
    from safetensors.torch import save_file
    from transformers import Qwen2Config, Qwen2ForCausalLM

    src = tmp_path / "src"
    tok = make_tokenizer(src)
    tok.add_special_tokens({"additional_special_tokens": ["<extra_0>"]})
    torch.manual_seed(6)
    config = Qwen2Config(
        vocab_size=len(tok), **TINY, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id
    )
    lm = Qwen2ForCausalLM(config).eval()
    h, g = config.hidden_size, torch.Generator().manual_seed(8)
    head = {"score.0.weight": torch.randn(h, h, generator=g) / h**0.5, "score.0.bias": torch.randn(h, generator=g),
            "score.2.weight": torch.randn(2, h, generator=g), "score.2.bias": torch.randn(2, generator=g)}  # fmt: skip
    path = tmp_path / "qwen2-prm"
    path.mkdir()
    raw = {**config.to_dict(), "architectures": ["Qwen2ForProcessRewardModel"]}
    (path / "config.json").write_text(json.dumps(raw))
    state = {k: v for k, v in lm.state_dict().items() if k.startswith("model.")} | head
    save_file({k: v.contiguous() for k, v in state.items()}, path / "model.safetensors")
    tok.save_pretrained(str(path))

    prm = ProcessRewardModel.from_pretrained(path, separator="<extra_0>")
    from rmkit import kinds

    assert kinds.recognise(kinds.Checkpoint.read(path)).name == "process"
    ids, positions = prm.encode([{"role": "user", "content": PROMPT}], STEPS)
    with torch.no_grad():
        hidden = lm.model(torch.tensor([ids])).last_hidden_state[0]
        logits = (
            torch.relu(hidden @ head["score.0.weight"].T + head["score.0.bias"]) @ head["score.2.weight"].T
        )
        hand = (logits + head["score.2.bias"]).softmax(-1)[positions, 1].tolist()
    assert prm.step_scores(PROMPT, STEPS) == pytest.approx(hand, abs=1e-5)
