"""``report.html`` of an evaluation directory: written by every ``rmkit eval`` and again by ``rmkit report DIR``.

The page is built from the directory's files alone, so an older run gets one too: the figures are
``metrics.json``'s, the rows ``scores.jsonl``'s, and the texts (prompt and answers, a suite row's candidates,
a solution's steps) are read again from the data files that ``metrics.json`` names, by the reader that
evaluated them (the data's kind, or the benchmark suite). Texts of a file that has gone or cannot be read are
left out, and the page says why. The HTML itself is :func:`rmkit.reporting.page.page`'s.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rmkit import kinds, suites
from rmkit.data import Rejects
from rmkit.data.rendering import render_plain
from rmkit.errors import RMKitError
from rmkit.evaluation.config import ReportConfig
from rmkit.files import write_text
from rmkit.kinds import Reading
from rmkit.reporting.page import page


def _paths(metrics: dict[str, Any]) -> dict[str, str]:
    """Each data set's name and file, as ``metrics.json`` records them."""
    data = metrics.get("data") or {}
    return {name: d["path"] if isinstance(d, dict) else d for name, d in data.items()}


def _rows(metrics: dict[str, Any], name: str, path: str, reading: Reading) -> Iterator[Any]:
    """The rows of one data file as its evaluation read them; bad rows (reported by the run) are skipped."""
    rejects = Rejects(None)
    suite = metrics.get("suite")
    if suite:
        for item in suites.choose(suite["name"], [path]).items(path, name, reading.columns, rejects):
            yield item.row, item.example
        return
    for row in kinds.for_data([path], reading).rows(path, reading, rejects):
        yield row.row, row


def texts(metrics: dict[str, Any], reading: Reading) -> tuple[dict[str, list[Any]], str | None]:
    """``{"<data>#<row>": [prompt, [answer or step, ...]]}`` for every row of the data files, and a note
    naming the files whose texts could not be read (``None`` when all were)."""
    found: dict[str, list[Any]] = {}
    missing = []
    for name, path in _paths(metrics).items():
        try:
            for row, ex in _rows(metrics, name, path, reading):
                answers = ex.steps if hasattr(ex, "steps") else ex.responses
                found[f"{name}#{row}"] = [render_plain(ex.prompt), list(answers)]
        except (OSError, RMKitError) as e:
            missing.append(f"{path} ({str(e).splitlines()[0]})")
    note = f"Texts not shown for {'; '.join(missing)}." if missing else None
    return found, note


def write_page(out: str | Path, reading: Reading) -> Path:
    """Write ``out/report.html`` from ``out``'s ``metrics.json`` and ``scores.jsonl``; returns its path."""
    out = Path(out)
    try:
        metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    except ValueError as e:
        raise RMKitError(f"{out / 'metrics.json'}: not JSON ({e})") from None
    lines = []
    with open(out / "scores.jsonl", encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                lines.append(json.loads(line))
            except ValueError as e:
                raise RMKitError(f"{out / 'scores.jsonl'}, line {number}: not JSON ({e})") from None
    found, note = texts(metrics, reading)
    write_text(out / "report.html", page(metrics, lines, found, note))
    return out / "report.html"


def report(config: ReportConfig | None = None, **options: Any) -> Path:
    """``rmkit report DIR``: build ``DIR/report.html`` again from an existing evaluation directory."""
    config = config if config is not None else ReportConfig(**options)
    config.validate()
    path = write_page(config.directory, Reading.of(config))
    print(f"wrote {path}")
    return path
