"""Training data: preference pairs read and tokenised once into a memory-mapped store, and each epoch's
length-grouped batches.

A :class:`Pair` holds the token ids of the chosen and the rejected answer (rendered with their prompt),
the pair's margin and its subset (:meth:`rmkit.data.Example.subset`). The pairs of a data file live in a
:class:`~rmkit.training.store.PairStore`, a cache entry in ``--cache-dir`` keyed by everything that
changes the ids: a second run with the same inputs maps it instead of tokenising, and under ``torchrun``
one process a machine (local rank 0) builds it while the others wait and map the same file. Tokenising
runs in worker processes, a chunk of pairs each. An epoch is cut into global batches of ``batch_size``
pairs that are a function of the seed and the epoch alone, so a resumed run finds its place from the step
number.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from contextlib import nullcontext
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from rmkit.data import ExampleTokenizer, Rejects, RowCounts, iter_examples
from rmkit.data.rendering import TRUNCATION_RULE, tokenizer_digest
from rmkit.training import store
from rmkit.training.config import TrainConfig
from rmkit.training.store import Pair, PairStore

__all__ = [
    "ItemList",
    "Pair",
    "PairStore",
    "epoch_batches",
    "length_grouped_batches",
    "load_pairs",
    "train_and_eval_pairs",
]

log = logging.getLogger(__name__)

CHUNK = 1024  # pairs a worker tokenises at a time
WAIT_POLL = 0.5  # seconds between looks for the entry another process builds


def _inputs(path: str, tokenizer: ExampleTokenizer, config: TrainConfig) -> dict[str, Any]:
    """Everything that changes the stored ids, margins or subsets of ``path``."""
    return {
        "data": str(Path(path).resolve()),
        "digest": store.file_digest(path),
        "format": config.format,
        "columns": config.columns,
        "on_error": config.on_error,
        "use_chat": tokenizer.use_chat,
        "add_eos": tokenizer.add_eos,
        "max_length": tokenizer.max_length,
        "truncation": tokenizer.truncation,
        "truncation_rule": TRUNCATION_RULE,
        "tokenizer": tokenizer_digest(tokenizer.tokenizer),
        "use_margin": config.use_margin,
        "subset_column": config.subset_column,
    }


def load_pairs(
    path: str,
    tokenizer: ExampleTokenizer,
    config: TrainConfig,
    stats: RowCounts,
    *,
    write_rejects: bool = True,
    builder: bool = True,
) -> PairStore:
    """The pairs of ``path`` from the token cache, built first if it has no valid entry, and the length
    rule's tallies added to ``stats``. A ``builder`` builds a missing entry; the others wait for it. The
    rejects of a skipped bad row are copied to ``--rejects`` when ``write_rejects``."""
    inputs = _inputs(path, tokenizer, config)
    key = store.cache_key({k: v for k, v in inputs.items() if k != "data"})  # a moved copy still hits
    temporary = not config.token_cache
    if temporary:  # every process builds its own, mapped and then unlinked
        cache_dir, builder = Path(tempfile.mkdtemp(prefix="rmkit-pairs-")), True
    else:
        cache_dir = Path(config.cache_dir) if config.cache_dir else Path(config.output_dir) / "token-cache"
    entry = cache_dir / f"pairs-{key}"
    opened = store.open_entry(entry, key, quiet=not builder)
    if opened is None and builder:
        _build(path, tokenizer, config, entry, key, inputs)
        opened = store.open_entry(entry, key)
    while opened is None:  # local rank 0 builds it
        time.sleep(WAIT_POLL)
        opened = store.open_entry(entry, key, quiet=True)
    pairs, meta = opened
    stats.merge(store.counts_of(meta))
    rejects = entry / "rejects.jsonl"
    if write_rejects and config.on_error == "skip" and config.rejects and rejects.is_file():
        shutil.copyfile(rejects, config.rejects)
    if temporary:  # the mapped files stay readable until the store is dropped
        shutil.rmtree(cache_dir, ignore_errors=True)
    else:
        log.info(
            "train: %d pairs of %s in %s (%.1f bytes a token)",
            len(pairs),
            path,
            entry,
            pairs.token_bytes / max(len(pairs.tokens), 1),
        )
    return pairs


def _build(
    path: str, tokenizer: ExampleTokenizer, config: TrainConfig, entry: Path, key: str, inputs: dict
) -> None:
    """Tokenise ``path`` into a new cache entry (workers in parallel) and rename it to ``entry``."""
    log.info("train: tokenising %s into the token cache %s", path, entry)
    start = time.perf_counter()
    tmp = store.new_entry(entry.parent)
    writer = store.StoreWriter(tmp, vocab_size=len(tokenizer.tokenizer))
    counts = RowCounts()
    skip = config.on_error == "skip"
    try:
        with Rejects(tmp / "rejects.jsonl") if skip else nullcontext() as rejects:
            examples = iter_examples(
                path, format=config.format, columns=config.columns, rejects=rejects, kind="pairs"
            )
            options = (config.use_margin, config.subset_column)
            bar = tqdm(desc=f"tokenise {Path(path).name}", unit=" pairs", disable=None, file=sys.stderr)
            for ids, sizes, margins, subsets, chunk_counts in _tokenized(
                examples, tokenizer, options, config
            ):
                writer.add(ids, sizes, margins, subsets)
                counts.merge(chunk_counts)
                bar.update(chunk_counts.rows + chunk_counts.dropped)
            bar.close()
            counts.skipped += rejects.count if rejects is not None else 0
        writer.finish(store.meta_of(key, inputs, counts.rows, counts))
    except BaseException:
        writer.abort()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    store.publish(tmp, entry)
    log.info(
        "train: tokenised %d pairs (%d tokens) in %.1f s",
        counts.rows,
        counts.tokens,
        time.perf_counter() - start,
    )


def _tokenized(examples, tokenizer: ExampleTokenizer, options: tuple, config: TrainConfig):
    """Each chunk of ``examples`` tokenised and packed (:func:`_pack`), in order: in this process when the
    data is one chunk or one worker is asked for, else in a pool with a bounded number of chunks in flight
    (the reader never runs ahead of the workers by more than that)."""
    first = list(islice(examples, CHUNK))
    second = list(islice(examples, CHUNK))
    workers = config.tokenize_workers or min(os.cpu_count() or 1, 8)
    if not second or workers <= 1:
        chunks = (c for c in (first, second) if c)
        for chunk in _chained(chunks, examples):
            yield _pack(chunk, tokenizer, options)
        return
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    with context.Pool(workers, initializer=_init_worker, initargs=(tokenizer, options)) as pool:
        pending: deque = deque()
        for chunk in _chained(iter([first, second]), examples):
            pending.append(pool.apply_async(_pack_in_worker, (chunk,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def _chained(head, examples):
    yield from head
    while chunk := list(islice(examples, CHUNK)):
        yield chunk


_WORKER: tuple[ExampleTokenizer, tuple] | None = None


def _init_worker(tokenizer: ExampleTokenizer, options: tuple) -> None:
    global _WORKER
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    torch.set_num_threads(1)
    _WORKER = (tokenizer, options)


def _pack_in_worker(chunk):
    assert _WORKER is not None
    return _pack(chunk, *_WORKER)


def _pack(chunk, tokenizer: ExampleTokenizer, options: tuple):
    """``(ids, sizes, margins, subsets, counts)`` of a chunk's kept pairs: every sequence's ids back to back,
    their lengths (chosen, rejected, ...), and the length rule's tallies."""
    use_margin, subset_column = options
    counts = RowCounts()
    ids: list[int] = []
    sizes: list[int] = []
    margins: list[float] = []
    subsets: list[str | None] = []
    for ex, row in zip(chunk, tokenizer.tokenize(chunk), strict=True):
        counts.add(row, ex.notes)
        if row is None:
            continue
        for side in row[:2]:
            ids.extend(side.ids)
            sizes.append(len(side.ids))
        margins.append(float(ex.margin) if use_margin and ex.margin is not None else 0.0)
        subsets.append(ex.subset(subset_column))
    return np.asarray(ids, dtype=np.int64), np.asarray(sizes, dtype=np.int64), margins, subsets, counts


