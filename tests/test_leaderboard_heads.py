"""Leaderboard RMs scored as their authors' code scores them: Athene-RM's doubled BOS, InternLM2-Reward read
without remote code (fused attention weights, its sentencepiece tokenizer, its reward token)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_llama, write_jsonl
from safetensors.torch import save_file
from transformers import AutoTokenizer, LlamaForCausalLM

from rmkit import RewardModel
from rmkit.cli import main

# A chat template that writes the BOS itself, as Llama 3's (Athene-RM's) and InternLM2's do.
BOS_TEMPLATE = "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
PROMPTS = ["What is two plus two?", "Name a colour."]
ANSWERS = ["Four.", "Blue, like the sky."]


def _conversation(prompt: str, answer: str) -> list[dict]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


@pytest.fixture(scope="module")
def athene(tmp_path_factory) -> tuple[Path, Path, torch.Tensor]:
    """``(Athene-layout checkpoint, the causal LM it was made from, its v_head)``: a LlamaModel's weights
    under ``model.``, a bias-free ``v_head``, CLS id 7, a tokenizer whose chat template writes the BOS."""
    lm_path = make_llama(tmp_path_factory.mktemp("athene_lm"), seed=4, chat_template=BOS_TEMPLATE)
    config = json.loads((lm_path / "config.json").read_text())
    lm = LlamaForCausalLM.from_pretrained(lm_path)
    weight = torch.randn(1, config["hidden_size"], generator=torch.Generator().manual_seed(5))
    state = {k: v for k, v in lm.state_dict().items() if k.startswith("model.")} | {"v_head.weight": weight}
    path = tmp_path_factory.mktemp("athene")
    raw = {**config, "architectures": ["AtheneForSequenceClassification"], "cls_token_id": 7}
    (path / "config.json").write_text(json.dumps(raw))
    save_file({k: v.contiguous() for k, v in state.items()}, path / "model.safetensors")
    AutoTokenizer.from_pretrained(lm_path).save_pretrained(path)
    return path, lm_path, weight


def _athene_by_hand(
    lm_path: Path, weight: torch.Tensor, *, doubled: bool, prompts: list[str] = PROMPTS
) -> list[float]:
    """Athene-RM's model card pipeline: the chat template's text, ``tokenizer(text)`` (which adds the BOS the
    template already wrote), the CLS token appended, ``v_head`` at the CLS token. ``doubled=False``: one BOS."""
    lm = LlamaForCausalLM.from_pretrained(lm_path).eval()
    tok = AutoTokenizer.from_pretrained(lm_path)
    out = []
    with torch.no_grad():
        for p, a in zip(prompts, ANSWERS, strict=True):
            text = tok.apply_chat_template(_conversation(p, a), tokenize=False)
            ids = tok(text)["input_ids"] + [7]
            assert ids[:2] == [tok.bos_token_id] * 2  # the card's sequences begin with two BOS tokens
            ids = ids if doubled else ids[1:]
            out.append(float(lm.model(torch.tensor([ids])).last_hidden_state[0, -1] @ weight[0]))
    return out


def test_athene_scores_as_its_model_card_with_the_bos_doubled_and_single_bos_gives_the_other_reading(
    athene, tmp_path, capsys
):
    path, lm_path, weight = athene
    card = _athene_by_hand(lm_path, weight, doubled=True)
    single = _athene_by_hand(lm_path, weight, doubled=False)
    assert max(abs(a - b) for a, b in zip(card, single, strict=True)) > 1e-3  # the two readings differ
    rm = RewardModel.from_pretrained(path)
    assert rm.metadata["double_bos"] is True
    assert rm.score(PROMPTS, ANSWERS) == pytest.approx(card, abs=1e-5)
    assert RewardModel.from_pretrained(path, single_bos=True).score(PROMPTS, ANSWERS) == pytest.approx(
        single, abs=1e-5
    )
    # The score command reads it so by default and says so; --single-bos gives the other reading.
    rows = write_jsonl(
        tmp_path / "rows.jsonl", [{"prompt": p, "response": a} for p, a in zip(PROMPTS, ANSWERS, strict=True)]
    )
    for flags, expected in (([], card), (["--single-bos"], single)):
        out = tmp_path / f"scores{len(flags)}.jsonl"
        assert main(["score", "--model", str(path), "--input", str(rows), "--output", str(out), *flags]) == 0
        got = [json.loads(line)["score"] for line in out.read_text().splitlines()]
        assert got == pytest.approx(expected, abs=1e-5)
        said = capsys.readouterr().out
        assert ("2 rows begin with the BOS twice" in said) == (not flags)
    # Answers to one long prompt (tokenised once for both, and scored after one pass over it) read the same.
    long = "Please answer briefly and plainly, as a careful teacher would: what is two plus two?"
    bon = write_jsonl(tmp_path / "bon.jsonl", [{"prompt": long, "responses": ANSWERS}])
    assert (
        main(["rank", "--model", str(path), "--input", str(bon), "--output", str(tmp_path / "r.jsonl")]) == 0
    )
    ranked = json.loads((tmp_path / "r.jsonl").read_text())["scores"]
    assert ranked == pytest.approx(
        _athene_by_hand(lm_path, weight, doubled=True, prompts=[long] * 2), abs=1e-5
    )
    assert "prefix sharing: 2 responses shared" in capsys.readouterr().out
    # A converted Athene is a plain classifier that keeps the CLS token and the doubled BOS in its metadata.
    converted = tmp_path / "converted"
    assert main(["convert", str(path), str(converted)]) == 0
    again = RewardModel.from_pretrained(converted)
    assert again.metadata["double_bos"] is True and again.metadata["end_token_id"] == 7
    assert again.score(PROMPTS, ANSWERS) == pytest.approx(card, abs=1e-5)


# InternLM2's chat template (its tokenizer_config.json), which writes the BOS itself.
INTERNLM2_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] "
    "+ '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
RENAMED = {3: "<|im_start|>", 4: "<|im_end|>"}  # pieces [UNUSED_TOKEN_0], [UNUSED_TOKEN_1] in tokenizer.model
REWARD_ID = 5  # [UNUSED_TOKEN_2]: the tiny model's reward_token_id (92527 in InternLM2-Reward's)
MIXED_TEXTS = [
    "  leading spaces,   repeated   spaces\nand a new line\n\n",
    "<|im_start|>user\n这是一个中文句子。你好，世界！<|im_end|>\n<|im_start|>assistant\n Paris<|im_end|>",
    "\tTwo plus two is four.</s><s> Zebra 🙂 é",
    "   ",
]
HEADS, KV_HEADS, HEAD_DIM, LAYERS, HIDDEN, FFN = 4, 2, 8, 2, 32, 64


@pytest.fixture(scope="module")
def internlm2(tmp_path_factory) -> Path:
    """A tiny InternLM2ForRewardModel checkpoint: a sentencepiece BPE tokenizer.model trained here (byte
    fallback, dummy prefix), InternLM2's names, fused wqkv, a bias-free v_head, dynamic RoPE scaling."""
    spm = pytest.importorskip("sentencepiece", reason="sentencepiece trains the test's tokenizer.model")
    import io

    from conftest import CORPUS

    path = tmp_path_factory.mktemp("internlm2")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([*CORPUS, "  spaces   and\nnew lines\n\n  here"] * 3), model_writer=model,
        vocab_size=420, model_type="bpe", byte_fallback=True, normalization_rule_name="identity",
        remove_extra_whitespaces=False, add_dummy_prefix=True, allow_whitespace_only_pieces=True,
        user_defined_symbols=["[UNUSED_TOKEN_0]", "[UNUSED_TOKEN_1]", "[UNUSED_TOKEN_2]"],
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, character_coverage=1.0, minloglevel=2, num_threads=1,
    )  # fmt: skip
    (path / "tokenizer.model").write_bytes(model.getvalue())
    settings = {
        "tokenizer_class": "InternLM2Tokenizer",
        "auto_map": {"AutoTokenizer": ["tokenization_internlm2.InternLM2Tokenizer", None]},
        "added_tokens_decoder": {str(i): {"content": c, "special": True} for i, c in RENAMED.items()},
        "chat_template": INTERNLM2_TEMPLATE,
        "bos_token": "<s>", "eos_token": "</s>", "pad_token": "</s>", "unk_token": "<unk>",
    }  # fmt: skip
    (path / "tokenizer_config.json").write_text(json.dumps(settings))
    config = {
        "architectures": ["InternLM2ForRewardModel"], "model_type": "internlm2",
        "auto_map": {"AutoModel": "modeling_internlm2.InternLM2ForRewardModel"},
        "vocab_size": 420, "hidden_size": HIDDEN, "intermediate_size": FFN, "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "max_position_embeddings": 48,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000, "rope_scaling": {"type": "dynamic", "factor": 2.0},
        "hidden_act": "silu", "bias": False, "reward_token_id": REWARD_ID, "bos_token_id": 1,
        "eos_token_id": 2, "pad_token_id": 2, "tie_word_embeddings": False, "attn_implementation": "eager",
    }  # fmt: skip
    (path / "config.json").write_text(json.dumps(config))
    g = torch.Generator().manual_seed(17)
    qkv = (HEADS + 2 * KV_HEADS) * HEAD_DIM
    state = {"model.tok_embeddings.weight": torch.randn(420, HIDDEN, generator=g),
             "model.norm.weight": 1 + 0.1 * torch.randn(HIDDEN, generator=g),
             "v_head.weight": torch.randn(1, HIDDEN, generator=g)}  # fmt: skip
    for i in range(LAYERS):
        shapes = {"attention.wqkv": (qkv, HIDDEN), "attention.wo": (HIDDEN, HIDDEN),
                  "feed_forward.w1": (FFN, HIDDEN), "feed_forward.w3": (FFN, HIDDEN),
                  "feed_forward.w2": (HIDDEN, FFN)}  # fmt: skip
        for name, (a, b) in shapes.items():
            state[f"model.layers.{i}.{name}.weight"] = torch.randn(a, b, generator=g) / b**0.5
        for name in ("attention_norm", "ffn_norm"):
            state[f"model.layers.{i}.{name}.weight"] = 1 + 0.1 * torch.randn(HIDDEN, generator=g)
    save_file(state, path / "model.safetensors")
    return path


