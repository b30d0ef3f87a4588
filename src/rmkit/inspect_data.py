"""``rmkit inspect``: read a data file the way train, score and eval will, and say what rmkit sees in it:
which kind of data it holds (:func:`rmkit.kinds.for_data`), its format, and its rows."""

from __future__ import annotations

from collections import Counter
from contextlib import nullcontext

from rmkit import kinds
from rmkit.data import Rejects, first_record
from rmkit.errors import RMKitError
from rmkit.jobs.config import InspectConfig


def inspect(config: InspectConfig) -> dict[str, object]:
    """Read every row of ``config.data`` as its kind of data does; print (and return) the counts."""
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
            counts[kind.tally(row)] += 1
    summary = {"file": config.data, "kind": kind.name, "format": fmt, **counts}
    summary["skipped"] = rejects.count if rejects else 0
    print(" ".join(f"{k}={v}" for k, v in summary.items()))
    return summary