def train_and_eval_pairs(
    config: TrainConfig, tokenizer: ExampleTokenizer, stats: RowCounts, *, main: bool, builder: bool = True
) -> tuple[PairStore, PairStore | None, str | None]:
    """Training pairs, eval pairs, and where the eval pairs came from (for metrics.json); ``None`` twice
    without ``--eval-data`` or ``--eval-split``. Only the ``main`` process writes the rejects file; only a
    ``builder`` builds a missing cache entry."""
    pairs = load_pairs(config.data, tokenizer, config, stats, write_rejects=main, builder=builder)
    if config.eval_data:
        held_out = load_pairs(
            config.eval_data, tokenizer, config, RowCounts(), write_rejects=False, builder=builder
        )
        return pairs, held_out, config.eval_data
    if config.eval_split > 0:
        order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(config.seed)).tolist()
        n_eval = max(1, round(config.eval_split * len(pairs)))
        return (
            pairs.select(sorted(order[n_eval:])),
            pairs.select(order[:n_eval]),
            f"{n_eval} pairs held out of {config.data}",
        )
    return pairs, None, None  # no held-out pairs: no held-out evaluation (rmkit.training.loop)


class ItemList(list):
    """Tokenised training items that each know their ``length`` (a PRM's solutions, rated responses), in
    memory, with a :class:`PairStore`'s ``lengths`` and ``select``; a slice is an ``ItemList`` too."""

    def __getitem__(self, i):  # type: ignore[override]
        return ItemList(super().__getitem__(i)) if isinstance(i, slice) else super().__getitem__(i)

    @property
    def lengths(self) -> list[int]:
        return [it.length for it in self]

    def select(self, indices: Sequence[int]) -> ItemList:
        return ItemList(self[i] for i in indices)


def length_grouped_batches(
    lengths: list[int], batch_size: int, *, seed: int, group: bool = True, chunk_batches: int = 64
) -> list[list[int]]:
    """One epoch's global batches of indices into ``lengths``, a function of ``seed`` only.

    The indices are shuffled; with ``group`` each run of ``batch_size * chunk_batches`` of them is sorted by
    length and cut into batches, and the batch order is shuffled again, so a batch holds pairs of similar
    length while the epoch still visits lengths in random order. The last batch may be smaller.
    """
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(lengths), generator=g).tolist()
    if group:
        span = batch_size * chunk_batches
        order = [
            i
            for s in range(0, len(order), span)
            for i in sorted(order[s : s + span], key=lambda i: lengths[i], reverse=True)
        ]
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    if group:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
    return batches


def epoch_batches(lengths: list[int], config: TrainConfig, epoch: int, world: int) -> list[list[int]]:
    """The global batches of ``epoch``; a last batch too small to give every process a pair is dropped."""
    batches = length_grouped_batches(
        lengths, config.batch_size, seed=config.seed + epoch, group=config.group_by_length
    )
    return [b for b in batches if len(b) >= world]
