"""Where a model name points, answered before anything loads.

A model option takes a directory or a hub name. Left to the hub client, a directory that does not exist is
taken for a hub name, and the answer is a minute of retries ending in a message about the network (or
``Repo id must be in the form ...`` for ``./runs/rm``), never that the directory is not there. :func:`locate`
answers at once, in one line:

- a name that exists here is a directory (or file), as it is;
- a name that looks local (starts with ``.``, ``~`` or ``/``, holds a backslash, does not have the hub's
  ``name`` or ``namespace/name`` form, or whose first part is a directory here, as ``runs/`` of ``runs/rm``)
  and does not exist: ``runs/rm: no such directory`` (and the nearest directory beside it, if one is close);
- a hub name is taken when the local hub cache holds it, or when the hub can be reached (a connection to it
  within :data:`PROBE_SECONDS`, asked once a process); else one line says it is not cached and how to get it.

This module imports neither torch nor transformers, so the configs' checks run it before a model loads.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
from pathlib import Path

from rmkit.errors import RMKitError

HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
PROBE_SECONDS = 2.0
_TRUE = {"1", "true", "yes", "on"}


def looks_local(name: str) -> bool:
    """Whether ``name`` can only be a path here (never a hub name)."""
    first = name.split("/", 1)[0]
    return (
        name.startswith((".", "~", "/"))
        or "\\" in name
        or not HUB_NAME.match(name)
        or ("/" in name and Path(first).is_dir())
    )


def near_miss(path: Path, directories: bool = True) -> str | None:
    """The directory (or, not ``directories``, the file or directory) beside ``path`` whose name is closest to
    its name, if one is close."""
    parent = path.parent
    try:
        names = [p.name for p in parent.iterdir() if p.is_dir() or not directories] if parent.is_dir() else []
    except OSError:
        return None
    near = difflib.get_close_matches(path.name, names, n=1, cutoff=0.6)
    return str(parent / near[0]) if near else None


def missing(name: str) -> str:
    """One line saying that the local path ``name`` does not exist (with the nearest directory)."""
    path = Path(name).expanduser()
    near = near_miss(path)
    absent = next((p for p in [*reversed(path.parents), path] if not p.exists()), path)
    where = "" if absent == path or str(absent) in (".", "") else f" ({absent} does not exist)"
    return f"{name}: no such directory{where}" + (f"; did you mean {near}?" if near else "")


def offline_reason() -> str | None:
    """Why the hub cannot be asked from here (``HF_HUB_OFFLINE``, or no answer from it), else ``None``."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return f"{var} is set"
    return _unreachable(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))


@functools.lru_cache(maxsize=4)
def _unreachable(endpoint: str) -> str | None:
    """Why ``endpoint`` did not answer one request within :data:`PROBE_SECONDS` (no retries), else ``None``."""
    from huggingface_hub.utils import get_session

    try:
        get_session().head(endpoint, timeout=PROBE_SECONDS)
    except Exception as e:  # noqa: BLE001 (any failure to connect means: not reachable from here)
        cause = e.__cause__ or e.__context__ or e
        return f"{endpoint} cannot be reached: {str(cause).strip() or type(e).__name__}"
    return None


def cached(name: str) -> bool:
    """Whether the local hub cache holds a snapshot of the model ``name``."""
    root = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.join(Path.home(), ".cache", "huggingface"), "hub"
    )
    snapshots = Path(root) / f"models--{name.replace('/', '--')}" / "snapshots"
    return snapshots.is_dir() and any(snapshots.iterdir())


def locate(name: str | os.PathLike, option: str = "--model") -> None:
    """Refuse, in one line and at once, a model ``name`` (the value of ``option``) that cannot be loaded from
    here: a local path that does not exist, or a hub name neither cached nor reachable (module docstring)."""
    text = str(name)
    if Path(text).expanduser().exists():
        return
    if looks_local(text):
        raise RMKitError(missing(text))
    if cached(text):
        return
    reason = offline_reason()
    if reason is not None:
        raise RMKitError(
            f"{text}: no such directory here, and not a model in the local hub cache ({reason}); give "
            f"{option} a directory, or download it where the hub can be reached (hf download {text}) and "
            "copy the cache or the directory here"
        )
