"""Tokenised preference pairs in flat memory: one cache entry per data set, memory-mapped, shared.

A Python list of ints costs about 69 bytes a token (the training set of a million HH-length pairs: 22 GB,
once per process). A :class:`PairStore` keeps every pair's token ids back to back in one array of the
smallest type the vocabulary fits (2 bytes a token below 65,536 ids, else 4), with int64 offsets, float32
margins and int32 subset codes beside it, all memory-mapped from a cache entry, so the processes of a job
share one copy in the page cache and a second run with the same inputs skips tokenisation.

A cache entry is a directory ``{cache_dir}/pairs-{key}/``:

=============  ================================================================================
tokens.bin     the ids of every sequence (pair *i*: sequences 2i, chosen, and 2i+1, rejected)
offsets.bin    int64, 2N+1: sequence *j* is ``tokens[offsets[j]:offsets[j+1]]``
margins.bin    float32, N
subsets.bin    int32, N: an index into ``meta.json``'s subset names, -1 for none
rejects.jsonl  the rows skipped as bad (with ``--on-error skip``), given back on every hit
meta.json      written last: the key's inputs, counts, the length rule's tallies, each file's size and CRC32
=============  ================================================================================

The key is a SHA-256 of everything that changes the ids (:func:`cache_key`). An entry is built under a
temporary name and renamed into place whole; opening one checks every size and CRC32, and an entry that
fails (a partial copy, a flipped byte) is rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rmkit.data import RowCounts
from rmkit.errors import RMKitError
from rmkit.version import __version__

log = logging.getLogger(__name__)

FORMAT = 1  # of the cache entry; a change makes every old key miss
PARTS = ("tokens.bin", "offsets.bin", "margins.bin", "subsets.bin")


@dataclass
class Pair:
    """One tokenised preference pair."""

    chosen: list[int]
    rejected: list[int]
    margin: float = 0.0
    subset: str | None = None

    @property
    def length(self) -> int:
        return max(len(self.chosen), len(self.rejected))


class PairStore(Sequence):
    """Pairs kept as flat arrays: ``store[i]`` is a :class:`Pair` (lists built on access), ``store[a:b:c]``
    and :meth:`select` are views that share the arrays, ``lengths`` the longer side of each pair."""

    def __init__(
        self,
        tokens: np.ndarray,
        offsets: np.ndarray,
        margins: np.ndarray,
        subsets: np.ndarray,
        names: list[str],
        rows: np.ndarray | None = None,
    ):
        self.tokens, self.offsets, self.margins, self.subsets, self.names = (
            tokens,
            offsets,
            margins,
            subsets,
            names,
        )
        self.rows = np.arange(len(margins)) if rows is None else rows
        sizes = np.diff(offsets)
        self._lengths = np.maximum(sizes[0::2], sizes[1::2])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return self.select(np.arange(len(self.rows))[i])
        r = int(self.rows[i])
        a, b, c = (int(x) for x in self.offsets[2 * r : 2 * r + 3])
        code = int(self.subsets[r])
        return Pair(
            self.tokens[a:b].tolist(),
            self.tokens[b:c].tolist(),
            float(self.margins[r]),
            self.names[code] if code >= 0 else None,
        )

    def __iter__(self) -> Iterator[Pair]:
        return (self[i] for i in range(len(self)))

    def select(self, indices: Sequence[int] | np.ndarray) -> PairStore:
        """The pairs at ``indices`` (into this store), as a view."""
        rows = self.rows[np.asarray(indices, dtype=np.int64)]
        return PairStore(self.tokens, self.offsets, self.margins, self.subsets, self.names, rows)

    @property
    def lengths(self) -> list[int]:
        return self._lengths[self.rows].tolist()

    @property
    def token_bytes(self) -> int:
        """Bytes of the arrays behind this store (its views share them)."""
        return sum(a.nbytes for a in (self.tokens, self.offsets, self.margins, self.subsets))


class StoreWriter:
    """Appends tokenised pairs to the files of a cache entry being built in ``path``."""

    def __init__(self, path: Path, vocab_size: int):
        self.path = path
        self.dtype = np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32
        self._tokens = open(path / "tokens.bin", "wb")  # noqa: SIM115 (closed by finish())
        self.offsets: list[np.ndarray] = [np.zeros(1, dtype=np.int64)]
        self.margins: list[np.ndarray] = []
        self.subsets: list[np.ndarray] = []
        self.names: dict[str, int] = {}
        self.written = 0

    def add(
        self, ids: np.ndarray, sizes: np.ndarray, margins: Sequence[float], subsets: Sequence[str | None]
    ):
        """A chunk of pairs: ``ids`` every sequence's ids back to back, ``sizes`` their lengths (2 a pair)."""
        self._tokens.write(np.asarray(ids, dtype=self.dtype).tobytes())
        self.offsets.append(self.written + np.cumsum(sizes, dtype=np.int64))
        self.written += int(np.sum(sizes, dtype=np.int64))
        self.margins.append(np.asarray(margins, dtype=np.float32))
        codes = [-1 if s is None else self.names.setdefault(s, len(self.names)) for s in subsets]
        self.subsets.append(np.asarray(codes, dtype=np.int32))

    def finish(self, meta: dict[str, Any]) -> None:
        """Write the arrays and, last, ``meta.json`` with every part's size and CRC32."""
        self._tokens.close()
        for name, parts in (
            ("offsets.bin", self.offsets),
            ("margins.bin", self.margins),
            ("subsets.bin", self.subsets),
        ):
            kind = {"offsets.bin": np.int64, "margins.bin": np.float32, "subsets.bin": np.int32}[name]
            (np.concatenate(parts) if parts else np.zeros(0, dtype=kind)).astype(kind).tofile(
                self.path / name
            )
        meta = {
            **meta,
            "format": FORMAT,
            "dtype": np.dtype(self.dtype).name,
            "subsets": list(self.names),
            "files": {name: _checksum(self.path / name) for name in PARTS},
        }
        for name in PARTS:
            with open(self.path / name, "rb") as f:
                os.fsync(f.fileno())
        (self.path / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")

    def abort(self) -> None:
        self._tokens.close()


def _checksum(path: Path) -> dict[str, int]:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            crc = zlib.crc32(block, crc)
    return {"bytes": path.stat().st_size, "crc32": crc}


def open_entry(path: Path, key: str, *, quiet: bool = False) -> tuple[PairStore, dict[str, Any]] | None:
    """The store and meta of the entry at ``path``, or ``None`` if there is none or it fails its checks
    (logged unless ``quiet``: the caller rebuilds it)."""
    if not (path / "meta.json").is_file():
        return None
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        problem = (
            None if meta.get("key") == key and meta.get("format") == FORMAT else "written for other inputs"
        )
        for name in PARTS:
            if problem is None and _checksum(path / name) != meta["files"][name]:
                problem = f"{name} does not match its size and CRC32"
    except (OSError, ValueError, KeyError, TypeError) as e:
        problem = f"unreadable ({e})"
    if problem is not None:
        if not quiet:
            log.warning("token cache %s: %s; rebuilding it", path, problem)
        return None
    n = meta["pairs"]
    arrays = [
        _map(path / "tokens.bin", meta["dtype"]),
        _map(path / "offsets.bin", "int64"),
        _map(path / "margins.bin", "float32"),
        _map(path / "subsets.bin", "int32"),
    ]
    if len(arrays[1]) != 2 * n + 1 or len(arrays[2]) != n or int(arrays[1][-1]) != len(arrays[0]):
        log.warning("token cache %s: its arrays disagree with its meta; rebuilding it", path)
        return None
    return PairStore(*arrays, meta["subsets"]), meta


def _map(path: Path, dtype: str) -> np.ndarray:
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")


def publish(tmp: Path, final: Path) -> None:
    """Rename a finished entry into place; an entry already there (one that failed its checks) is moved
    aside first and removed, so a reader sees the old entry, none, or the new one, never a mix."""
    if final.exists():
        aside = Path(tempfile.mkdtemp(prefix=".old-pairs-", dir=final.parent))
        os.replace(final, aside / final.name)
        shutil.rmtree(aside, ignore_errors=True)
    os.replace(tmp, final)


def new_entry(cache_dir: Path) -> Path:
    """A temporary directory to build an entry in, named after this host and process; those a killed
    build of this host left behind are removed first."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    for old in cache_dir.glob(f".tmp-pairs-{host}-*"):
        pid = old.name.split("-")[-2]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f".tmp-pairs-{host}-{os.getpid()}-", dir=cache_dir))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def file_digest(path: str | Path) -> str:
    """SHA-256 of a data file's bytes (of every file, with its relative name, for a directory)."""
    root = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    for f in files:
        digest.update(str(f.relative_to(root) if root.is_dir() else "").encode() + b"\0")
        with open(f, "rb") as stream:
            while block := stream.read(1 << 24):
                digest.update(block)
    return digest.hexdigest()


def cache_key(inputs: dict[str, Any]) -> str:
    """The entry name of ``inputs`` (file digest, rendering and length options, tokenizer digest)."""
    text = json.dumps({**inputs, "format_version": FORMAT}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def counts_of(meta: dict[str, Any]) -> RowCounts:
    return RowCounts(**meta["counts"])


def meta_of(key: str, inputs: dict[str, Any], pairs: int, counts: RowCounts) -> dict[str, Any]:
    if pairs == 0:
        raise RMKitError(f"{inputs.get('data')}: no preference pairs to train or evaluate on")
    return {"key": key, "inputs": inputs, "pairs": pairs, "counts": asdict(counts), "rmkit": __version__}
