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
