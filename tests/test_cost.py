"""Safety cost models (Safe RLHF): the loss, the safety data, training, scoring, evaluation, serving."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import SHARED_DATA, write_jsonl

from rmkit.cli import main
from rmkit.data.safety import iter_safety
from rmkit.errors import DataError
from rmkit.losses import safety_cost, safety_cost_token_wise, sign_cost


def nls(x: float) -> float:
    """-log σ(x)"""
    return math.log1p(math.exp(-x))


def test_sequence_wise_cost_loss_is_safe_rlhfs_formula():
    safer, unsafer = torch.tensor([-1.0, 0.5]), torch.tensor([2.0, 0.0])
    s_safer, s_unsafer = torch.tensor([1.0, -1.0]), torch.tensor([-1.0, -1.0])
    loss = safety_cost(safer, unsafer, s_safer, s_unsafer)
    # pair 1: safe (cost -1) below unsafe (cost 2); pair 2: both unsafe, the safer one's cost 0.5 above 0
    assert loss.tolist() == pytest.approx(
        [nls(3.0) + nls(1.0) + nls(2.0), nls(-0.5) + nls(0.5) + nls(0.0)], abs=1e-6
    )
    regularised = safety_cost(safer, unsafer, s_safer, s_unsafer, regularization=0.1).mean()
    # λ·mean(c²) over the four costs: (1 + 4 + 0.25 + 0) / 4
    assert (regularised - loss.mean()).item() == pytest.approx(0.1 * 5.25 / 4, abs=1e-6)


def test_align_anythings_scale_and_real_valued_signs():
    safer, unsafer = torch.tensor([0.3]), torch.tensor([-0.7])
    loss = safety_cost(safer, unsafer, torch.tensor([0.4]), torch.tensor([-0.2]), scale=0.5)
    expected = nls(-1.0) + 0.5 * (nls(-0.4 * 0.3) + nls(-0.2 * 0.7))
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    lone = sign_cost(torch.tensor([0.3, -2.0]), torch.tensor([1.0, -0.5]), scale=2.0, regularization=0.1)
    assert lone.tolist() == pytest.approx([2 * nls(-0.3) + 0.1 * 0.09, 2 * nls(-1.0) + 0.1 * 4.0], abs=1e-6)


def _token_wise_by_hand(s_row, u_row, start, end, sign_s, sign_u, reg):
    """safe-rlhf's token-wise loop for one pair: slices [start, end] of both rows."""
    s, u = s_row[start : end + 1], u_row[start : end + 1]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    loss = mean([nls(b - a) for a, b in zip(s, u, strict=True)])
    loss += mean([nls(-sign_s * a) for a in s]) + mean([nls(-sign_u * b) for b in u])
    return loss + reg * mean([x * x for x in s + u])


def test_token_wise_cost_loss_is_safe_rlhfs_loop():
    s_rows = [[0.1, 0.2, -0.5, -1.0], [0.0, 0.3, 0.6, 0.9]]
    u_rows = [[0.1, 0.4, 0.8, 1.5], [0.0, -0.2, 0.1, 0.2]]
    ends, starts = [3, 3], [1, 2]
    signs_s, signs_u = [1.0, -1.0], [-1.0, -1.0]
    loss = safety_cost_token_wise(
        torch.tensor(s_rows), torch.tensor(u_rows), torch.tensor(ends), torch.tensor(ends),
        torch.tensor(starts), torch.tensor(signs_s), torch.tensor(signs_u), regularization=0.01,
    )  # fmt: skip
    expected = [
        _token_wise_by_hand(s_rows[i], u_rows[i], starts[i], ends[i], signs_s[i], signs_u[i], 0.01)
        for i in range(2)
    ]
    assert loss.tolist() == pytest.approx(expected, abs=1e-6)


# --- safety-labelled data ------------------------------------------------------------------------------------


def pku(safer: int, safe0: bool, safe1: bool, better: int = 0, **extra) -> dict:
    return {
        "prompt": "How can I help you today?", "response_0": "two plus two is four",
        "response_1": "the capital of France is Paris", "is_response_0_safe": safe0,
        "is_response_1_safe": safe1, "better_response_id": better, "safer_response_id": safer, **extra,
    }  # fmt: skip


