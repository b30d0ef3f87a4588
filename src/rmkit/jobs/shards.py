"""The files of a job that several processes share: each process's records, its part file, the merge.

Record ``k`` of the input (counted from 0) goes to process ``k % world`` (:class:`Share`). Each process
appends ``"{k}\\t{json}"`` lines to its part file and makes them durable chunk by chunk
(:func:`append_lines`); a resumed process cuts its files back to the sizes its state recorded
(:func:`truncate`, :class:`ShareState`). At the end the parts are merged by record number into one output, written atomically
(:func:`merge_parts`, :func:`merge_rejects`).

A Ray run (:mod:`rmkit.ray`) cuts the records instead into :class:`Span` s of consecutive records
(:func:`plan_spans`; a JSON-lines file's spans say at which byte each begins, so a worker reads only its
own), and its driver writes one part file and state file, as a single process does.
"""

from __future__ import annotations

import bisect
import heapq
import json
import os
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import IO

from rmkit.data import Example, RowCounts, jsonl_starts, parquet_groups, read_records
from rmkit.errors import RMKitError
from rmkit.files import atomic_write, write_json
from rmkit.metrics import BestOfN, Moments, PairStats


@dataclass
class ShareState:
    """What one process has finished: written after every chunk, read back by ``--resume``."""

    input: str
    world_size: int
    records: int = 0  # records of this process's share that are done
    part_bytes: int = 0
    rejects_bytes: int = 0
    stats: RowCounts = field(default_factory=RowCounts)
    responses: Moments = field(default_factory=Moments)  # scores of single responses
    pairs: PairStats = field(default_factory=PairStats)  # scores of chosen and rejected answers
    best_of_n: BestOfN = field(default_factory=BestOfN)  # scores of best-of-N rows
    safer: PairStats = field(default_factory=PairStats)  # --cost-model: (rejected, chosen) costs of pairs
    run_tokens: int = 0  # tokens and seconds of this run alone (not of the runs it resumes), for tokens/s
    run_seconds: float = 0.0
    pass_cost: float | None = None  # a VLM's measured pass cost: a resumed run cuts its passes alike

    def save(self, path: Path) -> None:
        write_json(path, asdict(self), indent=None)

    @classmethod
    def load(cls, path: Path) -> ShareState:
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (KeyError, TypeError):
            raise RMKitError(
                f"{path}: written by another version of rmkit; start again without --resume"
            ) from None

    @classmethod
    def from_dict(cls, raw: dict) -> ShareState:
        """The state ``asdict`` gave (what :meth:`save` writes, and what a Ray actor sends back)."""
        raw = dict(raw)
        raw["stats"] = RowCounts(**raw["stats"])
        raw["responses"] = Moments(**raw["responses"])
        raw["pairs"] = PairStats.from_dict(raw["pairs"])
        raw["best_of_n"] = BestOfN.from_dict(raw["best_of_n"])
        raw["safer"] = PairStats.from_dict(raw["safer"]) if "safer" in raw else PairStats()
        return cls(**raw)

    def merge(self, other: ShareState) -> None:
        """Count ``other``'s rows, statistics and tokens in this state (a Ray actor's shard in the driver's)."""
        self.stats.merge(other.stats)
        self.responses.merge(other.responses)
        self.pairs.merge(other.pairs)
        self.best_of_n.merge(other.best_of_n)
        self.safer.merge(other.safer)
        self.run_tokens += other.run_tokens

    def add(self, scored: list[tuple[Example, list[float]]]) -> None:
        """Count a chunk's scores in the running statistics."""
        pairs = [s for ex, s in scored if ex.is_pair]
        if pairs:
            self.pairs.merge(PairStats.of([s[0] for s in pairs], [s[1] for s in pairs]))
        self.responses.merge(Moments.of([s[0] for ex, s in scored if not ex.is_pair and not ex.best_of_n]))
        ranked = [s for ex, s in scored if ex.best_of_n]
        if ranked:
            self.best_of_n.merge(BestOfN.of(ranked))


class Share:
    """The records of one process (record ``k``, counted from 0, goes to rank ``k % world``) after the first
    ``start`` of them. ``done`` counts the records of the share handed out so far, ``start`` included;
    ``seen`` receives ``(row, k)`` of each one handed out, so the caller can number what comes back."""

    def __init__(self, records: Iterable, rank: int, world: int, start: int, seen: deque):
        self._it = enumerate(records)
        self.rank, self.world, self.start, self.seen = rank, world, start, seen
        self.done = 0

    def __iter__(self) -> Share:
        return self

    def __next__(self) -> tuple[int, dict]:
        while True:
            k, (row, record) = next(self._it)
            if k % self.world != self.rank:
                continue
            self.done += 1
            if self.done > self.start:
                self.seen.append((row, k))
                return row, record


