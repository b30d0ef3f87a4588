"""The built-in synthetic preference set: deterministic, balanced, and with disjoint train/test values."""

from __future__ import annotations

from rmkit.data import iter_examples
from rmkit.data.synthetic import CAPITALS, SUBSETS, generate, to_scoring_rows, write_jsonl


def test_same_seed_same_rows_and_other_seed_other_rows():
    assert generate("train", 50, seed=3) == generate("train", 50, seed=3)
    assert generate("train", 50, seed=3) != generate("train", 50, seed=4)


def test_every_subset_is_present_and_the_better_answer_is_checkable():
    rows = generate("test", 100, seed=0)
    assert {r["subset"] for r in rows} == set(SUBSETS)
    capitals = dict(CAPITALS)
    for r in rows:
        assert r["chosen"] != r["rejected"]
        if r["subset"] == "capitals":
            country = next(c for c in capitals if c in r["prompt"])
            assert capitals[country] in r["chosen"] and capitals[country] not in r["rejected"]
        if r["subset"] == "complete":
            assert r["chosen"].startswith(r["rejected"]) and r["chosen"].endswith(".")
        if r["subset"] == "concise":
            assert r["chosen"] in r["rejected"] and len(r["rejected"]) > 2 * len(r["chosen"])


def test_train_and_test_use_disjoint_values_and_templates():
    train, test = generate("train", 500, seed=0), generate("test", 500, seed=0)
    for subset in SUBSETS:
        train_prompts = {r["prompt"] for r in train if r["subset"] == subset}
        test_prompts = {r["prompt"] for r in test if r["subset"] == subset}
        assert not train_prompts & test_prompts, subset
    train_cities = {r["chosen"] for r in train if r["subset"] == "capitals"}
    assert not any(r["chosen"] in train_cities for r in test if r["subset"] == "capitals")


def test_rows_read_back_as_pairs_and_as_scoring_rows(tmp_path):
    pairs = generate("train", 10, seed=0)
    examples = list(iter_examples(write_jsonl(pairs, tmp_path / "p.jsonl"), kind="pairs"))
    assert [e.responses for e in examples] == [[p["chosen"], p["rejected"]] for p in pairs]
    scoring = list(iter_examples(write_jsonl(to_scoring_rows(pairs), tmp_path / "s.jsonl")))
    assert len(scoring) == 20 and scoring[1].extra["label"] == "worse"
