"""``rmkit inspect``: read a data file the way train and score will, and say what rmkit sees in it."""

from __future__ import annotations

from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass

from rmkit.data import Rejects, detect_format, first_record, iter_examples
from rmkit.options import DataOptions, option


@dataclass(kw_only=True)
class InspectConfig(DataOptions):
    data: str = option(help="data file (.json, .jsonl, .csv, .parquet) or save_to_disk directory")


def inspect(config: InspectConfig) -> dict[str, object]:
    """Normalise every row of ``config.data`` and print (and return) the counts."""
    first = first_record(config.data)
    fmt = config.format or (
        detect_format({(config.columns or {}).get(k, k): v for k, v in first.items()}) if first else None
    )
    kinds: Counter[str] = Counter()
    with Rejects(config.rejects) if config.on_error == "skip" else nullcontext() as rejects:
        for ex in iter_examples(config.data, format=config.format, columns=config.columns, rejects=rejects):
            kinds["pairs" if ex.is_pair else "responses"] += 1
    summary = {"file": config.data, "format": fmt, **kinds, "skipped": rejects.count if rejects else 0}
    print(" ".join(f"{k}={v}" for k, v in summary.items()))
    return summary
