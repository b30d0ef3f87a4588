"""The scorer object: a model loaded once, in any process, that scores batches of records in order.

``rmkit score`` in one process, each ``torchrun`` process and each Ray actor (:mod:`rmkit.ray`) score
through the same two functions: :func:`scored` (a prepared chunk through the kind and the inference core,
counted in a :class:`~rmkit.jobs.shards.ShareState`) and :func:`part_lines` (the part file's
``"{record number}\\t{json}"`` lines). :class:`Scorer` holds a model and its kind and answers both a plain
call (rows in, scores out) and :meth:`Scorer.shard` (numbered records in, the lines, rejects and counts of
a part file out: what a Ray actor sends back to the driver, the only writer).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import deque
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from rmkit import kinds, runtime
from rmkit.data import Example, Rejects, RowCounts
from rmkit.errors import RMKitError
from rmkit.jobs.config import ScoreConfig
from rmkit.jobs.shards import ShareState
from rmkit.metrics import PairStats

log = logging.getLogger(__name__)


def scored(
    kind: kinds.Kind,
    rm: Any,
    chunk: list[Example],
    tokenized: list,
    reading: kinds.Reading,
    source: str,
    state: ShareState,
) -> Iterator[tuple[Example, Any, list[Any] | None]]:
    """``(example, raw, scores)`` of one prepared chunk in order (``raw`` and ``scores`` ``None`` for an
    example the length limit dropped; a non-finite score is ``None``); counts the chunk in ``state``."""
    tokens_before = state.stats.tokens
    counted: list[tuple[Example, list[float]]] = []
    for ex, raw in kind.score_prepared(rm, chunk, tokenized, reading, state.stats):
        if raw is None:
            yield ex, None, None
            continue
        scores = kind.values(rm, raw)
        scores = rm.normalize(scores) if reading.normalize else scores
        if all(math.isfinite(v) for v in scores):
            summary = kind.summarised(ex, scores, reading)
            counted += [(ex, summary)] if summary and None not in summary else []
        else:  # written as null, counted and reported; kept out of the statistics
            state.stats.non_finite += 1
            log.warning(
                "%s, row %d: the model gave a non-finite score %s; written as null", source, ex.row, scores
            )
            scores = [v if math.isfinite(v) else None for v in scores]
        yield ex, raw, scores
    state.add(counted)
    state.run_tokens += state.stats.tokens - tokens_before


def part_lines(
    kind: kinds.Kind,
    rm: Any,
    results: Iterator[tuple[Example, Any, list[Any] | None]],
    reading: kinds.Reading,
    seen: deque[tuple[int, int]],
    extra: dict[int, dict[str, Any]] | None = None,
) -> list[str]:
    """The part-file lines ``"{record number}\\t{json}"`` of :func:`scored`'s ``results``; ``seen`` holds
    ``(row, record number)`` of the records handed to the normaliser, in order (rejected ones are passed by);
    ``extra`` maps an example's ``id`` to columns added to its row (a cost model's, :func:`cost_columns`)."""
    lines = []
    for ex, raw, scores in results:
        while seen[0][0] != ex.row:  # records before it were rejected
            seen.popleft()
        k = seen.popleft()[1]
        if raw is None:
            continue
        row = kind.row(rm, ex, raw, scores, reading)
        row.update((extra or {}).get(id(ex), {}))
        lines.append(f"{k}\t{json.dumps(row, ensure_ascii=False, default=str)}\n")
    return lines


def cost_columns(cost: Scorer, chunk: list[Example], state: ShareState) -> dict[int, dict[str, Any]]:
    """The cost columns (``cost``, ``cost_chosen``/``cost_rejected``, ``costs``) of each example of ``chunk``
    that the cost model scored, by ``id``; its pairs' costs counted in ``state.safer``."""
    out: dict[int, dict[str, Any]] = {}
    pairs: list[list[float]] = []
    prepared = cost.tokenizer.tokenize(chunk)
    for ex, raw in cost.kind.score_prepared(cost.rm, chunk, prepared, cost.reading, RowCounts()):
        if raw is None:
            continue
        values = cost.kind.values(cost.rm, raw)
        row = cost.kind.row(cost.rm, ex, raw, values, cost.reading)
        out[id(ex)] = {k: v for k, v in row.items() if k.startswith("cost")}
        if ex.is_pair and all(math.isfinite(v) for v in values):
            pairs.append(values)
    if pairs:  # the chosen answer is the safer when the rejected one costs more
        state.safer.merge(PairStats.of([p[1] for p in pairs], [p[0] for p in pairs]))
    return out


