"""Scoring audio pairs: rmkit against the plain loop of align-anything's TA2T code, in one run.

The data: ``--pairs`` preference pairs (default 24), each a question about one clip (a sine of 1 to
``--seconds`` s, so 25 to 250 audio tokens at 10 s) and two answers of 3 to 120 words: rows of mixed lengths.
The model: a Qwen2-Audio built from a config (``--hidden`` 256 and ``--layers`` 4 in both the audio encoder and
the language model, 128 mel bins, a window of ``--seconds`` s; seeded random weights: speed does not depend
on training) with a value head, saved and read as rmkit reads its checkpoint.

- rmkit: ``AudioKind.score`` on the examples (the clips through the feature extractor once an example, rows
  sorted by length into token-budget batches, each example's clip encoded once for both answers, scores
  back in input order).
- The plain loop: the pairs in input order, a fixed batch of ``--batch`` pairs (chosen and rejected rows,
  right-padded to the longest), one ``Qwen2AudioProcessor`` call a batch (each row with its clip, so each
  clip runs through the encoder once a row), transformers' forward with ``input_features`` and
  ``feature_attention_mask``, and the value head read at each row's last real token.

Each runs ``--repeats`` times (2), alternated, and its best time counts (wall and the process's CPU time).
Printed: pairs/s of each, their ratios, and the largest score difference between the two (fp32).

    python benchmarks/bench_audio.py [--pairs 24] [--batch 8] [--hidden 256] [--layers 4] [--seconds 10]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from audio_models import make_alm, sine  # noqa: E402
from conftest import WORDS  # noqa: E402

from rmkit.alm import AudioRewardModel  # noqa: E402
from rmkit.data.audio import AudioExample  # noqa: E402
from rmkit.data.sounds import Sound  # noqa: E402
from rmkit.kinds import Reading  # noqa: E402
from rmkit.kinds.audio import AudioKind  # noqa: E402


def pairs(n: int, seconds: int) -> list[AudioExample]:
    """``n`` audio pairs of mixed lengths (module docstring)."""
    rng = random.Random(0)

    def words(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k))

    out = []
    for i in range(n):
        clip = Sound(sine(rng.uniform(1, seconds), rng.choice([220, 440, 880])), 16000, f"{i}.wav")
        prompt = [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": words(8)}]}]
        answers = [words(rng.randint(3, 120)), words(rng.randint(3, 120))]
        out.append(AudioExample(i + 1, prompt, answers, True, audios=[clip]))
    return out


@torch.inference_mode()
def plain_loop(rm: AudioRewardModel, processor, examples: list[AudioExample], batch: int) -> list[float]:
    """The plain loop (module docstring): scores in input order, chosen then rejected for each pair."""
    render = rm.example_tokenizer().render
    scores = []
    for start in range(0, len(examples), batch):
        part = examples[start : start + batch]
        texts = [render(ex.prompt, a) + rm.tokenizer.eos_token for ex in part for a in ex.responses]
        clips = [ex.audios[0].at(16000) for ex in part for _ in ex.responses]
        done = processor(text=texts, audio=clips, sampling_rate=16000, padding=True, add_special_tokens=False,
                         return_tensors="pt")  # fmt: skip
        hidden = rm.model.model(
            input_ids=done["input_ids"], attention_mask=done["attention_mask"],
            input_features=done["input_features"], feature_attention_mask=done["feature_attention_mask"],
        ).last_hidden_state  # fmt: skip
        last = done["attention_mask"].sum(-1) - 1  # right padding: the last real token
        scores += rm.head(hidden[torch.arange(len(last)), last]).squeeze(-1).tolist()
    return scores


def timed(run) -> tuple[float, float, list[float]]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = run()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=24)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    from transformers import Qwen2AudioProcessor

    with tempfile.TemporaryDirectory() as tmp:
        backbone = make_alm(
            Path(tmp) / "alm", hidden=args.hidden, layers=args.layers, mel=128, seconds=args.seconds
        )
        torch.manual_seed(1)
        AudioRewardModel.from_pretrained(backbone).save_pretrained(Path(tmp) / "rm")
        rm = AudioRewardModel.from_pretrained(Path(tmp) / "rm")
        processor = Qwen2AudioProcessor.from_pretrained(str(Path(tmp) / "rm"))
    examples = pairs(args.pairs, args.seconds)
    kind, reading = AudioKind(), Reading()

    def rmkit_run() -> list[float]:
        return [s for _, raw in kind.score(rm, examples, reading) for s in raw]

    def plain_run() -> list[float]:
        return plain_loop(rm, processor, examples, args.batch)

    best = {"rmkit": (float("inf"),) * 2, "plain": (float("inf"),) * 2}
    scores: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for name, run in (("rmkit", rmkit_run), ("plain", plain_run)):
            wall, cpu, scores[name] = timed(run)
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    diff = max(abs(a - b) for a, b in zip(scores["rmkit"], scores["plain"], strict=True))
    for name, (wall, cpu) in best.items():
        print(f"{name}: {args.pairs / wall:.2f} pairs/s wall, {args.pairs / cpu:.2f} pairs/s of CPU time")
    print(f"ratio rmkit/plain: {best['plain'][0] / best['rmkit'][0]:.2f}x wall, "
          f"{best['plain'][1] / best['rmkit'][1]:.2f}x CPU time")  # fmt: skip
    print(f"largest score difference: {diff:.2e}")


if __name__ == "__main__":
    main()
