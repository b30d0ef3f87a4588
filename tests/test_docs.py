"""The documentation cannot rot: the examples marked runnable in docs/ run as written, the generated CLI
reference lists every option of every command's parser, and the README's links lead to pages that exist."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import re
import shlex
from pathlib import Path

import pytest
import torch
from conftest import write_jsonl

from rmkit import cli

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MARKER = "<!-- runnable -->"  # alone on its line, right before the block
MARKED = re.compile(r"^<!-- runnable -->\n+```(\w*)\n(.*?)^```", re.S | re.M)


def runnable_blocks(page: Path) -> list[tuple[str, str]]:
    """``(language, code)`` of every fenced block right after a ``<!-- runnable -->`` line of ``page``."""
    return MARKED.findall(page.read_text(encoding="utf-8"))


def markers(page: Path) -> int:
    """How many lines of ``page`` are the marker alone."""
    return sum(line.strip() == MARKER for line in page.read_text(encoding="utf-8").splitlines())


PAGES = [ROOT / "README.md", *sorted(p for p in DOCS.rglob("*.md") if markers(p))]


def commands(code: str) -> list[list[str]]:
    """The commands of a bash block: continuation lines joined, comments dropped, one argv each."""
    joined = code.replace("\\\n", " ")
    return [argv for line in joined.splitlines() if (argv := shlex.split(line, comments=True))]


def run_bash(code: str) -> None:
    """Run each ``rmkit ...`` command of a block in this process; each must succeed and write its output."""
    for argv in commands(code):
        assert argv[0] == "rmkit", f"a runnable bash block may only run rmkit commands, not {argv[0]}"
        assert cli.main(argv[1:]) == 0, f"{shlex.join(argv)} failed"
        for flag in ("--output", "--output-dir"):
            if flag in argv:
                written = Path(argv[argv.index(flag) + 1])
                assert written.exists(), f"{shlex.join(argv)} wrote no {written}"


# The files every page's examples may use, as docs/getting-started.md lists them.
DATA = {
    "data.jsonl": [
        {"prompt": "What is the capital of France?", "response": "The capital of France is Paris."},
        {"prompt": "What is the capital of France?", "response": "It is Helsinki."},
        {"prompt": "Say hello.", "response": "Hello! How can I help you today?"},
    ],
    "candidates.jsonl": [
        {"prompt": "What is 2+2?", "responses": ["4", "Four.", "5"]},
        {"prompt": "Name a colour.", "responses": ["Blue.", "A car.", "Red is a colour."]},
    ],
    "rated.jsonl": [
        {
            "prompt": f"Question {i // 3}?",
            "response": f"Answer {i}.",
            "helpfulness": i % 4,
            "verbosity": i % 3,
        }
        for i in range(9)
    ],
}


@pytest.fixture(scope="module")
def workspace(minilm_path, tmp_path_factory) -> Path:
    """A directory holding what the runnable examples name: ``runs/rm`` (MiniLM with a seeded score head),
    ``pairs.jsonl`` (eight of the shipped pairs) and the small files of ``DATA``."""
    from rmkit import RewardModel

    root = tmp_path_factory.mktemp("docs-workspace")
    torch.manual_seed(0)
    RewardModel.from_pretrained(minilm_path).save_pretrained(root / "runs" / "rm", {"max_length": 128})
    shipped = (ROOT / "examples" / "data" / "prefs.jsonl").read_text(encoding="utf-8").splitlines()
    write_jsonl(root / "pairs.jsonl", [json.loads(line) for line in shipped[:8]])
    for name, rows in DATA.items():
        write_jsonl(root / name, rows)
    return root


@pytest.mark.parametrize(
    "page", PAGES, ids=[str(p.relative_to(DOCS if p.parent != ROOT else ROOT)) for p in PAGES]
)
def test_the_runnable_examples_of_each_page_run_as_written(page, workspace, tmp_path, monkeypatch):
    """Each page's runnable blocks, in order, in a fresh directory laid out as getting-started.md says."""
    for item in workspace.glob("*.jsonl"):
        (tmp_path / item.name).symlink_to(item)
    (tmp_path / "runs").mkdir()  # the page's own: what its examples write stays in it
    (tmp_path / "runs" / "rm").symlink_to(workspace / "runs" / "rm")
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    blocks = runnable_blocks(page)
    for number, (language, code) in enumerate(blocks, 1):
        if language == "bash":
            run_bash(code)
        elif language == "python":
            exec(compile(code, f"{page.name}, runnable block {number}", "exec"), {"__name__": "__main__"})
        else:
            pytest.fail(f"{page.name}: a runnable block must be bash or python, not {language}")


def test_the_guides_have_runnable_examples_and_each_marker_marks_a_block():
    assert {p.name for p in PAGES} >= {"training.md", "scoring.md", "evaluation.md", "serving.md"}
    for page in [ROOT / "README.md", *DOCS.rglob("*.md")]:
        assert len(runnable_blocks(page)) == markers(page), f"{page.name}: a marker not followed by a block"


def test_commands_of_a_bash_block_join_continuations_and_drop_comments():
    code = "rmkit score --model m \\\n    --input a.jsonl   # a comment\n\nrmkit rank --top-k 2\n"
    assert commands(code) == [
        ["rmkit", "score", "--model", "m", "--input", "a.jsonl"],
        ["rmkit", "rank", "--top-k", "2"],
    ]


def _generator():
    spec = importlib.util.spec_from_file_location("cli_reference", DOCS / "gen" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_the_cli_reference_lists_every_option_of_the_parser(command):
    """Every flag ``rmkit <command>`` accepts (but -h and the hidden underscore spellings) is in its section,
    with the dataclass default and every allowed value."""
    gen = _generator()
    section = gen.command_section(command)
    parser = cli._parser(command).commands[command]
    shown = [
        a for a in parser._actions if a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)
    ]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert len(rows) == len(shown), "one table row per option"
    fields = {f.name: f for f in dataclasses.fields(gen.config_class(command))}
    for action in shown:
        names = [n for n in action.option_strings if not n.startswith("--no-")] or [action.metavar]
        row = next((r for r in rows if f"`{names[0]}`" in r), None)
        assert row is not None, f"{names[0]} of rmkit {command} is missing from the CLI reference"
        assert all(f"`{n}`" in row for n in names), row
        for choice in action.choices or []:
            assert f"`{choice}`" in row, f"{names[0]}: choice {choice} missing"
        field = fields.get(action.dest)
        if field is not None and field.default not in (dataclasses.MISSING, None, False, True):
            assert f"`{field.default}`" in row, f"{names[0]}: default {field.default} missing"
        if (
            field is not None
            and field.default is dataclasses.MISSING
            and field.default_factory is dataclasses.MISSING
        ):
            assert "**required**" in row


def test_the_cli_reference_page_is_generated_by_the_hook():
    gen = _generator()
    page = (DOCS / "reference" / "cli.md").read_text(encoding="utf-8")
    assert gen.MARKER in page
    built = gen.on_page_markdown(page, None, None, None)
    assert gen.MARKER not in built
    assert all(f"## `rmkit {c}`" in built for c in cli.COMMANDS)


def test_the_readme_is_a_landing_page_whose_links_exist():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    links = re.findall(r"\]\((docs/[^)#]+)", readme)
    assert links, "the README links into the docs"
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, missing
