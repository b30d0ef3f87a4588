"""``report.html`` of an evaluation directory: written by every ``rmkit eval`` and again by ``rmkit report DIR``.

The page is built from the directory's files alone, so an older run gets one too: the figures are
``metrics.json``'s, the rows ``scores.jsonl``'s, and the texts (prompt and answers, a suite row's candidates,
a solution's steps) are read again from the data files that ``metrics.json`` names, by the reader that
evaluated them (the data's kind, or the benchmark suite); a row's images become thumbnails embedded in the page
(:mod:`rmkit.reporting.page.thumbnails`). Texts of a file that has gone or cannot be read are
left out, and the page says why. The HTML itself is :func:`rmkit.reporting.page.page`'s.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from rmkit import kinds, suites
from rmkit.data import Rejects
from rmkit.data.rendering import render_plain
from rmkit.data.vision import flat_messages
from rmkit.errors import RMKitError
from rmkit.evaluation.config import ReportConfig
from rmkit.files import write_text
from rmkit.kinds import Reading
from rmkit.reporting.page import page
from rmkit.reporting.page.thumbnails import Thumbnails


def _paths(metrics: dict[str, Any]) -> dict[str, str]:
    """Each data set's name and file, as ``metrics.json`` records them."""
    data = metrics.get("data") or {}
    return {name: d["path"] if isinstance(d, dict) else d for name, d in data.items()}


def _rows(metrics: dict[str, Any], name: str, path: str, reading: Reading, rejects: Rejects) -> Iterator[Any]:
    """The rows of one data file as its evaluation read them; bad rows are skipped, counted by ``rejects``."""
    suite = metrics.get("suite")
    if suite:
        for item in suites.choose(suite["name"], [path]).items(path, name, reading.columns, rejects):
            yield item.row, item.example
        return
    for row in kinds.for_data([path], reading).rows(path, reading, rejects):
        yield row.row, row


def texts(
    metrics: dict[str, Any], reading: Reading, thumbnails: Thumbnails | None = None
) -> tuple[dict[str, list[Any]], str | None]:
    """``{"<data>#<row>": [prompt, [answer or step, ...]]}`` for every row of the data files, and a note
    naming the files whose texts could not be read, and the rows beyond those the run skipped (``None`` when
    all were). A row with images gets a third
    item, ``[[thumbnail index or None, the image as the data named it], ...]``, its images added to
    ``thumbnails``."""
    found: dict[str, list[Any]] = {}
    missing = []
    # data read for its safety labels is read so again (a PKU-SafeRLHF pair: the safer answer first)
    reading = replace(reading, objective=metrics.get("objective", reading.objective))
    for name, path in _paths(metrics).items():
        held: list[str] = []
        try:
            for row, ex in _rows(metrics, name, path, reading, Rejects(None, held)):
                answers = ex.steps if hasattr(ex, "steps") else ex.responses
                found[f"{name}#{row}"] = [render_plain(flat_messages(ex.prompt)), list(answers)]
                images = getattr(ex, "images", None)
                if images and thumbnails is not None:
                    found[f"{name}#{row}"].append([[thumbnails.add(p.image), p.ref] for p in images])
        except (OSError, RMKitError) as e:
            missing.append(f"{path} ({str(e).splitlines()[0]})")
        info = (metrics.get("data") or {}).get(name)
        if len(held) > (info.get("skipped", 0) if isinstance(info, dict) else 0):  # beyond the run's own
            first = json.loads(held[0])
            missing.append(f"{len(held)} rows of {path} (row {first['row']}: {first['reason']})")
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
    thumbnails = Thumbnails()
    found, note = texts(metrics, reading, thumbnails)
    note = " ".join(n for n in (note, thumbnails.note()) if n) or None
    write_text(out / "report.html", page(metrics, lines, found, note, thumbnails.urls))
    return out / "report.html"


def report(config: ReportConfig | None = None, **options: Any) -> Path:
    """``rmkit report DIR``: build ``DIR/report.html`` again from an existing evaluation directory."""
    config = config if config is not None else ReportConfig(**options)
    config.validate()
    path = write_page(config.directory, Reading.of(config))
    print(f"wrote {path}")
    return path
