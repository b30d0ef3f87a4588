"""The errors rmkit raises for bad input.

Every problem with a user's data is a :class:`DataError` whose message names the file, the row and
the field, and says what was expected, so the CLI can print it as one line and exit with code 2.
"""

from __future__ import annotations


class RMKitError(Exception):
    """A problem the user can fix (bad option, bad file, bad row); the CLI prints it without a traceback."""


class DataError(RMKitError):
    """A bad row of input data.

    ``row`` is 1-based (the n-th record of the file; for JSONL also its line number).
    """

    def __init__(
        self, message: str, *, file: str | None = None, row: int | None = None, field: str | None = None
    ):
        self.file, self.row, self.field, self.reason = file, row, field, message
        where = ", ".join(
            part
            for part in (
                str(file) if file is not None else None,
                f"row {row}" if row is not None else None,
                f"field '{field}'" if field is not None else None,
            )
            if part
        )
        super().__init__(f"{where}: {message}" if where else message)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a job that keeps its finished work: ``kept`` says what is kept and where, ``resumable``
    whether the same command with ``--resume`` goes on from it."""

    def __init__(self, kept: str, resumable: bool):
        super().__init__(kept)
        self.kept, self.resumable = kept, resumable
