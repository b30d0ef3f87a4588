"""Scoring video pairs: rmkit against the plain loop of align-anything's TV2T RM, in one run.

The data: ``--pairs`` preference pairs (default 24), each a question about its own MPEG-4 video written with
PyAV (1 to 4 s at 10 frames a second, 112x112 or 112x168, so 4 to 8 frames kept at 2 a second: 32 to 96
video tokens) and two answers of 3 to 60 words. The model: a Qwen2-VL built from a config (``--hidden``,
``--layers``, seeded random weights) with Qwen's video token and a value head, saved and read back.

- rmkit: ``VisionKind.score`` on the examples (frames sampled and decoded, patches laid out, rows sorted by
  length into token-budget batches, each pair's video through the vision encoder once, scores in input order).
- The plain loop: the same rows (rmkit's tokeniser: the same frames, patches and ids, so the scores compare)
  in input order, a fixed batch of ``--batch`` pairs (chosen and rejected rows right-padded to the longest),
  each row with its own copy of its video's patches (the encoder runs once a row), the VLM's forward and the
  value head at each row's last real token.

Each runs ``--repeats`` times, alternated, the best counting (wall and the process's CPU time). Printed:
pairs/s of each, their ratios, and the largest score difference (fp32).

    python benchmarks/bench_video.py [--pairs 24] [--batch 4] [--hidden 128] [--layers 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import WORDS  # noqa: E402
from vision_models import make_vlm, stock  # noqa: E402

from rmkit.data.rows import RowReader  # noqa: E402
from rmkit.data.video import open_video  # noqa: E402
from rmkit.data.vision import VisionExample  # noqa: E402
from rmkit.kinds import Reading  # noqa: E402
from rmkit.kinds.vision import VisionKind  # noqa: E402
from rmkit.vlm import VisionRewardModel  # noqa: E402


def write_video(path: Path, frames: int, size: tuple[int, int], seed: int) -> Path:
    """An MPEG-4 video of ``frames`` noisy frames at 10 a second."""
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
        for _ in range(frames):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def pairs(n: int, folder: Path) -> list[VisionExample]:
    """``n`` video pairs of mixed lengths (module docstring)."""
    rng = random.Random(0)

    def words(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k))

    rows = []
    for i in range(n):
        size = rng.choice([(112, 112), (168, 112)])
        video = write_video(folder / f"{i}.mp4", 10 * rng.randrange(1, 5), size, i)
        clip = open_video(str(video), RowReader("bench", i), "video", base=None)
        parts = [{"type": "video"}, {"type": "text", "text": words(rng.randrange(4, 20))}]
        answers = [words(rng.randrange(3, 61)), words(rng.randrange(3, 61))]
        rows.append(VisionExample(i, [{"role": "user", "content": parts}], answers, True, videos=[clip]))
    return rows


@torch.inference_mode()
def plain_loop(rm: VisionRewardModel, examples: list[VisionExample], batch: int) -> list[float]:
    """align-anything's loop (module docstring): input order, fixed batches, each row with its own video."""
    config, scores = rm.model.config, []
    with stock(rm.model) as model:  # transformers' own layers (rmkit's patch embedding is a matrix product)
        for start in range(0, len(examples), batch):
            scores += plain_batch(rm, model, config, examples[start : start + batch])
    return scores


def plain_batch(rm: VisionRewardModel, model, config, part: list[VisionExample]) -> list[float]:
    """One batch of :func:`plain_loop`, each row with its own video, right-padded."""
    rows = [r for row in rm.example_tokenizer().tokenize(part) for r in row]
    width = max(len(r.ids) for r in rows)
    ids = torch.tensor([r.ids + [rm.pad_token_id] * (width - len(r.ids)) for r in rows])
    mask = torch.tensor([[1] * len(r.ids) + [0] * (width - len(r.ids)) for r in rows])
    hidden = model.model(
        input_ids=ids,
        attention_mask=mask,
        pixel_values_videos=torch.from_numpy(np.concatenate([r.videos.patches for r in rows])),
        video_grid_thw=torch.tensor([g for r in rows for g in r.videos.grids]),
        mm_token_type_ids=2 * (ids == config.video_token_id).int(),
    ).last_hidden_state
    last = mask.sum(-1) - 1
    return rm.head(hidden[torch.arange(len(rows)), last].float()).squeeze(-1).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=24)
    parser.add_argument("--batch", type=int, default=4, help="the plain loop's pairs a batch")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each, alternated; the best counts")
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        backbone = make_vlm(
            Path(tmp) / "vlm", hidden=args.hidden, layers=args.layers, max_pixels=168 * 112, video=True
        )
        VisionRewardModel.from_pretrained(backbone).save_pretrained(Path(tmp) / "rm")
        rm = VisionRewardModel.from_pretrained(Path(tmp) / "rm")
        examples, kind = pairs(args.pairs, Path(tmp)), VisionKind()
        prepared = rm.example_tokenizer().tokenize(examples)
        tokens = sum(len(r.ids) for row in prepared for r in row)
        video_tokens = sum(r.ids.count(rm.model.config.video_token_id) for row in prepared for r in row)
        plain_loop(rm, examples[: args.batch], args.batch)  # warm-up both
        list(kind.score(rm, examples[: args.batch], Reading()))
        best = {"rmkit": (float("inf"), float("inf")), "plain": (float("inf"), float("inf"))}
        for _ in range(args.repeats):
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
        f"{args.pairs} video pairs, {tokens} tokens ({video_tokens} of video), {torch.get_num_threads()} threads"
    )
    print(f"rmkit:      {args.pairs / t_rmkit:8.2f} pairs/s ({t_rmkit:.2f} s wall, {c_rmkit:.2f} s CPU)")
    print(
        f"plain loop: {args.pairs / t_plain:8.2f} pairs/s ({t_plain:.2f} s wall, {c_plain:.2f} s CPU), batch {args.batch} pairs"
    )
    print(f"throughput ratio rmkit / plain: {t_plain / t_rmkit:.2f}x wall, {c_plain / c_rmkit:.2f}x CPU time")
    print(f"largest score difference: {diff:.2e}")


if __name__ == "__main__":
    main()
