"""RMScore: score every example of a data set with a reward model, in input order.

:func:`score_examples` is the one scorer of rmkit: ``rmkit score``, ``rmkit eval`` and the Python API all
go through it. It takes examples in chunks, tokenises each chunk in one call, scores the chunk in
length-sorted token-budget batches (:meth:`RewardModel.score_ids`) and yields the examples back in the
order they came.

:func:`score_file` (``rmkit score``) runs it over a file and writes the scores. How the output is built:

- Records are dealt round-robin to the processes of a ``torchrun`` job (record ``k`` to rank
  ``k % world_size``; one process takes them all). Each process streams its records through the
  normaliser and the scorer and appends one line ``"{k}\\t{json object}"`` per scored row to its *part
  file*, ``{output}.rank{r}-of-{n}.part``, flushed after every chunk.
- After every chunk a small *state file* beside the part (written atomically) records how many of the
  process's records are done, the part's and the rejects file's byte sizes, and the running counts. A
  ``--resume`` run cuts both files back to those sizes (dropping anything a ``kill -9`` left half
  written), skips the records already done and goes on; its output equals an uninterrupted run's.
- When every process is done, rank 0 merges the parts by record number into ``output`` (a JSON list for
  ``.json``, one object a line for ``.jsonl``) through a temporary file and ``os.replace``, so a reader
  never sees half a file, writes the summary to ``{stem}.summary.json`` and removes the parts.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import os
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Any

import torch

from rmkit.config import DataOptions, option
from rmkit.data import Encoder, Example, Rejects, detect_format, read_records
from rmkit.data.formats import normalise_records
from rmkit.errors import RMKitError
from rmkit.modeling import DTYPES, RewardModel

log = logging.getLogger(__name__)


@dataclass
class ScoreStats:
    """Counts of a scoring run: rows scored, rows truncated or dropped by the length rule, real tokens."""

    rows: int = 0
    truncated: int = 0
    dropped: int = 0
    tokens: int = 0


def score_examples(
    rm: RewardModel,
    examples: Iterable[Example],
    *,
    encoder: Encoder | None = None,
    batch_tokens: int = 16384,
    chunk_rows: int = 2048,
    stats: ScoreStats | None = None,
) -> Iterator[tuple[Example, list[float] | None]]:
    """Yield ``(example, scores)`` in input order: one score per response (``[chosen, rejected]`` for a
    pair), or ``None`` for a row dropped by ``truncation="drop"``."""
    encoder = encoder or rm.encoder()
    stats = stats if stats is not None else ScoreStats()
    it = iter(examples)
    while chunk := list(islice(it, chunk_rows)):
        encoded = encoder.encode_many(chunk)
        seqs = [e.ids for encs in encoded if encs is not None for e in encs]
        scores = iter(rm.score_ids(seqs, batch_tokens=batch_tokens))
        for ex, encs in zip(chunk, encoded, strict=True):
            if encs is None:
                stats.dropped += 1
                yield ex, None
                continue
            stats.rows += 1
            stats.truncated += any(e.truncated for e in encs)
            stats.tokens += sum(len(e.ids) for e in encs)
            yield ex, [next(scores) for _ in encs]


@dataclass(kw_only=True)
class ScoreConfig(DataOptions):
    """Options of ``rmkit score``; skipped rows go to ``--rejects``, by default ``{stem}.rejects.jsonl``."""

    model: str = option(
        help="reward model: an rmkit or any one-label HF sequence classifier (dir or hub name)"
    )
    input: str = option(help="data file (.json, .jsonl, .csv, .parquet) or save_to_disk directory")
    output: str = option(help="where to write the scores: .json (a JSON list) or .jsonl (one object a line)")
    template: str | None = option(
        None,
        help="rendering: the model's own setting when not given, else auto, chat or plain",
        choices=["auto", "chat", "plain"],
    )
    max_length: int | None = option(None, help="longest sequence in tokens; the model's limit when not given")
    truncation: str = option(
        "left",
        help="over-length rows: 'left' cuts the prompt from the left (keeps the response and its end), "
        "'drop' leaves the row out; both are counted",
        choices=["left", "drop"],
    )
    batch_tokens: int = option(16384, help="token budget of a batch (rows × longest row)")
    chunk_rows: int = option(2048, help="rows tokenised, length-sorted and checkpointed together")
    dtype: str = option("fp32", help="model precision", choices=list(DTYPES))
    device: str | None = option(None, help="cpu, cuda, cuda:1, ...; the local GPU if any, else cpu")
    threads: int | None = option(None, help="CPU threads per process; all cores shared among processes")
    compile: bool = option(
        False,
        help="torch.compile the model first: 10-30 s once, then faster batches; for long runs of models "
        "with hidden size 512 and up",
    )
    resume: bool = option(False, help="continue a killed run from its part files instead of starting over")
    progress: bool = option(True, help="show a progress bar on stderr (only when it is a terminal)")


@dataclass
class _Moments:
    """Running count, mean, sum of squared deviations, min and max of one score column (Welford/Chan)."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    min: float = math.inf
    max: float = -math.inf

    def add(self, x: float) -> None:
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)
        self.min, self.max = min(self.min, x), max(self.max, x)

    def merge(self, other: _Moments) -> None:
        n = self.n + other.n
        if other.n:
            delta = other.mean - self.mean
            self.mean += delta * other.n / n
            self.m2 += other.m2 + delta * delta * self.n * other.n / n
            self.n = n
            self.min, self.max = min(self.min, other.min), max(self.max, other.max)

    def summary(self) -> dict[str, float | None]:
        if not self.n:
            return {"mean": None, "std": None, "min": None, "max": None}
        return {"mean": self.mean, "std": math.sqrt(self.m2 / self.n), "min": self.min, "max": self.max}


