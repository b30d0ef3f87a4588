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
- With ``--backend ray`` (:mod:`rmkit.ray`) a pool of Ray actors scores shards of the records and the
  driver alone writes the one part and state file, so the output and ``--resume`` are the same.
- When every process is done, rank 0 merges the parts by record number into ``output`` (a JSON list for
  ``.json``, one object a line for ``.jsonl``) through a temporary file and ``os.replace``, so a reader
  never sees half a file, writes the summary to ``{stem}.summary.json`` and removes the parts.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import replace
from itertools import islice
from pathlib import Path
from typing import Any

from tqdm import tqdm

from rmkit import kinds, runtime
from rmkit.data import Rejects, read_records
from rmkit.inference import ahead
from rmkit.jobs.config import ScoreConfig
from rmkit.jobs.scorefiles import Paths, finish, keeping_work, resume_state
from rmkit.jobs.scorer import Scorer, cost_columns, part_lines, scored
from rmkit.jobs.shards import Share, ShareState, append_lines, count_records
from rmkit.modeling import RewardModel
from rmkit.options import configured

log = logging.getLogger(__name__)


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
    if config.backend == "ray":
        from rmkit.ray import score_file as score_on_ray  # Ray loads only when asked for

        return score_on_ray(config, rm=rm)
    with runtime.start(config.device, config.threads) as rt:
        scorer = Scorer(config=config, rm=rm)
        kind, rm, config = scorer.kind, scorer.rm, scorer.config  # config: with the dtype "auto" became
        cost = (
            Scorer(config=replace(config, model=config.cost_model, cost_model=None))
            if config.cost_model
            else None
        )
        with keeping_work(Paths.of(config, output, rt.rank, rt.world)):
            _score_share(scorer, config, output, rt, cost)
        elapsed = time.perf_counter() - start
        rt.barrier()
        meaning = {"meaning": kind.meaning} if kind.meaning else {}
        return rt.broadcast(finish(config, output, rt.world, elapsed, **meaning) if rt.main else None)


def _score_share(
    scorer: Scorer, config: ScoreConfig, output: Path, rt: runtime.Runtime, cost: Scorer | None
) -> None:
    """Score this process's share of the records into its part file, checkpointing after every chunk; with
    ``cost`` (``--cost-model``) each row gets the cost model's columns too."""
    kind, rm, paths = scorer.kind, scorer.rm, Paths.of(config, output, rt.rank, rt.world)
    output.parent.mkdir(parents=True, exist_ok=True)
    state = _carried(rm, resume_state(config, paths, rt.rank, rt.world))
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
            state.pass_cost = getattr(rm, "measured_pass_cost", None)
            state.save(paths.state)
            rate = f"{state.run_tokens / max(state.run_seconds, 1e-9):,.0f} tok/s"
            bar.update(state.records - bar.n)
            bar.set_postfix_str(rate)
            if plain and lines:
                print(f"{config.command}: {state.records} records read, {rate}", file=sys.stderr, flush=True)

        examples = kind.examples(records, str(config.input), reading, rejects)
        read_ahead = runtime.reads_ahead(rt.device, config.read_ahead)
        for chunk, tokenized, where in ahead(
            _chunks(examples, tokenizer, config, records, rejects), read_ahead
        ):
            costs = cost_columns(cost, chunk, state) if cost is not None else None
            results = scored(kind, rm, chunk, tokenized, reading, str(config.input), state)
            lines = part_lines(kind, rm, results, reading, seen, costs)
            checkpoint(lines, where)
            runtime.release_memory(rt.device)  # a long job's memory stays flat (chunks of every shape)
        checkpoint([], _where(records, rejects))  # rejected records after the last scored one


def _carried(rm: Any, state: ShareState) -> ShareState:
    """``state``, its run's measured pass cost given back to ``rm`` (a VLM: :meth:`rmkit.vlm.VisionRewardModel.
    pass_cost`), so that a resumed run cuts its passes, and rounds its scores, as the run it continues did."""
    if state.pass_cost is not None and hasattr(rm, "measured_pass_cost"):
        rm.measured_pass_cost = state.pass_cost
    return state


def _chunks(examples: Iterator, tokenizer: Any, config: ScoreConfig, records: Share, rejects):
    """Each chunk of ``config.chunk_rows`` examples, tokenised by the kind's ``tokenizer``, with
    :func:`_where` reading stood once it was read: what a checkpoint after the chunk records."""
    while chunk := list(islice(examples, config.chunk_rows)):
        yield chunk, tokenizer.tokenize(chunk), _where(records, rejects)


def _where(records: Share, rejects: Rejects | None) -> tuple[int, int, int]:
    """The records read so far, and the count and size of the rejects written."""
    return records.done, rejects.count if rejects else 0, rejects.size if rejects else 0
