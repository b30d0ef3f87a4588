"""``rmkit eval --suite vl-rewardbench`` against VL-RewardBench's own way of scoring an RM, in one run.

The data: ``--items`` rows in the benchmark's shape (``data.jsonl`` of its GitHub release: ``id``,
``image_path`` beside the file, ``query``, two ``response`` s, ``human_ranking``), spread over the six data
sets as the benchmark's 1,247 rows are (general, hallucination, reasoning); the images drawn in code at
random sizes (56 to 448 pixels a side, so 4 to 256 image tokens), the queries 8 to 60 words and the
answers 20 to 300 words, as its long descriptive answers are. The model: a Qwen2-VL built from a config
(``--hidden`` 256, ``--layers`` 4, seeded random weights) with a value head, saved as a Skywork-VL-Reward-
style checkpoint.

- rmkit: ``rmkit.evaluate(..., suite="vl-rewardbench")`` whole: the model loaded, the file read and its images
  opened, the answers of each row after one pass of its image through the encoder, token-budget batches,
  the official numbers and their intervals (``--bootstrap`` 100), the files written.
- The benchmark's own loop, as its reward-model evaluation runs (VL-RewardBench's ``inference_hf.py`` and
  MM-RLHF-RewardBench's ``eval_mm_reward_bench.py`` walk the rows one by one): the model loaded, then each row
  in file order, its image opened and processed once, each answer rendered with the chat template and run
  alone (batch 1), the value head read at the last token; then ``cal.py``'s rule (agree over agree + reject,
  overall and the macro mean of three groups).

After a warm-up of both, each runs ``--repeats`` times (2), alternated, the best wall and CPU time counting
(CPU time, all threads, is steadier on a shared machine). Printed: rows/s of each, the ratios, the largest
difference of any answer's score, and both runs' overall and macro accuracy.

    python benchmarks/bench_vl_suite.py [--items 64] [--hidden 256] [--layers 4] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import WORDS  # noqa: E402
from vision_models import COLOURS, make_vlm, picture, stock  # noqa: E402

import rmkit  # noqa: E402
from rmkit.vlm import VisionRewardModel  # noqa: E402

# The benchmark's rows a data set (its test split: 1,247 rows), and the prefix of their ids.
SETS = {"vlfeedback": ("LRVInstruction-", 0.35), "wildvision-battle": ("wildvision_", 0.07),
        "povid": ("hallucination_pair-", 0.04), "rlhf-v": ("RLHF-V-", 0.06),
        "rlaif-v": ("RLAIF-V-", 0.18), "reasoning_tasks": ("mathverse_", 0.30)}  # fmt: skip
GROUPS = {"vlfeedback": "general", "wildvision-battle": "general", "povid": "hallucination",
          "rlhf-v": "hallucination", "rlaif-v": "hallucination", "reasoning_tasks": "reasoning"}  # fmt: skip


def write_benchmark(folder: Path, n: int) -> Path:
    """``n`` rows in VL-RewardBench's ``data.jsonl`` shape with drawn images beside it (module docstring)."""
    rng = random.Random(0)

    def words(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k))

    names, weights = list(SETS), [w for _, w in SETS.values()]
    rows = []
    for i in range(n):
        dataset = rng.choices(names, weights)[0]
        row_id = f"{SETS[dataset][0]}{i}"
        path = f"images/{dataset}/{row_id}.png"
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        size = (rng.randrange(56, 449), rng.randrange(56, 449))
        picture(rng.choice(list(COLOURS)), size, seed=i).save(folder / path)
        better = rng.randrange(2)
        rows.append({"id": row_id, "image_path": path, "query": words(rng.randrange(8, 61)),
                     "response": [words(rng.randrange(20, 301)), words(rng.randrange(20, 301))],
                     "human_ranking": [better, 1 - better]})  # fmt: skip
    data = folder / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data


def rmkit_run(model: Path, data: Path, out: Path, bootstrap: int) -> tuple[list[list[float]], dict]:
    metrics = rmkit.evaluate(
        model=[str(model)], data=[str(data)], output_dir=str(out), bootstrap=bootstrap, plots=False,
        overwrite=True,
    )  # fmt: skip
    scores = [json.loads(x)["scores"] for x in (out / "scores.jsonl").read_text().splitlines()]
    return scores, next(iter(metrics["suite"]["models"].values()))


