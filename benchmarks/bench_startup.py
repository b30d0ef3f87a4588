"""How long a user waits for rmkit's command line before anything runs: ``--version``, each command's
``--help``, a misspelt option, a missing required option and inputs that cannot be used (a missing file, pairs
given to ``rank``, a model directory that does not exist, a hub name that is not cached when the hub is
offline or cannot be reached), against ``python -c pass`` (the floor) and
``python -c 'import torch, transformers'`` (what a command that loads a model pays on top). Each is timed as
a whole process, the best of ``--repeats`` runs.

    python benchmarks/bench_startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rmkit.cli import COMMANDS

PAIRS = Path(tempfile.mkdtemp()) / "pairs.jsonl"
PAIRS.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')


def best(argv: list[str], repeats: int, env: dict[str, str] | None = None) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=False, env={**os.environ, **(env or {})})
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rmkit = [sys.executable, "-m", "rmkit.cli"]
    cases = {
        "python -c pass (the floor)": [sys.executable, "-c", "pass"],
        "import torch, transformers": [sys.executable, "-c", "import torch, transformers"],
        "rmkit --version": [*rmkit, "--version"],
        **{f"rmkit {c} --help": [*rmkit, c, "--help"] for c in COMMANDS},
        "rmkit score --modle x (misspelt)": [*rmkit, "score", "--modle", "x"],
        "rmkit score (missing options)": [*rmkit, "score"],
        "rmkit score --input missing.jsonl": [
            *rmkit,
            "score",
            "--model",
            str(PAIRS.parent),
            "--input",
            "missing.jsonl",
            "--output",
            "o.jsonl",
        ],
        "rmkit rank --input pairs (not best-of-N)": [
            *rmkit,
            "rank",
            "--model",
            str(PAIRS.parent),
            "--input",
            str(PAIRS),
            "--output",
            "o.jsonl",
        ],
    }
    score = [*rmkit, "score", "--input", str(PAIRS), "--output", "o.jsonl", "--model"]
    offline = {"HF_HUB_OFFLINE": "1"}
    unreachable = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}  # nothing listens there
    environments = {
        "rmkit score --model runs/nothere (no such dir)": ([*score, "runs/nothere"], offline),
        "rmkit score --model org/unknown (offline)": ([*score, "org/unknown"], offline),
        "rmkit score --model org/unknown (hub unreachable)": ([*score, "org/unknown"], unreachable),
    }
    print(f"{'command':52} {'best of ' + str(args.repeats):>12}")
    for name, argv in cases.items():
        print(f"{name:52} {best(argv, args.repeats):11.3f}s")
    for name, (argv, env) in environments.items():
        print(f"{name:52} {best(argv, args.repeats, env):11.3f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
