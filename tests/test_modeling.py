"""RewardModel: scores equal plain transformers', padding never changes a score, checkpoints round-trip."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rmkit import RewardModel
from rmkit.data import Example, pad_batch
from rmkit.errors import RMKitError

PROMPTS = ["What is two plus two?", "Hello", "Convert five kilometres to metres."]
RESPONSES = [
    "Two plus two is four.",
    "Hi, how can I help you today? The weather is sunny and warm.",
    "Five thousand.",
]
LONG = " ".join(["The capital of France is Paris. Paris is a city in Europe."] * 12)


def encode(rm, prompts, responses):
    examples = [
        Example(i, [{"role": "user", "content": p}], [r], is_pair=False)
        for i, (p, r) in enumerate(zip(prompts, responses, strict=True))
    ]
    return [e[0].ids for e in rm.example_tokenizer().tokenize(examples)]


def test_checkpoint_loads_in_plain_transformers_without_missing_keys(saved_rm):
    _, path = saved_rm
    model, info = AutoModelForSequenceClassification.from_pretrained(path, output_loading_info=True)
    assert not info["missing_keys"]
    assert not info["unexpected_keys"]
    assert model.config.num_labels == 1
    assert (path / "model.safetensors").exists() and not (path / "pytorch_model.bin").exists()
    config = json.loads((path / "config.json").read_text())
    assert config["rmkit"]["max_length"] == 256 and config["rmkit"]["version"]


def test_end_scores_equal_plain_transformers_logits(saved_rm):
    rm, path = saved_rm
    hf = AutoModelForSequenceClassification.from_pretrained(path).eval()
    for ids in encode(rm, PROMPTS, RESPONSES):
        ids_t = torch.tensor([ids])
        with torch.no_grad():
            expected = hf(ids_t).logits[0, 0].item()
            ours = rm(ids_t, torch.ones_like(ids_t))
        assert ours.end_scores.item() == pytest.approx(expected, abs=1e-5)
        assert ours.scores.shape == ids_t.shape
        assert ours.scores[0, ours.end_index[0]].item() == pytest.approx(expected, abs=1e-5)


def test_reloaded_rm_gives_the_same_scores(saved_rm):
    rm, path = saved_rm
    again = RewardModel.from_pretrained(path)
    assert again.max_length == 256
    assert again.score(prompts=PROMPTS, responses=RESPONSES) == pytest.approx(
        rm.score(prompts=PROMPTS, responses=RESPONSES), abs=1e-6
    )


def test_scores_do_not_depend_on_batching_or_padding_side(saved_rm):
    rm, _ = saved_rm
    seqs = encode(rm, PROMPTS + [LONG], RESPONSES + [LONG])
    pad = rm.tokenizer.pad_token_id
    alone = []
    with torch.no_grad():
        for s in seqs[:3]:
            ids = torch.tensor([s])
            alone.append(rm(ids, torch.ones_like(ids)).end_scores.item())
        for side in ("right", "left"):
            ids, mask = pad_batch(seqs, pad, side=side)
            assert ids.shape[1] > 2 * max(len(s) for s in seqs[:3])
            batched = rm(ids, mask).end_scores[:3].tolist()
            assert batched == pytest.approx(alone, abs=1e-4), side


def test_unmasked_right_padding_gives_the_masked_token_scores(llama_path):
    """A decoder runs right-padded batches without the mask; every real token's score is unchanged."""
    rm = RewardModel.from_pretrained(llama_path)
    seqs = encode(rm, PROMPTS + [LONG], RESPONSES + [LONG])
    ids, mask = pad_batch(seqs, rm.tokenizer.pad_token_id, side="right")
    with torch.no_grad():
        fast = rm(ids, mask)
        rm.unmask_right_padding = False
        masked = rm(ids, mask)
    real = mask.bool()
    assert torch.allclose(fast.scores[real], masked.scores[real], atol=1e-5)
    assert fast.end_index.tolist() == [len(s) - 1 for s in seqs]