def test_pku_rows_keep_their_safety_labels_safer_answer_first(tmp_path):
    rows = [pku(1, False, True, better=0), pku(0, True, True, better=1), pku(0, False, False)]
    rows.append({k: v for k, v in pku(0, True, False).items() if k != "better_response_id"})
    read = list(iter_safety(write_jsonl(tmp_path / "pku.jsonl", rows)))
    assert [ex.responses[0] for ex in read] == ["the capital of France is Paris"] + [
        "two plus two is four"
    ] * 3
    assert [ex.signs for ex in read] == [[1.0, -1.0], [1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]]
    assert [ex.preferred for ex in read] == [1, 1, 0, None]  # the more helpful answer's place, safer first


def test_an_inconsistent_pair_is_a_named_error_or_skipped_counted_and_written(tmp_path, llama_path):
    rows = [pku(0, True, False), pku(0, False, True), pku(1, True, False)]
    data = write_jsonl(tmp_path / "pku.jsonl", rows)
    with pytest.raises(DataError, match=r"pku.jsonl, row 2, field 'safer_response_id'.*inconsistent"):
        list(iter_safety(data))
    out, rejects = tmp_path / "out", tmp_path / "rejects.jsonl"
    args = ["train", "--model", str(llama_path), "--data", str(data), "--output-dir", str(out)]
    args += ["--objective", "cost", "--batch-size", "2", "--max-steps", "1", "--no-progress"]
    assert main([*args, "--on-error", "skip", "--rejects", str(rejects)]) == 0
    assert json.loads((out / "metrics.json").read_text())["train"]["skipped"] == 2
    rejected = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [(r["row"], r["field"]) for r in rejected] == [(2, "safer_response_id"), (3, "safer_response_id")]
    assert "inconsistent" in rejected[0]["reason"]


def test_beavertails_rows_are_lone_responses_with_a_sign(tmp_path):
    rows = [
        {"prompt": "How can I help?", "response": "two plus two", "is_safe": True, "category": {"a": False}},
        {
            "prompt": "How can I help?",
            "response": "it could hurt",
            "is_safe": "false",
            "category": {"a": True},
        },
        {"prompt": "How can I help?", "response": "Paris", "safety_sign": -0.4},
    ]
    read = list(iter_safety(write_jsonl(tmp_path / "bt.jsonl", rows)))
    assert [(ex.is_pair, ex.signs) for ex in read] == [(False, [1.0]), (False, [-1.0]), (False, [-0.4])]
    assert read[1].extra == {"category": {"a": True}}
    bad = write_jsonl(tmp_path / "bad.jsonl", [{**rows[0], "is_safe": "maybe"}])
    with pytest.raises(DataError, match=r"row 1, field 'is_safe'"):
        list(iter_safety(bad))


# --- the training task on a tiny model -----------------------------------------------------------------------


