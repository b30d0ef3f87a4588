"""RMScore (``rmkit score``): score every row of a data set with a reward model, in input order.

The scores come from the inference core (:func:`rmkit.inference.score_examples`); this module is the file
job around it: shares, part files, resume, merge and the summary. How the output is built:

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

import json
import logging
import math
import sys
import time
from collections import deque
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import Any

from tqdm import tqdm

from rmkit import kinds, runtime
from rmkit.data import Example, Rejects, RowCounts, read_records
from rmkit.errors import RMKitError
from rmkit.files import write_json
from rmkit.inference import ahead
from rmkit.jobs.config import ScoreConfig
from rmkit.jobs.shards import (
    Share,
    ShareState,
    append_lines,
    count_records,
    merge_parts,
    merge_rejects,
    truncate,
)
from rmkit.metrics import BestOfN, Moments, PairStats
from rmkit.modeling import RewardModel
from rmkit.options import configured

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Paths:
    """The files of one process: its part, its state and its share of the rejects."""

    part: Path
    state: Path
    rejects: Path

    @classmethod
    def of(cls, config: ScoreConfig, output: Path, rank: int, world: int) -> _Paths:
        part = output.with_name(f"{output.name}.rank{rank}-of-{world}.part")
        rejects = _rejects_path(config, output)
        if world > 1:
            rejects = rejects.with_name(f"{rejects.name}.rank{rank}-of-{world}.part")
        return cls(part, part.with_name(part.name + ".state.json"), rejects)


def _rejects_path(config: ScoreConfig, output: Path) -> Path:
    return Path(config.rejects or str(output.with_suffix("")) + ".rejects.jsonl")


def _summary_path(output: Path) -> Path:
    return Path(str(output.with_suffix("")) + ".summary.json")


def score(config: ScoreConfig | None = None, /, *, rm: RewardModel | None = None, **options: Any) -> dict:
    """``rmkit.score``: :func:`score_file` from a config, keyword options, or a config overridden by them.

    ``rm`` is an already loaded :class:`RewardModel` to use as it is (its dtype and device) instead of
    loading ``model``; with ``compile=True`` it is compiled in place (:meth:`RewardModel.compile`).
    """
    return score_file(configured(ScoreConfig, config, options, loaded=rm is not None), rm=rm)


def score_file(config: ScoreConfig, *, rm: RewardModel | None = None) -> dict[str, Any]:
    """Score every row of ``config.input`` into ``config.output``; return (and print) the run's summary."""
    start = time.perf_counter()
    output = Path(config.output)
    config.validate()
    with runtime.start(config.device, config.threads) as rt:
        if rm is None:
            kind, rm = kinds.load(
                config.model, config.loading(), config.step_format(), dtype=config.dtype, device=rt.device
            )
        else:
            kind = kinds.of_model(rm)
        config = replace(config, dtype=runtime.dtype_name(rm))  # what "auto" became, for the summary
        if config.normalize and not getattr(rm, "normalizes", False):
            raise RMKitError("--normalize: the model stores no score mean and std to normalise with")
        if config.compile:
            kind.compile(rm)
        try:
            _score_share(kind, rm, config, output, rt)
        except RMKitError as e:  # the same error (a DataError stays one), saying what is left behind
            e.args = (f"{e}{_left_behind(_Paths.of(config, output, rt.rank, rt.world))}",)
            raise
        elapsed = time.perf_counter() - start
        rt.barrier()
        return rt.broadcast(_finish(config, output, rt.world, elapsed) if rt.main else None)


def _left_behind(paths: _Paths) -> str:
    """After a failed run: remove its files if it scored nothing, else say where its work is kept."""
    done = ShareState.load(paths.state).records if paths.state.exists() else 0
    if not done:
        for p in (paths.part, paths.state):
            p.unlink(missing_ok=True)
        return ""
    return f" ({done} records done are kept in {paths.part}: fix the input and rerun with --resume to go on)"


def _resume_state(config: ScoreConfig, paths: _Paths, rt: runtime.Runtime) -> ShareState:
    """The state to start from (a fresh one unless resuming), with the part and rejects files cut back to it
    (dropping anything a ``kill -9`` left half written)."""
    state = ShareState(input=str(config.input), world_size=rt.world)
    if config.resume and paths.state.exists():
        state = ShareState.load(paths.state)
        if state.input != str(config.input) or state.world_size != rt.world:
            raise RMKitError(
                f"{paths.state}: cannot resume: it was written for input '{state.input}' with "
                f"{state.world_size} process(es), not '{config.input}' with {rt.world}"
            )
        log.info("rank %d: resuming after %d records", rt.rank, state.records)
    elif config.resume:
        log.info("rank %d: nothing to resume at %s; starting from the beginning", rt.rank, paths.state)
    truncate(paths.part, state.part_bytes)
    if config.on_error == "skip":
        truncate(paths.rejects, state.rejects_bytes)
    state.run_tokens, state.run_seconds = 0, 0.0
    return state


