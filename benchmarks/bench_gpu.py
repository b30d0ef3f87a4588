"""rmkit on a GPU (issue 20): scoring and training throughput of real-shaped reward models against a plain
transformers loop and TRL, as model FLOP utilisation (MFU) of a matrix-product rate measured in the same run.

One run, sections picked with ``--sections`` (default all four, in this order):

0. ``matmul``: the dense rate of the device, the peak MFU is measured against: ``torch.mm`` of two
   8,192 x 8,192 bf16 matrices, 3 warm-ups, then 10 timed between CUDA synchronisations (2·8192³ FLOPs
   each). ``--dry-run``: 1,024², fp32, on the CPU.
1. ``score``, for each of ``--shapes`` (default ``1.5b,8b``): a Llama-architecture RM
   (``LlamaForSequenceClassification``, one label, HF's init seeded with 0, random weights) saved in bf16
   safetensors to a temp dir, with a byte-level BPE tokenizer trained on the spot on the benchmark texts
   (``tokenizers``, vocab ``--vocab`` 32,000 at most; ``<pad>`` pads and is never in a text, ``</s>`` is eos
   and ends every text, ``<s>`` begins it). Shapes: ``1.5b`` hidden 1,536, 28 layers, 12 heads, 2 kv
   heads, intermediate 8,960 (Qwen2-1.5B's); ``8b`` hidden 4,096, 32 layers, 32 heads, 8 kv heads,
   intermediate 14,336 (Llama-3-8B's); ``tiny`` (the dry run's) hidden 64, 2 layers, 4 heads, 2 kv heads.
   The texts: every prompt with its chosen and its rejected answer of ``--data-dir`` (the three files of
   ``../shared/data``, read as :func:`bench_score.load_pairs` reads them: 632 pairs), pairs cycled in order
   to ``--texts`` texts (default 20,000 = 10,000 pairs; ``--texts-8b`` for the 8B shape, default 1,000),
   rendered with rmkit's plain template, at most ``--max-length`` (4,096) tokens (the counts over it, which
   both sides cut, are printed). The embedding has 32,000 rows at least (the data's distinct texts train
   a 32,000-token BPE; rows past the tokenizer's, in a smaller one, are never read).

   (i) the plain loop, as RewardBench scores, on the first ``--plain-texts`` texts (default 4,000; 640 for
       8B: it is the slowest part, and the texts cycle with a period of 1,264, so any 4,000 of them have the
       same length mix as all): the rendered texts in input order, 32 at a time, tokenised with padding
       to the longest, through ``AutoModelForSequenceClassification`` in bf16 with
       ``attn_implementation="sdpa"``, ``model(**batch).logits[:, 0].float().cpu()`` per batch, under
       ``torch.inference_mode``. Its ids are checked equal to those rmkit scores (the count that differ
       is printed). (ii) ``rmkit.score`` on a JSONL of all the pairs (prompt, chosen, rejected), bf16,
       with the model loaded beforehand as the loop's is (so neither time holds the load); the time holds
       reading, tokenising, batching, scoring and writing. ``--rmkit-score-options`` passes more options
       (JSON). Its tokens/s over the loop's is the ratio; its scores of the loop's texts are compared with
       the loop's (max |Δscore|, orderings equal). (iii) bf16 against fp32: the first ``--fp32-texts``
       texts (default 400 = 200 pairs; 64 for 8B: fp32 without TF32 runs at ~1/15 of bf16's rate) scored
       by rmkit in fp32 with TF32 off; printed: the share of chosen/rejected orderings the bf16 run keeps
       (target ≥ 99.5%) and max |Δscore|. Random weights may give near-tied pairs, so the typical |fp32
       margin| and the score std are printed beside |Δscore|: where margins are as small as bf16's
       rounding, the kept share measures the ties, not rmkit (``bench_score.py`` trains its RM for this).

   Printed for (i) and (ii): real (non-pad) tokens/s, rows/s, rmkit / plain, and MFU = model FLOPs/s over
   the measured matmul rate. Model FLOPs of a text of n real tokens (:func:`bench_score.model_flops`):
   2 per non-embedding parameter per token plus causal attention 2·n·(n+1)·d per layer; the padding the
   loop computes is not counted for it. With prefix sharing (rmkit's default) rmkit does not compute a
   shared prompt twice, yet is credited with the FLOPs of full texts: its figure is then an *effective*
   MFU (said in the line; ``--rmkit-score-options '{"prefix_sharing": false}'`` gives the plain one).
2. ``profile`` (the first of ``--shapes``): where rmkit scoring's time goes (:func:`profile_section`): the
   device's busy time by kind of kernel, the time it waits on the host, and tokenising's rate alone.
3. ``train`` (the 1.5B shape; ``tiny`` in the dry run): ``rmkit.training.train`` against TRL's
   ``RewardTrainer`` on the same ``--train-batch`` x (``--warmup-steps`` + ``--train-steps``) pairs, one
   epoch, so each trains every pair once. Both start from the same saved weights (fp32 weights, bf16
   autocast: rmkit ``dtype="bf16"``, TRL ``bf16=True``), gradient checkpointing as ``--gradient-checkpointing``
   (default on, TRL's default; without it 32 rows of up to 4,096 tokens of the 1.5B model do not fit),
   same batch, learning rate 1e-5 constant, no warm-up of the rate. The ids are rmkit's
   (:func:`rmkit.training.data.load_pairs`), handed to TRL as ``chosen_ids``/``rejected_ids``: both train
   identical token sequences (rmkit length-groups its batches, TRL samples them at random).
   rmkit trains once for each of ``--rmkit-train-options`` (a JSON object of TrainConfig options, or a list
   of them; an option TrainConfig lacks is an error of that run alone). The default: autocast as TRL's
   ``bf16=True`` (``{"dtype": "bf16"}``), bf16 weights over fp32 masters (``"bf16-weights"``), and the
   latter with ``flex_attention``, under which a micro-batch's pairs go in packed, without pads (the dry
   run leaves that one out: flex attention has no backward on the CPU).
   Timing: each step's time (rmkit: its train_log.jsonl, logged every step; TRL: between the ends of
   consecutive steps, CUDA synchronised, so its data loading counts as rmkit's does) and real tokens
   (rmkit: its batches; TRL: its collator's masks). The headline excludes the first ``--warmup-steps``
   steps of each (CUDA kernels chosen, allocator grown); the all-steps figures are printed beside.
   MFU of training: 3x the forward FLOPs (forward + backward); recomputation under gradient checkpointing
   is not counted (the standard MFU), the hardware utilisation with it (4x) is printed as HFU.

Everything printed is also written as one JSON (``--out``; default ``$OUT/bench_gpu.json`` when ``OUT``
is set, else ``./bench_gpu.json``), rewritten after each section, with the device, versions and command
line. Each section (and each shape, each trainer) is guarded: an error (out of memory, TRL missing) is
printed and recorded, and the rest runs.

Time on one H200 (~790 TFLOP/s bf16 measured), the default run, estimated (the texts average ~505 tokens
with the 32,000-token BPE; the loop pads input-order batches to ~2.8x): 1.5B (1.31B non-embedding
parameters), 20,000 texts = 10.1M tokens = ~27 PFLOP: rmkit ~60 s at 60% MFU; the loop's 4,000 texts
~45 PFLOP computed with padding, ~30 s; fp32 on 400 texts ~15 s; build, save, 3 loads ~20 s. 8B (6.98B),
1,000 texts ~7 PFLOP: rmkit ~15 s, the loop's 640 ~25 s, fp32 on 64 ~5 s, building, saving and loading
16 GB (32 GB in fp32) ~75 s. Training 1.5B, 22 steps of 16 pairs (~0.36M tokens, ~3.7 PFLOP with
recompute): 10-30 s a trainer plus loading and rmkit's final save, ~70 s. In all about 5 minutes; more
where rmkit is below 60% MFU. The JSON is rewritten after every part, so a run cut short keeps its figures.

On the lent GPU (the ``run`` tool of the device library): first ``bash benchmarks/gpu_prepare.sh`` here
(copies the data to ``.benchdata/``, downloads the wheels the device lacks to ``.whl/``), then ``run``
with command ``bash benchmarks/gpu_check.sh`` and carry ``[".whl", ".benchdata"]``; the CUDA tests' log,
this benchmark's log and its JSON come back under ``$OUT``.

    python benchmarks/bench_gpu.py [--dry-run] [--device cuda] [--sections matmul,score,profile,train]
        [--shapes 1.5b,8b] [--texts 20000] [--texts-8b 4000] [--fp32-texts 2000] [--max-length 4096]
        [--train-steps 20] [--warmup-steps 2] [--train-batch 16] [--gradient-checkpointing on|off]
        [--rmkit-score-options JSON] [--rmkit-train-options JSON] [--data-dir DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import itertools
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bars (loading, saving, training) in the log

import bench_score  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from bench_score import _dense, _example, model_flops  # noqa: E402

import rmkit  # noqa: E402
from rmkit import RewardModel  # noqa: E402
from rmkit.data import ExampleTokenizer, RowCounts  # noqa: E402
from rmkit.data.rendering import render_plain  # noqa: E402

# hidden size, layers, attention heads, kv heads, intermediate size
SHAPES = {
    name: dict(
        hidden_size=h, num_hidden_layers=n, num_attention_heads=a, num_key_value_heads=kv, intermediate_size=i
    )
    for name, (h, n, a, kv, i) in {
        "tiny": (64, 2, 4, 2, 172),
        "1.5b": (1536, 28, 12, 2, 8960),  # Qwen2-1.5B's
        "8b": (4096, 32, 32, 8, 14336),  # Llama-3-8B's
    }.items()
}
POSITIONS = 8192
VOCAB = 32000  # most tokens of the trained tokenizer, and fewest rows of the embedding (as a real RM's)
PLAIN_BATCH = 32
# The dry run: CPU, the tiny shape, few texts and steps (about 2 minutes on 2 cores).
TRAIN_VARIANTS = [
    {"dtype": "bf16"},
    {"dtype": "bf16-weights"},
    {"dtype": "bf16-weights", "attn_implementation": "flex_attention"},
]
DRY_RUN = dict(
    device="cpu",
    shapes="tiny",
    texts=200,
    texts_8b=200,
    plain_texts=200,
    plain_texts_8b=200,
    fp32_texts=40,
    fp32_texts_8b=40,
    train_shape="tiny",
    train_steps=3,
    warmup_steps=1,
    train_batch=4,
    matmul_size=1024,
    profile_texts=100,
    rmkit_train_options=json.dumps(TRAIN_VARIANTS[:2]),
)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(
    device: torch.device, dtype: torch.dtype, size: int, warmups: int = 3, repeats: int = 10
) -> float:
    """FLOP/s of ``torch.mm`` of two ``size``² matrices on ``device``: ``warmups`` untimed, ``repeats`` timed
    between synchronisations."""
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    for _ in range(warmups):
        torch.mm(a, b)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def train_tokenizer(texts: list[str], vocab: int, path: Path):
    """A byte-level BPE tokenizer trained on ``texts`` (at most ``vocab`` tokens), saved to ``path``: every
    text becomes ``<s> … </s>``; ``<pad>`` pads and occurs in no text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = TemplateProcessing(
        single="<s> $A </s>",
        special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    fast.model_max_length = POSITIONS
    fast.save_pretrained(str(path))
    return fast


def llama_config(shape: str, tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=max(len(tokenizer), VOCAB),
        max_position_embeddings=POSITIONS,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
        **SHAPES[shape],
    )


def save_rm(path: Path, shape: str, tokenizer, device: torch.device) -> None:
    """The random RM of ``shape`` (HF's init, seed 0), built in bf16 on ``device`` (fast even for 8B) and
    saved to ``path`` as a plain HF checkpoint with ``tokenizer``."""
    from transformers import LlamaForSequenceClassification

    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForSequenceClassification._from_config(
            llama_config(shape, tokenizer), dtype=torch.bfloat16
        )
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    del model
    free(device)


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def meta_model(shape: str, tokenizer):
    """The ``shape`` RM on the meta device (nothing allocated): for counting its parameters and FLOPs."""
    from transformers import LlamaForSequenceClassification

    with torch.device("meta"):
        return LlamaForSequenceClassification(llama_config(shape, tokenizer))


def counted_flops(shape: str, tokenizer, lengths: list[int]) -> float:
    """Forward FLOPs of sequences of ``lengths`` through the ``shape`` RM."""
    return model_flops(meta_model(shape, tokenizer), lengths, causal=True)


def texts_and_ids(pairs: list[dict], tokenizer, max_length: int) -> tuple[list[str], list[list[int]], int]:
    """The rendered texts of ``pairs`` (chosen, rejected, chosen, …), the ids rmkit scores for them, and how
    many were longer than ``max_length`` (rmkit cuts the prompt from the left)."""
    rendering = ExampleTokenizer(tokenizer, max_length=max_length)
    texts = [rendering.render(p["prompt"], p[side]) for p in pairs for side in ("chosen", "rejected")]
    tokenized = [
        e for encs in rendering.tokenize([_example(i, p) for i, p in enumerate(pairs)]) for e in encs
    ]
    return texts, [e.ids for e in tokenized], sum(e.truncated for e in tokenized)


@torch.inference_mode()
def plain_loop(path: Path, texts: list[str], max_length: int, device: torch.device) -> dict:
    """RewardBench's way: input order, batches of 32 padded to the longest, bf16 weights. Returns the scores,
    real and padded tokens, the seconds and the ids it scored."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, dtype=torch.bfloat16, attn_implementation="sdpa"
    )
    model = model.to(device).eval()
    scores, ids, tokens, padded = [], [], 0, 0
    synchronize(device)
    start = time.perf_counter()
    for i in range(0, len(texts), PLAIN_BATCH):
        batch = tok(
            texts[i : i + PLAIN_BATCH],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        ).to(device)
        scores += model(**batch).logits[:, 0].float().cpu().tolist()
        mask = batch["attention_mask"]
        tokens, padded = tokens + int(mask.sum()), padded + mask.numel()
        ids += [row[m.bool()].tolist() for row, m in zip(batch["input_ids"].cpu(), mask.cpu(), strict=True)]
    seconds = time.perf_counter() - start
    del model
    free(device)
    return {"scores": scores, "tokens": tokens, "padded": padded, "seconds": seconds, "ids": ids}


def rmkit_score(path: Path, data: Path, out: Path, dtype: str, device: torch.device, options: dict) -> dict:
    """``rmkit.score`` of the pairs file ``data`` with the model loaded first (not timed); returns the scores
    (chosen, rejected, … in input order), the summary and the seconds."""
    rm = RewardModel.from_pretrained(path, dtype=dtype, device=device)
    synchronize(device)
    start = time.perf_counter()
    summary = rmkit.score(
        rm=rm, input=str(data), output=str(out), dtype=dtype, device=str(device), progress=False, **options
    )
    synchronize(device)
    seconds = time.perf_counter() - start
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    del rm
    free(device)
    scores = [s for r in rows for s in (r["score_chosen"], r["score_rejected"])]
    return {"scores": scores, "summary": summary, "seconds": seconds}


def write_pairs(path: Path, pairs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs), encoding="utf-8")
    return path


def orderings_kept(scores: list[float], reference: list[float]) -> float:
    """The share of pairs (chosen, rejected consecutive) ordered the same way in ``scores`` as in
    ``reference``."""
    n = len(reference) // 2
    return (
        sum(
            (scores[2 * i] > scores[2 * i + 1]) == (reference[2 * i] > reference[2 * i + 1]) for i in range(n)
        )
        / n
    )


def score_shape(shape: str, ctx: Context, result: dict) -> None:
    """Section 1 for one shape: the plain loop, rmkit bf16, rmkit fp32; figures go into ``result``."""
    args, device = ctx.args, ctx.device
    pairs = ctx.pairs[: (args.texts_8b if shape == "8b" else args.texts) // 2]
    n_plain = args.plain_texts_8b if shape == "8b" else args.plain_texts
    n_fp32 = (args.fp32_texts_8b if shape == "8b" else args.fp32_texts) // 2
    path = ctx.tmp / f"rm-{shape}"
    took = time.perf_counter()
    save_rm(path, shape, ctx.tokenizer, device)
    texts, ids, over = texts_and_ids(pairs, ctx.tokenizer, args.max_length)
    lengths = [len(x) for x in ids]
    flops = counted_flops(shape, ctx.tokenizer, lengths)
    result.update(
        texts=len(texts),
        tokens=sum(lengths),
        truncated=over,
        dense_params=_dense(meta_model(shape, ctx.tokenizer)),
        model_flops=flops,
        build_seconds=time.perf_counter() - took,
    )
    say(
        f"== score, {shape}: {result['dense_params'] / 1e6:,.1f}M non-embedding parameters, built and saved "
        f"in {result['build_seconds']:.0f} s; {len(texts)} texts, {sum(lengths):,} tokens (min {min(lengths)}, "
        f"median {sorted(lengths)[len(lengths) // 2]}, max {max(lengths)}; {over} over {args.max_length}, "
        f"cut), {flops / 1e12:,.1f} TFLOP a pass"
    )

    def rates(name: str, seconds: float, n: int, flops: float) -> dict:
        r = {
            "texts": n,
            "seconds": seconds,
            "tokens_per_s": sum(lengths[:n]) / seconds,
            "rows_per_s": n / seconds,
        }
        r["mfu"] = flops / seconds / ctx.peak if ctx.peak else None
        result[name] = r
        ctx.save()
        return r

    plain = guarded(
        f"score {shape} plain loop", lambda: plain_loop(path, texts[:n_plain], args.max_length, device)
    )
    if plain:
        n = len(plain["ids"])
        p = rates("plain", plain["seconds"], n, counted_flops(shape, ctx.tokenizer, lengths[:n]))
        differ = sum(a != b for a, b in zip(plain["ids"], ids, strict=False))
        p.update(
            padded_ratio=plain["padded"] / plain["tokens"], ids_differ=differ, real_tokens=plain["tokens"]
        )
        say(
            f"(i) plain transformers loop, bf16, batch {PLAIN_BATCH}, the first {n} texts: "
            f"{p['tokens_per_s']:,.0f} tokens/s, {p['rows_per_s']:,.1f} rows/s ({p['seconds']:.1f} s), MFU "
            f"{pct(p['mfu'])}; it pads to {p['padded_ratio']:.2f}x the real tokens; {differ} of {n} texts' ids "
            "differ from rmkit's"
        )
    data = write_pairs(ctx.tmp / f"pairs-{shape}.jsonl", pairs)
    options = {"max_length": args.max_length, **json.loads(args.rmkit_score_options)}
    bf16 = guarded(
        f"score {shape} rmkit bf16",
        lambda: rmkit_score(path, data, ctx.tmp / f"scores-{shape}-bf16.jsonl", "bf16", device, options),
    )
    if bf16:
        summary = bf16["summary"]
        r = rates("rmkit", bf16["seconds"], len(texts), flops)
        r["summary"] = {k: v for k, v in summary.items() if isinstance(v, (int, float, str))}
        effective = "effective " if summary.get("prefix_shared") else ""
        line = (
            f"(ii) rmkit score, bf16, all {len(texts)} texts: {r['tokens_per_s']:,.0f} tokens/s, "
            f"{r['rows_per_s']:,.1f} rows/s ({r['seconds']:.1f} s; rmkit counted {summary.get('tokens')} tokens, "
            f"{summary.get('prefix_shared', 0)} texts after a shared prefix), {effective}MFU {pct(r['mfu'])}"
        )
        if plain:
            n = len(plain["ids"])
            same = [i for i in range(n) if plain["ids"][i] == ids[i]]
            r["vs_plain"] = r["tokens_per_s"] / result["plain"]["tokens_per_s"]
            r["max_abs_delta_vs_plain"] = max(
                (abs(bf16["scores"][i] - plain["scores"][i]) for i in same), default=0.0
            )
            r["orderings_equal_to_plain"] = orderings_kept(bf16["scores"][:n], plain["scores"])
            line += (
                f"; {r['vs_plain']:.2f}x the plain loop's tokens/s; on its {n} texts max |Δscore| vs the loop "
                f"{r['max_abs_delta_vs_plain']:.3g} (both bf16), orderings equal {r['orderings_equal_to_plain']:.1%}"
            )
        say(line)
        if n_fp32:
            fp32 = guarded(
                f"score {shape} rmkit fp32", lambda: score_fp32(shape, ctx, path, pairs[:n_fp32], options)
            )
            if fp32:
                bf16_agreement(result, bf16["scores"][: 2 * n_fp32], fp32)
                ctx.save()


def bf16_agreement(result: dict, bf16: list[float], fp32: dict) -> None:
    """Print and record how far the bf16 scores of some pairs are from rmkit's fp32 scores of them."""
    n = len(bf16) // 2
    ref = fp32["scores"]
    margins = sorted(abs(ref[2 * i] - ref[2 * i + 1]) for i in range(n))
    r = result["fp32"] = {
        "pairs": n,
        "seconds": fp32["seconds"],
        "orderings_kept": orderings_kept(bf16, ref),
        "max_abs_delta": max(abs(a - b) for a, b in zip(bf16, ref, strict=True)),
        "median_abs_fp32_margin": margins[n // 2],
        "score_std": float(torch.tensor(ref).std()),
    }
    say(
        f"(iii) bf16 vs rmkit fp32 (TF32 off) on the first {n} pairs ({r['seconds']:.1f} s): orderings kept "
        f"{r['orderings_kept']:.2%} (target ≥ 99.5%), max |Δscore| {r['max_abs_delta']:.3g}; median |fp32 "
        f"margin| {r['median_abs_fp32_margin']:.3g}, score std {r['score_std']:.3g} (random weights: near ties)"
    )


def score_fp32(shape: str, ctx: Context, path: Path, pairs: list[dict], options: dict) -> dict:
    """rmkit fp32 scores of ``pairs``, with TF32 matrix products off (restored after)."""
    data = write_pairs(ctx.tmp / f"pairs-{shape}-fp32.jsonl", pairs)
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        return rmkit_score(path, data, ctx.tmp / f"scores-{shape}-fp32.jsonl", "fp32", ctx.device, options)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


# Kernel (or, on the CPU, operator) names by what they do, first match wins.
PROFILE_KINDS = (
    ("attention", ("flash", "fmha", "attention", "sdpa", "efficient")),
    (
        "matrix products",
        ("gemm", "cutlass", "xmma", "sm90", "cublas", "addmm", "aten::mm", "aten::bmm", "matmul"),
    ),
    ("copies", ("memcpy", "memset", "copy_", "aten::to", "pin_memory")),
)


def profile_section(ctx: Context, shape: str) -> dict:
    """Where rmkit scoring's time goes (section 3, ``profile``): ``--profile-texts`` texts of ``shape``
    scored under ``torch.profiler`` after a warm-up run; the device's busy time by kind of kernel
    (attention, matrix products, copies, the rest) against the wall time, whose remainder is the device
    waiting on the host (Python, reading, tokenising). Tokenising alone is timed apart, one thread, on the
    same texts: its rate against scoring's says whether it keeps up."""
    from torch.profiler import ProfilerActivity, profile

    args, device = ctx.args, ctx.device
    path = ctx.tmp / f"rm-{shape}"
    if not path.exists():
        save_rm(path, shape, ctx.tokenizer, device)
    pairs = ctx.pairs[: args.profile_texts // 2]
    data = write_pairs(ctx.tmp / f"pairs-{shape}-profile.jsonl", pairs)
    options = {"max_length": args.max_length, **json.loads(args.rmkit_score_options)}
    rm = RewardModel.from_pretrained(path, dtype="bf16", device=device)
    run = functools.partial(rmkit.score, rm=rm, input=str(data), dtype="bf16", progress=False, **options)
    run(output=str(ctx.tmp / "profile-warm.jsonl"))  # kernels chosen, allocator grown
    on_gpu = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    synchronize(device)
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        summary = run(output=str(ctx.tmp / "profile.jsonl"))
        synchronize(device)
        wall = time.perf_counter() - start
    busy: dict[str, float] = {}
    for event in prof.key_averages():
        if on_gpu and str(event.device_type).endswith("CUDA"):
            us = event.self_device_time_total
        elif not on_gpu and event.key.startswith("aten::"):
            us = event.self_cpu_time_total
        else:
            continue
        name = event.key.lower()
        kind = next((k for k, words in PROFILE_KINDS if any(w in name for w in words)), "other")
        busy[kind] = busy.get(kind, 0.0) + us / 1e6
    tokenizer = rm.example_tokenizer(max_length=args.max_length)
    examples = [_example(i, p) for i, p in enumerate(pairs)]
    start = time.perf_counter()
    tokenized = tokenizer.tokenize(examples)
    tokenize_s = time.perf_counter() - start
    tokens = sum(len(t.ids) for row in tokenized if row for t in row)
    del rm
    free(device)
    total_busy = sum(busy.values())
    r = {
        "texts": 2 * len(pairs),
        "wall_seconds": wall,
        "busy_seconds": busy,
        "idle_seconds": max(0.0, wall - total_busy) if on_gpu else None,
        "tokens": summary.get("tokens"),
        "tokenize_tokens_per_s": tokens / tokenize_s,
        "score_tokens_per_s": (summary.get("tokens") or 0) / wall,
    }
    parts = ", ".join(
        f"{k} {v:.2f} s ({v / wall:.0%})" for k, v in sorted(busy.items(), key=lambda kv: -kv[1])
    )
    idle = f"; the device idle {r['idle_seconds']:.2f} s ({r['idle_seconds'] / wall:.0%})" if on_gpu else ""
    say(
        f"== profile, {shape}, {r['texts']} texts in {wall:.2f} s: {'kernels' if on_gpu else 'operators'}: "
        f"{parts}{idle}. Tokenising alone (one thread): {r['tokenize_tokens_per_s']:,.0f} tokens/s, "
        f"{r['tokenize_tokens_per_s'] / max(r['score_tokens_per_s'], 1e-9):.1f}x scoring's "
        f"{r['score_tokens_per_s']:,.0f}"
    )
    return r


def train_section(ctx: Context) -> dict:
    """rmkit train vs TRL's RewardTrainer on the same pairs (see the module docstring)."""
    from rmkit.training import TrainConfig
    from rmkit.training.data import load_pairs

    args, device = ctx.args, ctx.device
    shape = args.train_shape
    path = ctx.tmp / f"rm-{shape}"
    if not path.is_dir():
        save_rm(path, shape, ctx.tokenizer, device)
    steps = args.warmup_steps + args.train_steps
    data = write_pairs(ctx.tmp / "train-pairs.jsonl", ctx.pairs[: steps * args.train_batch])
    config = TrainConfig(
        model=str(path),
        data=str(data),
        output_dir=str(ctx.tmp / "rmkit-train"),
        max_length=args.max_length,
        batch_size=args.train_batch,
        max_steps=steps,
        learning_rate=1e-5,
        lr_scheduler="constant",
        warmup_ratio=0.0,
        gradient_checkpointing=args.gradient_checkpointing == "on",
        logging_steps=1,
        device=str(device),
    )
    given = json.loads(args.rmkit_train_options)
    variants = given if isinstance(given, list) else [given]
    rendering = ExampleTokenizer(ctx.tokenizer, max_length=args.max_length)
    stats = RowCounts()
    train_pairs = load_pairs(str(data), rendering, config, stats)  # fills rmkit's token cache, too
    all_tokens = sum(len(p.chosen) + len(p.rejected) for p in train_pairs)
    result: dict = {
        "shape": shape,
        "pairs": len(train_pairs),
        "tokens": all_tokens,
        "truncated": stats.truncated,
        "batch": args.train_batch,
        "steps": steps,
        "warmup_steps": args.warmup_steps,
        "gradient_checkpointing": config.gradient_checkpointing,
        "rmkit_variants": variants,
    }
    say(
        f"== train, {shape}: {len(train_pairs)} pairs ({all_tokens:,} real tokens, {stats.truncated} cut to "
        f"{args.max_length}), batch {args.train_batch}, {steps} steps of which the first {args.warmup_steps} "
        f"are warm-up, gradient checkpointing {args.gradient_checkpointing}; rmkit runs with each of "
        f"{json.dumps(variants)}"
    )

    def report(name: str, run: Callable) -> None:
        """Run a trainer (``run()`` gives each step's sequence lengths and seconds) and print its figures."""
        step_lengths, step_seconds = run()
        w = args.warmup_steps
        timed = [n for step in step_lengths[w:] for n in step]
        tokens, seconds = sum(timed), sum(step_seconds[w:])
        forward = counted_flops(shape, ctx.tokenizer, timed)
        r = {
            "tokens_per_s": tokens / seconds,
            "seconds": seconds,
            "tokens": tokens,
            "all_steps_tokens_per_s": sum(map(sum, step_lengths)) / sum(step_seconds),
            "all_steps_seconds": sum(step_seconds),
            "step_seconds": step_seconds,
            "mfu": 3 * forward / seconds / ctx.peak if ctx.peak else None,
            "hfu_with_recompute": (4 if config.gradient_checkpointing else 3) * forward / seconds / ctx.peak
            if ctx.peak
            else None,
        }
        result[name] = r
        say(
            f"{name}: {r['tokens_per_s']:,.0f} tokens/s over steps {w + 1}-{len(step_seconds)} "
            f"({seconds:.1f} s), MFU {pct(r['mfu'])} (HFU with recompute {pct(r['hfu_with_recompute'])}); "
            f"all steps {r['all_steps_tokens_per_s']:,.0f} tokens/s ({r['all_steps_seconds']:.1f} s)"
        )

    names = []
    for k, variant in enumerate(variants):
        name = f"rmkit train {json.dumps(variant)}"
        run = dataclasses.replace(config, output_dir=str(ctx.tmp / f"rmkit-train-{k}"), **variant)
        guarded(name, lambda run=run, name=name: report(name, lambda: rmkit_steps(run, train_pairs)))
        names.append(name)
        free(device)
    guarded(
        "train TRL",
        lambda: report("TRL RewardTrainer", lambda: trl_steps(path, train_pairs, config, ctx.tmp, device)),
    )
    free(device)
    for name in names:
        if name in result and "TRL RewardTrainer" in result:
            ratio = result[name]["tokens_per_s"] / result["TRL RewardTrainer"]["tokens_per_s"]
            result.setdefault("rmkit_vs_trl", {})[name] = ratio
            say(f"{name} / TRL tokens/s: {ratio:.2f}x (target ≥ 2x)")
    return result


def rmkit_steps(config, pairs) -> tuple[list[list[int]], list[float]]:
    """Train with rmkit; returns each step's sequence lengths (its batches, rebuilt by ``epoch_batches`` and
    checked against the tokens it reports) and seconds (its train_log.jsonl, logged every step: the step's
    tokens over its tokens/s)."""
    from rmkit.training import train
    from rmkit.training.data import epoch_batches

    metrics = train(config)
    log = (Path(config.output_dir) / "train_log.jsonl").read_text(encoding="utf-8").splitlines()
    rates = [r["tokens_per_s"] for r in map(json.loads, log) if "tokens_per_s" in r]
    batches = epoch_batches(pairs.lengths, config, 0, 1)[: len(rates)]
    lengths = [[n for i in b for n in (len(pairs[i].chosen), len(pairs[i].rejected))] for b in batches]
    if sum(map(sum, lengths)) != metrics["train"]["tokens"] or len(rates) != config.max_steps:
        raise RuntimeError(
            f"rmkit's steps could not be rebuilt ({sum(map(sum, lengths))} tokens in {len(rates)} logged "
            f"steps; it reports {metrics['train']['tokens']} in {metrics['train']['steps']} steps)"
        )
    return lengths, [sum(x) / r for x, r in zip(lengths, rates, strict=True)]


def trl_steps(
    path: Path, pairs, config, tmp: Path, device: torch.device
) -> tuple[list[list[int]], list[float]]:
    """Train with TRL's RewardTrainer on rmkit's ids; returns each step's sequence lengths (its collator's
    masks) and seconds (between the ends of consecutive steps, synchronised)."""
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl import RewardConfig, RewardTrainer
    from trl.trainer.reward_trainer import DataCollatorForPreference

    lengths: list[list[int]] = []

    class Recording(DataCollatorForPreference):
        def torch_call(self, examples):
            out = super().torch_call(examples)
            lengths.append(out["attention_mask"].sum(1).tolist())
            return out

    ends: list[float] = []

    class Clock(TrainerCallback):
        def on_train_begin(self, *a, **k):
            synchronize(device)
            ends.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            synchronize(device)
            ends.append(time.perf_counter())

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
    dataset = Dataset.from_dict(
        {"chosen_ids": [p.chosen for p in pairs], "rejected_ids": [p.rejected for p in pairs]}
    )
    trl_args = RewardConfig(
        output_dir=str(tmp / "trl"),
        per_device_train_batch_size=config.batch_size,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type="constant",
        max_length=config.max_length,
        bf16=config.dtype == "bf16",
        gradient_checkpointing=config.gradient_checkpointing,
        use_cpu=device.type == "cpu",
        seed=config.seed,
        report_to="none",
        save_strategy="no",
        logging_steps=10**6,
        disable_tqdm=True,
    )
    trainer = RewardTrainer(
        model=model,
        args=trl_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        data_collator=Recording(pad_token_id=tokenizer.pad_token_id),
        callbacks=[Clock()],
    )
    trainer.train()
    seconds = [b - a for a, b in itertools.pairwise(ends)]
    del trainer, model
    return lengths[: len(seconds)], seconds  # the data loader may fetch one batch ahead


@dataclasses.dataclass
class Context:
    args: argparse.Namespace
    device: torch.device
    tmp: Path
    pairs: list[dict]
    tokenizer: object
    peak: float | None = None

    def save(self) -> None:
        """Write every figure so far to ``--out`` (a run cut short by a timeout still leaves its JSON)."""
        write_out(self.args.out)


RESULTS: dict = {}


def say(line: str) -> None:
    print(line, flush=True)


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def guarded(name: str, fn: Callable):
    """``fn()``, or ``None`` after printing and recording its error: one failing part never stops the rest."""
    try:
        return fn()
    except Exception as e:  # out of memory, a missing package, an option rmkit lacks: report, go on
        say(f"!! {name} failed: {type(e).__name__}: {e}")
        traceback.print_exc(limit=4)
        RESULTS.setdefault("errors", {})[name] = f"{type(e).__name__}: {e}"
        return None


def write_out(path: Path) -> None:
    path.write_text(json.dumps(RESULTS, indent=1, default=str), encoding="utf-8")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shape, few texts and steps")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--sections", default="matmul,score,profile,train", help="comma-separated subset")
    parser.add_argument("--profile-texts", type=int, default=2000, help="texts scored under the profiler")
    parser.add_argument("--shapes", default="1.5b,8b", help=f"comma-separated, of {', '.join(SHAPES)}")
    parser.add_argument("--texts", type=int, default=20000, help="texts to score (2 a pair)")
    parser.add_argument("--texts-8b", type=int, default=1000, help="texts to score with the 8B shape")
    parser.add_argument("--plain-texts", type=int, default=4000, help="the first texts the plain loop scores")
    parser.add_argument("--plain-texts-8b", type=int, default=640, help="the same for the 8B shape")
    parser.add_argument(
        "--fp32-texts", type=int, default=400, help="the first texts rmkit scores in fp32 too"
    )
    parser.add_argument("--fp32-texts-8b", type=int, default=64, help="the same for the 8B shape")
    parser.add_argument("--max-length", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=VOCAB, help="most tokens of the BPE tokenizer")
    parser.add_argument("--matmul-size", type=int, default=8192)
    parser.add_argument("--train-shape", default="1.5b", choices=list(SHAPES))
    parser.add_argument("--train-steps", type=int, default=20, help="timed steps, after the warm-up steps")
    parser.add_argument("--warmup-steps", type=int, default=2, help="first steps of each trainer not timed")
    parser.add_argument("--train-batch", type=int, default=16, help="pairs a step, both trainers")
    parser.add_argument("--gradient-checkpointing", choices=["on", "off"], default="on")
    parser.add_argument("--rmkit-score-options", default="{}", help="more rmkit.score options (JSON)")
    parser.add_argument(
        "--rmkit-train-options",
        default=json.dumps(TRAIN_VARIANTS),
        help="TrainConfig options of each rmkit run (a JSON object, or a list of them)",
    )
    parser.add_argument("--data-dir", type=Path, default=bench_score.DATA)
    default_out = (
        Path(os.environ["OUT"]) / "bench_gpu.json" if os.environ.get("OUT") else Path("bench_gpu.json")
    )
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args()
    if args.dry_run:
        given = {a.split("=")[0].lstrip("-").replace("-", "_") for a in sys.argv[1:] if a.startswith("--")}
        for key, value in DRY_RUN.items():
            if key not in given:
                setattr(args, key, value)
    return args


def main() -> int:
    args = parse_args()
    device = torch.device(args.device)
    sections = set(args.sections.split(","))
    RESULTS.update(
        command=sys.argv,
        args={k: str(v) for k, v in vars(args).items()},
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        versions={
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "transformers": transformers.__version__,
            "rmkit": rmkit.__version__,
        },
    )
    say(f"device {RESULTS['device']}; versions {RESULTS['versions']}; sections {args.sections}")
    started = time.perf_counter()
    if "matmul" in sections:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        rate = guarded("matmul", lambda: matmul_rate(device, dtype, args.matmul_size))
        if rate:
            RESULTS["matmul"] = {"flops_per_s": rate, "size": args.matmul_size, "dtype": str(dtype)}
            say(f"== matmul: torch.mm {args.matmul_size}² {dtype}: {rate / 1e12:,.2f} TFLOP/s (the MFU peak)")
        write_out(args.out)
    peak = RESULTS.get("matmul", {}).get("flops_per_s")

    bench_score.DATA = args.data_dir  # load_pairs reads the shared files from there
    n_pairs = (
        max(args.texts, args.texts_8b, 2 * args.train_batch * (args.warmup_steps + args.train_steps)) + 1
    ) // 2
    # 4,096 pairs hold every distinct pair of the data (632) several times: the tokenizer learns them all
    cycle = bench_score.load_pairs(max(n_pairs, 4096))
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        took = time.perf_counter()
        corpus = {  # the distinct texts (the pairs are cycled)
            render_plain([*p["prompt"], {"role": "assistant", "content": p[side]}]): None
            for p in cycle
            for side in ("chosen", "rejected")
        }
        tokenizer = train_tokenizer(list(corpus), args.vocab, tmp / "tokenizer")
        say(
            f"tokenizer: byte-level BPE of {len(tokenizer)} tokens trained in {time.perf_counter() - took:.1f} s"
        )
        ctx = Context(args, device, tmp, cycle[:n_pairs], tokenizer, peak)
        if "score" in sections:
            RESULTS["score"] = {}
            for shape in args.shapes.split(","):
                result = RESULTS["score"][shape] = {}
                guarded(f"score {shape}", functools.partial(score_shape, shape, ctx, result))
                free(device)
                ctx.save()
        if "profile" in sections:
            shape = args.shapes.split(",")[0]
            done = guarded("profile", lambda: profile_section(ctx, shape))
            if done:
                RESULTS["profile"] = {shape: done}
            write_out(args.out)
        if "train" in sections:
            done = guarded("train", lambda: train_section(ctx))
            if done:
                RESULTS["train"] = done
            write_out(args.out)
    RESULTS["seconds"] = time.perf_counter() - started
    write_out(args.out)
    say(f"done in {RESULTS['seconds']:.0f} s; figures in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
