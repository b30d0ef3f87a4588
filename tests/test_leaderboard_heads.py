"""Leaderboard RMs scored as their authors' code scores them: Athene-RM's doubled BOS, InternLM2-Reward read
without remote code (fused attention weights, its sentencepiece tokenizer, its reward token)."""

from __future__ import annotations

import json
from pathlib import Path

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


def _athene_by_hand(lm_path: Path, weight: torch.Tensor, *, doubled: bool) -> list[float]:
    """Athene-RM's model card pipeline: the chat template's text, ``tokenizer(text)`` (which adds the BOS the
    template already wrote), the CLS token appended, ``v_head`` at the CLS token. ``doubled=False``: one BOS."""
    lm = LlamaForCausalLM.from_pretrained(lm_path).eval()
    tok = AutoTokenizer.from_pretrained(lm_path)
    out = []
    with torch.no_grad():
        for p, a in zip(PROMPTS, ANSWERS, strict=True):
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
    # A converted Athene is a plain classifier that keeps the CLS token and the doubled BOS in its metadata.
    converted = tmp_path / "converted"
    assert main(["convert", str(path), str(converted)]) == 0
    again = RewardModel.from_pretrained(converted)
    assert again.metadata["double_bos"] is True and again.metadata["end_token_id"] == 7
    assert again.score(PROMPTS, ANSWERS) == pytest.approx(card, abs=1e-5)
