"""Readers: stream the records of a data file as plain dicts, in file order.

Supported: JSON (a list of objects, parsed incrementally so a large array is never loaded whole), JSONL,
CSV, Parquet (row group by row group) and a directory written by ``datasets.save_to_disk`` (memory-mapped
Arrow). Every reader yields ``(row, record)`` with ``row`` counting records from 1.

A fault in one record (a JSONL line that is not JSON, a CSV row with more or fewer cells than the header, a
record that is not an object) is yielded in its place as a :class:`BadRecord`, so ``--on-error skip`` can
skip it like any other bad row; a fault of the whole file (missing, not UTF-8 where it must be, a JSON
array cut short) raises :class:`DataError` naming the file.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rmkit.errors import DataError
from rmkit.locations import near_miss

_CHUNK = 1 << 20


@dataclass
class BadRecord:
    """A record the reader could not make a dict of: ``error`` names file and row, ``raw`` holds what was
    there (for the rejects file)."""

    error: DataError
    raw: Any = None


def read_records(
    path: str | Path, at: tuple[int, int] | None = None
) -> Iterator[tuple[int, dict[str, Any] | BadRecord]]:
    """Yield ``(row, record)`` for every record of ``path`` (a :class:`BadRecord` for one that could not be
    read); the format follows the suffix (or a directory). ``at`` starts reading further in: a JSON-lines
    file at a record's ``(byte offset, line)`` as :func:`jsonl_starts` gives them, a Parquet file at
    ``(row group, records before it)`` as :func:`parquet_groups` gives them."""
    path = Path(path)
    if not path.exists():
        near = near_miss(path, directories=False)
        raise DataError(
            "no such file or directory" + (f"; did you mean {near}?" if near else ""), file=str(path)
        )
    if at is not None:
        return _read_parquet(path, *at) if path.suffix.lower() == ".parquet" else _read_jsonl(path, *at)
    if path.is_dir():
        return _not_empty(_read_arrow_dir(path), path)
    suffix = path.suffix.lower()
    readers = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".parquet": _read_parquet}
    if suffix not in readers:
        raise DataError(
            f"unknown file type '{suffix}': expected .json, .jsonl, .csv, .parquet or a save_to_disk directory",
            file=str(path),
        )
    return _not_empty(readers[suffix](path), path)


def _not_empty(records: Iterator[tuple[int, Any]], path: Path) -> Iterator[tuple[int, Any]]:
    """``records``, or, once they are read, a whole-file :class:`DataError` when there was none: an empty
    input is a fault of the file, never a run that scores (or trains on) nothing and exits 0."""
    empty = True
    for item in records:
        empty = False
        yield item
    if empty:
        raise DataError("holds no records (an empty input)", file=str(path))


def first_record(path: str | Path) -> dict[str, Any] | None:
    """The first record of ``path`` that could be read (to detect the format from), or ``None``."""
    return next((r for _, r in read_records(path) if not isinstance(r, BadRecord)), None)


def jsonl_starts(path: str | Path) -> Iterator[tuple[int, int]]:
    """``(byte offset, line)`` where each record of a JSON-lines file begins (``line`` counted from 0), found
    without parsing a record: where :func:`read_records` can start reading (``at``)."""
    offset = 0
    with open(path, "rb") as f:
        for line, raw in enumerate(f):
            if raw.strip():
                yield offset, line
            offset += len(raw)


def _read_jsonl(path: Path, offset: int = 0, line: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
    row = 0
    with open(path, "rb") as f:
        f.seek(offset)
        for line_no, raw in enumerate(f, start=line + 1):
            if not raw.strip():
                continue
            row = line_no
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as e:  # the row is the line: say where in it, not json's line count
                error = DataError(
                    f"not valid JSON ({e.msg} at character {e.pos + 1})", file=str(path), row=row
                )
                yield row, BadRecord(error, raw.decode("utf-8", errors="replace").rstrip("\r\n"))
                continue
            except UnicodeDecodeError as e:
                error = DataError(f"not valid UTF-8 (byte {e.start + 1})", file=str(path), row=row)
                yield row, BadRecord(error, raw.decode("utf-8", errors="replace").rstrip("\r\n"))
                continue
            yield row, _as_record(record, path, row)


def _read_json(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Parse a JSON array element by element with ``raw_decode`` over a sliding buffer.

    A file holding one object (not a list) is read as a JSON-lines file would be, so that ``.json``
    files that are really JSONL also work.
    """
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8-sig") as f:
        try:
            buf = f.read(_CHUNK)
        except UnicodeDecodeError as e:
            raise DataError(f"file is not UTF-8 ({e})", file=str(path)) from None
        pos = _skip_ws(buf, 0)
        if pos < len(buf) and buf[pos] == "{":
            yield from _read_jsonl(path)
            return
        if pos >= len(buf) or buf[pos] != "[":
            raise DataError("expected a JSON list of objects", file=str(path))
        pos += 1
        row = 0
        eof = False
        while True:
            pos = _skip_ws(buf, pos)
            while pos >= len(buf) and not eof:
                more = f.read(_CHUNK)
                eof = not more
                buf, pos = buf[pos:] + more, 0
                pos = _skip_ws(buf, pos)
            if pos < len(buf) and buf[pos] == "]":
                return
            if row and pos < len(buf) and buf[pos] == ",":
                pos = _skip_ws(buf, pos + 1)
            elif row:
                raise DataError("expected ',' or ']' after a record", file=str(path), row=row)
            while True:
                try:
                    record, end = decoder.raw_decode(buf, pos)
                    break
                except json.JSONDecodeError as e:
                    more = "" if eof else f.read(_CHUNK)
                    if not more:
                        raise DataError(f"invalid JSON ({e.msg})", file=str(path), row=row + 1) from None
                    buf = buf[pos:] + more
                    pos = _skip_ws(buf, 0)
            row += 1
            yield row, _as_record(record, path, row)
            buf, pos = buf[end:], 0