@dataclass
class _State:
    """What one process has finished: written after every chunk, read back by ``--resume``."""

    input: str
    world_size: int
    records: int = 0  # records of this process's share that are done
    part_bytes: int = 0
    rejects_bytes: int = 0
    skipped: int = 0
    stats: ScoreStats = field(default_factory=ScoreStats)
    scores: dict[str, _Moments] = field(default_factory=dict)
    chosen_wins: int = 0
    run_tokens: int = 0  # tokens and seconds of this run alone (not of the runs it resumes), for tokens/s
    run_seconds: float = 0.0

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(self)), encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> _State:
        raw = json.loads(path.read_text(encoding="utf-8"))
        raw["stats"] = ScoreStats(**raw["stats"])
        raw["scores"] = {k: _Moments(**v) for k, v in raw["scores"].items()}
        return cls(**raw)

    def add(self, row: dict[str, Any], is_pair: bool) -> None:
        for name in ("score_chosen", "score_rejected") if is_pair else ("score",):
            self.scores.setdefault(name, _Moments()).add(row[name])
        if is_pair:
            self.chosen_wins += row["score_chosen"] > row["score_rejected"]


def output_row(ex: Example, scores: list[float]) -> dict[str, Any]:
    """The object written for one scored example: its text, its score(s), then its pass-through columns.

    ``{prompt, response, score}`` for a response; ``{prompt, chosen, rejected, score_chosen,
    score_rejected}`` for a pair; ``{text, score}`` for pre-rendered text (and no ``prompt`` for rendered
    pairs). The score columns win over input columns of the same name.
    """
    out: dict[str, Any] = {} if ex.rendered else {"prompt": ex.prompt_value()}
    if ex.is_pair:
        out.update(chosen=ex.responses[0], rejected=ex.responses[1])
        out.update(score_chosen=scores[0], score_rejected=scores[1])
        if ex.margin is not None:
            out["margin"] = ex.margin
    else:
        out["text" if ex.rendered else "response"] = ex.responses[0]
        out["score"] = scores[0]
    for k, v in ex.extra.items():
        out.setdefault(k, v)
    return out


