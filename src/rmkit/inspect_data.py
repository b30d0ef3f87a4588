"""``rmkit inspect``: read a data file the way train, score and eval will, and say what rmkit sees in it:
which kind of data it holds (:func:`rmkit.kinds.for_data`), its format, its rows and the benchmark suite it
belongs to; or, with ``--model``, which kind of reward model a checkpoint is read as, and why."""

from __future__ import annotations

from collections import Counter
from contextlib import nullcontext
from typing import TYPE_CHECKING

from rmkit import kinds
from rmkit.data import Rejects, first_record
from rmkit.errors import RMKitError
from rmkit.jobs.config import InspectConfig

if TYPE_CHECKING:
    from rmkit.suites import Suite


def inspect(config: InspectConfig) -> dict[str, object]:
    """Read every row of ``config.data`` as its kind of data does; print (and return) the counts. With
    ``--model``, the checkpoint's reading instead (:func:`inspect_model`)."""
    if config.model is not None:
        return inspect_model(config.model)
    if config.data is None:
        raise RMKitError("inspect needs --data (a data file) or --model (a checkpoint)")
    from rmkit import suites

    suite = suites.choose("auto", [config.data]) if first_record(config.data) else None
    if suite is not None:
        return _inspect_suite(config, suite)
    reading = kinds.Reading.of(config)
    kind = kinds.for_data([config.data], reading)
    first = first_record(config.data)
    record = {(config.columns or {}).get(k, k): v for k, v in (first or {}).items()}
    fmt = config.format or (kind.detect(record, reading) if first else None)
    if first and fmt is None:
        raise RMKitError(
            f"{config.data}: cannot tell the format from the columns {sorted(record)}; name it with --format "
            "or rename columns with --columns (rmkit inspect --help lists the formats)"
        )
    counts: Counter[str] = Counter()
    with Rejects(config.rejects) if config.on_error == "skip" else nullcontext() as rejects:
        for row in kind.rows(config.data, reading, rejects):
            counts.update(kind.tallies(row))
    summary = {"file": config.data, "kind": kind.name, "format": fmt, **counts}
    summary.update(skipped=rejects.count if rejects else 0, modality=kind.modality)
    print(" ".join(f"{k}={v}" for k, v in summary.items()))
    return summary


def _inspect_suite(config: InspectConfig, suite: Suite) -> dict[str, object]:
    """A public benchmark's file: its suite, rows per subset and the subsets its score needs but lacks."""
    counts: Counter[str] = Counter()
    with Rejects(config.rejects) if config.on_error == "skip" else nullcontext() as rejects:
        for item in suite.items(config.data, config.data, config.columns, rejects):
            counts[item.subset] += 1
    missing = [s for s in suite.subsets if s not in counts]
    summary: dict[str, object] = {"file": config.data, "suite": suite.name, "rows": sum(counts.values())}
    summary.update({f"subset[{k}]": v for k, v in counts.items()})
    summary.update(skipped=rejects.count if rejects else 0, missing=",".join(missing) or None)
    print(" ".join(f"{k}={v}" for k, v in summary.items()))
    return summary


def inspect_model(path: str) -> dict[str, object]:
    """Which kind of reward model ``path`` is read as (:func:`rmkit.kinds.recognise`), from its config and
    its weights' names alone: the layout, the head weights found, and whether it can score as it is."""
    from pathlib import Path

    from rmkit import layouts
    from rmkit.checkpoints import HEAD_NAMES

    checkpoint = kinds.Checkpoint.read(path)
    kind = kinds.recognise(checkpoint)
    summary: dict[str, object] = {"model": checkpoint.path, "kind": kind.name, "looks": checkpoint.describe()}
    summary["modality"] = kind.modality
    local = Path(checkpoint.path)
    if local.is_dir() and (local / "config.json").is_file():
        found = layouts.inspect(local)
        layout = layouts.recognise(found)
        keys = found.keys or set()
        # a standard checkpoint's head is what the classifier loads (checkpoints.HEAD_NAMES); another layout's
        # are the keys it converts
        standard = layout == layouts.STANDARD
        heads = sorted(k for k in keys if k.startswith(HEAD_NAMES)) if standard else layouts._head_keys(keys)
        heads = [found.value_head.name] if found.value_head is not None else heads
        summary.update(layout=layout, head=", ".join(heads[:4]) or None)
        backbone = standard and found.keys is not None and not heads
        summary["scores"] = not backbone
        if backbone:
            summary["why"] = "no score head in its weights: train it, or read a causal LM with --judge"
    print(" ".join(f"{k}={v}" for k, v in summary.items()))
    return summary
