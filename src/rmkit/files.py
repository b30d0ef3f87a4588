"""Writing output files so that a reader (or a crash) never sees half of one.

Every file rmkit writes as a result (scores, summaries, metrics, reports, state) goes through
:func:`atomic_write`: the content is written to ``{name}.tmp`` beside the target, flushed to disk, and
renamed over the target in one step (``os.replace``). A run killed mid-write leaves the previous file (or
none) and a ``.tmp`` file, never a truncated result.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from rmkit.errors import RMKitError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that takes a file name (a plot); it is renamed to
    ``path`` when the block ends without an error, and removed otherwise."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_write(path: str | Path, *, encoding: str = "utf-8") -> Iterator[IO[str]]:
    """Open a text file for writing that appears at ``path`` only when the block ends without an error."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding=encoding) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_write(path) as f:
        f.write(text)


def write_json(path: str | Path, value: Any, *, indent: int | None = 2) -> None:
    """Write ``value`` as JSON (UTF-8 kept as is, a newline at the end) to ``path`` atomically."""
    write_text(path, json.dumps(value, indent=indent, ensure_ascii=False) + "\n")


def claim_output_dir(
    path: str | Path,
    *,
    overwrite: bool,
    flag: str = "--output-dir",
    resumable: bool = False,
    own: tuple[str, ...] = (),
) -> None:
    """The one policy of every command that writes a directory: one that already holds files (another run's)
    is refused unless ``overwrite`` is given; a ``resumable`` command's own run continues with ``--resume``
    (its caller does not claim the directory then). ``own`` names what any run of the command shares (a
    cache), which does not count."""
    path = Path(path)
    if overwrite or not path.is_dir():
        return
    held = sorted(p.name for p in path.iterdir() if p.name not in own)
    if held:
        shown = ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")
        resume = ", --resume to continue that run" if resumable else ""
        raise RMKitError(
            f"{flag} {path} already holds files ({shown}): give --overwrite to write over them{resume}, or "
            "another directory"
        )