@pytest.mark.parametrize("loss_type", ["bt", "token_wise"])
def test_the_task_loss_on_a_tiny_model_is_the_formula_by_hand(llama_path, loss_type, tmp_path):
    from rmkit import RewardModel
    from rmkit.training import TrainConfig
    from rmkit.training.cost import CostItem, CostTask

    torch.manual_seed(0)
    rm = RewardModel.from_pretrained(llama_path).eval()
    pad = rm.pad_token_id
    items = [
        CostItem([[1, 40, 41, 42, 43], [1, 40, 41, 50]], [1.0, -1.0]),
        CostItem([[1, 60, 61], [1, 60, 62, 63, 64, 65]], [-1.0, -0.5]),
        CostItem([[1, 70, 71, 72]], [1.0]),
    ]
    config = TrainConfig(
        model="m", data="d", output_dir=str(tmp_path), loss=loss_type, score_reg=0.1, cost_scale=0.7
    )
    with torch.no_grad():
        loss, _ = CostTask().forward(rm, items, pad, config, torch.device("cpu"))
        token_costs = [
            [rm(torch.tensor([ids]), torch.ones(1, len(ids))).scores[0].tolist() for ids in it.ids]
            for it in items
        ]
    expected = []
    for it, costs in zip(items, token_costs, strict=True):
        if len(costs) == 1:
            c = costs[0][-1]
            expected.append(0.7 * nls(-it.signs[0] * c) + 0.1 * c * c)
            continue
        (s_ids, u_ids), (s, u), (sign_s, sign_u) = it.ids, costs, it.signs
        if loss_type == "bt":
            cs, cu = s[-1], u[-1]
            expected.append(
                nls(cu - cs) + 0.7 * (nls(-sign_s * cs) + nls(-sign_u * cu)) + 0.1 * (cs * cs + cu * cu) / 2
            )
            continue
        start = next(i for i, (a, b) in enumerate(zip(s_ids, u_ids, strict=False)) if a != b)
        end = max(len(s), len(u)) - 1
        s = s + [s[-1]] * (end + 1 - len(s))  # past its end an answer keeps its final cost
        u = u + [u[-1]] * (end + 1 - len(u))
        window = range(start, end + 1)
        mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
        value = mean([nls(u[t] - s[t]) for t in window])
        value += 0.7 * (
            mean([nls(-sign_s * s[t]) for t in window]) + mean([nls(-sign_u * u[t]) for t in window])
        )
        expected.append(
            value + 0.1 * (mean([s[t] ** 2 for t in window]) + mean([u[t] ** 2 for t in window])) / 2
        )
    assert loss.tolist() == pytest.approx(expected, abs=1e-5)


# --- a cost model trained, scored and evaluated --------------------------------------------------------------

PKU_SAMPLE = SHARED_DATA / "pku_saferlhf_sample.json"


@pytest.fixture(scope="module")
def cost_model(llama_path, tmp_path_factory) -> tuple:
    """A cost model trained on the PKU-SafeRLHF sample (skipped without it): ``(checkpoint, metrics)``."""
    if not PKU_SAMPLE.is_file():
        pytest.skip(f"{PKU_SAMPLE} is absent (the shared data clone)")
    out = tmp_path_factory.mktemp("cost") / "cm"
    args = ["train", "--model", str(llama_path), "--data", str(PKU_SAMPLE), "--eval-data", str(PKU_SAMPLE)]
    args += ["--output-dir", str(out), "--objective", "cost", "--batch-size", "8", "--lr", "3e-3"]
    assert main([*args, "--warmup-ratio", "0", "--epochs", "8", "--max-length", "128", "--no-progress"]) == 0
    return out, json.loads((out / "metrics.json").read_text())


def test_a_cost_model_learns_the_signs_of_its_training_rows(cost_model):
    from transformers import AutoModelForSequenceClassification

    out, metrics = cost_model
    rows = json.loads(PKU_SAMPLE.read_text())
    safe = sum(r[f"is_response_{i}_safe"] for r in rows for i in (0, 1)) / (2 * len(rows))
    final = metrics["eval"]
    assert final["responses"] == 64 and final["pairs"] == 32
    assert final["sign_accuracy"] > max(safe, 1 - safe) + 0.1  # above the majority label's share
    assert final["sign_accuracy_ci"][0] <= final["sign_accuracy"] <= final["sign_accuracy_ci"][1]
    assert final["safe_mean"] < 0 < final["unsafe_mean"]
    assert json.loads((out / "config.json").read_text())["rmkit"]["kind"] == "cost"
    plain = AutoModelForSequenceClassification.from_pretrained(out)  # the standard one-label classifier
    assert plain.config.num_labels == 1


def test_score_writes_costs_and_says_lower_is_safer(cost_model, tmp_path, capsys):
    out, _ = cost_model
    rows = [{"prompt": "How can I help?", "response": "two plus two is four", "is_safe": True}]
    data = write_jsonl(tmp_path / "bt.jsonl", rows)
    assert (
        main(["score", "--model", str(out), "--input", str(data), "--output", str(tmp_path / "s.jsonl")]) == 0
    )
    written = json.loads((tmp_path / "s.jsonl").read_text())
    assert set(written) == {"prompt", "response", "cost", "is_safe"}
    assert "lower is safer" in capsys.readouterr().out
    pairs = tmp_path / "pairs.jsonl"
    assert main(["score", "--model", str(out), "--input", str(PKU_SAMPLE), "--output", str(pairs)]) == 0
    first = json.loads(pairs.read_text().splitlines()[0])
    assert {"cost_chosen", "cost_rejected"} <= set(first) and "score_chosen" not in first
    summary = json.loads((tmp_path / "pairs.summary.json").read_text())
    assert summary["meaning"].startswith("costs: lower is safer")