def _sentencepiece_ids(path: Path, text: str) -> list[int]:
    """InternLM2's slow tokenizer's ids of ``text`` (no BOS): the special tokens split out, each piece of text
    between them encoded by sentencepiece itself."""
    import re

    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(path / "tokenizer.model"))
    specials = {"<s>": 1, "</s>": 2} | {c: i for i, c in RENAMED.items()}
    ids: list[int] = []
    for part in re.split("(" + "|".join(map(re.escape, specials)) + ")", text):
        ids += [specials[part]] if part in specials else sp.encode(part) if part else []
    return ids


def _internlm2_by_hand(path: Path, ids: list[int]) -> float:
    """InternLM2ForRewardModel's score of ``ids``, computed from the fused weights: RMSNorm, attention with q, k,
    v cut out of ``wqkv`` per key/value group and RoPE (its dynamic NTK base past max_position_embeddings),
    SwiGLU, the final norm, ``v_head`` at the last token."""
    from safetensors.torch import load_file

    w, config = load_file(path / "model.safetensors"), json.loads((path / "config.json").read_text())
    n, groups = len(ids), HEADS // KV_HEADS

    def norm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + config["rms_norm_eps"]) * weight

    base, limit, factor = config["rope_theta"], config["max_position_embeddings"], 2.0
    if n > limit:
        base *= (factor * n / limit - (factor - 1)) ** (HEAD_DIM / (HEAD_DIM - 2))
    angles = torch.outer(
        torch.arange(n).float(), 1 / base ** (torch.arange(0, HEAD_DIM, 2).float() / HEAD_DIM)
    )
    cos, sin = torch.cat([angles, angles], -1).cos()[:, None], torch.cat([angles, angles], -1).sin()[:, None]

    def rope(x: torch.Tensor) -> torch.Tensor:
        half = torch.cat([-x[..., HEAD_DIM // 2 :], x[..., : HEAD_DIM // 2]], -1)
        return x * cos + half * sin

    x = w["model.tok_embeddings.weight"][ids]
    causal = torch.full((n, n), float("-inf")).triu(1)
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        qkv = (norm(x, w[p + "attention_norm.weight"]) @ w[p + "attention.wqkv.weight"].T).reshape(
            n, KV_HEADS, groups + 2, HEAD_DIM
        )
        q = rope(qkv[:, :, :groups].reshape(n, HEADS, HEAD_DIM))
        k = rope(qkv[:, :, groups]).repeat_interleave(groups, 1)
        v = qkv[:, :, groups + 1].repeat_interleave(groups, 1)
        att = torch.softmax(torch.einsum("qhd,khd->hqk", q, k) / HEAD_DIM**0.5 + causal, -1)
        x = x + torch.einsum("hqk,khd->qhd", att, v).reshape(n, -1) @ w[p + "attention.wo.weight"].T
        h = norm(x, w[p + "ffn_norm.weight"])
        gate = torch.nn.functional.silu(h @ w[p + "feed_forward.w1.weight"].T)
        x = x + (gate * (h @ w[p + "feed_forward.w3.weight"].T)) @ w[p + "feed_forward.w2.weight"].T
    return float(norm(x, w["model.norm.weight"])[-1] @ w["v_head.weight"][0])


def _internlm2_ids(path: Path, prompt: str, answer: str) -> list[int]:
    """Its ``get_score``'s sequence: the chat template's text (which writes the BOS) encoded with
    sentencepiece, no special tokens added, the reward token appended."""
    from jinja2 import Template

    text = Template(INTERNLM2_TEMPLATE).render(messages=_conversation(prompt, answer), bos_token="<s>")
    return _sentencepiece_ids(path, text) + [REWARD_ID]


def test_internlm2_s_tokenizer_is_built_from_tokenizer_model_and_equals_sentencepiece(internlm2):
    from rmkit.internlm2 import tokenizer

    tok = tokenizer(internlm2)
    for text in MIXED_TEXTS:
        assert tok(text, add_special_tokens=False)["input_ids"] == _sentencepiece_ids(internlm2, text), text
        assert tok(text)["input_ids"] == [1, *_sentencepiece_ids(internlm2, text)]  # BOS added, EOS not
    assert (tok.pad_token, tok.eos_token, tok.bos_token) == ("</s>", "</s>", "<s>")
    assert tok.convert_ids_to_tokens([3, 4]) == ["<|im_start|>", "<|im_end|>"]  # added_tokens_decoder
    assert tok.decode(tok("Paris is a city.", add_special_tokens=False)["input_ids"]) == "Paris is a city."


def test_internlm2_reward_is_read_without_remote_code_as_its_formula_by_hand(internlm2):
    """The scores equal the formula by hand on its own sequences (the reward token appended), batched and
    under either padding; a sequence past max_position_embeddings takes its dynamic RoPE base."""
    from test_layouts import assert_either_padding

    rm = RewardModel.from_pretrained(internlm2)
    assert rm.metadata["end_token_id"] == REWARD_ID and rm.metadata["converted_from"]["layout"] == "internlm2"
    assert rm.tokenizer.chat_template == INTERNLM2_TEMPLATE
    ids = [_internlm2_ids(internlm2, p, a) for p, a in zip(PROMPTS, ANSWERS, strict=True)]
    expected = [_internlm2_by_hand(internlm2, row) for row in ids]
    assert rm.score(PROMPTS, ANSWERS) == pytest.approx(expected, abs=1e-5)
    assert_either_padding(rm, ids, expected)
    long = " ".join(["Two plus two is four."] * 12)
    row = _internlm2_ids(internlm2, "What is two plus two?", long)
    assert (
        len(row) > 48
    )  # past max_position_embeddings (rmkit's length limit, so run as ids): the scaled base
    with torch.no_grad():
        got = rm(torch.tensor([row]), torch.ones(1, len(row), dtype=torch.long)).end_scores.tolist()
    assert got == pytest.approx([_internlm2_by_hand(internlm2, row)], abs=1e-5)


def test_every_face_and_convert_read_internlm2_reward(internlm2, tmp_path):
    """score, rank, eval and serve read the InternLM2 checkpoint directly; convert writes a plain Llama
    classifier (reward token in rmkit's metadata, a tokenizer.json) that transformers and rmkit score alike."""
    import urllib.request

    from transformers import AutoModelForSequenceClassification

    from rmkit.serving import ServeConfig, running
    from rmkit.serving.app import create_app, load

    expected = [
        _internlm2_by_hand(internlm2, _internlm2_ids(internlm2, p, a))
        for p, a in zip(PROMPTS, ANSWERS, strict=True)
    ]
    rows = write_jsonl(
        tmp_path / "rows.jsonl", [{"prompt": p, "response": a} for p, a in zip(PROMPTS, ANSWERS, strict=True)]
    )
    assert (
        main(
            ["score", "--model", str(internlm2), "--input", str(rows), "--output", str(tmp_path / "s.jsonl")]
        )
        == 0
    )
    scores = [json.loads(line)["score"] for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert scores == pytest.approx(expected, abs=1e-5)
    bon = write_jsonl(tmp_path / "bon.jsonl", [{"prompt": PROMPTS[0], "responses": [ANSWERS[0], ANSWERS[1]]}])
    assert (
        main(["rank", "--model", str(internlm2), "--input", str(bon), "--output", str(tmp_path / "r.jsonl")])
        == 0
    )
    ranked = json.loads((tmp_path / "r.jsonl").read_text())["scores"]
    alone = [_internlm2_by_hand(internlm2, _internlm2_ids(internlm2, PROMPTS[0], a)) for a in ANSWERS]
    assert ranked == pytest.approx(alone, abs=1e-5)
    pairs = write_jsonl(
        tmp_path / "pairs.jsonl", [{"prompt": PROMPTS[0], "chosen": ANSWERS[0], "rejected": ANSWERS[1]}]
    )
    ev = [
        "eval",
        "--model",
        str(internlm2),
        "--data",
        str(pairs),
        "--output-dir",
        str(tmp_path / "ev"),
        "--no-plots",
    ]
    assert main([*ev, "--bootstrap", "0"]) == 0
    line = json.loads((tmp_path / "ev" / "scores.jsonl").read_text())
    assert (line["chosen_score"], line["rejected_score"]) == pytest.approx(alone, abs=1e-5)
    config = ServeConfig(model=str(internlm2))
    with running(create_app(load(config), config)) as base:
        body = json.dumps({"prompts": PROMPTS, "responses": ANSWERS}).encode()
        request = urllib.request.Request(
            f"{base}/score", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request) as reply:
            assert json.loads(reply.read())["scores"] == pytest.approx(expected, abs=1e-5)
    out = tmp_path / "converted"
    assert main(["convert", str(internlm2), str(out)]) == 0
    assert (out / "tokenizer.json").is_file() and json.loads((out / "config.json").read_text())["rmkit"][
        "end_token_id"
    ] == REWARD_ID
    assert RewardModel.from_pretrained(out).score(PROMPTS, ANSWERS) == pytest.approx(expected, abs=1e-5)
    plain = AutoModelForSequenceClassification.from_pretrained(out).eval()
    with torch.no_grad():
        logits = plain(torch.tensor([_internlm2_ids(internlm2, PROMPTS[0], ANSWERS[0])])).logits
    assert float(logits[0, 0]) == pytest.approx(expected[0], abs=1e-5)


def test_an_internlm2_checkpoint_without_its_tokenizer_model_is_refused_in_one_line(internlm2, tmp_path):
    import shutil

    from rmkit import RMKitError

    bare = tmp_path / "bare"
    shutil.copytree(internlm2, bare)
    (bare / "tokenizer.model").unlink()
    with pytest.raises(RMKitError, match="without its tokenizer.model; name a tokenizer with --tokenizer"):
        RewardModel.from_pretrained(bare)


HELPSTEER = ["helpfulness", "correctness", "coherence", "complexity", "verbosity"]
TREE_FEATURES = ["verbosity", "helpfulness", "correctness", "complexity", "coherence"]  # the pickle's order


@pytest.fixture(scope="module")
def decision_tree(tmp_path_factory) -> tuple[Path, Path, dict, object]:
    """``(checkpoint, causal LM, head weights, tree)``: a Llama backbone with a 5-attribute ``score`` (with a
    bias), and beside it a depth-3 scikit-learn tree fitted here on attribute differences given as a
    DataFrame whose columns are in another order than the head's, pickled as decision_tree.pkl."""
    pd = pytest.importorskip("pandas")
    tree_module = pytest.importorskip("sklearn.tree", reason="scikit-learn fits the test's tree")
    import pickle

    lm_path = make_llama(tmp_path_factory.mktemp("dt_lm"), seed=6)
    config = json.loads((lm_path / "config.json").read_text())
    lm = LlamaForCausalLM.from_pretrained(lm_path)
    g = torch.Generator().manual_seed(23)
    head = {
        "score.weight": torch.randn(5, config["hidden_size"], generator=g),
        "score.bias": torch.randn(5, generator=g),
    }
    state = {k: v for k, v in lm.state_dict().items() if k.startswith("model.")} | head
    path = tmp_path_factory.mktemp("decision_tree")
    raw = {**config, "architectures": ["LlamaForSequenceClassification"],
           "id2label": dict(enumerate(HELPSTEER)), "label2id": {n: i for i, n in enumerate(HELPSTEER)}}  # fmt: skip
    (path / "config.json").write_text(json.dumps(raw))
    save_file({k: v.contiguous() for k, v in state.items()}, path / "model.safetensors")
    AutoTokenizer.from_pretrained(lm_path).save_pretrained(path)
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(400, 5)), columns=TREE_FEATURES)
    y = ((x["helpfulness"] + 0.5 * x["verbosity"] * x["correctness"]) > 0.1).astype(
        int
    )  # not one linear score
    tree = tree_module.DecisionTreeClassifier(max_depth=3, random_state=0).fit(x, y)
    (path / "decision_tree.pkl").write_bytes(pickle.dumps(tree))
    return path, lm_path, head, tree


def _attributes_by_hand(lm_path: Path, head: dict, prompt: str, answer: str) -> np.ndarray:
    """The five attributes at the rendered conversation's last token: ``score.weight @ h + score.bias``."""
    from rmkit.data import render_plain

    lm = LlamaForCausalLM.from_pretrained(lm_path).eval()
    tok = AutoTokenizer.from_pretrained(lm_path)
    ids = tok(render_plain(_conversation(prompt, answer)))["input_ids"] + [tok.eos_token_id]
    with torch.no_grad():
        h = lm.model(torch.tensor([ids])).last_hidden_state[0, -1]
    return (head["score.weight"] @ h + head["score.bias"]).numpy()


def _tree_prefers(tree, a: np.ndarray, b: np.ndarray) -> float:
    """P(a ≻ b) by the fitted tree read in both orders: (f(a - b) + 1 - f(b - a)) / 2, features by name."""
    import pandas as pd

    def f(d: np.ndarray) -> float:
        frame = pd.DataFrame([dict(zip(HELPSTEER, d, strict=True))])[TREE_FEATURES]
        return float(tree.predict_proba(frame)[0, list(tree.classes_).index(1)])

    return (f(a - b) + 1 - f(b - a)) / 2


def test_the_decision_tree_rm_s_attributes_are_its_biased_head_by_hand(decision_tree):
    from rmkit import kinds

    path, lm_path, head, _ = decision_tree
    kind, rm = kinds.load(str(path), {"allow_pickle": True})
    assert kind.name == "decision-tree" and rm.attributes == HELPSTEER
    by_hand = [_attributes_by_hand(lm_path, head, p, a) for p, a in zip(PROMPTS, ANSWERS, strict=True)]
    reading = kinds.Reading()
    from rmkit.data import Example

    examples = [
        Example(i, [{"role": "user", "content": p}], [a], False)
        for i, (p, a) in enumerate(zip(PROMPTS, ANSWERS, strict=True))
    ]
    for (_, raw), attributes in zip(kind.score(rm, examples, reading), by_hand, strict=True):
        assert raw[0][1:] == pytest.approx(attributes.tolist(), abs=1e-5)
        assert raw[0][0] == pytest.approx(float(attributes.mean()), abs=1e-5)  # the score: their mean
    weighted = RewardModel.from_pretrained(path, weights={"helpfulness": 1, "verbosity": -0.5})
    expected = [float(a[0] - 0.5 * a[4]) for a in by_hand]
    assert weighted.score(PROMPTS, ANSWERS) == pytest.approx(expected, abs=1e-5)


def test_the_decision_tree_s_verdict_is_the_pickled_tree_s_in_both_orders(decision_tree, tmp_path):
    """eval on pairs and rank on best-of-N use the tree read in both orders (module rmkit.kinds.tree), equal
    to the scikit-learn tree the test fitted; swapping chosen and rejected gives the complement."""
    path, lm_path, head, tree = decision_tree
    answers = ["Four.", "Blue, like the sky.", "The capital of France is Paris."]
    r = [_attributes_by_hand(lm_path, head, PROMPTS[0], a) for a in answers]
    pairs = write_jsonl(
        tmp_path / "pairs.jsonl",
        [{"prompt": PROMPTS[0], "chosen": answers[0], "rejected": answers[1]},
         {"prompt": PROMPTS[0], "chosen": answers[1], "rejected": answers[0]},
         {"prompt": PROMPTS[0], "chosen": answers[2], "rejected": answers[0]}],
    )  # fmt: skip
    ev = [
        "eval",
        "--model",
        str(path),
        "--data",
        str(pairs),
        "--output-dir",
        str(tmp_path / "ev"),
        "--no-plots",
    ]
    assert main([*ev, "--bootstrap", "0", "--allow-pickle"]) == 0
    lines = [json.loads(line) for line in (tmp_path / "ev" / "scores.jsonl").read_text().splitlines()]
    for line, (c, w) in zip(lines, [(0, 1), (1, 0), (2, 0)], strict=True):
        p = _tree_prefers(tree, r[c], r[w])
        assert (line["chosen_score"], line["rejected_score"]) == pytest.approx((p, 1 - p), abs=1e-6)
    assert lines[0]["chosen_score"] == pytest.approx(lines[1]["rejected_score"], abs=1e-9)
    bon = write_jsonl(tmp_path / "bon.jsonl", [{"prompt": PROMPTS[0], "responses": answers}])
    out = tmp_path / "ranked.jsonl"
    assert (
        main(["rank", "--model", str(path), "--input", str(bon), "--output", str(out), "--allow-pickle"]) == 0
    )
    ranked = json.loads(out.read_text())
    expected = [np.mean([_tree_prefers(tree, r[i], r[j]) for j in range(3) if j != i]) for i in range(3)]
    assert ranked["scores"] == pytest.approx(expected, abs=1e-6)
    assert ranked["best"] == int(np.argmax(expected))


class _RunsCode:
    """Unpickling this creates ``marker``: what a malicious decision_tree.pkl would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_the_decision_tree_is_refused_in_one_line_without_allow_pickle(decision_tree, tmp_path, capsys):
    import pickle
    import shutil

    path = tmp_path / "malicious"
    shutil.copytree(decision_tree[0], path)
    marker = tmp_path / "ran"
    (path / "decision_tree.pkl").write_bytes(pickle.dumps(_RunsCode(marker)))
    rows = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": PROMPTS[0], "response": ANSWERS[0]}])
    assert (
        main(["score", "--model", str(path), "--input", str(rows), "--output", str(tmp_path / "s.jsonl")])
        != 0
    )
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and "decision_tree.pkl" in said[0] and "--allow-pickle" in said[0]
    assert not (tmp_path / "s.jsonl").exists()
    assert not marker.exists(), "the pickle ran"
    # convert reads the checkpoint as its kind does: the pickle is refused there too, unrun
    assert main(["convert", str(path), str(tmp_path / "converted")]) != 0
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and "--allow-pickle" in said[0] and not marker.exists()
