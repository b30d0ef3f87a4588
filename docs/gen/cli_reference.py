"""The CLI reference, generated from the parsers ``rmkit`` itself builds (``rmkit.cli``), so it cannot drift.

MkDocs loads this file as a hook (``hooks:`` in ``mkdocs.yml``): on the page that holds the marker
``<!-- cli-reference -->`` the marker is replaced by :func:`reference`. ``tests/test_docs.py`` imports the
same functions and checks the result against the parsers.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import re
import types
import typing
from typing import Any

from rmkit import cli

MARKER = "<!-- cli-reference -->"


def command_parser(command: str) -> argparse.ArgumentParser:
    """The argparse parser of ``rmkit <command>``, with its flags, as ``rmkit`` builds it."""
    return cli._parser(command).commands[command]  # type: ignore[attr-defined]


def config_class(command: str) -> type:
    """The option dataclass behind ``rmkit <command>`` (``TrainConfig`` for ``train``, ...)."""
    module, cls_name, *_ = cli.COMMANDS[command]
    return getattr(importlib.import_module(module), cls_name)


def documented_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The actions a user sees in ``--help``: every option but ``-h`` and the hidden underscore spellings."""
    return [
        a for a in parser._actions if a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)
    ]


def _cell(text: str) -> str:
    """``text`` made safe for one Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _default(field: dataclasses.Field | None) -> str:
    if field is None:
        return ""
    if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
        return "**required**"
    value = field.default if field.default is not dataclasses.MISSING else field.default_factory()
    if value is None or value == [] or value == {}:
        return ""
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"`{value}`"


def _value(action: argparse.Action, field: dataclasses.Field | None, hints: dict[str, Any]) -> str:
    """What the option takes: its choices, a list or mapping, a type, or nothing (a switch)."""
    if isinstance(action, argparse.BooleanOptionalAction):
        return "switch (`--no-…` turns it off)"
    if action.choices:
        return " | ".join(f"`{c}`" for c in action.choices)
    kind = hints.get(field.name) if field else str
    if typing.get_origin(kind) in (typing.Union, types.UnionType):  # ``int | None``: the int
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    origin = typing.get_origin(kind)
    if origin in (list, tuple):
        return "list (`a,b` or `a b`)"
    if origin is dict:
        return "mapping (`a=b,c=d`)"
    name = getattr(kind, "__name__", "text")
    return {"str": "text", "int": "integer", "float": "number"}.get(name, name)


def _help(action: argparse.Action) -> str:
    """The help text without the ``(default: X)`` that ``rmkit.options`` appends (the table has a column)."""
    return re.sub(r" \(default: [^()]*\)$", "", action.help or "")


def option_rows(command: str) -> list[tuple[str, str, str, str]]:
    """``(flags, value, default, help)`` for every documented option of ``rmkit <command>``."""
    parser = command_parser(command)
    cls = config_class(command)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    rows = []
    for action in documented_actions(parser):
        field = fields.get(action.dest)
        names = action.option_strings or [action.metavar or action.dest]
        flags = ", ".join(f"`{n}`" for n in names)
        if isinstance(action, argparse.BooleanOptionalAction):
            flags = ", ".join(f"`{n}`" for n in names if not n.startswith("--no-"))
        if action.nargs == "?":
            flags += f" (alone: `{action.const}`)"
        rows.append((flags, _value(action, field, hints), _default(field), _help(action)))
    return rows


def command_section(command: str) -> str:
    """The Markdown section of one command: its help line, usage and option table."""
    parser = command_parser(command)
    positionals = [a.metavar or a.dest for a in documented_actions(parser) if not a.option_strings]
    usage = " ".join(["rmkit", command, "[options]", *positionals])
    lines = [
        f"## `rmkit {command}`",
        "",
        (parser.description or "")[:1].upper() + (parser.description or "")[1:] + ".",
        "",
        f"```\n{usage}\n```",
        "",
        "| option | takes | default | what it does |",
        "|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in option_rows(command)]
    return "\n".join(lines) + "\n"


def reference() -> str:
    """Every command's section, in the order ``rmkit --help`` lists them."""
    return "\n".join(command_section(c) for c in cli.COMMANDS)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """MkDocs hook: put the generated reference where the page holds the marker."""
    return markdown.replace(MARKER, reference()) if MARKER in markdown else markdown
