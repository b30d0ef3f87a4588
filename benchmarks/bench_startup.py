"""How long a user waits for rmkit's command line before anything runs: ``--version``, each command's
``--help``, a misspelt option and a missing required option, against ``python -c pass`` (the floor) and
``python -c 'import torch, transformers'`` (what a command that loads a model pays on top). Each is timed as
a whole process, the best of ``--repeats`` runs.

    python benchmarks/bench_startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from rmkit.cli import COMMANDS


def best(argv: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=False)
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
    }
    print(f"{'command':36} {'best of ' + str(args.repeats):>12}")
    for name, argv in cases.items():
        print(f"{name:36} {best(argv, args.repeats):11.3f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
