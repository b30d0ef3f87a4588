"""Training data: preference pairs read and tokenised once, and each epoch's length-grouped batches.

A :class:`Pair` holds the token ids of the chosen and the rejected answer (rendered with their prompt),
the pair's margin and its subset (:meth:`rmkit.data.Example.subset`). An epoch is cut into global batches
of ``batch_size`` pairs that are a function of the seed and the epoch alone, so a resumed run finds its
place from the step number.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from itertools import islice

import torch

from rmkit.data import ExampleTokenizer, Rejects, RowCounts, iter_examples
from rmkit.errors import RMKitError
from rmkit.training.config import TrainConfig


@dataclass
class Pair:
    """One tokenised preference pair."""

    chosen: list[int]
    rejected: list[int]
    margin: float = 0.0
    subset: str | None = None

    @property
    def length(self) -> int:
        return max(len(self.chosen), len(self.rejected))


def load_pairs(
    path: str,
    tokenizer: ExampleTokenizer,
    config: TrainConfig,
    stats: RowCounts,
    *,
    write_rejects: bool = True,
) -> list[Pair]:
    """Read, normalise and tokenise every pair of ``path``, counting what the length rule touched."""
    skip = config.on_error == "skip"
    with Rejects(config.rejects if write_rejects else None) if skip else nullcontext() as rejects:
        examples = iter_examples(
            path, format=config.format, columns=config.columns, rejects=rejects, kind="pairs"
        )
        pairs: list[Pair] = []
        while chunk := list(islice(examples, 4096)):
            for ex, row in zip(chunk, tokenizer.tokenize(chunk), strict=True):
                stats.add(row, ex.notes)
                if row is None:
                    continue
                margin = float(ex.margin) if config.use_margin and ex.margin is not None else 0.0
                pairs.append(Pair(row[0].ids, row[1].ids, margin, ex.subset(config.subset_column)))
        stats.skipped += rejects.count if rejects is not None else 0
    if not pairs:
        raise RMKitError(f"{path}: no preference pairs to train or evaluate on")
    return pairs


def train_and_eval_pairs(
    config: TrainConfig, tokenizer: ExampleTokenizer, stats: RowCounts, *, main: bool
) -> tuple[list[Pair], list[Pair], str]:
    """Training pairs, eval pairs, and where the eval pairs came from (for metrics.json). Only the ``main``
    process writes the rejects file."""
    pairs = load_pairs(config.data, tokenizer, config, stats, write_rejects=main)
    if config.eval_data:
        held_out = load_pairs(config.eval_data, tokenizer, config, RowCounts(), write_rejects=False)
        return pairs, held_out, config.eval_data
    if config.eval_split > 0:
        order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(config.seed)).tolist()
        n_eval = max(1, round(config.eval_split * len(pairs)))
        held_out = [pairs[i] for i in order[:n_eval]]
        return (
            [pairs[i] for i in sorted(order[n_eval:])],
            held_out,
            f"{n_eval} pairs held out of {config.data}",
        )
    return pairs, pairs, "the training data (no --eval-data or --eval-split)"


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
