"""``rmkit <command>``: the command-line face of the Python API.

Each command is a config dataclass plus a function taking it; the flags come from the dataclass fields.
Errors in the user's input print as one line on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from rmkit.errors import RMKitError
from rmkit.version import __version__

# command -> (config module, config class, module that runs it, its function, one-line help). The config
# modules import no torch, so --help and a wrong option answer at once; the command's module loads to run.
COMMANDS: dict[str, tuple[str, str, str, str, str]] = {
    "demo": (
        "rmkit.jobs.config", "DemoConfig", "rmkit.demo", "demo",
        "train, evaluate and score on built-in data, in minutes",
    ),
    "demo-vision": (
        "rmkit.jobs.config", "VisionDemoConfig", "rmkit.demo_vision", "demo_vision",
        "a vision-language RM learns a visual preference task drawn in code, in minutes",
    ),
    "train": (
        "rmkit.training.config", "TrainConfig", "rmkit.training.loop", "train",
        "train a reward model: from preference pairs, step labels (a process RM) or ratings (regression)",
    ),
    "score": (
        "rmkit.jobs.config", "ScoreConfig", "rmkit.jobs.score", "score_file",
        "score every row of a data set, in input order (RMScore)",
    ),
    "rank": (
        "rmkit.jobs.config", "RankConfig", "rmkit.jobs.rank", "rank_file",
        "best-of-N: score every candidate response of every prompt and rank them",
    ),
    "eval": (
        "rmkit.evaluation.config", "EvalConfig", "rmkit.evaluation.run", "evaluate",
        "evaluate reward models on preference pairs, step-labelled solutions or rated responses",
    ),
    "serve": (
        "rmkit.serving.config", "ServeConfig", "rmkit.serving.server", "run",
        "serve rewards over HTTP to RL loops (rmkit, OpenRLHF, vLLM, slime protocols)",
    ),
    "convert": (
        "rmkit.jobs.config", "ConvertConfig", "rmkit.jobs.convert", "convert",
        "write a checkpoint of any layout rmkit reads (TRL, OpenRLHF, safe-rlhf, ...) as the standard one",
    ),
    "pairs": (
        "rmkit.jobs.pairs", "PairsConfig", "rmkit.jobs.pairs", "pairs",
        "make preference pairs (with margins) from rated responses (HelpSteer2, UltraFeedback)",
    ),
    "inspect": (
        "rmkit.jobs.config", "InspectConfig", "rmkit.inspect_data", "inspect",
        "read a data file and report its format and rows",
    ),
}  # fmt: skip


def _parser(command: str | None) -> argparse.ArgumentParser:
    """The parser of every command, with the flags of ``command`` (only its module is imported); the
    command's own parser is ``parser.commands[command]``."""
    # allow_abbrev=False: argparse would take --lr for --lr-scheduler; spellings are aliases instead.
    parser = argparse.ArgumentParser(
        prog="rmkit", description="Reward models for RLHF: train, score, evaluate, serve.", allow_abbrev=False
    )
    parser.add_argument("--version", action="version", version=f"rmkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    parser.commands = {}  # type: ignore[attr-defined]
    for name, (module, cls_name, _, _, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)
        parser.commands[name] = cmd  # type: ignore[attr-defined]
        cmd.add_argument(
            "--config", help="YAML file of options (keys are the option names; flags override it)"
        )
        if name == command:  # only the command's own module loads (``rmkit --help`` loads none)
            options = importlib.import_module("rmkit.options")
            options.add_arguments(cmd, getattr(importlib.import_module(module), cls_name))
    return parser


def _unknown(parser: argparse.ArgumentParser, command: str | None, extra: list[str]) -> str:
    """What is wrong with arguments no option took, naming the closest option of the command."""
    cmd = parser.commands.get(command) if command else parser  # type: ignore[attr-defined]
    valid = [o for a in cmd._actions for o in a.option_strings if a.help != argparse.SUPPRESS]
    flag = next((e.split("=", 1)[0] for e in extra if e.startswith("-")), None)
    if flag is None:
        return f"unexpected argument(s) {' '.join(extra)} (options are named: --option value)"
    near = difflib.get_close_matches(flag, valid, n=1, cutoff=0.6)
    hint = f"; did you mean {near[0]}?" if near else f"; see rmkit {command} --help"
    return f"unknown option {flag}{hint}"


def _quiet_transformers() -> None:
    """rmkit prints its own progress; transformers' load reports and weight bars would drown it (once a
    command has loaded transformers)."""
    transformers = sys.modules.get("transformers")
    if transformers is None:
        return
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser(next((a for a in argv if not a.startswith("-")), None))
    known, extra = parser.parse_known_args(argv)
    args = vars(known)
    command = args.pop("command")
    if extra:
        print(
            f"rmkit {command or ''}: error: {_unknown(parser, command, extra)}".replace("  ", " "),
            file=sys.stderr,
        )
        return 2
    if command is None:
        parser.print_help()
        return 0
    config_module, cls_name, module, fn_name, _ = COMMANDS[command]
    config_file = args.pop("config", None)
    try:
        config_cls = getattr(importlib.import_module(config_module), cls_name)
        config = importlib.import_module("rmkit.options").build(config_cls, args, config_file)
        if hasattr(config, "validate"):  # options and the input's first rows, before torch loads
            config.validate()
        run = getattr(importlib.import_module(module), fn_name)  # torch and transformers load here
        _quiet_transformers()
        run(config)
    except RMKitError as e:
        print(f"rmkit {command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rmkit {command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
