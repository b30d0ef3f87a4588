"""The options of ``rmkit train``: one dataclass, the home of every training option and its help text."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

from rmkit.data import first_record
from rmkit.defaults import BATCH_TOKENS
from rmkit.errors import RMKitError
from rmkit.files import claim_output_dir
from rmkit.options import ModelOptions, PairOptions, RuntimeOptions, StepOptions, option

TRACKERS = ("tensorboard", "wandb")
# Options that fix the batches of each step: a resumed run must share them with the checkpoint's run.
DATA_ORDER_OPTIONS = (
    "data",
    "eval_data",
    "eval_split",
    "batch_size",
    "group_by_length",
    "seed",
    "max_length",
)


@dataclass(kw_only=True)
class TrainConfig(PairOptions, RuntimeOptions, ModelOptions, StepOptions):
    """Options of ``rmkit train``."""

    model: str = option(help="backbone or reward model to start from (path or hub name)", path="model")
    data: str = option(
        help="training data: preference pairs, step-labelled solutions or rated responses (.json, .jsonl, .csv, "
        ".parquet or save_to_disk directory)",
        aliases=["--input"],
    )
    output_dir: str = option(help="where the final model, metrics.json, train_log.jsonl and checkpoints go")
    eval_data: str | None = option(
        None,
        help="held-out data to evaluate on at the end (and every --eval-steps); without it or --eval-split "
        "nothing is evaluated after training, and metrics.json reports the last steps' training figures",
    )
    eval_split: float = option(
        0.0, help="without --eval-data, hold out this fraction of --data for evaluation (e.g. 0.05)"
    )
    template: str = option(
        "auto",
        help="rendering: the tokenizer's chat template when it has one, or rmkit's plain one",
        choices=["auto", "chat", "plain"],
    )
    max_length: int = option(1024, help="longest sequence in tokens (capped at what the model takes)")
    truncation: str = option(
        "left",
        help="over-long rows: 'left' cuts the prompt from the left, once for both answers of a pair (so the "
        "longer fits), 'drop' drops the pair",
        choices=["left", "drop"],
    )
    use_margin: bool = option(True, help="use the data's per-pair 'margin' column in the loss when present")
    objective: str = option(
        "reward",
        help="what to train: 'reward', a reward model (preference pairs, step labels or ratings, as the data "
        "holds); 'cost', a safety cost model (Safe RLHF) from the safety labels of PKU-SafeRLHF or BeaverTails "
        "rows (safe responses to negative costs, unsafe ones to positive, the safer of a pair lower)",
        choices=["reward", "cost"],
    )
    loss: str = option(
        "bt",
        help="'bt': Bradley-Terry on end scores (with --objective cost: safe-rlhf's sequence-wise loss); "
        "'token_wise': safe-rlhf's per-token variant",
        choices=["bt", "token_wise"],
    )
    cost_scale: float = option(
        1.0,
        help="--objective cost: the weight of the two sign terms of the loss (align-anything's scale_coeff; "
        "safe-rlhf: 1)",
    )
    score_reg: float = option(
        0.0, help="score regularisation coefficient λ of λ·mean(r²) (safe-rlhf's regularization)"
    )
    center_rewards: float = option(0.0, help="reward centering coefficient c of c·mean((r_c + r_r)²)")
    epochs: float = option(1.0, help="passes over the training data")
    max_steps: int = option(0, help="stop after this many optimizer steps (0: run the epochs)")
    batch_size: int = option(32, help="pairs per optimizer step, over all processes (global batch)")
    micro_batch_size: int | None = option(
        None, help="most pairs per forward pass on one process (gradient accumulation beyond it)"
    )
    micro_batch_tokens: int | None = option(
        None,
        help="most padded tokens (chosen + rejected) per forward pass on one process (default: none on "
        "the CPU; on a GPU what its free memory allows)",
    )
    group_by_length: bool = option(True, help="batch pairs of similar length together (less padding)")
    freeze: list[str] | None = option(
        None,
        help="vision-language RMs: parts not trained, 'vision' (the vision encoder) and 'projector' (its merger "
        "into the language model), matched by each family's module names; audio RMs: 'audio' (the audio "
        "encoder) and 'projector'",
    )
    attributes: list[str] | None = option(
        None,
        help="rated data: the rating columns to train one output each on (default: HelpSteer2's, or all)",
    )
    standardize_ratings: bool = option(
        False,
        help="rated data: train on each attribute's ratings standardised (mean 0, std 1 over the training "
        "set); rmkit maps the outputs back to the ratings' scale",
    )
    first_error_only: bool = option(
        False,
        help="process RMs: train on a solution's steps up to its first wrong one only (what ProcessBench-style "
        "labels imply)",
    )
    token_cache: bool = option(
        True,
        help="keep the tokenised pairs in a memory-mapped cache entry that later runs with the same inputs "
        "reuse (--no-token-cache: tokenise every run, into a temporary entry)",
    )
    cache_dir: str | None = option(
        None, help="directory of the token cache (default: OUTPUT_DIR/token-cache); share it between runs"
    )
    tokenize_workers: int | None = option(
        None, help="processes that tokenise the training data (default: the cores, at most 8)"
    )
    learning_rate: float = option(2e-5, help="peak learning rate of AdamW", aliases=["--lr"])
    weight_decay: float = option(0.0, help="AdamW weight decay (never on biases and norm weights)")
    adam_betas: list[float] = option([0.9, 0.999], help="AdamW betas")
    lr_scheduler: str = option("cosine", help="decay after warm-up", choices=["cosine", "linear", "constant"])
    warmup_ratio: float = option(0.03, help="fraction of the steps spent warming the learning rate up")
    max_grad_norm: float = option(1.0, help="clip gradients to this norm (0: no clipping)")
    dtype: str = option(
        "fp32",
        help="precision: fp32; bf16 (autocast over fp32 weights); bf16-weights (bf16 weights, activations and "
        "gradients, with fp32 master weights in the optimizer; under --fsdp the fp32 shards are the masters). "
        "The score head stays fp32 in each",
        choices=["fp32", "bf16", "bf16-weights"],
    )
    gradient_checkpointing: bool = option(False, help="recompute activations in backward to save memory")
    packing: str = option(
        "auto",
        help="a micro-batch's sequences packed end to end without pads (causal decoders; pairs with the bt "
        "loss, PRM solutions, rated responses): 'auto' where attention skips across sequences "
        "(flash_attention_2/3, flex_attention), 'on' always, 'off'",
        choices=["auto", "on", "off"],
    )
    dropout: bool = option(False, help="keep the model's dropout (disabled by default, as in TRL)")
    lora: bool = option(False, help="train LoRA adapters (peft) plus the whole score head; merged at save")
    lora_r: int = option(16, help="LoRA rank")
    lora_alpha: int = option(32, help="LoRA alpha")
    lora_dropout: float = option(0.0, help="LoRA dropout")
    lora_target_modules: list[str] = option(
        ["all-linear"], help="modules that get LoRA adapters ('all-linear': every linear layer but the head)"
    )
    seed: int = option(42, help="seed of the head's init, the eval split and the batch order")
    logging_steps: int = option(10, help="log training metrics every N steps")
    eval_steps: int = option(
        0, help="evaluate on the held-out data every N steps (0: at the end only; needs held-out data)"
    )
    eval_batch_tokens: int = option(BATCH_TOKENS, help="padded-token budget of an eval batch")
    prefix_sharing: str = option(
        "auto",
        help="a pair's chosen and rejected answers run after one pass over the tokens they share (exact; causal "
        "decoders under SDPA or eager attention, the bt loss, unpacked): 'auto' where it saves a quarter of a "
        "pair's padded tokens and 16 or more prompt tokens, 'on' for every pair, 'off'. Held-out eval shares "
        "unless 'off'",
        choices=["auto", "on", "off"],
    )
    save_steps: int = option(0, help="write a checkpoint every N steps (0: none)")
    save_total_limit: int | None = option(None, help="keep at most this many checkpoints (oldest deleted)")
    resume: str | None = option(
        None,
        help="continue from a checkpoint: a path, or 'auto' (the flag alone) for the latest in --output-dir",
        const="auto",
    )
    overwrite: bool = option(
        False, help="write over an --output-dir that holds another run's files (without it: refused)"
    )
    report_to: list[str] = option([], help="trackers to log to: tensorboard, wandb (when installed)")
    progress: bool = option(True, help="show a progress bar on stderr (the main process)")
    fsdp: str = option(
        "off",
        help="under torchrun, shard the model with PyTorch FSDP2 instead of replicating it (DDP): "
        "'full_shard' shards parameters, gradients and optimizer state (as DeepSpeed ZeRO-3), "
        "'shard_grad_op' keeps parameters gathered between forward and backward (ZeRO-2)",
        choices=["off", "full_shard", "shard_grad_op"],
    )

    def validate(self) -> None:
        """Refuse option values that cannot work, before anything is loaded."""
        if self.judge is not None:
            raise RMKitError(
                "--judge reads a causal LM as a judge for score, rank, eval and serve; train trains a score head"
            )
        if self.batch_size < 1:
            raise RMKitError(f"--batch-size must be at least 1, got {self.batch_size}")
        if isinstance(self.prefix_sharing, bool):  # its earlier form, a switch of the held-out eval's sharing
            self.prefix_sharing = "auto" if self.prefix_sharing else "off"
        if self.prefix_sharing not in ("auto", "on", "off"):
            raise RMKitError(f"--prefix-sharing is auto, on or off, got {self.prefix_sharing!r}")
        for name in self.report_to:
            if name not in TRACKERS:
                raise RMKitError(f"--report-to: unknown tracker '{name}' (expected tensorboard or wandb)")
            if importlib.util.find_spec(name) is None:
                raise RMKitError(
                    f"--report-to {name}: the '{name}' package is not installed (pip install {name})"
                )
        if self.logging_steps < 1:
            raise RMKitError(f"--logging-steps must be at least 1, got {self.logging_steps}")
        if not 0.0 <= self.eval_split < 1.0:
            raise RMKitError(f"--eval-split must be in [0, 1), got {self.eval_split}")
        if self.eval_steps and not (self.eval_data or self.eval_split):
            raise RMKitError(
                f"--eval-steps {self.eval_steps} evaluates on held-out data: give --eval-data or --eval-split"
            )
        if len(self.adam_betas) != 2:
            raise RMKitError(f"--adam-betas takes two numbers, got {self.adam_betas}")
        if self.lora and self.fsdp != "off":
            raise RMKitError(
                f"--lora with --fsdp {self.fsdp} is not supported: LoRA trains few parameters, so shard "
                "nothing (drop --fsdp) or train the full model sharded (drop --lora)"
            )
        for path in (self.data, self.eval_data):  # readable, before any model loads
            if path:
                first_record(path)
        if os.environ.get("RANK", "0") == "0" and not self.resume:  # one process looks, before any writes
            claim_output_dir(self.output_dir, overwrite=self.overwrite, resumable=True, own=("token-cache",))