def test_eval_figures_by_hand_on_every_label_combination(cost_model, tmp_path):
    out, _ = cost_model
    rows = [pku(0, True, True), pku(0, True, False), pku(1, False, True), pku(0, False, False)]
    rows += [{"prompt": "How can I help?", "response": text, "is_safe": safe} for text, safe in
             (("two plus two is four", True), ("it could hurt someone", False), ("Paris", True))]  # fmt: skip
    data = write_jsonl(tmp_path / "mixed.jsonl", rows)
    result = tmp_path / "eval"
    args = [
        "eval",
        "--model",
        str(out),
        "--data",
        str(data),
        "--output-dir",
        str(result),
        "--objective",
        "cost",
    ]
    assert main(args) == 0
    lines = [json.loads(line) for line in (result / "scores.jsonl").read_text().splitlines()]
    pairs = [x["costs"] for x in lines if len(x["costs"]) == 2]
    flat = [(s, c) for x in lines for s, c in zip(x["signs"], x["costs"], strict=True)]
    m = json.loads((result / "metrics.json").read_text())["results"]["cm"]["mixed"]
    assert m["pairs"] == 4 and m["responses"] == 11
    assert m["pair_accuracy"] == pytest.approx(sum(u > s for s, u in pairs) / 4)
    assert m["sign_accuracy"] == pytest.approx(
        sum(s * c < 0 for s, c in flat) / 11
    )  # every labelled response
    safe = [c for s, c in flat if s > 0]
    assert m["safe_mean"] == pytest.approx(sum(safe) / len(safe))
    wrong = sorted((s * c for s, c in flat if s * c > 0), reverse=True)
    assert [w["sign"] * w["cost"] for w in m["most_wrong"]] == pytest.approx(wrong)
    report = (result / "report.md").read_text()
    assert "most confidently wrong" in report and (result / "plots" / "costs_cm.png").is_file()


# --- safe-rlhf's Beaver cost models, read as they are ----------------------------------------------------------


@pytest.mark.parametrize(
    ("bias_key", "with_bias"), [("bias", False), ("score_bias", True), ("score_bias", False)]
)
def test_beaver_cost_checkpoints_load_as_cost_models_and_score_by_hand(
    llama_path, tmp_path, bias_key, with_bias
):
    """Older safe-rlhf configs say ``bias`` (default no bias), newer ones ``score_bias`` (default a bias):
    a bias in the weights is added, one missing from them is zero."""
    import shutil

    from safetensors.torch import save_file
    from transformers import AutoTokenizer, LlamaForCausalLM

    from rmkit import kinds

    lm = LlamaForCausalLM.from_pretrained(llama_path).eval()
    config = json.loads((llama_path / "config.json").read_text())
    weight = torch.randn(1, config["hidden_size"], generator=torch.Generator().manual_seed(5))
    # the last case: a newer config whose bias is not in the weights (zero, never a random one)
    config.update({"architectures": ["LlamaModelForScore"], "score_dim": 1, "score_type": "cost"})
    config[bias_key] = bias_key == "score_bias"
    state = {k: v.clone().contiguous() for k, v in lm.state_dict().items() if k.startswith("model.")}
    state["score_head.weight"] = weight
    if with_bias:
        state["score_head.bias"] = torch.tensor([0.25])
    path = tmp_path / "beaver"
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config))
    save_file(state, path / "model.safetensors")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (llama_path / name).exists():
            shutil.copy(llama_path / name, path / name)

    kind, model = kinds.load(path)
    assert kind.name == "cost"
    text = "What is two plus two? Two plus two is four."
    ids = AutoTokenizer.from_pretrained(path)(text)["input_ids"]
    with torch.no_grad():
        hidden = lm.model(torch.tensor([ids])).last_hidden_state[0, -1]
    expected = float(hidden @ weight[0]) + (0.25 if with_bias else 0.0)
    from rmkit.inference import score_sequences

    assert score_sequences(model, [ids])[0] == pytest.approx(expected, abs=1e-5)


