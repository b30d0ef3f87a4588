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

:func:`snapshot` then turns a hub name into a local snapshot directory (downloaded where the hub can be
reached, else read from the cache), holding only the files rmkit reads, so that what recognises a kind or a
layout by the files beside ``config.json`` sees a hub model exactly as the same directory given here.

This module imports neither torch nor transformers, so the configs' checks run it before a model loads.
"""

from __future__ import annotations

import difflib
import functools
import json
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


def cache_root() -> Path:
    """The local hub cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``), read from the environment when asked."""
    return Path(
        os.environ.get("HF_HUB_CACHE")
        or os.path.join(
            os.environ.get("HF_HOME") or os.path.join(Path.home(), ".cache", "huggingface"), "hub"
        )
    )


def cached(name: str) -> bool:
    """Whether the local hub cache holds a snapshot of the model ``name``."""
    snapshots = cache_root() / f"models--{name.replace('/', '--')}" / "snapshots"
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


# What rmkit reads of a hub model, besides its weights (top-level names; the hub matches them whole): the
# configs, every tokenizer file transformers looks for, chat templates, and the files other layouts and kinds
# keep beside config.json. LDL-Reward's two .pt files are read as tensors only (no code runs), and the
# Decision-Tree RM's pickle is never unpickled without --allow-pickle (its kind refuses it in one line), so
# both come without the flag, as they would in a directory.
READ_FIRST = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "tokenizer.model",
    "tokenizer.model.v*",
    "tekken.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "*.tiktoken",
    "chat_template.jinja",
    "chat_template.json",
    "additional_chat_templates/*.jinja",
    "model.safetensors.index.json",
    "adapter_config.json",
    "adapter_model.safetensors",
    "value_head.safetensors",
    "regression_layer.pt",
    "gating_layer.pt",
    "decision_tree.pkl",
)
PICKLED = ("pytorch_model.bin.index.json", "adapter_model.bin", "value_head.bin")  # with --allow-pickle
REMOTE_CODE = ("*.py",)  # a checkpoint's own model and tokenizer code, with --trust-remote-code
# The model's weights, as transformers picks them: an index's shards, else the one file (safetensors first).
WEIGHTS = (
    ("model.safetensors.index.json", "model.safetensors"),
    ("pytorch_model.bin.index.json", "pytorch_model.bin"),
)


def patterns(allow_pickle: bool, trust_remote_code: bool) -> list[str]:
    """The names of a hub model's files fetched before its weights (:data:`READ_FIRST` and the flags')."""
    return [*READ_FIRST, *(PICKLED if allow_pickle else ()), *(REMOTE_CODE if trust_remote_code else ())]


def snapshot(
    name: str, *, allow_pickle: bool = False, trust_remote_code: bool = False, revision: str | None = None
) -> str:
    """The local directory of the model ``name``: ``name`` itself when it is a path here; for a hub name, its
    snapshot in the local hub cache at ``revision`` (default ``main``), holding :func:`patterns`' files and the
    weights transformers would read (:data:`WEIGHTS`; pickle ones only with ``allow_pickle``, else refused in
    one line). Downloaded where the hub can be reached, else read from the cache; a hub error is one line."""
    if Path(name).expanduser().exists() or looks_local(name):
        return name
    folder = Path(_download(name, revision, patterns(allow_pickle, trust_remote_code)))
    # snapshots/<commit>: the weights come from the same commit, whatever the branch moved to meanwhile
    commit = folder.name
    weights = _weights(name, folder, _listing(name, commit, folder), allow_pickle)
    return _download(name, commit, weights) if weights else str(folder)


def _download(name: str, revision: str | None, allow: list[str]) -> str:
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(
            name,
            revision=revision,
            cache_dir=cache_root(),
            endpoint=os.environ.get("HF_ENDPOINT") or None,  # read when asked, as offline_reason reads it
            allow_patterns=allow,
            local_files_only=offline_reason() is not None,
        )
    except (OSError, ValueError) as e:  # the hub's errors (not found, gated, offline and not cached) included
        at = f" at revision {revision}" if revision else ""
        said = " ".join(str(e).split()) or type(e).__name__
        raise RMKitError(f"{name}: cannot get this model from the hub{at}: {said}") from None


def _listing(name: str, revision: str | None, folder: Path) -> set[str]:
    """The files of the hub model ``name``: the listing its download cached, else those of its snapshot."""
    from huggingface_hub import get_cached_repo_tree
    from huggingface_hub.errors import CachedRepoTreeNotFoundError

    try:
        return {f.path for f in get_cached_repo_tree(name, revision=revision, cache_dir=cache_root())}
    except CachedRepoTreeNotFoundError:
        return {p.name for p in folder.iterdir()}


def _weights(name: str, folder: Path, listing: set[str], allow_pickle: bool) -> list[str]:
    """The weight files of ``listing`` that transformers would read (an index's shards, else the one file);
    pickle weights refused in one line without ``allow_pickle``; ``[]`` for none (a LoRA adapter)."""
    for index, single in WEIGHTS:
        if index not in listing and single not in listing:
            continue
        if single.endswith(".bin") and not allow_pickle:
            raise RMKitError(
                f"{name}: its weights are pickle files ({index if index in listing else single}); rmkit loads "
                "them only with --allow-pickle (allow_pickle=True in Python), and then with "
                "torch.load(weights_only=True): only from a source you trust"
            )
        if index not in listing:
            return [single]
        try:
            return sorted(
                set(json.loads((folder / index).read_text(encoding="utf-8"))["weight_map"].values())
            )
        except (OSError, ValueError, KeyError, AttributeError) as e:
            raise RMKitError(f"{name}: cannot read its weights' index {index}: {e}") from None
    return []