def _skip_ws(buf: str, pos: int) -> int:
    while pos < len(buf) and buf[pos] in " \t\r\n":
        pos += 1
    return pos


def _read_csv(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, restkey=_EXTRA)
        try:
            for row, record in enumerate(reader, start=1):
                cells = len(reader.fieldnames or [])
                if _EXTRA in record or any(v is None for v in record.values()):
                    got = cells + len(record.get(_EXTRA, [])) - sum(v is None for v in record.values())
                    error = DataError(
                        f"has {got} cells but the header has {cells} (line {reader.line_num})",
                        file=str(path),
                        row=row,
                    )
                    yield row, BadRecord(error, {k: v for k, v in record.items() if v is not None})
                    continue
                yield row, {k: _csv_value(v) for k, v in record.items()}
        except UnicodeDecodeError as e:
            raise DataError(f"file is not UTF-8 ({e})", file=str(path)) from None
        except csv.Error as e:
            raise DataError(f"not a readable CSV file ({e})", file=str(path), row=reader.line_num) from None


_EXTRA = "\x00extra cells"  # where DictReader puts the cells of a row longer than the header


def _csv_value(value: str | None) -> Any:
    """CSV cells are strings; cells holding a JSON list or object (messages) are decoded."""
    if value and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def parquet_groups(path: str | Path) -> list[tuple[int, int, int]]:
    """``(row group, records before it, its records)`` of every row group of a Parquet file, from its footer."""
    import pyarrow.parquet as pq

    meta, before, out = pq.ParquetFile(path).metadata, 0, []
    for group in range(meta.num_row_groups):
        out.append((group, before, meta.row_group(group).num_rows))
        before += out[-1][2]
    return out


def _read_parquet(path: Path, group: int = 0, before: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    row = before
    try:
        file = pq.ParquetFile(path)
        for batch in file.iter_batches(batch_size=1024, row_groups=range(group, file.num_row_groups)):
            for record in batch.to_pylist():
                row += 1
                yield row, record
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"cannot read the Parquet file after {row} rows ({e})", file=str(path)) from None


def _read_arrow_dir(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except FileNotFoundError as e:
        raise DataError(f"not a datasets.save_to_disk directory ({e})", file=str(path)) from None
    if isinstance(ds, datasets.DatasetDict):
        raise DataError(f"holds splits {list(ds)}: name one split's directory", file=str(path))
    yield from enumerate(ds, start=1)


def _as_record(record: Any, path: Path, row: int) -> dict[str, Any] | BadRecord:
    if not isinstance(record, dict):
        error = DataError(f"expected a JSON object, got {type(record).__name__}", file=str(path), row=row)
        return BadRecord(error, record)
    return record