def _score_share(
    kind: kinds.Kind, rm: RewardModel, config: ScoreConfig, output: Path, rt: runtime.Runtime
) -> None:
    """Score this process's share of the records into its part file, checkpointing after every chunk."""
    paths = _Paths.of(config, output, rt.rank, rt.world)
    output.parent.mkdir(parents=True, exist_ok=True)
    state = _resume_state(config, paths, rt)
    skipped_before = state.stats.skipped
    reading = kinds.Reading.of(config, format=config.row_format())
    tokenizer = kind.tokenizer(rm, reading)
    seen: deque[tuple[int, int]] = deque()  # (row, record number) of records handed to the normaliser
    records = Share(read_records(config.input), rt.rank, rt.world, state.records, seen)
    # One progress policy (as rmkit train's): a bar on a terminal, else a plain line after every chunk
    show = config.progress and sys.stderr.isatty()
    plain = config.progress and not show and rt.main
    total = count_records(config.input, rt.rank, rt.world) if show else None
    skip = config.on_error == "skip"
    t0 = time.perf_counter()
    with (
        Rejects(paths.rejects) if skip else nullcontext() as rejects,
        open(paths.part, "a", encoding="utf-8") as part,
        tqdm(
            total=total,
            initial=state.records,
            unit="row",
            file=sys.stderr,
            dynamic_ncols=True,
            disable=not show,
        ) as bar,
    ):

        def checkpoint(lines: list[str], read: tuple[int, int, int]) -> None:
            """Make a chunk durable: the part's lines first, then the state that says they are there
            (``read``: the records read and the rejects' count and size when the chunk was read)."""
            append_lines(part, lines)
            state.records, state.part_bytes = read[0], part.tell()
            if rejects is not None:
                state.stats.skipped, state.rejects_bytes = skipped_before + read[1], read[2]
            state.run_seconds = time.perf_counter() - t0
            state.save(paths.state)
            rate = f"{state.run_tokens / max(state.run_seconds, 1e-9):,.0f} tok/s"
            bar.update(state.records - bar.n)
            bar.set_postfix_str(rate)
            if plain and lines:
                print(f"score: {state.records} records read, {rate}", file=sys.stderr, flush=True)

        examples = kind.examples(records, str(config.input), reading, rejects)
        read_ahead = runtime.reads_ahead(rt.device, config.read_ahead)
        for chunk, tokenized, where in ahead(
            _chunks(examples, tokenizer, config, records, rejects), read_ahead
        ):
            lines = _score_chunk(kind, rm, chunk, tokenized, reading, config.input, state, seen)
            checkpoint(lines, where)
            runtime.release_memory(rt.device)  # a long job's memory stays flat (chunks of every shape)
        checkpoint([], _where(records, rejects))  # rejected records after the last scored one


def _chunks(examples: Iterator, tokenizer: Any, config: ScoreConfig, records: Share, rejects):
    """Each chunk of ``config.chunk_rows`` examples, tokenised by the kind's ``tokenizer``, with
    :func:`_where` reading stood once it was read: what a checkpoint after the chunk records."""
    while chunk := list(islice(examples, config.chunk_rows)):
        yield chunk, tokenizer.tokenize(chunk), _where(records, rejects)


def _where(records: Share, rejects: Rejects | None) -> tuple[int, int, int]:
    """The records read so far, and the count and size of the rejects written."""
    return records.done, rejects.count if rejects else 0, rejects.size if rejects else 0


def _score_chunk(
    kind: kinds.Kind,
    rm: Any,
    chunk: list[Example],
    tokenized: list,
    reading: kinds.Reading,
    source: str,
    state: ShareState,
    seen: deque[tuple[int, int]],
) -> list[str]:
    """The part-file lines ``"{record number}\\t{json}"`` of one chunk's scored rows; updates ``state``."""
    tokens_before = state.stats.tokens
    scored: list[tuple[Example, list[float]]] = []
    lines = []
    for ex, raw in kind.score_prepared(rm, chunk, tokenized, reading, state.stats):
        while seen[0][0] != ex.row:  # records before it were rejected
            seen.popleft()
        k = seen.popleft()[1]
        if raw is None:
            continue
        scores = kind.values(rm, raw)
        scores = rm.normalize(scores) if reading.normalize else scores
        if all(math.isfinite(v) for v in scores):
            summary = kind.summarised(ex, scores, reading)
            scored += [(ex, summary)] if summary and None not in summary else []
        else:  # written as null, counted and reported; kept out of the statistics
            state.stats.non_finite += 1
            log.warning(
                "%s, row %d: the model gave a non-finite score %s; written as null", source, ex.row, scores
            )
            scores = [v if math.isfinite(v) else None for v in scores]
        row = kind.row(rm, ex, raw, scores, reading)
        lines.append(f"{k}\t{json.dumps(row, ensure_ascii=False, default=str)}\n")
    state.add(scored)
    state.run_tokens += state.stats.tokens - tokens_before
    return lines


