"""The inference core: the one scorer under ``RewardModel.score``, ``rmkit score`` and ``rmkit eval``.

Examples go in, scores come out in the order the examples came::

    examples ─ ExampleTokenizer ─> token ids ─ token_budget_batches ─> padded batches ─ model ─> end scores
       (a chunk at a time)          (one call per chunk)   (longest first, rows × longest ≤ budget)

Sorting by length lets short rows travel in wide batches and long ones in narrow batches, so little
compute goes to padding; each batch carries the indices of its rows, which put the scores back in input
order. The core knows nothing of files, processes or HTTP: the jobs (``rmkit score``, ``rmkit eval``) and
the server feed it examples and write what comes back.

A model is anything with the :class:`BatchModel` shape; :class:`rmkit.RewardModel` is one (and calls this
module for its own ``score``), so the core does not depend on how a model is loaded.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import Any, Protocol, TypeVar

import torch

from rmkit.data import Example, ExampleTokenizer, RowCounts, padded_on, token_budget_batches
from rmkit.defaults import BATCH_TOKENS, CHUNK_ROWS, MAX_ROWS
from rmkit.memory import activation_bytes, budget_for, kv_bytes
from rmkit.runtime import free_memory, reads_ahead, to_device

MIN_SHARED = 16  # fewest prompt tokens worth a pass of their own (prefix sharing)
MIN_SAVING = 0.25  # least share of a group's tokens that sharing must save (measured: less does not pay)
# The fixed cost of a continuation pass in tokens' worth of work, which decides how continuations of mixed
# lengths are cut into passes: small, since each padded token also attends over the whole prefix.
SUFFIX_PASS_COST = 16.0
# A continuation pass may take this many budgets of prefix tokens (each row a copy of its prefix's keys
# and values): continuations are short, so their passes run wide.
SUFFIX_ROWS = 4

T = TypeVar("T")


class BatchModel(Protocol):
    """What the core needs of a model: a forward pass over a padded batch, its device and pad token.

    A model that can share prompts also has ``shares_prefixes`` (true), ``prefix_cache(input_ids)`` and
    ``score_after(cache, rows, prefix_mask, input_ids, attention_mask)``, as :class:`rmkit.RewardModel`. A
    generating judge (``generates``) has ``verdicts(sequences, batch_tokens, stats)`` in place of a pass."""

    @property
    def device(self) -> torch.device: ...

    @property
    def pad_token_id(self) -> int: ...

    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_scores: bool = ...,
        right_padded: bool | None = ...,
    ) -> Any:
        """Returns an object whose ``end_scores`` is the (B,) sequence score of each row (and ``scores``,
        (B, L), with ``token_scores``); ``right_padded`` says the batch is (so the mask need not be read)."""
        ...


@torch.inference_mode()
def score_sequences(
    model: BatchModel,
    sequences: Sequence[Sequence[int]],
    *,
    batch_tokens: int | None = None,
    max_rows: int | None = MAX_ROWS,
    batch_cost: float | None = None,
    groups: Sequence[Sequence[int]] | None = None,
    stats: RowCounts | None = None,
    positions: Sequence[Sequence[int]] | None = None,
    attributes: bool = False,
) -> list[Any]:
    """The score of each token id sequence, in the order given (the batch loop of rmkit).

    With ``positions`` (one list of token indices per sequence) each sequence gets the list of its token
    scores at those positions instead: a process reward model's step scores (:mod:`rmkit.process`). With
    ``attributes`` each gets the list of its score and a multi-attribute RM's K outputs at its end
    (:mod:`rmkit.attributes`; a gated head's objectives, :mod:`rmkit.heads`).

    ``batch_tokens`` bounds rows × longest row of a pass (default :func:`token_budget`). ``batch_cost``
    (see :func:`batch_cost`) makes a few rows of mixed lengths split by length where that pays
    (:func:`rmkit.data.token_budget_batches`); without it batches fill the token budget.

    ``groups`` (indices of sequences answering one prompt) turn on prefix sharing (:func:`plan_sharing`) where
    the model ``shares_prefixes``; ``stats`` counts sequences after a shared prefix (``shared``), those that fell
    back (``unshared``), prompt tokens not run again (``prefix_tokens``). A VLM RM scores its rows itself.

    On a GPU the batches go in from pinned memory without waiting, and the scores stay on the device
    until the last batch is queued: one copy back, so the host never waits for the GPU inside the loop.
    """
    if getattr(model, "generates", False):  # a generating judge writes, then its verdict is read
        return model.verdicts(list(sequences), batch_tokens, stats)
    if getattr(model, "reads_images", False):  # its rows carry their images
        return model.score_rows(list(sequences), batch_tokens, max_rows, groups, stats, batch_cost)
    batch_tokens = batch_tokens or token_budget(model)
    results = _Results(model.device)
    shared: list[tuple[Sequence[int], list[int]]] = []
    alone = list(range(len(sequences)))
    if groups and positions is None and not attributes and getattr(model, "shares_prefixes", False):
        shared, alone = plan_sharing(sequences, groups)
        if stats is not None:
            count = sum(len(members) for _, members in shared)
            stats.shared += count
            stats.unshared += sum(len(g) for g in groups if len(g) > 1) - count
            stats.prefix_tokens += sum((len(members) - 1) * len(prefix) for prefix, members in shared)
    for batch in token_budget_batches([len(sequences[i]) for i in alone], batch_tokens, max_rows, batch_cost):
        rows = [alone[b] for b in batch]
        ids, mask = padded_on([sequences[i] for i in rows], model.pad_token_id, model.device)
        out = model(ids, mask, token_scores=positions is not None, right_padded=True)
        if positions is not None:
            at = [list(positions[i]) for i in rows]
            where = results.put([r for r, p in enumerate(at) for _ in p], [k for p in at for k in p])
            results.add(rows, out.scores[where], [len(p) for p in at])
        elif attributes:  # its score, then its K outputs
            results.add(rows, torch.cat([out.end_scores[:, None], out.attribute_scores], 1))
        else:
            results.add(rows, out.end_scores)
    if shared:
        _score_shared(model, sequences, shared, results, batch_tokens, max_rows)
    return results.read(len(sequences))


class _Results:
    """The scores of a run of batches, kept on the device until :meth:`read` copies them back at once; and
    index tensors sent there without waiting (:func:`rmkit.runtime.to_device`)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.parts: list[tuple[list[int], torch.Tensor, list[int] | None]] = []

    def put(self, *rows: Any) -> Any:
        """Lists of ints on the device: one tensor, or a tuple of them."""
        out = tuple(to_device(torch.as_tensor(r, dtype=torch.long), self.device) for r in rows)
        return out[0] if len(out) == 1 else out

    def add(self, rows: list[int], values: torch.Tensor, counts: list[int] | None = None) -> None:
        """The scores of sequences ``rows``: one value (or one row of K) each, or ``counts[r]`` values each."""
        self.parts.append((rows, values.float(), counts))

    def read(self, n: int) -> list[Any]:
        """The ``n`` sequences' scores in order: a float, a list of K, or a list of ``counts`` floats each."""
        scores: list[Any] = [0.0] * n
        if not self.parts:
            return scores
        values = torch.cat([v[:, None] if v.dim() == 1 else v for _, v, _ in self.parts]).cpu()
        start = 0
        for rows, part, counts in self.parts:
            block = values[start : start + len(part)]
            start += len(part)
            if counts is not None:
                for i, chunk in zip(rows, block[:, 0].split(counts), strict=True):
                    scores[i] = chunk.tolist()
            else:
                for i, value in zip(rows, (block[:, 0] if part.dim() == 1 else block).tolist(), strict=True):
                    scores[i] = value
        return scores


def plan_sharing(
    sequences: Sequence[Sequence[int]],
    groups: Sequence[Sequence[int]],
    min_shared: int = MIN_SHARED,
    min_saving: float = MIN_SAVING,
) -> tuple[list[tuple[Sequence[int], list[int]]], list[int]]:
    """Which sequences run after a shared prefix: ``([(prefix, members), ...], the rest)``.

    A group's prefix is the longest run of leading tokens its sequences have in common, token for token,
    so sharing is exact wherever it is used: a prompt whose last token the tokenizer merged with the
    response's first simply shares one token less. Each member keeps at least its last token. A member
    that agrees with the group's first sequence on fewer tokens (one cut by truncation, say) falls back to
    its full sequence when leaving it out lets the rest share more. A group falls back whole when it shares
    fewer than ``min_shared`` tokens, or saves less than ``min_saving`` of its tokens: the continuations'
    passes attend over the prefix through a mask, which costs more per token than a full sequence's fused
    causal pass, so a short prompt before long answers is not worth it.
    """
    shared, alone, seen = [], [], set()
    for group in groups:
        if len(group) < 2:
            continue
        seen.update(group)
        first = sequences[group[0]]
        common = {i: len(os.path.commonprefix([first, sequences[i]])) for i in group}
        common = {i: min(k, len(sequences[i]) - 1) for i, k in common.items()}
        # the prefix length that saves the most: k tokens, once for every member agreeing on k or more
        length = max(common.values(), key=lambda k: (sum(c >= k for c in common.values()) - 1) * k)
        members = [i for i in group if common[i] >= length]
        saved = (len(members) - 1) * length
        total = sum(len(sequences[i]) for i in members)
        if length >= min_shared and len(members) > 1 and saved >= min_saving * total:
            shared.append((first[:length], members))
            alone += [i for i in group if common[i] < length]
        else:
            alone += list(group)
    alone += [i for i in range(len(sequences)) if i not in seen]
    return shared, sorted(alone)


def _score_shared(
    model: Any,
    sequences: Sequence[Sequence[int]],
    shared: list[tuple[Sequence[int], list[int]]],
    results: _Results,
    batch_tokens: int,
    max_rows: int | None,
) -> None:
    """Run each prefix once (batched), then every member's remaining tokens against its prefix's cache."""
    for batch in token_budget_batches([len(p) for p, _ in shared], batch_tokens, max_rows):
        ids, mask = padded_on([shared[g][0] for g in batch], model.pad_token_id, model.device)
        cache = model.prefix_cache(ids)
        # (row of the prefix batch, sequence index, its tokens after the prefix)
        rest = [(r, i, sequences[i][len(shared[g][0]) :]) for r, g in enumerate(batch) for i in shared[g][1]]
        # Continuations of mixed lengths are cut where the padding saved pays for another pass (they are few
        # and each also attends over its prefix); the prefixes' keys count against the budget.
        rows_cap = max(1, min(max_rows or len(rest), SUFFIX_ROWS * batch_tokens // ids.shape[1]))
        lengths = [len(tokens) for _, _, tokens in rest]
        for part in token_budget_batches(lengths, batch_tokens, rows_cap, SUFFIX_PASS_COST):
            rows = results.put([rest[k][0] for k in part])
            cont, cont_mask = padded_on([rest[k][2] for k in part], model.pad_token_id, model.device)
            results.add([rest[k][1] for k in part], model.score_after(cache, rows, mask, cont, cont_mask))


def batch_cost(model: BatchModel, *, short: int = 16, long: int = 512, repeats: int = 3) -> float:
    """The fixed cost of one forward pass of ``model`` on its device, in tokens' worth of work.

    Times one row of ``short`` and one of ``long`` tokens (the best of ``repeats``) and fits
    ``time = fixed + per_token × tokens``; returns ``fixed / per_token`` (large on a GPU, where a pass costs
    nearly the same whatever its size; small on a CPU).
    """
    row = [model.pad_token_id]

    def best(length: int) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            score_sequences(model, [row * length])
            times.append(time.perf_counter() - start)
        return min(times)

    best(short)  # the first pass pays for allocations
    t_short, t_long = best(short), best(long)
    per_token = max(t_long - t_short, 1e-9) / (long - short)
    return max(0.0, t_short - per_token * short) / per_token


def token_budget(model: BatchModel) -> int:
    """The token budget (rows × longest row) of a pass when none is given: ``BATCH_TOKENS`` on the CPU
    (larger batches gain nothing there); on a GPU, what fits in ``GPU_MEMORY_SHARE`` of its free memory
    (what the caching allocator holds unused counts as free) at :func:`activation_bytes` a token, plus,
    for a model that shares prefixes, the keys and values a budget of prefixes keeps and its continuations
    copy (``1 + SUFFIX_ROWS`` budgets of :func:`kv_bytes`)."""
    device = model.device
    config = getattr(getattr(model, "model", None), "config", None)
    if device.type != "cuda" or config is None:
        return BATCH_TOKENS
    dtype = next(model.model.parameters()).dtype
    per_token = activation_bytes(config, dtype, getattr(model, "max_length", None))
    if getattr(model, "shares_prefixes", False):
        per_token += (1 + SUFFIX_ROWS) * kv_bytes(config, dtype)
    return budget_for(free_memory(device), per_token)


def ahead(items: Iterable[T], enabled: bool = True) -> Iterator[T]:
    """``items`` in order, the next one made in a background thread while the caller works on this one
    (when ``enabled``; else as they come): how the next chunk is read and tokenised while the GPU scores
    the current one. An exception raised making an item is raised where that item would have come.
    Closing the iterator early stops the thread after the item it is making."""
    if not enabled:
        yield from items
        return
    slot: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()
    done = object()

    def offer(entry: tuple[Any, BaseException | None]) -> bool:
        """Hand ``entry`` over; False once the caller has stopped."""
        while not stop.is_set():
            try:
                slot.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def make() -> None:
        try:
            for item in items:
                if not offer((item, None)):
                    return
            offer((done, None))
        except BaseException as e:  # handed to the caller, in order
            offer((done, e))

    thread = threading.Thread(target=make, name="rmkit-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, error = slot.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()
        thread.join()


def score_examples(
    model: BatchModel,
    examples: Iterable[Example],
    tokenizer: ExampleTokenizer,
    *,
    batch_tokens: int | None = None,
    chunk_rows: int = CHUNK_ROWS,
    stats: RowCounts | None = None,
    share_prefixes: bool = True,
    attributes: bool = False,
    read_ahead: bool | None = None,
) -> Iterator[tuple[Example, list[Any] | None]]:
    """Yield ``(example, scores)`` in input order: one score per response (``[chosen, rejected]`` for a
    pair), or ``None`` for an example the tokenizer dropped (``truncation="drop"``).

    ``chunk_rows`` examples are tokenised and length-sorted together; ``stats`` (when given) is updated
    as examples come back. The responses of one example share their prompt's pass where the model can
    (``share_prefixes``; :func:`plan_sharing`). With ``read_ahead`` (default: on a GPU) the next chunk is
    read and tokenised while this one is scored (:func:`ahead`, :func:`rmkit.runtime.reads_ahead`).
    """
    stats = stats if stats is not None else RowCounts()
    it = iter(examples)
    chunks = ((chunk, tokenizer.tokenize(chunk)) for chunk in iter(lambda: list(islice(it, chunk_rows)), []))
    for chunk, tokenized in ahead(chunks, reads_ahead(model.device, read_ahead)):
        yield from score_tokenized(
            model,
            chunk,
            tokenized,
            batch_tokens=batch_tokens,
            stats=stats,
            share_prefixes=share_prefixes,
            attributes=attributes,
        )


def score_tokenized(
    model: BatchModel,
    chunk: Sequence[Example],
    tokenized: Sequence[Any],
    *,
    batch_tokens: int | None = None,
    stats: RowCounts,
    share_prefixes: bool = True,
    across_rows: bool = False,
    batch_cost: float | None = None,
    attributes: bool = False,
) -> Iterator[tuple[Example, list[Any] | None]]:
    """:func:`score_examples` of one chunk already tokenised (``ExampleTokenizer.tokenize(chunk)``);
    ``across_rows``: the examples that repeat a prompt share it (:func:`answer_groups`)."""
    ids = [t.ids for row in tokenized if row is not None for t in row]
    groups = answer_groups(chunk, tokenized, across_rows)
    scores = iter(
        score_sequences(
            model,
            ids,
            batch_tokens=batch_tokens,
            batch_cost=batch_cost,
            groups=groups if share_prefixes else None,
            stats=stats,
            attributes=attributes,
        )
    )
    for example, row in zip(chunk, tokenized, strict=True):
        stats.add(row, example.notes)
        yield example, None if row is None else [next(scores) for _ in row]


def answer_groups(
    chunk: Sequence[Example],
    tokenized: Sequence[Any],
    across: bool = True,
    extra: Callable[[Any, Any], Any] | None = None,
) -> list[list[int]]:
    """The chunk's rows (numbered in order over its prepared examples) that answer one prompt and may share its
    pass: each example's, and with ``across`` (``--share-across-rows``) the examples that ask the same prompt
    merged, so that a file of one response a row (an RL rollout's shape) shares as a best-of-N row does. Off by
    default: a merged row's score then depends, in its last bits, on which rows its chunk holds, where each
    example's alone does not (the one-process, torchrun and Ray files are byte-identical whatever their
    chunking). An example's key is its prompt, its first
    row's first ``MIN_SHARED`` tokens (so that prompts cut from the left at different places, for answers
    of different lengths, stay apart: their rows no longer start alike) and ``extra(example, rows)`` (a
    VLM's images); a pre-rendered example, or a pair whose answers follow different histories, keeps its
    own group. The planners share only the tokens a group's rows have in common (:func:`plan_sharing`),
    so a merge the key gets wrong shares nothing wrong."""
    groups: dict[Any, list[int]] = {}
    start = 0
    for n, (example, rows) in enumerate(zip(chunk, tokenized, strict=True)):
        if rows is None:
            continue
        key: Any = n
        if across and example.prompt and not example.rendered and example.rejected_prompt is None:
            prompt = json.dumps(example.prompt, sort_keys=True, default=repr)
            start_ids = tuple(rows[0].ids[:MIN_SHARED])
            key = (prompt, start_ids, extra(example, rows) if extra is not None else None)
        groups.setdefault(key, []).extend(range(start, start + len(rows)))
        start += len(rows)
    return list(groups.values())
