"""Readout judges: a causal LM read at its verdict token, through every command.

Each readout is checked against the hand computation from the LM's own logits (transformers, one sequence
at a time), on tiny Llama and Qwen2 LMs built from configs."""

from __future__ import annotations

import json
import math
import urllib.request

import pytest
import torch
from conftest import TINY, make_tokenizer, write_jsonl

from rmkit.cli import main
from rmkit.data.judging import TEMPLATES, Judge
from rmkit.metrics.graded import bradley_terry

CHAT = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant: {% endif %}"
)
QUESTIONS = ["What is two plus two?", "Name the capital of France.", "Is the sky green?"]
ANSWERS = [
    ["It is four.", "Five, I think, or maybe four if you count again.", "four"],
    ["Paris.", "The capital of France is Lyon.", "Paris is the capital of France, on the Seine."],
    ["No, it is usually blue.", "Yes.", "No."],
]
SETTINGS = {
    "verifier": {"readout": "verifier", "tokens": ["y", "n"]},
    "rating": {"readout": "rating", "template": "rating-5"},
    "pairwise": {"readout": "pairwise"},
}


def make_lm(path, arch: str):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    tok = make_tokenizer(path, chat_template=CHAT)
    torch.manual_seed(3)
    config_class, model_class = {
        "llama": (LlamaConfig, LlamaForCausalLM),
        "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    }[arch]
    config = config_class(
        vocab_size=len(tok), **TINY, bos_token_id=1, eos_token_id=2, pad_token_id=tok.pad_token_id
    )
    model_class(config).save_pretrained(str(path))
    return path


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def lm_path(request, tmp_path_factory):
    return make_lm(tmp_path_factory.mktemp(f"judge_{request.param}"), request.param)


def by_hand(path, judge: Judge, question: str, answers: list[str]) -> list[float]:
    """The readout from transformers' logits of each judge prompt, one sequence at a time."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rmkit.judges import fitted

    tok = AutoTokenizer.from_pretrained(path)
    lm = AutoModelForCausalLM.from_pretrained(path).eval()
    judge = fitted(judge, tok)  # the prefix's trailing space where this tokenizer puts it
    ids = [tok(t, add_special_tokens=False)["input_ids"][0] for t in judge.tokens]

    def logits(**fields) -> torch.Tensor:
        messages = [{"role": "user", "content": judge.text.format(question=question, **fields)}]
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + judge.prefix
        enc = tok(text, add_special_tokens=False, return_tensors="pt")
        with torch.no_grad():
            return lm(**enc).logits[0, -1, ids].double()

    if judge.readout == "verifier":
        return [float(lg[0] - lg[1]) for lg in (logits(answer=a) for a in answers)]
    if judge.readout == "rating":
        values = torch.tensor(judge.values, dtype=torch.float64)
        return [float(logits(answer=a).softmax(-1) @ values) for a in answers]
    pairs = judge.pairs(len(answers))
    odds = {
        (i, j): float((lg := logits(answer_a=answers[i], answer_b=answers[j]))[0] - lg[1]) for i, j in pairs
    }
    comparisons = [(i, j, 1 / (1 + math.exp(-(odds[i, j] - odds[j, i]) / 2))) for i, j in pairs if i < j]
    return bradley_terry(len(answers), comparisons)


def rank_rows() -> list[dict]:
    return [{"prompt": q, "responses": a} for q, a in zip(QUESTIONS, ANSWERS, strict=True)]


@pytest.mark.parametrize("readout", ["verifier", "rating", "pairwise"])
@pytest.mark.parametrize("sharing", [True, False])
def test_each_readout_equals_the_hand_computation_batched_and_shared(lm_path, tmp_path, readout, sharing):
    import rmkit

    judge = Judge.of(SETTINGS[readout])
    data = write_jsonl(tmp_path / "groups.jsonl", rank_rows())
    out = tmp_path / "ranked.jsonl"
    options = {"judge": readout, "judge_tokens": SETTINGS[readout].get("tokens"),
               "judge_template": SETTINGS[readout].get("template")}  # fmt: skip
    summary = rmkit.rank(
        model=str(lm_path),
        input=str(data),
        output=str(out),
        prefix_sharing=sharing,
        progress=False,
        **options,
    )
    assert (summary["prefix_shared"] > 0) == sharing  # the judge prompt and question run once a row
    got = [json.loads(line)["scores"] for line in out.read_text().splitlines()]
    for row, scores in zip(rank_rows(), got, strict=True):
        assert scores == pytest.approx(by_hand(lm_path, judge, row["prompt"], row["responses"]), abs=1e-5)


def test_left_and_right_padding_and_one_alone_give_the_same_readout(lm_path):
    from rmkit.judges import load_judge

    judge = Judge.of(SETTINGS["verifier"])
    rm = load_judge(lm_path, judge)
    tokenizer = rm.example_tokenizer()
    from rmkit.data import examples_from

    examples = examples_from([QUESTIONS[0]] * 3, ANSWERS[0])
    ids = [row[0].ids for row in tokenizer.tokenize(examples)]
    alone = [float(rm(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long)).end_scores[0]) for s in ids]
    width = max(map(len, ids))
    for side in ("left", "right"):
        pad = [[rm.pad_token_id] * (width - len(s)) for s in ids]
        rows = [p + s if side == "left" else s + p for s, p in zip(ids, pad, strict=True)]
        mask = [
            [0] * len(p) + [1] * len(s) if side == "left" else [1] * len(s) + [0] * len(p)
            for s, p in zip(ids, pad, strict=True)
        ]
        with torch.no_grad():
            batched = rm(torch.tensor(rows), torch.tensor(mask)).end_scores.tolist()
        assert batched == pytest.approx(alone, abs=1e-5)
    assert alone == pytest.approx(by_hand(lm_path, judge, QUESTIONS[0], ANSWERS[0]), abs=1e-5)


def test_pairwise_scores_are_antisymmetric_under_swapping_the_answers(lm_path, tmp_path):
    import rmkit

    rows = [{"prompt": q, "responses": a[:2]} for q, a in zip(QUESTIONS, ANSWERS, strict=True)]
    swapped = [{"prompt": r["prompt"], "responses": r["responses"][::-1]} for r in rows]
    got = {}
    for name, data in (("ab", rows), ("ba", swapped)):
        out = tmp_path / f"{name}.jsonl"
        rmkit.rank(model=str(lm_path), input=str(write_jsonl(tmp_path / f"{name}_in.jsonl", data)),
                   output=str(out), judge="pairwise", progress=False)  # fmt: skip
        got[name] = [json.loads(line)["scores"] for line in out.read_text().splitlines()]
    for ab, ba in zip(got["ab"], got["ba"], strict=True):
        assert ab[0] == pytest.approx(-ab[1], abs=1e-9) and ab == pytest.approx(ba[::-1], abs=1e-6)


def test_the_bradley_terry_fit_recovers_a_known_order():
    strengths = [1.5, -0.5, 0.7, -1.7, 0.0]
    comparisons = [
        (i, j, 1 / (1 + math.exp(-(strengths[i] - strengths[j]))))
        for i in range(5)
        for j in range(5)
        if i != j
    ]
    fitted = bradley_terry(5, comparisons)
    mean = sum(strengths) / 5
    assert fitted == pytest.approx([s - mean for s in strengths], abs=1e-8)
    circular = Judge.of({"readout": "pairwise", "schedule": "circular"}).pairs(5)
    assert len(circular) == 10 and (0, 1) in circular and (1, 0) in circular and (4, 0) in circular
    sparse = bradley_terry(
        5, [(i, j, 1 / (1 + math.exp(-(strengths[i] - strengths[j])))) for i, j in circular]
    )
    assert sorted(range(5), key=sparse.__getitem__) == sorted(range(5), key=strengths.__getitem__)


def test_a_converted_verifier_is_a_plain_classifier_whose_logit_is_the_log_odds(lm_path, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import rmkit

    out = tmp_path / "verifier"
    assert main(["convert", str(lm_path), str(out), "--verifier", "--judge-tokens", "y", "n"]) == 0
    judge = Judge.of(SETTINGS["verifier"])
    tok = AutoTokenizer.from_pretrained(out)
    classifier = AutoModelForSequenceClassification.from_pretrained(out).eval()
    question, answers = QUESTIONS[1], ANSWERS[1]
    plain = []
    for a in answers:
        messages = [{"role": "user", "content": judge.text.format(question=question, answer=a)}]
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        with torch.no_grad():
            plain.append(
                float(classifier(**tok(text, add_special_tokens=False, return_tensors="pt")).logits[0, 0])
            )
    assert plain == pytest.approx(by_hand(lm_path, judge, question, answers), abs=1e-5)
    converted = rmkit.RewardModel.from_pretrained(out).score([question] * 3, answers)
    assert converted == pytest.approx(plain, abs=1e-5)  # its judge prompt came with it


def test_score_eval_and_serve_run_a_judge_end_to_end(lm_path, tmp_path):
    pairs = [{"prompt": q, "chosen": a[0], "rejected": a[1]} for q, a in zip(QUESTIONS, ANSWERS, strict=True)]
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    judge = ["--judge", "verifier", "--judge-tokens", "y", "n"]
    assert (
        main(
            [
                "score",
                "--model",
                str(lm_path),
                *judge,
                "--input",
                str(data),
                "--output",
                str(tmp_path / "s.jsonl"),
            ]
        )
        == 0
    )
    scored = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    hand = [
        by_hand(lm_path, Judge.of(SETTINGS["verifier"]), p["prompt"], [p["chosen"], p["rejected"]])
        for p in pairs
    ]
    assert [[r["score_chosen"], r["score_rejected"]] for r in scored] == [
        pytest.approx(h, abs=1e-5) for h in hand
    ]

    out = tmp_path / "eval"
    assert main(["eval", "--model", str(lm_path), "--judge", "pairwise", "--data", str(data), "--output-dir",
                 str(out), "--no-plots", "--bootstrap", "20"]) == 0  # fmt: skip
    lines = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert all(line["chosen_score"] == pytest.approx(-line["rejected_score"]) for line in lines)

    from rmkit.serving import running
    from rmkit.serving.app import ServeConfig, create_app, load

    config = ServeConfig(model=str(lm_path), judge="verifier", judge_tokens=["y", "n"])
    with running(create_app(load(config), config)) as base:
        body = {"prompts": [p["prompt"] for p in pairs], "responses": [p["chosen"] for p in pairs]}
        request = urllib.request.Request(f"{base}/score", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(request) as reply:
            served = json.loads(reply.read())["scores"]
    assert served == pytest.approx([h[0] for h in hand], abs=1e-5)


def test_bad_judge_settings_are_refused_in_one_line(lm_path, tmp_path, capsys):
    data = write_jsonl(tmp_path / "r.jsonl", [{"prompt": "q", "response": "a"}])
    args = ["score", "--model", str(lm_path), "--input", str(data), "--output", str(tmp_path / "o.jsonl")]
    assert main([*args, "--judge", "verifier", "--judge-tokens", "yes indeed", "no"]) == 2
    assert "one token" in capsys.readouterr().err
    assert main([*args, "--judge", "pairwise"]) == 2
    assert "two or more answers" in capsys.readouterr().err
    assert set(TEMPLATES) >= {"verifier", "rating", "rating-5", "pairwise"}


def test_a_judge_is_a_reward_model_in_python_and_a_trl_reward_function(lm_path):
    import rmkit

    judge = rmkit.load_judge(lm_path, "rating", template="rating-5")
    reward = rmkit.reward_function(judge, name="judge")
    got = reward([QUESTIONS[2]] * 3, ANSWERS[2])
    assert got == pytest.approx(
        by_hand(lm_path, Judge.of(SETTINGS["rating"]), QUESTIONS[2], ANSWERS[2]), abs=1e-5
    )
    assert all(1 <= g <= 5 for g in got) and reward.__name__ == "judge"


# --- generating judges -------------------------------------------------------------------------------------


def test_each_parser_reads_its_convention_and_refuses_what_is_malformed():
    from rmkit.data.judging import PARSERS

    canned = {
        "rating": [("The answer is fine.\nRating: 7", 7.0), ("I give it 10", 10.0), ("scores 11", None),
                   ("7 out of 10, final: 8\n", 8.0), ("no number here", None)],
        "boxed": [("So \\boxed{False} ... wait, \\boxed{True}", 1.0), ("\\boxed{ False }", 0.0),
                  ("\\boxed{maybe}", None), ("True", None)],
        "yes-no": [("Final Judgement: Yes", 1.0), ("Final Judgment: **No**", 0.0), ("Final Judgement: maybe", None)],
        "ab": [("A is longer, but [[B]] is right", 0.0), ("[[A]]", 1.0), ("a tie: [[C]]", 0.5), ("[A]", None)],
        "abcd": [("[[C]]", 2.0), ("[[D]] or rather [[B]]", 1.0), ("A", None)],
        "scores-json": [('so {"score_1": 4, "score_2": 3, "ranking": 2}', 0.8),
                        ('{"score_1": 2, "score_2": 5}', 0.0), ('{"ranking": 9}', None), ("{not json}", None)],
    }  # fmt: skip
    for parser, cases in canned.items():
        for text, want in cases:
            assert PARSERS[parser](text) == want, (parser, text)


def test_the_parse_failure_policy_decides_a_verdict_that_cannot_be_read():
    judge = {"readout": "generate", "template": "rating-generate"}
    assert Judge.of(judge).verdict(["Rating: 6", "nothing", "8"]) == (7.0, 1)  # votes: the parsed ones' mean
    masked, failed = Judge.of({**judge, "on_parse_failure": "mask"}).verdict(["nothing"])
    assert math.isnan(masked) and failed == 1
    assert Judge.of({**judge, "on_parse_failure": "score=0"}).verdict(["nothing"]) == (0.0, 1)
    with pytest.raises(Exception, match="error, mask or score=X"):
        Judge.of({**judge, "on_parse_failure": "skip"})


def test_pairwise_verdicts_in_both_orders_become_bradley_terry_scores():
    from rmkit.kinds.judge import pairwise_scores

    judge = Judge.of({"readout": "generate", "template": "mt-bench-pairwise"})
    # 3 candidates, ordered pairs (0,1) (1,0) (0,2) (2,0) (1,2) (2,1): 0 beats both in both orders, 1 and 2 tie
    verdicts = [1.0, 0.0, 1.0, 0.0, 0.5, 0.5]
    scores = pairwise_scores(judge, verdicts, verdicts=True)
    assert scores[0] > scores[1] == pytest.approx(scores[2]) and sum(scores) == pytest.approx(0, abs=1e-9)
    # a position-biased judge that always says A: every pair comes out even
    assert pairwise_scores(judge, [1.0] * 6, verdicts=True) == pytest.approx([0, 0, 0], abs=1e-9)


def forced_lm(path, token: str):
    """A tiny Llama whose greedy next token is always ``token`` (added to the vocabulary when it is not one
    token): its last MLP writes one large direction into the residual stream, and only ``token``'s output
    row points along it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = make_tokenizer(path, chat_template=CHAT)
    if len(tok(token, add_special_tokens=False)["input_ids"]) != 1:
        tok.add_tokens([token])
        tok.save_pretrained(str(path))
    torch.manual_seed(3)
    config = LlamaConfig(vocab_size=len(tok), **TINY, mlp_bias=True, bos_token_id=1, eos_token_id=2,
                         pad_token_id=tok.pad_token_id)  # fmt: skip
    lm = LlamaForCausalLM(config)
    (target,) = tok(token, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        direction = torch.zeros(TINY["hidden_size"])
        direction[0] = 1.0
        lm.model.layers[-1].mlp.down_proj.bias.copy_(1e4 * direction)
        lm.lm_head.weight.zero_()
        lm.lm_head.weight[target] = direction
    lm.save_pretrained(str(path))
    return path


def test_a_generating_judge_scores_ranks_and_evaluates_end_to_end(tmp_path, lm_path):
    seven = forced_lm(tmp_path / "seven", "7")
    data = write_jsonl(tmp_path / "groups.jsonl", rank_rows())
    judge = ["--judge", "generate", "--judge-template", "rating-generate", "--judge-max-new-tokens", "1"]
    out = tmp_path / "ranked.jsonl"
    assert main(["rank", "--model", str(seven), *judge, "--input", str(data), "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(r["scores"] == [7.0, 7.0, 7.0] and r["judgments"] == ["7", "7", "7"] for r in rows)

    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": q, "chosen": a[0], "rejected": a[1]}
                                                   for q, a in zip(QUESTIONS, ANSWERS, strict=True)])  # fmt: skip
    assert main(["eval", "--model", str(seven), *judge, "--data", str(pairs), "--output-dir", str(tmp_path / "e"),
                 "--no-plots", "--bootstrap", "10"]) == 0  # fmt: skip
    assert all(
        json.loads(line)["chosen_score"] == 7.0
        for line in (tmp_path / "e" / "scores.jsonl").read_text().splitlines()
    )

    # the random tiny LM writes no rating: an error naming the row, or masked and counted
    random_judge = ["--judge", "generate", "--judge-max-new-tokens", "4"]
    args = ["score", "--model", str(lm_path), *random_judge, "--input", str(data), "--output"]
    assert main([*args, str(tmp_path / "a.jsonl")]) == 2
    import rmkit

    summary = rmkit.rank(model=str(lm_path), input=str(data), output=str(tmp_path / "b.jsonl"), judge="generate",
                         judge_max_new_tokens=4, on_parse_failure="mask", progress=False)  # fmt: skip
    assert summary["parse_failures"] == 9
    assert all(
        r["scores"] == [None, None, None]
        for r in map(json.loads, (tmp_path / "b.jsonl").read_text().splitlines())
    )


def test_a_verdict_that_carries_the_prefix_s_space_is_read_where_the_model_writes_it():
    """A tokenizer that writes ": A" as ":" and " A" (Llama 3's rule for letters) gets the prompt cut before
    the space and the verdict tokens " A", " B"; one that keeps the space apart is left as it is."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from rmkit.judges import fitted, verdict_ids

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {c: i for i, c in enumerate(sorted(alphabet))}
    joined = {**vocab, "ĠA": len(vocab), "ĠB": len(vocab) + 1}
    for words, merges in ((joined, [("Ġ", "A"), ("Ġ", "B")]), (vocab, [])):
        backend = Tokenizer(models.BPE(vocab=words, merges=merges))
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok = PreTrainedTokenizerFast(tokenizer_object=backend)
        judge = fitted(Judge.of({"readout": "pairwise"}), tok)
        if merges:
            assert judge.prefix == "Better answer:" and judge.tokens == [" A", " B"]
            assert verdict_ids(tok, judge) == [joined["ĠA"], joined["ĠB"]]
        else:
            assert judge.prefix == "Better answer: " and judge.tokens == ["A", "B"]


def test_serve_refuses_a_judge_that_cannot_answer_each_sample_with_a_number(lm_path):
    from rmkit.errors import RMKitError
    from rmkit.serving.app import ServeConfig, load

    with pytest.raises(RMKitError, match="pairwise judge needs two answers"):
        load(ServeConfig(model=str(lm_path), judge="pairwise"))
    for policy in ("error", "mask"):
        with pytest.raises(RMKitError, match="--on-parse-failure score=X"):
            load(ServeConfig(model=str(lm_path), judge="generate", on_parse_failure=policy))


def test_serve_answers_each_sample_with_a_generating_judge_s_verdict(tmp_path, lm_path):
    """Served one sample a request, as RL frameworks call it: the verdict the judge writes, or the failure
    policy's score where it writes none, counted at /metrics."""
    from rmkit.serving import running
    from rmkit.serving.app import ServeConfig, create_app, load

    seven = forced_lm(tmp_path / "seven", "7")
    for path, expected, failures in ((seven, 7.0, 0), (lm_path, -1.0, len(QUESTIONS))):
        config = ServeConfig(model=str(path), judge="generate", judge_template="rating-generate",
                             judge_max_new_tokens=1, on_parse_failure="score=-1")  # fmt: skip
        with running(create_app(load(config), config)) as base:
            served = []
            for q, a in zip(QUESTIONS, ANSWERS, strict=True):
                body = json.dumps({"prompts": [q], "responses": [a[0]]}).encode()
                request = urllib.request.Request(f"{base}/score", data=body,
                                                 headers={"Content-Type": "application/json"})  # fmt: skip
                with urllib.request.urlopen(request) as reply:
                    served += json.loads(reply.read())["scores"]
            with urllib.request.urlopen(f"{base}/metrics") as reply:
                metrics = reply.read().decode()
        assert served == [expected] * len(QUESTIONS)
        assert f"rmkit_judge_parse_failures_total {failures}" in metrics


def test_rewardbench_2_s_four_way_protocol_with_seeded_positions(tmp_path):
    """A judge that always answers [[A]] picks whichever answer its seeded order showed first: a row counts
    when that is the chosen one. Ties rows are rated one answer at a time, as RewardBench 2's runner does."""
    from test_suites import rb2_rows

    import rmkit

    always_a = forced_lm(tmp_path / "always_a", "[[A]]")
    rows = rb2_rows()
    data = write_jsonl(tmp_path / "rb2.jsonl", rows)
    metrics = rmkit.evaluate(model=str(always_a), data=str(data), output_dir=str(tmp_path / "eval"), plots=False,
                             bootstrap=10, judge="generate", judge_template="four-way", judge_max_new_tokens=1,
                             on_parse_failure="mask", judge_seed=7)  # fmt: skip
    judge = Judge.of({"readout": "generate", "template": "four-way", "seed": 7})
    (official,) = metrics["suite"]["models"].values()
    for subset in ("Factuality", "Precise IF", "Math", "Safety", "Focus"):
        mine = [r for r in rows if r["subset"] == subset]
        # the row numbers in the file: 1-based positions of the rows
        hand = [float(judge.order(rows.index(r) + 1, 4)[0] == 0) for r in mine]
        assert official["subsets"][subset]["score"] == pytest.approx(sum(hand) / len(hand))
    assert official["non_finite"]["rows"] == 6  # the Ties rows: rated, and [[A]] is no rating (masked)
    lines = [json.loads(line) for line in (tmp_path / "eval" / "scores.jsonl").read_text().splitlines()]
    assert all(sorted(line["scores"]) == [0, 0, 0, 1] for line in lines[:20])


def test_a_token_readout_is_the_logit_of_one_entry_after_the_conversation_and_converts_exactly(
    lm_path, tmp_path
):
    """Nemotron-70B-Reward's readout: the logit of vocabulary entry 0 at the position after the conversation
    rendered by the chat template (no judge prompt, no generation prompt)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    import rmkit

    tok = AutoTokenizer.from_pretrained(lm_path)
    lm = AutoModelForCausalLM.from_pretrained(lm_path).eval()
    question, answers = QUESTIONS[0], ANSWERS[0]
    hand = []
    for a in answers:
        text = tok.apply_chat_template(
            [{"role": "user", "content": question}, {"role": "assistant", "content": a}], tokenize=False
        )
        with torch.no_grad():
            hand.append(
                float(lm(**tok(text, add_special_tokens=False, return_tensors="pt")).logits[0, -1, 0])
            )
    judge = rmkit.load_judge(lm_path, "token", template="nemotron")
    assert judge.score([question] * 3, answers) == pytest.approx(hand, abs=1e-5)
    out = tmp_path / "as_classifier"
    assert main(["convert", str(lm_path), str(out), "--judge", "token", "--judge-template", "nemotron"]) == 0
    plain = AutoModelForSequenceClassification.from_pretrained(out).eval()
    text = tok.apply_chat_template(
        [{"role": "user", "content": question}, {"role": "assistant", "content": answers[0]}], tokenize=False
    )
    with torch.no_grad():
        logit = float(plain(**tok(text, add_special_tokens=False, return_tensors="pt")).logits[0, 0])
    assert logit == pytest.approx(hand[0], abs=1e-5)
    assert rmkit.RewardModel.from_pretrained(out).score([question] * 3, answers) == pytest.approx(
        hand, abs=1e-5
    )


def test_two_judges_with_one_tokenizer_never_share_a_tokenisation(lm_path, tmp_path):
    """The suite evaluation keeps each example's tokenisation for later models that prepare it alike: a
    converted verifier and the same LM read as a rating judge share the tokenizer, not the prompt."""
    from rmkit.kinds import KINDS
    from rmkit.kinds.base import Reading, _preparation

    verifier = rmkit_load(lm_path, "verifier", tokens=["y", "n"])
    rating = rmkit_load(lm_path, "rating", template="rating-5")
    kind = KINDS[0]
    keys = {_preparation(m, kind.tokenizer(m, Reading())) for m in (verifier, rating)}
    assert len(keys) == 2


def rmkit_load(path, readout, **settings):
    import rmkit

    return rmkit.load_judge(path, readout, **settings)


def test_the_vllm_engine_is_asked_for_by_name_and_refused_clearly_where_absent(tmp_path, lm_path, capsys):
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here: test_vllm_writes_the_judgments_transformers_writes covers it")
    data = write_jsonl(tmp_path / "r.jsonl", [{"prompt": "q", "response": "a"}])
    args = ["score", "--model", str(lm_path), "--input", str(data), "--output", str(tmp_path / "o.jsonl")]
    assert main([*args, "--judge", "generate", "--judge-engine", "vllm"]) == 2
    assert "--judge-engine vllm needs vLLM" in capsys.readouterr().err


def test_vllm_writes_the_judgments_transformers_writes(tmp_path):
    """Where vLLM and a GPU are present: greedy judgments of one judge by both engines, verdict for verdict."""
    pytest.importorskip("vllm", reason="vLLM is an optional engine (GPU); not installed here")
    if not torch.cuda.is_available():
        pytest.skip("vLLM's engine needs a GPU")
    import rmkit

    seven = forced_lm(tmp_path / "seven", "7")
    data = write_jsonl(tmp_path / "groups.jsonl", rank_rows())
    outs = {}
    for engine in ("transformers", "vllm"):
        outs[engine] = tmp_path / f"{engine}.jsonl"
        rmkit.rank(model=str(seven), input=str(data), output=str(outs[engine]), judge="generate",
                   judge_template="rating-generate", judge_max_new_tokens=1, judge_engine=engine,
                   progress=False)  # fmt: skip
    assert outs["vllm"].read_text() == outs["transformers"].read_text()