def _finish(config: ScoreConfig, output: Path, world: int, elapsed: float) -> dict[str, Any]:
    """Rank 0: merge the parts into the output and the rejects, write the summary, remove the parts."""
    shares = [_Paths.of(config, output, r, world) for r in range(world)]
    states = [ShareState.load(p.state) for p in shares]
    merge_parts(output, [p.part for p in shares])
    if config.on_error == "skip" and world > 1:
        merge_rejects(_rejects_path(config, output), [p.rejects for p in shares])
    summary = _summary(config, output, states, elapsed)
    write_json(_summary_path(output), summary)
    for p in shares:
        p.part.unlink(missing_ok=True)
        p.state.unlink(missing_ok=True)
    _print_summary(summary)
    return summary


def _summary(config: ScoreConfig, output: Path, states: list[ShareState], elapsed: float) -> dict[str, Any]:
    """The run's summary, from the states of all processes."""
    stats, responses, pairs, best_of_n = RowCounts(), Moments(), PairStats(), BestOfN()
    for s in states:
        stats.merge(s.stats)
        responses.merge(s.responses)
        pairs.merge(s.pairs)
        best_of_n.merge(s.best_of_n)
    scores = {"score": responses.summary()} if responses.n else {}
    if pairs.pairs:
        scores.update(score_chosen=pairs.chosen.summary(), score_rejected=pairs.rejected.summary())
    summary: dict[str, Any] = {
        "input": str(config.input),
        "output": str(output),
        "model": str(config.model),
        "processes": len(states),
        "dtype": config.dtype,
        "compiled": config.compile,
        "rows": stats.rows,
        "skipped": stats.skipped,
        "truncated": stats.truncated,
        "dropped": stats.dropped,
        "tokens": stats.tokens,
        "non_finite": stats.non_finite,
        "empty_replies": stats.empty_replies,
        "split_histories": stats.split_histories,
        "groups_cut": stats.groups_cut,
        "prefix_shared": stats.shared,
        "prefix_fallbacks": stats.unshared,
        "prefix_tokens_saved": stats.prefix_tokens,
        "parse_failures": stats.parse_failures,
        "undoubled_specials": stats.undoubled,
        "scores": scores,
        "tokens_per_s": sum(s.run_tokens for s in states) / max(max(s.run_seconds for s in states), 1e-9),
        "wall_s": elapsed,
    }
    if pairs.pairs:
        summary["chosen_wins"] = pairs.accuracy
    if best_of_n.rows:
        summary["best_of_n"] = best_of_n.summary()
    if config.on_error == "skip":
        summary["rejects"] = str(_rejects_path(config, output))
    return summary


def _print_summary(s: dict[str, Any]) -> None:
    head = (
        f"scored {s['rows']} rows ({s['tokens']} tokens) into {s['output']}: skipped {s['skipped']}, "
        f"truncated {s['truncated']} ({s['groups_cut']} with one prompt cut for all their answers), dropped "
        f"{s['dropped']}; {s['tokens_per_s']:,.0f} tokens/s, "
        f"{s['wall_s']:.1f} s"
    )
    print(head)
    for name, m in s["scores"].items():
        if m["mean"] is not None:
            print(f"  {name}: mean {m['mean']:.4f} std {m['std']:.4f} min {m['min']:.4f} max {m['max']:.4f}")
    if "chosen_wins" in s:
        print(f"  chosen scored above rejected: {s['chosen_wins']:.1%}")
    if "best_of_n" in s:
        b = s["best_of_n"]
        print(
            f"  best of N ({b['rows']} rows): mean best {b['mean_best']:.4f}, mean spread "
            f"{b['mean_spread']:.4f}, first response best {b['first_is_best']:.1%}"
        )
    if s["undoubled_specials"]:
        print(
            f"  {s['undoubled_specials']} rows' texts already began (or ended) with the tokenizer's special tokens "
            "(a chat template's BOS): kept once, not doubled"
        )
    if s["parse_failures"]:
        print(
            f"  judge: {s['parse_failures']} judgments whose verdict could not be read (--on-parse-failure)"
        )
    if s["prefix_shared"] or s["prefix_fallbacks"]:
        print(
            f"  prefix sharing: {s['prefix_shared']} responses shared their prompt's pass, {s['prefix_fallbacks']} fell "
            f"back; {s['prefix_tokens_saved']} of {s['tokens']} tokens not run again"
        )
