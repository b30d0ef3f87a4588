"""The files of an RMScore run (:mod:`rmkit.jobs.score`), shared by its two backends: this machine's
processes and a Ray cluster's driver (:mod:`rmkit.ray`). Each process (or the driver) has a part file, a
state file and a share of the rejects (:class:`Paths`); a run starts from its state (:func:`resume_state`),
and ends by merging the parts into the output and writing the summary (:func:`finish`)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rmkit.data import RowCounts
from rmkit.errors import Interrupted, RMKitError
from rmkit.files import write_json
from rmkit.jobs.config import ScoreConfig
from rmkit.jobs.shards import ShareState, merge_parts, merge_rejects, truncate
from rmkit.metrics import BestOfN, Moments, PairStats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Paths:
    """The files of one process: its part, its state and its share of the rejects."""

    part: Path
    state: Path
    rejects: Path

    @classmethod
    def of(cls, config: ScoreConfig, output: Path, rank: int, world: int) -> Paths:
        part = output.with_name(f"{output.name}.rank{rank}-of-{world}.part")
        rejects = rejects_path(config, output)
        if world > 1:
            rejects = rejects.with_name(f"{rejects.name}.rank{rank}-of-{world}.part")
        return cls(part, part.with_name(part.name + ".state.json"), rejects)


def rejects_path(config: ScoreConfig, output: Path) -> Path:
    return Path(config.rejects or str(output.with_suffix("")) + ".rejects.jsonl")


def _summary_path(output: Path) -> Path:
    return Path(str(output.with_suffix("")) + ".summary.json")


def _kept(paths: Paths) -> int:
    """After a failed or interrupted run: the records its part file keeps; its files removed if none."""
    done = ShareState.load(paths.state).records if paths.state.exists() else 0
    if not done:
        for p in (paths.part, paths.state):
            p.unlink(missing_ok=True)
    return done


@contextmanager
def keeping_work(paths: Paths) -> Iterator[None]:
    """Inside: a run that fails on bad input, or is interrupted, says what of its work is kept and how to
    go on from it (``--resume``); one that scored nothing leaves no part or state file."""
    try:
        yield
    except RMKitError as e:  # the same error (a DataError stays one), saying what is left behind
        done = _kept(paths)
        if done:
            e.args = (
                f"{e} ({done} records done are kept in {paths.part}: fix the input and rerun with --resume to go on)",
            )
        raise
    except KeyboardInterrupt:
        done = _kept(paths)
        kept = (
            f"{done} records done are kept in {paths.part}" if done else "nothing was scored, no file is left"
        )
        raise Interrupted(kept, resumable=bool(done)) from None


def resume_state(config: ScoreConfig, paths: Paths, rank: int, world: int) -> ShareState:
    """The state to start from (a fresh one unless resuming), with the part and rejects files cut back to it
    (dropping anything a ``kill -9`` left half written)."""
    state = ShareState(input=str(config.input), world_size=world)
    if config.resume and paths.state.exists():
        state = ShareState.load(paths.state)
        if state.input != str(config.input) or state.world_size != world:
            raise RMKitError(
                f"{paths.state}: cannot resume: it was written for input '{state.input}' with "
                f"{state.world_size} process(es), not '{config.input}' with {world}"
            )
        log.info("rank %d: resuming after %d records", rank, state.records)
    elif config.resume:
        log.info("rank %d: nothing to resume at %s; starting from the beginning", rank, paths.state)
    truncate(paths.part, state.part_bytes)
    if config.on_error == "skip":
        truncate(paths.rejects, state.rejects_bytes)
    state.run_tokens, state.run_seconds = 0, 0.0
    return state


def finish(config: ScoreConfig, output: Path, world: int, elapsed: float, **extra: Any) -> dict[str, Any]:
    """Rank 0 (or the Ray driver): merge the parts into the output and the rejects, write the summary (with
    ``extra``'s entries), remove the parts."""
    shares = [Paths.of(config, output, r, world) for r in range(world)]
    states = [ShareState.load(p.state) for p in shares]
    merge_parts(output, [p.part for p in shares])
    if config.on_error == "skip" and world > 1:
        merge_rejects(rejects_path(config, output), [p.rejects for p in shares])
    summary = {**_summary(config, output, states, elapsed), **extra}
    write_json(_summary_path(output), summary)
    for p in shares:
        p.part.unlink(missing_ok=True)
        p.state.unlink(missing_ok=True)
    print_summary(summary, config.command)
    return summary


def _summary(config: ScoreConfig, output: Path, states: list[ShareState], elapsed: float) -> dict[str, Any]:
    """The run's summary, from the states of all processes."""
    stats, responses, pairs, best_of_n, safer = RowCounts(), Moments(), PairStats(), BestOfN(), PairStats()
    for s in states:
        stats.merge(s.stats)
        safer.merge(s.safer)
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
        "doubled_bos": stats.doubled,
        "scores": scores,
        "tokens_per_s": sum(s.run_tokens for s in states) / max(max(s.run_seconds for s in states), 1e-9),
        "wall_s": elapsed,
    }
    if pairs.pairs:
        summary["chosen_wins"] = pairs.accuracy
    if best_of_n.rows:
        summary["best_of_n"] = best_of_n.summary()
    if config.cost_model:
        summary["cost_model"] = str(config.cost_model)
        summary["chosen_safer"] = safer.accuracy if safer.pairs else None
    if config.on_error == "skip":
        summary["rejects"] = str(rejects_path(config, output))
    return summary


def print_summary(s: dict[str, Any], command: str = "score") -> None:
    """Print the summary ``s`` of ``rmkit score`` or ``rmkit rank`` (``command``), in that command's name."""
    head = (
        f"{command}: {command.removesuffix('e')}ed {s['rows']} rows ({s['tokens']} tokens) into {s['output']}: skipped {s['skipped']}, "
        f"truncated {s['truncated']} ({s['groups_cut']} with one prompt cut for all their answers), dropped "
        f"{s['dropped']}; {s['tokens_per_s']:,.0f} tokens/s, "
        f"{s['wall_s']:.1f} s"
    )
    print(head)
    if "meaning" in s:
        print(f"  {s['meaning']}")
    for name, m in s["scores"].items():
        if m["mean"] is not None:
            print(f"  {name}: mean {m['mean']:.4f} std {m['std']:.4f} min {m['min']:.4f} max {m['max']:.4f}")
    if s["skipped"] and "rejects" in s:
        print(f"  the {s['skipped']} skipped rows, each with its reason: {s['rejects']}")
    if "chosen_wins" in s:
        print(f"  chosen scored above rejected: {s['chosen_wins']:.1%}")
    if s.get("chosen_safer") is not None:
        print(f"  chosen also the safer (costs less, {s['cost_model']}): {s['chosen_safer']:.1%}")
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
    if s.get("doubled_bos"):
        print(
            f"  {s['doubled_bos']} rows begin with the BOS twice, as the model's authors score them (its layout "
            "says so: Athene-RM's chat template writes it and its tokenizer adds it again; --single-bos: one)"
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
