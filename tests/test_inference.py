"""The inference core: scores back in input order whatever the batching, equal to plain transformers."""

from __future__ import annotations

import random

import pytest
import torch
from conftest import WORDS
from transformers import AutoModelForSequenceClassification

from rmkit.data import Example, RowCounts, token_budget_batches
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


def _cost(batches, lengths, batch_cost):
    return sum(batch_cost + len(b) * max(lengths[i] for i in b) for b in batches)


def _cheapest_by_brute_force(desc, batch_cost, max_tokens):
    """The least total cost over every way to cut the sorted lengths ``desc`` (2^(n-1) ways)."""
    best = float("inf")
    for mask in range(1 << (len(desc) - 1)):
        cuts = [0] + [i + 1 for i in range(len(desc) - 1) if mask >> i & 1] + [len(desc)]
        groups = [desc[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]
        if all(len(g) == 1 or len(g) * g[0] <= max_tokens for g in groups):
            best = min(best, sum(batch_cost + len(g) * g[0] for g in groups))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_batches_priced_by_a_forward_cost_are_the_cheapest_split(seed):
    rng = random.Random(seed)
    lengths = [rng.choice([3, 5, 40, 41, 120, 300]) for _ in range(10)]
    batch_cost, max_tokens = rng.choice([0, 20, 100, 5000]), 600
    batches = token_budget_batches(lengths, max_tokens, None, batch_cost)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(len(b) == 1 or len(b) * max(lengths[i] for i in b) <= max_tokens for b in batches)
    desc = sorted(lengths, reverse=True)
    assert _cost(batches, lengths, batch_cost) == _cheapest_by_brute_force(desc, batch_cost, max_tokens)


def test_a_small_forward_cost_splits_mixed_lengths_and_a_large_one_keeps_them_together():
    lengths = [500, 20, 480, 25, 30]
    assert sorted(map(sorted, token_budget_batches(lengths, 4096, None, 50))) == [[0, 2], [1, 3, 4]]
    assert token_budget_batches(lengths, 4096, None, 100_000) == [[0, 2, 4, 3, 1]]