def test_decoder_end_is_read_at_last_real_token(llama_path):
    rm = RewardModel.from_pretrained(llama_path)
    ids, mask = pad_batch([[1, 5, 6, 7], [1, 5]], rm.tokenizer.pad_token_id, side="left")
    out = rm(ids, mask)
    assert out.end_index.tolist() == [3, 3]
    ids, mask = pad_batch([[1, 5, 6, 7], [1, 5]], rm.tokenizer.pad_token_id, side="right")
    assert rm(ids, mask).end_index.tolist() == [3, 1]


def test_pad_equal_to_eos_scores_like_a_distinct_pad(llama_path):
    distinct = RewardModel.from_pretrained(llama_path)
    tok = AutoTokenizer.from_pretrained(llama_path)
    tok.pad_token = tok.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(llama_path, num_labels=1)
    model.score.weight.data.copy_(distinct.model.score.weight.data)
    pad_is_eos = RewardModel(model, tok).eval()
    assert pad_is_eos.tokenizer.pad_token_id == pad_is_eos.tokenizer.eos_token_id
    texts = PROMPTS + [LONG]
    expected = distinct.score(prompts=texts, responses=RESPONSES + [LONG])
    got = pad_is_eos.score(prompts=texts, responses=RESPONSES + [LONG])
    assert got == pytest.approx(expected, abs=1e-5)
    # every rendered answer ends with EOS, the token the score is read at
    assert all(ids[-1] == tok.eos_token_id for ids in encode(pad_is_eos, PROMPTS, RESPONSES))


def test_tokenizer_without_pad_token_borrows_eos_without_resizing(llama_nopad_path):
    rm = RewardModel.from_pretrained(llama_nopad_path)
    assert rm.tokenizer.pad_token == rm.tokenizer.eos_token
    assert rm.model.get_input_embeddings().num_embeddings == len(rm.tokenizer)
    assert len(rm.score(prompts=PROMPTS, responses=RESPONSES)) == 3


def test_score_accepts_messages_and_texts(llama_path):
    rm = RewardModel.from_pretrained(llama_path)
    by_pair = rm.score(prompts=PROMPTS, responses=RESPONSES)
    messages = [
        [{"role": "user", "content": p}, {"role": "assistant", "content": r}]
        for p, r in zip(PROMPTS, RESPONSES, strict=True)
    ]
    assert rm.score(messages=messages) == pytest.approx(by_pair, abs=1e-6)
    texts = [rm.tokenizer.decode(ids, skip_special_tokens=True) for ids in encode(rm, PROMPTS, RESPONSES)]
    tokenized = [rm.tokenizer(t)["input_ids"] for t in texts]
    assert rm.score(texts=texts) == pytest.approx(rm.score_ids(tokenized), abs=1e-6)


def test_a_classifier_with_several_labels_is_a_multi_attribute_rm_scored_by_their_mean(tmp_path, llama_path):
    model = AutoModelForSequenceClassification.from_pretrained(llama_path, num_labels=3)
    model.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(llama_path).save_pretrained(tmp_path)
    rm = RewardModel.from_pretrained(tmp_path)
    assert rm.attributes == ["LABEL_0", "LABEL_1", "LABEL_2"]
    ids = rm.tokenizer("Two plus two is four.", return_tensors="pt")
    with torch.no_grad():
        logits = model.eval()(**ids).logits[0]
    assert rm.score(texts=["Two plus two is four."])[0] == pytest.approx(float(logits.mean()), abs=1e-5)


def test_pickle_weights_need_an_explicit_flag(tmp_path, llama_path):
    model = AutoModelForSequenceClassification.from_pretrained(llama_path, num_labels=1)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    model.config.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(llama_path).save_pretrained(tmp_path)
    with pytest.raises(RMKitError, match="allow_pickle"):
        RewardModel.from_pretrained(tmp_path)


def test_a_directory_of_another_layout_gets_one_line_naming_what_it_holds(tmp_path):
    from safetensors.torch import save_file

    save_file(
        {"v_head.summary.weight": torch.zeros(1, 8), "v_head.summary.bias": torch.zeros(1)},
        tmp_path / "model.safetensors",
    )
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(RMKitError) as err:
        RewardModel.from_pretrained(tmp_path)
    message = str(err.value)
    assert "no config.json" in message and "model.safetensors, tokenizer.json" in message
    assert (
        "a TRL value-head model" in message
        and "v_head.summary.weight" in message
        and "\n" not in message
        and "Repo id" not in message
    )
