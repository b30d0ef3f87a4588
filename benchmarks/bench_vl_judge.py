"""A generating image judge on VL-RewardBench-shaped rows: rmkit against the benchmark's own loop, in one run.

The data: ``--items`` rows in the benchmark's shape (:func:`bench_vl_suite.write_benchmark`: drawn images of 56
to 448 pixels a side, queries of 8 to 60 words, answers of 20 to 300 words). The judge: a Qwen2-VL built from a
config (``--hidden`` 64, ``--layers`` 2, seeded random weights) read with ``--judge generate --judge-template
vl-rewardbench``, greedy, ``--max-new-tokens`` 40. A random model writes no verdict, so its generation config
carries a ``sequence_bias`` that starts every judgment with "Therefore Answer 2 is better" (the rest is the
model's own); both sides generate with that same config.

- rmkit: the kind's scoring of the suite's items (``kinds.load`` and ``kind.score``: the prompts rendered and
  tokenised in chunks, each row's image processed and encoded once, left-padded batches of similar length
  through transformers' ``generate``), the verdicts parsed and decided.
- The benchmark's own loop (VL-RewardBench's ``inference.py``, its server replaced by transformers): each row in
  file order, its order the same seeded coin, its image processed, the prompt (its text, then the image)
  rendered and run alone through ``generate`` (batch 1), then ``cal.py``'s pattern.

After a warm-up of both, each runs ``--repeats`` times (1), the best wall and CPU time counting. Printed: rows/s
of each, the ratios, how many judgments are the same text, how many verdicts agree, and both overall
accuracies (agree over judged, ``cal.py``'s).

    python benchmarks/bench_vl_judge.py [--items 16] [--hidden 64] [--layers 2] [--max-new-tokens 40]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_vl_suite import make_vlm, write_benchmark  # noqa: E402

from rmkit import kinds  # noqa: E402
from rmkit.data.judging import TEMPLATES, Judge  # noqa: E402
from rmkit.kinds.base import Reading  # noqa: E402
from rmkit.suites.vision import VLRewardBench  # noqa: E402

VERDICT = "Therefore Answer 2 is better"
PATTERN = (
    r"(?:Overall Judgment|Therefore)\s*.*\s*-*\s*Answer\s*(\d+)\s*is\s*(?:the\s*)?(?:slightly\s*)?better"
)


def forced(path: Path) -> None:
    """Give the model at ``path`` a generation config that starts each judgment with :data:`VERDICT`."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    end = tok("<|im_end|>\n", add_special_tokens=False)["input_ids"][-1]
    verdict = [end, *tok(VERDICT, add_special_tokens=False)["input_ids"]]
    bias = [[verdict[: k + 1], 100.0] for k in range(1, len(verdict))]
    (path / "generation_config.json").write_text(json.dumps({"sequence_bias": bias}))


def settings(tokens: int) -> dict:
    return {
        "readout": "generate",
        "template": "vl-rewardbench",
        "max_new_tokens": tokens,
        "on_parse_failure": "mask",
    }


def rmkit_run(model: Path, data: Path, tokens: int) -> tuple[list[str], list[float]]:
    """rmkit's judgments and each item's outcome (1 agree, 0 reject, nan neither)."""
    from rmkit.metrics.vision_benchmarks import vl_verdict

    kind, judge = kinds.load(str(model), {"judge": settings(tokens)})
    items = list(VLRewardBench().items(str(data), "vl", None, None))
    texts, outcome = [], []
    for item, (_, raw) in zip(items, kind.score(judge, (i.example for i in items), Reading()), strict=True):
        texts += [t for r in raw for t in r.texts]
        v, better = kind.values(judge, raw), item.facts["better"]
        outcome.append(vl_verdict(v[better], v[1 - better]))
    return texts, outcome


