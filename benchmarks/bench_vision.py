"""Scoring image pairs: rmkit against the plain loop of align-anything's and the model cards' code, in one run.

The data: ``--pairs`` preference pairs (default 96), each a question about one image of a random size
(56x56 up to 448x448, so 4 to 256 image tokens, as a Qwen2-VL RM reads pictures up to 448x448; the images of
the public preference sets, COCO's 640x480 among them, are larger still, and Qwen2-VL's processor keeps
them near their size; ``--max-side 224``: thumbnails, up to 64 tokens) and two answers of 3 to 120 words:
rows of mixed lengths, as real data has. The model: a Qwen2-VL built from a config (``--hidden`` 256, ``--layers`` 4 in both the
language model and the vision encoder, seeded random weights: speed does not depend on training) with a
value head, saved and read as rmkit reads a Skywork-VL-Reward-style checkpoint.

- rmkit: ``VisionKind.score`` on the examples (the chunk tokenised and its images processed, rows sorted
  by length into token-budget batches, image patches counted in the budget, scores back in input order),
  each pair's prompt with its image run once through the language model and both answers after it where
  the prefix-sharing rule says it pays (:mod:`rmkit.vlm_sharing`); and the same with ``prefix_sharing`` off
  (each row whole, the image still encoded once a pair).
- The plain loop: the pairs in input order, a fixed batch of ``--batch`` pairs (chosen and rejected rows,
  right-padded to the longest), one image-processor call a batch, the same placeholder expansion (the
  processor cannot be built without torchvision), the VLM's forward and the value head read at each row's
  last real token (align-anything reads ``[:, -1]``, which scores the shorter answer at a pad token; the
  loop here reads the right token so that the scores can be compared).

Each runs ``--repeats`` times (3), alternated, and its best time counts (wall, and the process's CPU time, which
other work on a shared machine disturbs less; on a machine with more work than cores, ``--threads 1``: the
threads of one operation then no longer wait for each other, a wait that costs a small model's passes more
than their arithmetic). Printed: pairs/s of each, their ratios, the pairs that shared
their prompt, and the largest score difference from the plain loop (fp32).

Training (``--train-pairs``, default 32): the forward and backward passes of a training step over the same
pairs in micro-batches of ``--batch`` pairs: each pair's prompt and image run once (``--prefix-sharing auto``,
rmkit's step), each pair's image encoded once but its rows whole (``--prefix-sharing off``), and the image
once a row (the unshared step), alternated, best of ``--repeats``: pairs/s of each, their ratios, the largest
difference of loss and of any gradient from the unshared step's.

    python benchmarks/bench_vision.py [--pairs 96] [--batch 8] [--hidden 256] [--layers 4] [--repeats 3]
        [--train-pairs 32] [--max-side 448] [--threads N]
"""

from __future__ import annotations

import argparse
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

from rmkit.data import RowCounts  # noqa: E402
from rmkit.data.images import Picture  # noqa: E402
from rmkit.data.vision import VisionExample  # noqa: E402
from rmkit.kinds import Reading  # noqa: E402
from rmkit.kinds.vision import VisionKind  # noqa: E402
from rmkit.training.config import TrainConfig  # noqa: E402
from rmkit.training.vision import VisionPair, pair_scores, plan_pairs  # noqa: E402
from rmkit.vlm import VisionRewardModel  # noqa: E402


def pairs(n: int, side: int = 224) -> list[VisionExample]:
    """``n`` image pairs of mixed lengths (module docstring), images of sides 56 to ``side`` pixels."""
    rng = random.Random(0)

    def words(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k))

    rows = []
    for i in range(n):
        size = (rng.randrange(56, side + 1), rng.randrange(56, side + 1))
        image = Picture(picture(rng.choice(list(COLOURS)), size, seed=i), f"{i}.png")
        prompt = [
            {
                "role": "user",
                "content": [{"type": "image"}, {"type": "text", "text": words(rng.randrange(4, 30))}],
            }
        ]
        answers = [words(rng.randrange(3, 121)), words(rng.randrange(3, 121))]
        rows.append(VisionExample(i, prompt, answers, True, images=[image]))
    return rows