def test_a_benchmark_suite_ranks_a_cost_model_by_minus_its_cost_and_says_so(cost_model, tmp_path):
    import rmkit
    from rmkit import RewardModel

    out, _ = cost_model
    rows = [
        {"prompt": f"Say something about {k}.", "chosen": f"Here is a careful answer about {k}.",
         "rejected": f"No {k}." * (1 + k % 3), "subset": "refusals-dangerous", "id": k}
        for k in range(6)
    ]  # fmt: skip
    data = write_jsonl(tmp_path / "filtered.jsonl", rows)
    metrics = rmkit.evaluate(model=[str(out)], data=[str(data)], output_dir=str(tmp_path / "e"), plots=False)
    assert metrics["suite"]["negated"] == ["cm"]
    lines = [json.loads(line) for line in (tmp_path / "e" / "scores.jsonl").read_text().splitlines()]
    rm = RewardModel.from_pretrained(out)
    costs = rm.score(prompts=[r["prompt"] for r in rows], responses=[r["chosen"] for r in rows])
    assert [line["scores"][0] for line in lines] == pytest.approx([-c for c in costs], abs=1e-5)
    right = sum(line["scores"][0] > line["scores"][1] for line in lines) / len(lines)  # the safer costs less
    assert metrics["suite"]["models"]["cm"]["subsets"]["refusals-dangerous"]["score"] == pytest.approx(right)


# --- serving a reward model and a cost model from one process ------------------------------------------------


def test_serve_answers_reward_and_cost_on_their_own_routes_over_http(rm_path, cost_model):
    import urllib.request

    import rmkit
    from rmkit import RewardModel
    from rmkit.serving.server import running

    out, _ = cost_model
    prompts, responses = (
        ["How can I help?", "Tell me a fact."],
        ["two plus two is four", "it could hurt someone"],
    )

    def post(base: str, path: str, body: dict) -> dict:
        req = urllib.request.Request(
            base + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())

    rewards = RewardModel.from_pretrained(rm_path).score(prompts=prompts, responses=responses)
    costs = RewardModel.from_pretrained(out).score(prompts=prompts, responses=responses)
    with running(rmkit.serve(str(rm_path), cost_model=str(out))) as base:
        body = {"prompts": prompts, "responses": responses}
        assert post(base, "/score", body)["scores"] == pytest.approx(rewards, abs=1e-5)
        assert post(base, "/cost/score", body)["scores"] == pytest.approx(
            costs, abs=1e-5
        )  # the end cost, as is
        texts = ["User: How can I help?\n\nAssistant: two plus two is four"]
        openrlhf = post(base, "/cost/get_reward", {"query": texts})
        assert (
            len(openrlhf["rewards"]) == 1
            and openrlhf["rewards"] != post(base, "/get_reward", {"query": texts})["rewards"]
        )
        with urllib.request.urlopen(base + "/health", timeout=10) as resp:
            assert json.loads(resp.read()) == {"status": "ok", "model": str(rm_path), "cost_model": str(out)}


def test_score_with_a_cost_model_writes_both_numbers_and_the_share_chosen_also_safer(
    rm_path, cost_model, tmp_path
):
    out, _ = cost_model
    output = tmp_path / "both.jsonl"
    args = ["score", "--model", str(rm_path), "--cost-model", str(out), "--input", str(PKU_SAMPLE)]
    assert main([*args, "--output", str(output)]) == 0
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(rows) == 32 and all(
        {"score_chosen", "score_rejected", "cost_chosen", "cost_rejected"} <= set(r) for r in rows
    )
    alone = tmp_path / "cost.jsonl"
    assert main(["score", "--model", str(out), "--input", str(PKU_SAMPLE), "--output", str(alone)]) == 0
    costs = [json.loads(line) for line in alone.read_text().splitlines()]
    assert [r["cost_chosen"] for r in rows] == pytest.approx([r["cost_chosen"] for r in costs], abs=1e-6)
    summary = json.loads((tmp_path / "both.summary.json").read_text())
    assert summary["chosen_safer"] == pytest.approx(
        sum(r["cost_chosen"] < r["cost_rejected"] for r in rows) / 32
    )


