"""How a list or mapping option's value is read, from the command line or YAML: ``a b``, ``a,b``, repeated
flags and YAML lists for a list (a path with a comma in its name kept whole); ``a=b,c=d``, ``a=b c=d`` and
YAML mappings for a mapping."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _parse_mapping(text: str) -> dict[str, str]:
    pairs = [p for p in text.split(",") if p]
    if not all("=" in p for p in pairs):
        raise argparse.ArgumentTypeError(f"expected name=value pairs (a=b,c=d or a=b c=d), got {text!r}")
    return dict(p.split("=", 1) for p in pairs)


def items(values: Any, of: type = str, *, paths: bool = False, split: bool = True) -> list[Any]:
    """A list option's values however they were written: ``a b`` (several), ``a,b`` (one, commas), both,
    or a YAML list (whose entries are never split: ``split=False``); each converted to ``of``. Of a list of
    ``paths``, a value naming a file or directory that exists is one path, commas and all (JudgeBench ships
    ``dataset=judgebench,response_model=....jsonl``); one that does not is split, and the split is said."""
    values = [values] if isinstance(values, str) else list(values)
    out = []
    for v in values:
        parts = _split(v, paths) if isinstance(v, str) and split else [v]
        out += [of(x.strip()) if isinstance(x, str) else of(x) for x in parts if x != ""]
    return out


def _split(text: str, paths: bool) -> list[str]:
    if "," not in text or (paths and Path(text).expanduser().exists()):
        return [text]
    parts = [p for p in text.split(",") if p]
    if paths:
        log.info("no file is named '%s': read as %d paths, %s", text, len(parts), ", ".join(parts))
    return parts


def mapping(values: Any) -> dict[str, str]:
    """A mapping option's value however it was written: ``a=b,c=d``, ``a=b c=d``, or a YAML mapping."""
    if isinstance(values, dict):
        return {str(k): v for k, v in values.items()}
    out: dict[str, str] = {}
    for v in [values] if isinstance(values, str) else values:
        out.update(_parse_mapping(v))
    return out


class Items(argparse.Action):
    """``--x a b``, ``--x a,b`` and ``--x a --x b`` all give ``[a, b]`` (:func:`items`)."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        try:
            new = items(values, self.of, paths=self.paths)
        except ValueError as e:
            parser.error(f"{option_string}: {e}")
        setattr(namespace, self.dest, (getattr(namespace, self.dest, None) or []) + new)


class MappingAction(argparse.Action):
    """``--x a=b,c=d`` and ``--x a=b c=d`` both give ``{a: b, c: d}`` (:func:`mapping`)."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        try:
            new = mapping(values)
        except argparse.ArgumentTypeError as e:
            parser.error(f"{option_string}: {e}")
        setattr(namespace, self.dest, {**(getattr(namespace, self.dest, None) or {}), **new})