@torch.inference_mode()
def plain_loop(rm: VisionRewardModel, examples: list[VisionExample], batch: int) -> list[float]:
    """The model cards' loop (module docstring): input order, fixed batches, padded to the longest, on
    transformers' own layers (rmkit computes Qwen's patch embedding as a matrix product: the stock Conv3d
    here)."""
    scores: list[float] = []
    with stock(rm.model) as model:
        for start in range(0, len(examples), batch):
            scores += plain_batch(rm, model, examples[start : start + batch])
    return scores


def plain_batch(rm: VisionRewardModel, model, part: list[VisionExample]) -> list[float]:
    """One batch of :func:`plain_loop`: one processor call, right padding, the head at each last real token."""
    tokenizer, image_id, merge = rm.tokenizer, rm.tokens.image_id, rm.processor.merge_size
    texts = [
        tokenizer.apply_chat_template([*ex.prompt, {"role": "assistant", "content": r}], tokenize=False)
        for ex in part
        for r in ex.responses
    ]
    images = [p.image for ex in part for p in ex.images for _ in ex.responses]
    done = rm.processor(images=images, return_tensors="pt")
    counts = (done["image_grid_thw"].prod(-1) // merge**2).tolist()
    rows = []
    for text, count in zip(texts, counts, strict=True):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        at = ids.index(image_id)
        rows.append(ids[:at] + [image_id] * count + ids[at + 1 :])
    width = max(map(len, rows))
    ids = torch.tensor([r + [rm.pad_token_id] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    hidden = model.model(
        input_ids=ids,
        attention_mask=mask,
        pixel_values=done["pixel_values"],
        image_grid_thw=done["image_grid_thw"],
        mm_token_type_ids=(ids == image_id).int(),
    ).last_hidden_state
    last = mask.sum(-1) - 1
    return rm.head(hidden[torch.arange(len(rows)), last].float()).squeeze(-1).tolist()


def train_pass(rm: VisionRewardModel, pairs: list, batch: int, mode: str) -> tuple[float, dict]:
    """Forward and backward over ``pairs`` in micro-batches of ``batch`` (gradients summed) in ``mode``
    (module docstring): the summed loss and the gradients."""
    config = TrainConfig(model="-", data="-", output_dir="-")
    rm.zero_grad()
    total = 0.0
    for start in range(0, len(pairs), batch):
        part = pairs[start : start + batch]
        plan = plan_pairs(rm, part, "auto") if mode == "shared prefix" else None
        loss, _, _ = pair_scores(rm, part, config, shared=mode != "unshared", plan=plan)
        loss.sum().backward()
        total += float(loss.detach().sum())
    return total, {n: p.grad.clone() for n, p in rm.named_parameters() if p.grad is not None}


def bench_training(rm: VisionRewardModel, examples: list[VisionExample], batch: int, repeats: int) -> None:
    pairs = [VisionPair(*rows) for rows in rm.example_tokenizer().tokenize(examples)]
    shared = sum(len(plan_pairs(rm, pairs[s : s + batch], "auto")[0]) for s in range(0, len(pairs), batch))
    rm.train()
    modes = ("shared prefix", "image once", "unshared")
    times, cpu, results = dict.fromkeys(modes, float("inf")), dict.fromkeys(modes, float("inf")), {}
    for _ in range(repeats):
        for mode in modes:
            t0, c0 = time.perf_counter(), time.process_time()
            results[mode] = train_pass(rm, pairs, batch, mode)
            times[mode] = min(times[mode], time.perf_counter() - t0)
            cpu[mode] = min(cpu[mode], time.process_time() - c0)
    rm.eval()
    n = len(pairs)
    print(f"training, {n} pairs in micro-batches of {batch}, {shared} sharing their prompt's pass:")
    labels = {"shared prefix": "prompt and image run once", "image once": "image encoded once a pair",
              "unshared": "image encoded once a row"}  # fmt: skip
    loss_u, grads_u = results["unshared"]
    for mode in modes:
        loss, grads = results[mode]
        grad = max(float((g - grads_u[k]).abs().max()) for k, g in grads.items())
        print(
            f"  {labels[mode]:26s} {n / times[mode]:8.2f} pairs/s ({times[mode]:.2f} s wall, {cpu[mode]:.2f} s CPU): "
            f"{times['unshared'] / times[mode]:.2f}x wall, {cpu['unshared'] / cpu[mode]:.2f}x CPU time of the "
            f"unshared step; loss difference "
            f"{abs(loss - loss_u):.2e}, largest gradient difference {grad:.2e}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=96)
    parser.add_argument("--batch", type=int, default=8, help="the plain loop's pairs a batch")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument(
        "--max-side",
        type=int,
        default=448,
        help="images' largest side in pixels (448: up to 256 image tokens; 224: up to 64)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs of each, alternated; the best counts")
    parser.add_argument(
        "--train-pairs", type=int, default=32, help="pairs of the training comparison (0: none)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's; 1 on a loaded machine)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        backbone = make_vlm(
            Path(tmp) / "vlm", hidden=args.hidden, layers=args.layers, max_pixels=args.max_side**2
        )
        VisionRewardModel.from_pretrained(backbone).save_pretrained(Path(tmp) / "rm")
        rm = VisionRewardModel.from_pretrained(Path(tmp) / "rm")
    examples, kind = pairs(args.pairs, args.max_side), VisionKind()
    tokens = sum(len(r.ids) for row in rm.example_tokenizer().tokenize(examples) for r in row)
    plain_loop(rm, examples[: args.batch], args.batch)  # warm-up both
    list(kind.score(rm, examples[: args.batch], Reading()))

    def score(sharing: bool, stats: RowCounts) -> list[float]:
        return [s for _, raw in kind.score(rm, examples, Reading(prefix_sharing=sharing), stats) for s in raw]

    runs = {
        "rmkit": lambda stats: score(True, stats),
        "rmkit, no prefix sharing": lambda stats: score(False, stats),
        "plain loop": lambda stats: plain_loop(rm, examples, args.batch),
    }
    best = dict.fromkeys(runs, (float("inf"), float("inf")))
    scores: dict[str, list[float]] = {}
    counts: dict[str, RowCounts] = {}
    for _ in range(args.repeats):  # alternated, the best of each: a shared machine's noise hits all alike
        for name, run in runs.items():
            counts[name] = RowCounts()
            t0, c0 = time.perf_counter(), time.process_time()
            scores[name] = run(counts[name])
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    stats = counts["rmkit"]
    print(
        f"{args.pairs} image pairs, {tokens} tokens (image tokens expanded), {torch.get_num_threads()} threads; "
        f"{stats.shared // 2} pairs shared their prompt's pass ({stats.prefix_tokens} tokens not run again); "
        f"a pass's fixed cost measured at {rm.pass_cost():.0f} tokens' worth"
    )
    t_plain, c_plain = best["plain loop"]
    for name, (wall, cpu) in best.items():
        diff = float(np.max(np.abs(np.asarray(scores[name]) - np.asarray(scores["plain loop"]))))
        print(
            f"{name:25s} {args.pairs / wall:8.2f} pairs/s ({wall:.2f} s wall, {cpu:.2f} s CPU): "
            f"{t_plain / wall:.2f}x wall, {c_plain / cpu:.2f}x CPU time of the plain loop "
            f"(batch {args.batch} pairs); largest score difference {diff:.2e}"
        )
    print_work(rm, examples, args.batch, lambda: score(True, RowCounts()))
    if args.train_pairs:
        bench_training(rm, examples[: args.train_pairs], args.batch, args.repeats)


def print_work(rm: VisionRewardModel, examples: list[VisionExample], batch: int, ours) -> None:
    """The work each does, which bounds the ratio: the language model's tokens, padding included (rmkit's
    counted as its passes run, after ``ours()``; the plain loop's from its batches), and the patches through the
    vision encoder (the plain loop encodes each pair's image once a row)."""
    rows = [r for row in rm.example_tokenizer().tokenize(examples) for r in row]
    plain = sum(
        len(rows[s : s + 2 * batch]) * max(len(r.ids) for r in rows[s : s + 2 * batch])
        for s in range(0, len(rows), 2 * batch)
    )
    counted: list[int] = []
    rm.run = lambda ids, *a, **k: counted.append(ids.numel()) or type(rm).run(rm, ids, *a, **k)
    try:
        ours()
    finally:
        del rm.run
    patches = sum(len(r.patches) for r in rows[::2])  # each pair's two rows hold the same image
    print(
        f"work: language-model tokens run, padding included: rmkit {sum(counted)}, plain loop {plain} "
        f"({plain / sum(counted):.2f}x); vision-encoder patches: rmkit {patches}, plain loop {2 * patches} (2x)"
    )


if __name__ == "__main__":
    main()
