"""The token store of training data: the same pairs, batches and weights as lists of ids, reused across
runs, rebuilt when any input changes or the entry is damaged, and one entry for all processes of a job."""

from __future__ import annotations

import json
import logging
import os
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
from test_training import config, torchrun_train, weights, write_pairs

from rmkit import RewardModel, train
from rmkit.data import RowCounts, iter_examples
from rmkit.training import step
from rmkit.training.data import Pair, epoch_batches, load_pairs, train_and_eval_pairs
from rmkit.training.store import StoreWriter


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("pairs")
    return write_pairs(d / "train.jsonl", 80, 0, extra=True), write_pairs(d / "eval.jsonl", 24, 1, extra=True)


def list_pairs(path: str, tokenizer, cfg) -> list[Pair]:
    """The pairs as the list-based loader before the store built them: one Pair of Python lists a row."""
    examples = iter_examples(path, format=cfg.format, columns=cfg.columns, kind="pairs")
    pairs = []
    while chunk := list(islice(examples, 4096)):
        for ex, row in zip(chunk, tokenizer.tokenize(chunk), strict=True):
            if row is not None:
                margin = float(ex.margin) if cfg.use_margin and ex.margin is not None else 0.0
                pairs.append(Pair(row[0].ids, row[1].ids, margin, ex.subset(cfg.subset_column)))
    return pairs


def example_tokenizer(model: Path, cfg):
    rm = RewardModel.from_pretrained(model)
    return rm.example_tokenizer(max_length=cfg.max_length, template=cfg.template)


@pytest.mark.parametrize("workers", [1, 2])
def test_the_store_holds_the_same_pairs_lengths_and_batches_as_lists(llama_path, data, tmp_path, workers):
    cfg = config(llama_path, data, tmp_path, use_margin=True, max_length=24, tokenize_workers=workers)
    tokenizer = example_tokenizer(llama_path, cfg)
    stats = RowCounts()
    store = load_pairs(cfg.data, tokenizer, cfg, stats)
    expected = list_pairs(cfg.data, tokenizer, cfg)
    assert list(store) == expected and len(store) == 80
    assert store.lengths == [p.length for p in expected]
    assert stats.rows == 80 and stats.truncated > 0  # the 24-token limit cut some, and they are counted
    for epoch in range(2):
        assert epoch_batches(store.lengths, cfg, epoch, 1) == epoch_batches(
            [p.length for p in expected], cfg, epoch, 1
        )
    n, tokens = len(store), sum(len(p.chosen) + len(p.rejected) for p in expected)
    assert store.tokens.dtype == np.uint16  # 2 bytes a token, plus offsets, margins and subset codes
    assert store.token_bytes == 2 * tokens + 8 * (2 * n + 1) + 4 * n + 4 * n
    view = store.select([5, 1])[::-1]  # views of views index the right rows
    assert list(view) == [expected[1], expected[5]]


def test_a_vocabulary_over_65536_ids_is_stored_as_int32(tmp_path):
    writer = StoreWriter(tmp_path, vocab_size=70_000)
    writer.add(np.array([69_999, 3, 65_536]), np.array([2, 1]), [0.0], [None])
    writer.finish({"key": "k", "pairs": 1, "counts": {}})
    assert np.fromfile(tmp_path / "tokens.bin", dtype=np.int32).tolist() == [69_999, 3, 65_536]


class ListPairs(list):
    """Pairs as Python lists, the way training held them before the store."""

    @property
    def lengths(self) -> list[int]:
        return [p.length for p in self]

    def select(self, indices):
        return ListPairs(self[i] for i in indices)


def test_training_on_the_store_gives_the_weights_of_training_on_lists(
    llama_path, data, tmp_path, monkeypatch
):
    kw = dict(max_steps=6, use_margin=True, eval_split=0.0, seed=3)
    train(config(llama_path, data, tmp_path / "store", **kw))

    def from_lists(cfg, tokenizer, stats, *, main, builder=True):
        return (
            ListPairs(list_pairs(cfg.data, tokenizer, cfg)),
            ListPairs(list_pairs(cfg.eval_data, tokenizer, cfg)),
            cfg.eval_data,
        )

    monkeypatch.setattr(step, "train_and_eval_pairs", from_lists)  # where the pair task reads its data
    train(config(llama_path, data, tmp_path / "lists", **kw))
    a, b = weights(tmp_path / "store"), weights(tmp_path / "lists")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def entries(cache: Path) -> list[Path]:
    return sorted(p for p in cache.iterdir() if p.name.startswith("pairs-"))


