"""The inference core: scores back in input order whatever the batching, equal to plain transformers."""

from __future__ import annotations

import random

import pytest
import torch
from conftest import WORDS
from transformers import AutoModelForSequenceClassification

from rmkit.data import Example, RowCounts
from rmkit.inference import score_examples, score_sequences


def examples(n: int, seed: int) -> list[Example]:
    """Responses of shuffled lengths (1 to 60 words), pairs among them."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        prompt = [{"role": "user", "content": " ".join(rng.choices(WORDS, k=rng.randint(1, 20)))}]
        answers = [" ".join(rng.choices(WORDS, k=rng.randint(1, 60))) for _ in range(1 + (i % 3 == 0))]
        out.append(Example(i + 1, prompt, answers, is_pair=len(answers) == 2))
    return out


def test_scores_come_back_in_input_order_for_shuffled_lengths(saved_rm):
    rm, _ = saved_rm
    rows = examples(40, seed=0)
    ids = [t.ids for row in rm.example_tokenizer().tokenize(rows) for t in row]
    assert sorted(map(len, ids)) != list(map(len, ids))  # the lengths really are shuffled
    alone = []
    with torch.no_grad():
        for seq in ids:
            t = torch.tensor([seq])
            alone.append(rm(t, torch.ones_like(t)).end_scores.item())
    # A small budget and few rows a batch: many batches, each sorted by length, then put back.
    for budget, max_rows in ((64, 3), (400, 16), (1 << 20, None)):
        got = score_sequences(rm, ids, batch_tokens=budget, max_rows=max_rows)
        assert got == pytest.approx(alone, abs=1e-4), budget


def test_examples_equal_plain_transformers_within_1e_4(saved_rm):
    rm, path = saved_rm
    hf = AutoModelForSequenceClassification.from_pretrained(path).eval()
    rows = examples(30, seed=1)
    tokenizer = rm.example_tokenizer()
    stats = RowCounts()
    scored = list(score_examples(rm, rows, tokenizer, batch_tokens=300, chunk_rows=7, stats=stats))
    assert [ex.row for ex, _ in scored] == [ex.row for ex in rows]
    with torch.no_grad():
        for (ex, scores), row in zip(scored, tokenizer.tokenize(rows), strict=True):
            assert len(scores) == len(ex.responses)
            expected = [hf(torch.tensor([t.ids])).logits[0, 0].item() for t in row]
            assert scores == pytest.approx(expected, abs=1e-4)
    assert stats.rows == 30 and stats.dropped == 0
    assert stats.tokens == sum(len(t.ids) for row in tokenizer.tokenize(rows) for t in row)


def test_dropped_examples_come_back_as_none_in_their_place(llama_path):
    from rmkit import RewardModel

    rm = RewardModel.from_pretrained(llama_path)
    rows = examples(12, seed=2)
    full = rm.example_tokenizer().tokenize(rows)
    limit = sorted(max(len(t.ids) for t in row) for row in full)[6]
    stats = RowCounts()
    tokenizer = rm.example_tokenizer(max_length=limit, truncation="drop")
    scored = list(score_examples(rm, rows, tokenizer, chunk_rows=5, stats=stats))
    long = [max(len(t.ids) for t in row) > limit for row in full]
    assert [s is None for _, s in scored] == long and any(long)
    assert stats.dropped == sum(long) and stats.rows == 12 - sum(long)
    kept = [ex for ex, too_long in zip(rows, long, strict=True) if not too_long]
    again = [x for _, s in score_examples(rm, kept, rm.example_tokenizer()) for x in s]
    assert [x for _, s in scored if s is not None for x in s] == pytest.approx(again, abs=1e-5)