def score(config: ScoreConfig | None = None, /, *, rm: RewardModel | None = None, **options: Any) -> dict:
    """``rmkit.score``: :func:`score_file` from a config, keyword options, or a config overridden by them.

    ``rm`` is an already loaded :class:`RewardModel` to use as it is (its dtype and device) instead of
    loading ``model``; with ``compile=True`` it is compiled in place (:meth:`RewardModel.compile`).
    """
    if config is None:
        if rm is not None:
            options.setdefault("model", "<RewardModel>")
        config = ScoreConfig(**options)
    elif options:
        config = replace(config, **options)
    return score_file(config, rm=rm)


def score_file(config: ScoreConfig, *, rm: RewardModel | None = None) -> dict[str, Any]:
    """Score every row of ``config.input`` into ``config.output``; return (and print) the run's summary."""
    start = time.perf_counter()
    output = Path(config.output)
    if output.suffix not in (".json", ".jsonl"):
        raise RMKitError(f"--output must end in .json or .jsonl, got '{config.output}'")
    rank, world, owns_group = _init_distributed(config.device)
    try:
        device = _device(config.device)
        torch.set_num_threads(config.threads or max(1, (os.cpu_count() or 1) // _local_world()))
        if rm is None:
            rm = RewardModel.from_pretrained(config.model, dtype=config.dtype, device=device)
        if config.compile:
            rm.compile()
        _score_share(rm, config, output, rank, world)
        elapsed = time.perf_counter() - start
        if world > 1:
            torch.distributed.barrier()
        summary = None
        if rank == 0:
            summary = _finish(config, output, world, elapsed)
        if world > 1:
            box = [summary]
            torch.distributed.broadcast_object_list(box, src=0)
            summary = box[0]
        return summary
    finally:
        if owns_group:
            torch.distributed.destroy_process_group()


def _init_distributed(device: str | None) -> tuple[int, int, bool]:
    """``(rank, world_size, whether we started the process group)`` from torchrun's environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, False
    import torch.distributed as dist

    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    backend = "nccl" if _device(device).type == "cuda" else "gloo"
    dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size(), True


def _local_world() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def _device(name: str | None) -> torch.device:
    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def _paths(config: ScoreConfig, output: Path, rank: int, world: int) -> tuple[Path, Path, Path]:
    """``(part, state, rejects part)`` of one process."""
    part = output.with_name(f"{output.name}.rank{rank}-of-{world}.part")
    rejects = Path(_rejects_path(config, output))
    if world > 1:
        rejects = rejects.with_name(f"{rejects.name}.rank{rank}-of-{world}.part")
    return part, part.with_name(part.name + ".state.json"), rejects


def _rejects_path(config: ScoreConfig, output: Path) -> str:
    return config.rejects or str(output.with_suffix("")) + ".rejects.jsonl"


def _summary_path(output: Path) -> Path:
    return Path(str(output.with_suffix("")) + ".summary.json")


def _score_share(rm: RewardModel, config: ScoreConfig, output: Path, rank: int, world: int) -> None:
    """Score this process's share of the records into its part file, checkpointing after every chunk."""
    part_path, state_path, rejects_path = _paths(config, output, rank, world)
    skip = config.on_error == "skip"
    state = _State(input=str(config.input), world_size=world)
    if config.resume and state_path.exists():
        state = _State.load(state_path)
        if state.input != str(config.input) or state.world_size != world:
            raise RMKitError(
                f"{state_path}: cannot resume: it was written for input '{state.input}' with "
                f"{state.world_size} process(es), not '{config.input}' with {world}"
            )
        log.info("rank %d: resuming after %d records", rank, state.records)
    elif config.resume:
        log.info("rank %d: nothing to resume at %s; starting from the beginning", rank, state_path)
    output.parent.mkdir(parents=True, exist_ok=True)
    _truncate(part_path, state.part_bytes)
    if skip:
        _truncate(rejects_path, state.rejects_bytes)
    rejects = Rejects(rejects_path) if skip else None
    state.run_tokens, state.run_seconds, skipped_before = 0, 0.0, state.skipped

    encoder = rm.encoder(max_length=config.max_length, template=config.template, truncation=config.truncation)
    seen: deque[tuple[int, int]] = deque()  # (row, record number) of records handed to the normaliser
    records = _Share(read_records(config.input), rank, world, state.records, seen)
    examples = normalise_records(
        records, source=str(config.input), format=_format(config), columns=config.columns, rejects=rejects
    )
    total = _count_records(config.input, rank, world) if config.progress and sys.stderr.isatty() else None
    bar = _progress(config.progress, total, state.records)
    t0 = time.perf_counter()

    def checkpoint(lines: list[str]) -> None:
        """Make a chunk durable: the part's lines first, then the state that says they are there."""
        part.writelines(lines)
        part.flush()
        os.fsync(part.fileno())
        state.records, state.part_bytes = records.done, part.tell()
        if rejects is not None:
            state.skipped = skipped_before + rejects.count
            state.rejects_bytes = rejects_path.stat().st_size if rejects_path.exists() else 0
        state.run_seconds = time.perf_counter() - t0
        state.save(state_path)

    try:
        with open(part_path, "a", encoding="utf-8") as part:
            while chunk := list(islice(examples, config.chunk_rows)):
                lines = []
                tokens_before = state.stats.tokens
                for ex, scores in score_examples(
                    rm,
                    chunk,
                    encoder=encoder,
                    batch_tokens=config.batch_tokens,
                    chunk_rows=config.chunk_rows,
                    stats=state.stats,
                ):
                    while seen[0][0] != ex.row:  # records before it were rejected
                        seen.popleft()
                    k = seen.popleft()[1]
                    if scores is None:
                        continue
                    row = output_row(ex, scores)
                    state.add(row, ex.is_pair)
                    lines.append(f"{k}\t{json.dumps(row, ensure_ascii=False, default=str)}\n")
                state.run_tokens += state.stats.tokens - tokens_before
                checkpoint(lines)
                if bar is not None:
                    bar.update(state.records - bar.n)
                    bar.set_postfix_str(f"{state.run_tokens / max(state.run_seconds, 1e-9):,.0f} tok/s")
            checkpoint([])  # rejected records after the last scored one
    finally:
        if rejects is not None:
            rejects.close()
        if bar is not None:
            bar.close()


class _Share:
    """The records of one process (record ``k``, counted from 0, goes to rank ``k % world``) after the first
    ``start`` of them. ``done`` counts the records of the share handed out so far, ``start`` included;
    ``seen`` receives ``(row, k)`` of each one handed out, so the caller can number what comes back."""

    def __init__(self, records: Iterable, rank: int, world: int, start: int, seen: deque):
        self._it = enumerate(records)
        self.rank, self.world, self.start, self.seen = rank, world, start, seen
        self.done = 0

    def __iter__(self) -> _Share:
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


def _format(config: ScoreConfig) -> str | None:
    """The format named, else the one detected from the first record (so every process reads rows alike)."""
    if config.format:
        return config.format
    first = next(iter(read_records(config.input)), None)
    if first is None:
        return None
    record = {(config.columns or {}).get(k, k): v for k, v in first[1].items()}
    try:
        return detect_format(record)
    except ValueError:
        return None  # the normaliser reports the row


def _truncate(path: Path, size: int) -> None:
    """Cut ``path`` back to ``size`` bytes (creating it empty, or removing it when ``size`` is 0)."""
    if size == 0:
        path.unlink(missing_ok=True)
        return
    with open(path, "r+b") as f:
        f.truncate(size)


def _count_records(path: str, rank: int, world: int) -> int | None:
    """Records of this process's share, for the progress bar's ETA (a quick pass over the file)."""
    try:
        n = sum(1 for _ in read_records(path))
    except RMKitError:
        return None
    return (n - rank + world - 1) // world


def _progress(enabled: bool, total: int | None, initial: int):
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="row", file=sys.stderr, dynamic_ncols=True)


def _finish(config: ScoreConfig, output: Path, world: int, elapsed: float) -> dict[str, Any]:
    """Rank 0: merge the parts into the output and the rejects, write the summary, remove the parts."""
    shares = [_paths(config, output, r, world) for r in range(world)]
    states = [_State.load(state) for _, state, _ in shares]

    tmp = output.with_name(output.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        parts = [open(p, encoding="utf-8") for p, _, _ in shares if p.exists()]  # noqa: SIM115
        try:
            lines = heapq.merge(*(_numbered(f) for f in parts), key=lambda x: x[0])
            _write_rows(out, (text for _, text in lines), as_list=output.suffix == ".json")
        finally:
            for f in parts:
                f.close()
    os.replace(tmp, output)

    rejects = Path(_rejects_path(config, output))
    if config.on_error == "skip" and world > 1:
        _merge_rejects(rejects, [r for _, _, r in shares])

    stats, scores, skipped, wins = ScoreStats(), {}, 0, 0
    for s in states:
        for name in ("rows", "truncated", "dropped", "tokens"):
            setattr(stats, name, getattr(stats, name) + getattr(s.stats, name))
        for name, m in s.scores.items():
            scores.setdefault(name, _Moments()).merge(m)
        skipped += s.skipped
        wins += s.chosen_wins
    summary: dict[str, Any] = {
        "input": str(config.input),
        "output": str(output),
        "model": str(config.model),
        "processes": world,
        "dtype": config.dtype,
        "compiled": config.compile,
        "rows": stats.rows,
        "skipped": skipped,
        "truncated": stats.truncated,
        "dropped": stats.dropped,
        "tokens": stats.tokens,
        "scores": {name: m.summary() for name, m in scores.items()},
        "tokens_per_s": sum(s.run_tokens for s in states) / max(max(s.run_seconds for s in states), 1e-9),
        "wall_s": elapsed,
    }
    if "score_chosen" in scores:
        summary["chosen_wins"] = wins / max(scores["score_chosen"].n, 1)
    if config.on_error == "skip":
        summary["rejects"] = str(rejects)
    _write_json(_summary_path(output), summary)
    for part, state, _ in shares:
        part.unlink(missing_ok=True)
        state.unlink(missing_ok=True)
    _print_summary(summary)
    return summary


def _numbered(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    for line in lines:
        k, _, text = line.partition("\t")
        yield int(k), text.rstrip("\n")


def _write_rows(out, rows: Iterable[str], *, as_list: bool) -> None:
    if not as_list:
        for text in rows:
            out.write(text + "\n")
        return
    out.write("[")
    for i, text in enumerate(rows):
        out.write(("," if i else "") + "\n" + text)
    out.write("\n]\n")


def _merge_rejects(path: Path, parts: list[Path]) -> None:
    """Join the processes' rejects files into one, in row order."""
    files = [open(p, encoding="utf-8") for p in parts if p.exists()]  # noqa: SIM115
    try:
        lines = heapq.merge(*files, key=lambda line: json.loads(line)["row"] or 0)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as out:
            out.writelines(lines)
        os.replace(tmp, path)
    finally:
        for f in files:
            f.close()
    for p in parts:
        p.unlink(missing_ok=True)


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _print_summary(s: dict[str, Any]) -> None:
    head = (
        f"scored {s['rows']} rows ({s['tokens']} tokens) into {s['output']}: skipped {s['skipped']}, "
        f"truncated {s['truncated']}, dropped {s['dropped']}; {s['tokens_per_s']:,.0f} tokens/s, "
        f"{s['wall_s']:.1f} s"
    )
    print(head)
    for name, m in s["scores"].items():
        if m["mean"] is not None:
            print(f"  {name}: mean {m['mean']:.4f} std {m['std']:.4f} min {m['min']:.4f} max {m['max']:.4f}")
    if "chosen_wins" in s:
        print(f"  chosen scored above rejected: {s['chosen_wins']:.1%}")
