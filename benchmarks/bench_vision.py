"""Scoring image pairs: rmkit against the plain loop of align-anything's and the model cards' code, in one run.

The data: ``--pairs`` preference pairs (default 96), each a question about one image of a random size
(56x56 up to 224x224, so 4 to 64 image tokens) and two answers of 3 to 120 words: rows of mixed lengths,
as real data has. The model: a Qwen2-VL built from a config (``--hidden`` 256, ``--layers`` 4 in both the
language model and the vision encoder, seeded random weights: speed does not depend on training) with a
value head, saved and read as rmkit reads a Skywork-VL-Reward-style checkpoint.

- rmkit: ``VisionKind.score`` on the examples (the chunk tokenised and its images processed, rows sorted
  by length into token-budget batches, image patches counted in the budget, scores back in input order).
- The plain loop: the pairs in input order, a fixed batch of ``--batch`` pairs (chosen and rejected rows,
  right-padded to the longest), one image-processor call a batch, the same placeholder expansion (the
  processor cannot be built without torchvision), the VLM's forward and the value head read at each row's
  last real token (align-anything reads ``[:, -1]``, which scores the shorter answer at a pad token; the
  loop here reads the right token so that the scores can be compared).

Each runs ``--repeats`` times (3), alternated, and its best time counts (wall, and the process's CPU time, which
other work on a shared machine disturbs less). Printed: pairs/s of each, their ratios,
and the largest score difference between the two (fp32).

Training (``--train-pairs``, default 32): the forward and backward passes of a training step over the same
pairs in micro-batches of ``--batch`` pairs, each pair's image encoded once (rmkit's step) and once a row
(the unshared step), alternated, best of ``--repeats``: pairs/s of each, their ratio, the largest difference
of loss.

    python benchmarks/bench_vision.py [--pairs 96] [--batch 8] [--hidden 256] [--layers 4] [--repeats 3]
        [--train-pairs 32]
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
from vision_models import COLOURS, make_vlm, picture  # noqa: E402

from rmkit.data.images import Picture  # noqa: E402
from rmkit.data.vision import VisionExample  # noqa: E402
from rmkit.kinds import Reading  # noqa: E402
from rmkit.kinds.vision import VisionKind  # noqa: E402
from rmkit.training.config import TrainConfig  # noqa: E402
from rmkit.training.vision import VisionPair, pair_scores  # noqa: E402
from rmkit.vlm import VisionRewardModel  # noqa: E402


def pairs(n: int) -> list[VisionExample]:
    """``n`` image pairs of mixed lengths (module docstring)."""
    rng = random.Random(0)

    def words(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k))

    rows = []
    for i in range(n):
        size = (rng.randrange(56, 225), rng.randrange(56, 225))
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
    """The model cards' loop (module docstring): input order, fixed batches, padded to the longest."""
    tokenizer, image_id, merge = rm.tokenizer, rm.tokens.image_id, rm.tokens.merge
    scores: list[float] = []
    for start in range(0, len(examples), batch):
        part = examples[start : start + batch]
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
        hidden = rm.model.model(
            input_ids=ids,
            attention_mask=mask,
            pixel_values=done["pixel_values"],
            image_grid_thw=done["image_grid_thw"],
            mm_token_type_ids=(ids == image_id).int(),
        ).last_hidden_state
        last = mask.sum(-1) - 1
        scores += rm.head(hidden[torch.arange(len(rows)), last].float()).squeeze(-1).tolist()
    return scores


def train_pass(rm: VisionRewardModel, pairs: list, batch: int, shared: bool) -> float:
    """Forward and backward over ``pairs`` in micro-batches of ``batch`` (gradients summed); the summed loss."""
    config = TrainConfig(model="-", data="-", output_dir="-")
    rm.zero_grad()
    total = 0.0
    for start in range(0, len(pairs), batch):
        loss, _, _ = pair_scores(rm, pairs[start : start + batch], config, shared=shared)
        loss.sum().backward()
        total += float(loss.detach().sum())
    return total


def bench_training(rm: VisionRewardModel, examples: list[VisionExample], batch: int, repeats: int) -> None:
    pairs = [VisionPair(*rows) for rows in rm.example_tokenizer().tokenize(examples)]
    rm.train()
    times = {True: float("inf"), False: float("inf")}
    losses = {}
    for _ in range(repeats):
        for shared in (True, False):
            t0 = time.perf_counter()
            losses[shared] = train_pass(rm, pairs, batch, shared)
            times[shared] = min(times[shared], time.perf_counter() - t0)
    rm.eval()
    n = len(pairs)
    print(f"training, {n} pairs in micro-batches of {batch}:")
    print(f"  image encoded once a pair: {n / times[True]:8.2f} pairs/s ({times[True]:.2f} s)")
    print(f"  image encoded once a row:  {n / times[False]:8.2f} pairs/s ({times[False]:.2f} s)")
    print(
        f"  ratio: {times[False] / times[True]:.2f}x; loss difference {abs(losses[True] - losses[False]):.2e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=96)
    parser.add_argument("--batch", type=int, default=8, help="the plain loop's pairs a batch")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each, alternated; the best counts")
    parser.add_argument(
        "--train-pairs", type=int, default=32, help="pairs of the training comparison (0: none)"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        backbone = make_vlm(Path(tmp) / "vlm", hidden=args.hidden, layers=args.layers, max_pixels=224 * 224)
        VisionRewardModel.from_pretrained(backbone).save_pretrained(Path(tmp) / "rm")
        rm = VisionRewardModel.from_pretrained(Path(tmp) / "rm")
    examples, kind = pairs(args.pairs), VisionKind()
    tokens = sum(len(r.ids) for row in rm.example_tokenizer().tokenize(examples) for r in row)
    plain_loop(rm, examples[: args.batch], args.batch)  # warm-up both
    list(kind.score(rm, examples[: args.batch], Reading()))

    best = {"rmkit": (float("inf"), float("inf")), "plain": (float("inf"), float("inf"))}
    for _ in range(args.repeats):  # alternated, the best of each: a shared machine's noise hits both alike
        for name in best:
            t0, c0 = time.perf_counter(), time.process_time()
            if name == "rmkit":
                ours = [s for _, raw in kind.score(rm, examples, Reading()) for s in raw]
            else:
                theirs = plain_loop(rm, examples, args.batch)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    (t_rmkit, c_rmkit), (t_plain, c_plain) = best["rmkit"], best["plain"]
    diff = float(np.max(np.abs(np.asarray(ours) - np.asarray(theirs))))
    print(
        f"{args.pairs} image pairs, {tokens} tokens (image tokens expanded), {torch.get_num_threads()} threads"
    )
    print(f"rmkit:      {args.pairs / t_rmkit:8.2f} pairs/s ({t_rmkit:.2f} s wall, {c_rmkit:.2f} s CPU)")
    print(
        f"plain loop: {args.pairs / t_plain:8.2f} pairs/s ({t_plain:.2f} s wall, {c_plain:.2f} s CPU), batch {args.batch} pairs"
    )
    print(f"throughput ratio rmkit / plain: {t_plain / t_rmkit:.2f}x wall, {c_plain / c_rmkit:.2f}x CPU time")
    print(f"largest score difference: {diff:.2e}")
    if args.train_pairs:
        bench_training(rm, examples[: args.train_pairs], args.batch, args.repeats)


if __name__ == "__main__":
    main()