def test_a_second_run_maps_the_cache_and_a_changed_option_misses_it(llama_path, data, tmp_path, caplog):
    cache = tmp_path / "cache"
    cfg = config(llama_path, data, tmp_path / "a", cache_dir=str(cache))
    tokenizer = example_tokenizer(llama_path, cfg)
    with caplog.at_level(logging.INFO, logger="rmkit.training.data"):
        first = train_and_eval_pairs(cfg, tokenizer, RowCounts(), main=True)
    assert len(entries(cache)) == 2  # train and eval data
    built = {p: (p / "meta.json").stat().st_mtime_ns for p in entries(cache)}
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="rmkit.training.data"):
        second = train_and_eval_pairs(cfg, tokenizer, RowCounts(), main=True)
    assert "tokenising" not in caplog.text
    assert {p: (p / "meta.json").stat().st_mtime_ns for p in entries(cache)} == built
    assert list(second[0]) == list(first[0]) and list(second[1]) == list(first[1])

    for change in ({"max_length": 16}, {"use_margin": False}, {"template": "plain", "subset_column": "none"}):
        changed = config(llama_path, data, tmp_path / "a", cache_dir=str(cache), **change)
        load_pairs(changed.data, example_tokenizer(llama_path, changed), changed, RowCounts())
    assert len(entries(cache)) == 2 + 3
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(Path(data[0]).read_bytes())  # the same bytes elsewhere: a hit
    load_pairs(str(copy), tokenizer, cfg, RowCounts())
    assert len(entries(cache)) == 5
    copy.write_text(copy.read_text().replace("Paris", "Lyon", 1))  # one word changed: a miss
    load_pairs(str(copy), tokenizer, cfg, RowCounts())
    assert len(entries(cache)) == 6


@pytest.mark.parametrize("damage", ["flip a byte", "cut short", "no meta", "garbled meta"])
def test_a_damaged_cache_entry_is_detected_and_rebuilt_never_used(llama_path, data, tmp_path, damage, caplog):
    cfg = config(llama_path, data, tmp_path / "out", cache_dir=str(tmp_path / "cache"))
    tokenizer = example_tokenizer(llama_path, cfg)
    good = list(load_pairs(cfg.data, tokenizer, cfg, RowCounts()))
    (entry,) = entries(tmp_path / "cache")
    tokens = entry / "tokens.bin"
    raw = bytearray(tokens.read_bytes())
    if damage == "flip a byte":
        raw[len(raw) // 2] ^= 0x01
        tokens.write_bytes(bytes(raw))
    elif damage == "cut short":
        tokens.write_bytes(bytes(raw[:-6]))
    elif damage == "no meta":  # a build killed before its last write
        (entry / "meta.json").unlink()
    else:
        (entry / "meta.json").write_text('{"key": ')
    with caplog.at_level(logging.INFO):
        again = load_pairs(cfg.data, tokenizer, cfg, RowCounts())
    assert "tokenising" in caplog.text
    assert list(again) == good and (entry / "meta.json").is_file()
    if damage != "no meta":
        assert "rebuilding it" in caplog.text


def test_skipped_rows_are_counted_and_their_rejects_written_on_every_run(llama_path, data, tmp_path):
    bad = tmp_path / "bad.jsonl"
    lines = Path(data[0]).read_text().splitlines()
    bad.write_text("\n".join([*lines[:10], '{"prompt": "x"}', "not json", *lines[10:20]]) + "\n")
    rejects = tmp_path / "rejects.jsonl"
    for _ in range(2):  # the second run comes from the cache
        rejects.unlink(missing_ok=True)
        cfg = config(llama_path, (bad, data[1]), tmp_path / "o", on_error="skip", rejects=str(rejects))
        stats = RowCounts()
        pairs = load_pairs(cfg.data, example_tokenizer(llama_path, cfg), cfg, stats)
        assert len(pairs) == 20 and stats.skipped == 2
        assert [json.loads(line)["row"] for line in rejects.read_text().splitlines()] == [
            11,
            12,
        ]  # rows count from 1


def test_no_token_cache_leaves_no_cache_behind(llama_path, data, tmp_path):
    cfg = config(llama_path, data, tmp_path / "o", token_cache=False)
    pairs = load_pairs(cfg.data, example_tokenizer(llama_path, cfg), cfg, RowCounts())
    assert len(pairs) == 80 and not (tmp_path / "o" / "token-cache").exists()


@pytest.mark.slow
def test_two_processes_map_one_cache_entry_built_once(llama_path, data, tmp_path):
    out = tmp_path / "two"
    err = torchrun_train(llama_path, data, out, "--max-steps", "2", "--cache-dir", str(tmp_path / "cache"))
    assert err.count("tokenising") == 2  # train and eval data, each once, by local rank 0
    assert len(entries(tmp_path / "cache")) == 2
    assert json.loads((out / "metrics.json").read_text())["train"]["processes"] == 2


def test_a_killed_builds_leftovers_are_removed_by_the_next_build(llama_path, data, tmp_path):
    import socket
    import subprocess
    import sys

    cache = tmp_path / "cache"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    host = socket.gethostname()
    leftover = cache / f".tmp-pairs-{host}-{int(dead.stdout)}-abc"
    running = cache / f".tmp-pairs-{host}-{os.getpid()}-abc"  # a build still under way
    for d in (leftover, running):
        d.mkdir(parents=True)
        (d / "tokens.bin").write_bytes(b"\0" * 64)
    cfg = config(llama_path, data, tmp_path / "o", cache_dir=str(cache))
    load_pairs(cfg.data, example_tokenizer(llama_path, cfg), cfg, RowCounts())
    assert not leftover.exists() and running.exists()