def test_eval_with_a_cost_model_writes_both_numbers_and_the_share_preferred_also_safer(
    rm_path, cost_model, tmp_path
):
    import rmkit

    out, _ = cost_model
    metrics = rmkit.evaluate(
        model=[str(rm_path)],
        cost_model=str(out),
        data=[str(PKU_SAMPLE)],
        output_dir=str(tmp_path / "e"),
        bootstrap=50,
    )
    assert list(metrics["models"]) == [rm_path.name] and metrics["cost_models"] == {"cm": str(out)}
    lines = [json.loads(line) for line in (tmp_path / "e" / "scores.jsonl").read_text().splitlines()]
    assert len(lines) == 32 and {"chosen_score_" + rm_path.name, "chosen_cost_cm", "rejected_cost_cm"} <= set(
        lines[0]
    )
    m = metrics["safety"]["cm"]["pku_saferlhf_sample"]
    assert m["chosen_safer"] == pytest.approx(
        sum(x["chosen_cost_cm"] < x["rejected_cost_cm"] for x in lines) / 32
    )
    r = rm_path.name
    preferred = [
        (x["chosen_cost_cm"] < x["rejected_cost_cm"]) if x[f"chosen_score_{r}"] > x[f"rejected_score_{r}"]
        else (x["rejected_cost_cm"] < x["chosen_cost_cm"])
        for x in lines
    ]  # fmt: skip
    assert m["preferred_safer"][r] == pytest.approx(sum(preferred) / 32)
    assert "## Cost models" in (tmp_path / "e" / "report.md").read_text()


def test_beavertails_rows_train_the_sign_alone_and_other_rows_are_named(llama_path, tmp_path):
    rows = [
        {"prompt": "How can I help?", "response": text, "is_safe": safe, "category": {"violence": not safe}}
        for text, safe in (("two plus two is four", True), ("it could hurt someone", False))
    ] * 4
    data = write_jsonl(tmp_path / "bt.jsonl", rows)
    out = tmp_path / "out"
    args = [
        "train",
        "--model",
        str(llama_path),
        "--data",
        str(data),
        "--output-dir",
        str(out),
        "--batch-size",
        "4",
    ]
    assert main([*args, "--max-steps", "2", "--eval-data", str(data), "--no-progress"]) == 0  # no --objective
    final = json.loads((out / "metrics.json").read_text())["eval"]
    assert final["responses"] == 8 and final["pairs"] == 0 and final["pair_accuracy"] is None
    plain = write_jsonl(tmp_path / "plain.jsonl", [{"prompt": "Hi", "chosen": "Hello", "rejected": "Go"}])
    args = ["train", "--model", str(llama_path), "--data", str(plain), "--output-dir", str(tmp_path / "o2")]
    assert main([*args, "--objective", "cost"]) == 2  # a one-line error naming the row, not a reward model


def test_rank_with_a_cost_model_puts_the_safest_first(cost_model, tmp_path):
    out, _ = cost_model
    rows = [
        {"prompt": "How can I help?", "responses": ["two plus two is four", "it could hurt someone", "Paris"]}
    ]
    data = write_jsonl(tmp_path / "bon.jsonl", rows)
    assert (
        main(["rank", "--model", str(out), "--input", str(data), "--output", str(tmp_path / "r.jsonl")]) == 0
    )
    row = json.loads((tmp_path / "r.jsonl").read_text())
    assert (
        row["ranking"] == sorted(range(3), key=lambda i: row["costs"][i]) and row["best"] == row["ranking"][0]
    )
    ceiling = sorted(row["costs"])[1]  # --min-score of a cost model: the highest cost kept
    args = ["rank", "--model", str(out), "--input", str(data), "--output", str(tmp_path / "r2.jsonl")]
    assert main([*args, "--min-score", str(ceiling)]) == 0
    assert json.loads((tmp_path / "r2.jsonl").read_text())["ranking"] == row["ranking"][:2]
