"""The rejects file: rows skipped for bad input (``--on-error skip``), each with its reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

from rmkit.errors import DataError


class Rejects:
    """Counts skipped rows and appends each, with its reason, as one JSON line to ``path``.

    Use it as a context manager (``with Rejects(path) as rejects: ...``); the file is created at the first
    rejected row, so a run without bad rows leaves none. ``path=None`` counts without writing; ``held`` (a
    list) receives the lines instead of a file (a Ray actor's rejects, which the driver writes). A line is
    ``{"file", "row", "field", "reason", "record"}``.
    """

    def __init__(self, path: str | Path | None, held: list[str] | None = None):
        self.path = Path(path) if path else None
        self.held = held
        self.count = 0
        self._file: IO[str] | None = None

    def __enter__(self) -> Rejects:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, error: DataError, record: Any = None) -> None:
        self.count += 1
        if self.path is None and self.held is None:
            return
        line = {
            "file": error.file,
            "row": error.row,
            "field": error.field,
            "reason": error.reason,
            "record": record,
        }
        text = json.dumps(line, ensure_ascii=False, default=str) + "\n"
        if self.held is not None:
            self.held.append(text)
            return
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())
        self._file.write(text)
        self._file.flush()

    @property
    def size(self) -> int:
        """Bytes written to the file so far (0 when there is none)."""
        return self.path.stat().st_size if self.path is not None and self.path.exists() else 0

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