@torch.inference_mode()
def own_loop(model: Path, data: Path, tokens: int) -> tuple[list[str], list[float]]:
    """The benchmark's own loop (module docstring)."""
    from PIL import Image
    from transformers import AutoImageProcessor, AutoTokenizer, Qwen2VLForConditionalGeneration

    tok = AutoTokenizer.from_pretrained(str(model))
    vlm = Qwen2VLForConditionalGeneration.from_pretrained(str(model)).eval()
    processor = AutoImageProcessor.from_pretrained(str(model), backend="pil")
    image_id, judge = vlm.config.image_token_id, Judge.of(settings(tokens))
    texts, outcome = [], []
    for row_number, line in enumerate(data.read_text().splitlines(), start=1):
        row = json.loads(line)
        ((i, j),) = judge.orders(row_number)
        shown = TEMPLATES["vl-rewardbench"].text.format(
            question=row["query"], answer_a=row["response"][i], answer_b=row["response"][j]
        )
        image = Image.open(data.parent / row["image_path"]).convert("RGB")
        done = processor(images=[image], return_tensors="pt")
        parts = [{"type": "text", "text": shown}, {"type": "image"}]
        text = tok.apply_chat_template(
            [{"role": "user", "content": parts}], tokenize=False, add_generation_prompt=True
        )
        ids = tok(text, add_special_tokens=False)["input_ids"]
        at = ids.index(image_id)
        ids = torch.tensor([ids[:at] + [image_id] * int(done["image_grid_thw"].prod() // 4) + ids[at + 1 :]])
        out = vlm.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=done["pixel_values"],
            image_grid_thw=done["image_grid_thw"], mm_token_type_ids=(ids == image_id).int(),
            max_new_tokens=tokens, do_sample=False, pad_token_id=tok.pad_token_id,
        )  # fmt: skip
        said = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        texts.append(said)
        m = re.search(PATTERN, said.replace("\n", "").replace("*", ""), re.IGNORECASE)
        rejected = (i, j).index(row["human_ranking"].index(1)) + 1  # the rejected answer's number as shown
        outcome.append(float("nan") if m is None else float(int(m.group(1)) != rejected))
    return texts, outcome


def accuracy(outcome: list[float]) -> float | None:
    judged = [o for o in outcome if o == o]
    return sum(judged) / len(judged) if judged else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each, alternated; the best counts")
    args = parser.parse_args()
    tokens = args.max_new_tokens
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = make_vlm(tmp / "vlm", hidden=args.hidden, layers=args.layers, max_pixels=448 * 448)
        forced(model)
        data = write_benchmark(tmp / "bench", args.items)
        warm = write_benchmark(tmp / "warm", 2)
        rmkit_run(model, warm, tokens), own_loop(model, warm, tokens)  # warm-up of both
        shutil.rmtree(tmp / "warm")
        t_rmkit = t_own = c_rmkit = c_own = float("inf")
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            ours, ours_out = rmkit_run(model, data, tokens)
            t_rmkit, c_rmkit = min(t_rmkit, time.perf_counter() - t0), min(c_rmkit, time.process_time() - c0)
            t0, c0 = time.perf_counter(), time.process_time()
            theirs, own_out = own_loop(model, data, tokens)
            t_own, c_own = min(t_own, time.perf_counter() - t0), min(c_own, time.process_time() - c0)
    n = args.items
    same = sum(a == b for a, b in zip(ours, theirs, strict=True))
    agree = sum(a == b or (a != a and b != b) for a, b in zip(ours_out, own_out, strict=True))
    print(
        f"{n} VL-RewardBench-shaped rows, one greedy judgment each ({tokens} new tokens), {torch.get_num_threads()} threads"
    )
    print(
        f"rmkit (kind.score): {n / t_rmkit:6.2f} rows/s ({t_rmkit:.2f} s wall, {c_rmkit:.2f} s CPU; loading in)"
    )
    print(f"benchmark's loop:   {n / t_own:6.2f} rows/s ({t_own:.2f} s wall, {c_own:.2f} s CPU)")
    print(f"ratio rmkit / own loop: {t_own / t_rmkit:.2f}x wall, {c_own / c_rmkit:.2f}x CPU time")
    print(f"same judgment text: {same} of {n}; same outcome (agree, reject or neither): {agree} of {n}")
    print(f"overall accuracy: rmkit {accuracy(ours_out)}, own loop {accuracy(own_out)}")


if __name__ == "__main__":
    main()
