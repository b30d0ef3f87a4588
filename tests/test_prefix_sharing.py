"""Prefix sharing: the responses to one prompt run after one pass over it, with the same scores.

Checked on tiny Llama- and Qwen2-style decoders built from configs, against each full sequence scored
alone with right and with left padding; rows whose tokens do not start with the group's prefix fall back.
"""

from __future__ import annotations

import random

import pytest
import torch
from conftest import TINY
from transformers import (
    AutoTokenizer,
    LlamaConfig,
    LlamaForSequenceClassification,
    Qwen2Config,
    Qwen2ForSequenceClassification,
)

from rmkit import RewardModel
from rmkit.data import RowCounts, pad_batch
from rmkit.inference import MIN_SHARED, plan_sharing, score_sequences


def decoder(kind: str, tokenizer) -> RewardModel:
    common = dict(vocab_size=len(tokenizer), **TINY, num_labels=1, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    if kind == "llama":
        model = LlamaForSequenceClassification(LlamaConfig(**common))
    else:
        model = Qwen2ForSequenceClassification(Qwen2Config(**common))
    return RewardModel(model.eval(), tokenizer)


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def rm(request, llama_path):
    return decoder(request.param, AutoTokenizer.from_pretrained(llama_path))


def ragged_groups(seed: int, vocab: int) -> tuple[list[list[int]], list[list[int]]]:
    """Groups of 1 to 5 responses after prompts of 5 to 80 tokens; some members' first tokens differ (as
    a truncated row's do) and one group's prompt is too short to share."""
    rng = random.Random(seed)
    tok = lambda: rng.randrange(5, vocab)  # noqa: E731
    sequences, groups = [], []
    for g in range(12):
        prompt = [tok() for _ in range(4 if g == 0 else rng.randint(5, 80))]
        members = []
        for r in range(1 if g == 1 else rng.randint(2, 5)):
            seq = prompt + [tok() for _ in range(rng.randint(1, 30))]
            if g % 4 == 3 and r == 1:
                seq = [tok()] + seq[3:]  # cut from the left: no longer starts with the prompt
            members.append(len(sequences))
            sequences.append(seq)
        groups.append(members)
    return sequences, groups


def alone(rm: RewardModel, seq: list[int], side: str) -> float:
    ids, mask = pad_batch([seq, [7] * (len(seq) + 9)], rm.pad_token_id, side=side)
    with torch.inference_mode():
        return rm(ids, mask, token_scores=False).end_scores[0].item()


@pytest.mark.parametrize("seed", [0, 1])
def test_shared_scores_equal_full_sequences_with_either_padding(rm, seed):
    sequences, groups = ragged_groups(seed, len(rm.tokenizer))
    stats = RowCounts()
    shared = score_sequences(rm, sequences, groups=groups, batch_tokens=256, stats=stats)
    assert stats.shared > 0 and stats.unshared > 0, "the fixture should hold shared and fallen-back rows"
    for side in ("right", "left"):
        full = [alone(rm, s, side) for s in sequences]
        assert shared == pytest.approx(full, abs=1e-4)
    assert score_sequences(rm, sequences) == pytest.approx(shared, abs=1e-4)


def test_the_plan_shares_only_tokens_every_member_has(llama_path):
    sequences = [
        [1] * 20 + [5, 6],
        [1] * 20 + [7],
        [9] + [1] * 19 + [8],  # truncated: its first token differs
        [1] * 20,  # the prompt alone: keeps its last token to be scored at
        [2] * 10 + [3],
        [2] * 10 + [4],  # a 10-token prompt is under MIN_SHARED
    ]
    shared, rest = plan_sharing(sequences, [[0, 1, 2, 3], [4, 5]])
    assert MIN_SHARED > 10
    assert shared == [([1] * 19, [0, 1, 3])]
    assert rest == [2, 4, 5]


def test_encoders_never_share(minilm_path):
    encoder = RewardModel.from_pretrained(minilm_path)
    assert not encoder.shares_prefixes
    ids = encoder.tokenizer(["the capital of france is paris"] * 3)["input_ids"]
    stats = RowCounts()
    assert score_sequences(encoder, ids, groups=[[0, 1, 2]], stats=stats) == score_sequences(encoder, ids)
    assert stats.shared == stats.unshared == 0


def test_sharing_can_be_turned_off(rm):
    sequences, groups = ragged_groups(2, len(rm.tokenizer))
    rm.prefix_sharing = False
    try:
        stats = RowCounts()
        score_sequences(rm, sequences, groups=groups, stats=stats)
        assert stats.shared == 0
    finally:
        rm.prefix_sharing = True


# --- the answers of one prompt cut as a group -------------------------------------------------------------

LONG_PROMPT = " ".join(f"word{i % 37} and then some more text number {i}." for i in range(40))


def test_answers_of_one_prompt_keep_one_cut_prompt_so_the_longest_fits(llama_path):
    from rmkit.data import Example, ExampleTokenizer

    tok = AutoTokenizer.from_pretrained(llama_path)
    answers = ["Short.", "A somewhat longer answer with several more words in it.", "Mid length answer here."]
    example = Example(0, [{"role": "user", "content": LONG_PROMPT}], answers, False, best_of_n=True)
    full = ExampleTokenizer(tok).tokenize([example])[0]
    cut = ExampleTokenizer(tok, max_length=64).tokenize([example])[0]
    longest = max(range(3), key=lambda i: len(full[i].ids))
    assert len(cut[longest].ids) == 64 and all(len(t.ids) <= 64 and t.truncated and t.group_cut for t in cut)
    removed = len(full[longest].ids) - 64
    for whole, kept in zip(full, cut, strict=True):  # the same prompt tokens left out of every answer
        assert kept.ids == whole.ids[:1] + whole.ids[1 + removed :]
    alone = ExampleTokenizer(tok, max_length=64).tokenize([Example(0, example.prompt, [answers[0]], False)])[
        0
    ]
    assert alone[0].ids == full[0].ids[:1] + full[0].ids[len(full[0].ids) - 63 :]  # one answer: as before
    assert not alone[0].group_cut


def test_rank_with_a_prompt_over_the_limit_shares_it_and_scores_as_without_sharing(rm_path, tmp_path):
    import json

    from conftest import write_jsonl

    import rmkit

    rows = [
        {
            "prompt": f"{i}: {LONG_PROMPT}",
            "responses": [f"Answer {j} " + "more words " * j for j in range(4)],
        }
        for i in range(5)
    ]
    data = write_jsonl(tmp_path / "bon.jsonl", rows)
    runs = {}
    for sharing in (True, False):
        out = tmp_path / f"ranked_{sharing}.jsonl"
        summary = rmkit.rank(
            model=str(rm_path), input=str(data), output=str(out), max_length=96, prefix_sharing=sharing
        )
        runs[sharing] = (summary, [json.loads(line) for line in out.read_text().splitlines()])
    summary = runs[True][0]
    assert summary["groups_cut"] == 5 and summary["truncated"] == 5
    assert summary["prefix_shared"] == 20 and summary["prefix_fallbacks"] == 0
    # each row's three later answers skip its cut prompt: most of 5 × 3 × 96 tokens, none without sharing
    assert runs[False][0]["prefix_tokens_saved"] == 0
    assert summary["prefix_tokens_saved"] % 15 == 0 and 15 * 48 < summary["prefix_tokens_saved"] < 15 * 96
    for a, b in zip(runs[True][1], runs[False][1], strict=True):
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-4) and a["ranking"] == b["ranking"]