def append_lines(part: IO[str], lines: list[str]) -> None:
    """Append ``lines`` to an open part file and make them durable (flushed and synced to disk)."""
    part.writelines(lines)
    part.flush()
    os.fsync(part.fileno())


def truncate(path: Path, size: int) -> None:
    """Cut ``path`` back to ``size`` bytes (creating it empty, or removing it when ``size`` is 0)."""
    if size == 0:
        path.unlink(missing_ok=True)
        return
    with open(path, "r+b") as f:
        f.truncate(size)


def count_records(path: str, rank: int, world: int) -> int | None:
    """Records of this process's share, for the progress bar's ETA (a quick pass over the file)."""
    try:
        n = sum(1 for _ in read_records(path))
    except RMKitError:
        return None
    return (n - rank + world - 1) // world


def merge_parts(output: Path, parts: list[Path]) -> None:
    """Merge the part files by record number into ``output``: a JSON list for ``.json``, else JSON lines."""
    files = [open(p, encoding="utf-8") for p in parts if p.exists()]  # noqa: SIM115
    try:
        rows = (text for _, text in heapq.merge(*(_numbered(f) for f in files), key=lambda x: x[0]))
        with atomic_write(output) as out:
            if output.suffix != ".json":
                out.writelines(text + "\n" for text in rows)
                return
            out.write("[")
            for i, text in enumerate(rows):
                out.write(("," if i else "") + "\n" + text)
            out.write("\n]\n")
    finally:
        for f in files:
            f.close()


def _numbered(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    for line in lines:
        k, _, text = line.partition("\t")
        yield int(k), text.rstrip("\n")


def merge_rejects(path: Path, parts: list[Path]) -> None:
    """Join the processes' rejects files into one, in row order."""
    files = [open(p, encoding="utf-8") for p in parts if p.exists()]  # noqa: SIM115
    try:
        with atomic_write(path) as out:
            out.writelines(heapq.merge(*files, key=lambda line: json.loads(line)["row"] or 0))
    finally:
        for f in files:
            f.close()
    for p in parts:
        p.unlink(missing_ok=True)


@dataclass(frozen=True)
class Span:
    """Records ``start`` to ``stop`` (counted from 0, ``stop`` excluded) of a file, and where a reader of it
    begins: ``at`` for :func:`rmkit.data.read_records` (a JSON-lines file's byte offset and line, a Parquet
    file's row group and the records before it; ``None``: the file's start), then ``skip`` records passed by."""

    start: int
    stop: int
    at: tuple[int, int] | None = None
    skip: int = 0


def plan_spans(path: str, start: int, size: int) -> Iterator[Span]:
    """The records of ``path`` after the first ``start``, as spans of ``size`` records: a JSON-lines file's
    from one pass over its line breaks, a Parquet file's from its footer (row groups), another format's
    from one pass over its records (its spans read from the file's start)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".jsonl":
        begun: Span | None = None
        total = 0
        for total, at in enumerate(jsonl_starts(path), start=1):
            k = total - 1
            if k >= start and (k - start) % size == 0:
                if begun is not None:
                    yield replace(begun, stop=k)
                begun = Span(k, k, at)
        if begun is not None:
            yield replace(begun, stop=total)
        return
    groups = parquet_groups(path) if suffix == ".parquet" else []
    total = sum(g[2] for g in groups) if groups else sum(1 for _ in read_records(path))
    firsts = [before for _, before, _ in groups]
    for first in range(start, total, size):
        stop = min(first + size, total)
        if groups:
            group, before, _ = groups[bisect.bisect_right(firsts, first) - 1]
            yield Span(first, stop, (group, before), first - before)
        else:
            yield Span(first, stop, None, first)


def read_span(path: str, span: Span) -> Iterator[tuple[int, int, dict]]:
    """``(record number, row, record)`` of the records of ``span``."""
    records = islice(read_records(path, at=span.at), span.skip, span.skip + span.stop - span.start)
    for k, (row, record) in enumerate(records, start=span.start):
        yield k, row, record
