"""``rmkit <command>``: the command-line face of the Python API.

Each command is a config dataclass plus a function taking it; the flags come from the dataclass fields.
Errors in the user's input print as one line on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from rmkit.errors import RMKitError
from rmkit.options import add_arguments, build
from rmkit.version import __version__

# command -> (module, config class, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "demo": ("rmkit.demo", "DemoConfig", "demo", "train, evaluate and score on built-in data, in minutes"),
    "train": (
        "rmkit.training",
        "TrainConfig",
        "train",
        "train a reward model: from preference pairs, step labels (a process RM) or ratings (regression)",
    ),
    "score": (
        "rmkit.jobs.score",
        "ScoreConfig",
        "score_file",
        "score every row of a data set, in input order (RMScore)",
    ),
    "rank": (
        "rmkit.jobs.rank",
        "RankConfig",
        "rank_file",
        "best-of-N: score every candidate response of every prompt and rank them",
    ),
    "eval": (
        "rmkit.evaluation",
        "EvalConfig",
        "evaluate",
        "evaluate reward models on preference pairs, step-labelled solutions or rated responses",
    ),
    "serve": (
        "rmkit.serving",
        "ServeConfig",
        "run",
        "serve rewards over HTTP to RL loops (rmkit, OpenRLHF, vLLM, slime protocols)",
    ),
    "convert": (
        "rmkit.jobs.convert",
        "ConvertConfig",
        "convert",
        "write a checkpoint of any layout rmkit reads (TRL, OpenRLHF, safe-rlhf, ...) as the standard one",
    ),
    "pairs": (
        "rmkit.jobs.pairs",
        "PairsConfig",
        "pairs",
        "make preference pairs (with margins) from rated responses (HelpSteer2, UltraFeedback)",
    ),
    "inspect": (
        "rmkit.inspect_data",
        "InspectConfig",
        "inspect",
        "read a data file and report its format and rows",
    ),
}


def _parser(command: str | None) -> argparse.ArgumentParser:
    """The parser of every command, with the flags of ``command`` (only its module is imported)."""
    # allow_abbrev=False: argparse would take --lr for --lr-scheduler; spellings are aliases instead.
    parser = argparse.ArgumentParser(
        prog="rmkit", description="Reward models for RLHF: train, score, evaluate, serve.", allow_abbrev=False
    )
    parser.add_argument("--version", action="version", version=f"rmkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name, (module, cls_name, _, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)
        cmd.add_argument(
            "--config", help="YAML file of options (keys are the option names; flags override it)"
        )
        if name == command:
            add_arguments(cmd, getattr(importlib.import_module(module), cls_name))
    return parser


def _quiet_transformers() -> None:
    """rmkit prints its own progress; transformers' load reports and weight bars would drown it."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    _quiet_transformers()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser(next((a for a in argv if not a.startswith("-")), None))
    args = vars(parser.parse_args(argv))
    command = args.pop("command")
    if command is None:
        parser.print_help()
        return 0
    module, cls_name, fn_name, _ = COMMANDS[command]
    mod = importlib.import_module(module)
    config_file = args.pop("config", None)
    try:
        config = build(getattr(mod, cls_name), args, config_file)
        getattr(mod, fn_name)(config)
    except RMKitError as e:
        print(f"rmkit {command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rmkit {command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