def test_rows_of_one_response_that_repeat_a_prompt_share_its_pass(rm_path, tmp_path):
    """A scoring file of one response a row (an RL rollout's shape, the prompts' rows interleaved), with
    ``--share-across-rows``: the rows that repeat a prompt run it once and their answers after it, as a
    best-of-N row would; a prompt asked once runs whole; the scores equal those without sharing. Without the
    option each row is its own example (nothing shared, each score independent of the chunk)."""
    import json

    from conftest import write_jsonl

    import rmkit

    prompt = " ".join(LONG_PROMPT.split()[:14])  # within the model's 128 tokens: no row is cut
    rows = [
        {"prompt": f"Question {i}: {prompt}", "response": f"Answer {j} " + "more words " * j}
        for j in range(4)
        for i in range(3)
    ] + [{"prompt": f"Alone: {prompt}", "response": "One answer."}]
    data = write_jsonl(tmp_path / "rollouts.jsonl", rows)
    runs = {}
    for sharing, across in ((True, True), (False, True), (True, False)):
        out = tmp_path / f"scored_{sharing}_{across}.jsonl"
        summary = rmkit.score(
            model=str(rm_path),
            input=str(data),
            output=str(out),
            prefix_sharing=sharing,
            share_across_rows=across,
        )
        runs[sharing, across] = (
            summary,
            [json.loads(line)["score"] for line in out.read_text().splitlines()],
        )
    runs[True], runs[False] = runs[True, True], runs[False, True]
    assert runs[True][0]["truncated"] == 0 and runs[True, False][0]["prefix_shared"] == 0
    assert runs[True][0]["prefix_shared"] == 12 and runs[False][0]["prefix_shared"] == 0
    assert runs[True][0]["prefix_tokens_saved"] > 0
    assert runs[True][1] == pytest.approx(runs[False][1], abs=1e-5)