@dataclass
class Shard:
    """What :meth:`Scorer.shard` gives for a run of records: the part file's lines, the rejects file's lines
    and the counts of the shard (a :class:`ShareState` as a dict, ``records`` the records it held)."""

    lines: str
    rejects: str
    state: dict[str, Any]


class Scorer:
    """A reward model of any kind rmkit reads, loaded once, scoring rows in order; it needs no Ray.

    >>> scorer = Scorer("path/to/rm", batch_tokens=8192)
    >>> scorer([{"prompt": "Hi", "response": "Hello!"}, {"prompt": "Hi", "chosen": "Hey", "rejected": "No"}])
    [[0.31], [0.52, -1.2]]

    ``options`` are those of :class:`rmkit.jobs.config.ScoreConfig` (``rmkit score``'s), or give the
    ``config`` itself, or a model already loaded as ``rm``; ``device``/``threads`` say where it runs.
    """

    def __init__(
        self, model: str | None = None, config: ScoreConfig | None = None, *, rm: Any = None, **options: Any
    ):
        if config is None:
            config = ScoreConfig(model=str(model), input="", output="", **options)
        elif options or model is not None:
            config = replace(config, **options, **({"model": str(model)} if model is not None else {}))
        if config.threads:
            torch.set_num_threads(config.threads)
        if rm is None:
            self.kind, self.rm = kinds.load(
                config.model,
                config.loading(),
                config.step_format(),
                dtype=config.dtype,
                device=runtime.resolve_device(config.device),
            )
        else:  # a model already loaded, used as it is (its dtype and device)
            self.kind, self.rm = kinds.of_model(rm), rm
        if config.normalize and not getattr(self.rm, "normalizes", False):
            raise RMKitError("--normalize: the model stores no score mean and std to normalise with")
        if config.compile:
            self.kind.compile(self.rm)
        self.config = replace(config, dtype=runtime.dtype_name(self.rm))
        self.reading = kinds.Reading.of(config, format=config.format)
        self.tokenizer = self.kind.tokenizer(self.rm, self.reading)

    def __call__(self, rows: list[dict[str, Any]]) -> list[list[Any] | None]:
        """The scores of each row (one a response: ``[s]``, ``[chosen, rejected]``, a best-of-N row's list),
        in order; ``None`` for a row left out (over-length with ``truncation="drop"``, or a bad row with
        ``on_error="skip"``; with the default ``on_error="raise"`` a bad row raises, named by its index in
        ``rows``). The rows are of one format, as a file's are."""
        state = ShareState(input="<rows>", world_size=1)
        out: list[list[Any] | None] = [None] * len(rows)
        skip = self.config.on_error == "skip"
        with Rejects(None) if skip else nullcontext() as rejects:
            chunk = list(self.kind.examples(enumerate(rows), "<rows>", self.reading, rejects))
            for ex, _, scores in scored(
                self.kind, self.rm, chunk, self.tokenizer.tokenize(chunk), self.reading, "<rows>", state
            ):
                out[ex.row] = scores
        return out

    def shard(self, records: list[tuple[int, int, Any]], source: str) -> Shard:
        """Score ``records`` (``(record number, row, record)`` of the file ``source``, in order) into the
        lines of a part file and of the rejects file, and the shard's counts."""
        t0 = time.perf_counter()
        state = ShareState(input=source, world_size=1, records=len(records))
        held: list[str] = []
        skip = self.config.on_error == "skip"
        seen = deque((row, k) for k, row, _ in records)
        with Rejects(None, held=held) if skip else nullcontext() as rejects:
            numbered = ((row, record) for _, row, record in records)
            chunk = list(self.kind.examples(numbered, source, self.reading, rejects))
            results = scored(
                self.kind, self.rm, chunk, self.tokenizer.tokenize(chunk), self.reading, source, state
            )
            lines = part_lines(self.kind, self.rm, results, self.reading, seen)
            state.stats.skipped = rejects.count if rejects is not None else 0
        state.run_seconds = time.perf_counter() - t0
        return Shard("".join(lines), "".join(held), asdict(state))