@torch.inference_mode()
def own_loop(model: Path, data: Path) -> tuple[list[list[float]], dict]:
    """The benchmark's own loop (module docstring): rows one by one, each answer alone, on transformers' own
    layers (rmkit computes Qwen's patch embedding as a matrix product: the stock Conv3d here)."""
    rm = VisionRewardModel.from_pretrained(model)
    with stock(rm.model):
        return own_rows(rm, data)


def own_rows(rm: VisionRewardModel, data: Path) -> tuple[list[list[float]], dict]:
    from PIL import Image

    tokenizer, image_id, merge = rm.tokenizer, rm.tokens.image_id, int(rm.processor.merge_size)
    scores, agree, judged = [], {}, {}
    for line in data.read_text().splitlines():
        row = json.loads(line)
        image = Image.open(data.parent / row["image_path"]).convert("RGB")
        done = rm.processor(images=[image], return_tensors="pt")
        count = int(done["image_grid_thw"].prod() // merge**2)
        user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": row["query"]}]}
        pair = []
        for answer in row["response"]:
            text = tokenizer.apply_chat_template(
                [user, {"role": "assistant", "content": answer}], tokenize=False
            )
            ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            at = ids.index(image_id)
            ids = torch.tensor([ids[:at] + [image_id] * count + ids[at + 1 :]])
            hidden = rm.model.model(
                input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=done["pixel_values"],
                image_grid_thw=done["image_grid_thw"], mm_token_type_ids=(ids == image_id).int(),
            ).last_hidden_state  # fmt: skip
            pair.append(float(rm.head(hidden[0, -1].float())))
        scores.append(pair)
        better = row["human_ranking"].index(0)
        group = GROUPS[row["image_path"].split("/")[1]]
        if pair[0] != pair[1]:  # cal.py: only agree and reject count
            judged[group] = judged.get(group, 0) + 1
            agree[group] = agree.get(group, 0) + int(pair[better] > pair[1 - better])
    overall = sum(agree.values()) / sum(judged.values())
    groups = ("general", "hallucination", "reasoning")
    macro = sum(agree[g] / judged[g] for g in groups) / 3 if all(g in judged for g in groups) else None
    return scores, {"score": overall, "macro": macro}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each, alternated; the best counts")
    parser.add_argument("--bootstrap", type=int, default=100, help="rmkit's bootstrap resamples")
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        backbone = make_vlm(tmp / "vlm", hidden=args.hidden, layers=args.layers, max_pixels=448 * 448)
        VisionRewardModel.from_pretrained(backbone).save_pretrained(tmp / "rm")
        data = write_benchmark(tmp / "bench", args.items)
        own_loop(tmp / "rm", write_benchmark(tmp / "warm", 2))  # warm-up of both
        rmkit_run(tmp / "rm", tmp / "warm" / "data.jsonl", tmp / "eval", 10)
        t_rmkit = t_own = c_rmkit = c_own = float("inf")
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            ours, official = rmkit_run(tmp / "rm", data, tmp / "eval", args.bootstrap)
            t_rmkit, c_rmkit = min(t_rmkit, time.perf_counter() - t0), min(c_rmkit, time.process_time() - c0)
            t0, c0 = time.perf_counter(), time.process_time()
            theirs, own = own_loop(tmp / "rm", data)
            t_own, c_own = min(t_own, time.perf_counter() - t0), min(c_own, time.process_time() - c0)
    diff = float(np.max(np.abs(np.asarray(ours) - np.asarray(theirs))))
    n = args.items
    print(f"{n} VL-RewardBench-shaped rows (two answers each), {torch.get_num_threads()} threads")
    print(
        f"rmkit eval --suite: {n / t_rmkit:7.2f} rows/s ({t_rmkit:.2f} s wall, {c_rmkit:.2f} s CPU; loading, files in)"
    )
    print(f"benchmark's loop:   {n / t_own:7.2f} rows/s ({t_own:.2f} s wall, {c_own:.2f} s CPU)")
    print(f"ratio rmkit / own loop: {t_own / t_rmkit:.2f}x wall, {c_own / c_rmkit:.2f}x CPU time")
    print(f"largest score difference: {diff:.2e}")
    print(f"overall accuracy: rmkit {official['score']:.4f}, own loop {own['score']:.4f}")
    print(f"macro accuracy:   rmkit {official['macro']}, own loop {own['macro']}")


if __name__ == "__main__":
    main()
