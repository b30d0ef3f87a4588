"""The options of ``rmkit score``, ``rank``, ``convert``, ``inspect`` and ``demo``: one dataclass a command,
each field an option with its help text (:mod:`rmkit.options`). They live apart from the code that runs
them, which loads torch and transformers, so that ``--help`` and a wrong option answer at once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from rmkit.data import detect_format, first_record
from rmkit.data.vision import detect_vision
from rmkit.defaults import CHUNK_ROWS, DTYPE_NAMES
from rmkit.errors import RMKitError
from rmkit.options import (
    DataOptions,
    InferenceOptions,
    ModelOptions,
    RuntimeOptions,
    ScaleOptions,
    StepOptions,
    option,
)


@dataclass(kw_only=True)
class PassCostOptions:
    """What a pass costs beyond its tokens, which decides how rows of mixed lengths are cut into passes
    (``score``, ``rank``, ``eval``; ``serve`` has its own)."""

    batch_cost: float | None = option(
        None,
        help="fixed cost of one forward pass in tokens' worth of work, which decides when rows of mixed lengths "
        "(and a VLM's shared prompts and the answers after them) are cut into more passes; default: text rows "
        "fill the budget, a VLM measures it at start (give it where two runs must match bit for bit: a resume)",
    )

    def check_batch_cost(self) -> None:
        """Refuse a pass cost that is not a positive number of tokens."""
        if self.batch_cost is not None and not self.batch_cost > 0:
            raise RMKitError(
                f"--batch-cost is tokens' worth of work a pass and must be positive, got {self.batch_cost}"
            )


@dataclass(kw_only=True)
class ScoreConfig(
    DataOptions, RuntimeOptions, InferenceOptions, PassCostOptions, ScaleOptions, ModelOptions, StepOptions
):
    """Options of ``rmkit score``; skipped rows go to ``--rejects``, by default ``{stem}.rejects.jsonl``."""

    model: str = option(
        path="model", help="reward model: an rmkit or any one-label HF sequence classifier (dir or hub name)"
    )
    input: str = option(
        help="data file (.json, .jsonl, .csv, .parquet) or save_to_disk directory", aliases=["--data"]
    )
    output: str = option(help="where to write the scores: .json (a JSON list) or .jsonl (one object a line)")
    template: str | None = option(
        None,
        help="rendering: the model's own setting when not given, else auto, chat or plain",
        choices=["auto", "chat", "plain"],
    )
    max_length: int | None = option(None, help="longest sequence in tokens; the model's limit when not given")
    truncation: str = option(
        "left",
        help="over-length rows: 'left' cuts the prompt from the left (keeps the response and its end; the "
        "answers of one prompt keep one cut prompt, the longest fitting), 'drop' leaves the row out; both are "
        "counted",
        choices=["left", "drop"],
    )
    chunk_rows: int = option(CHUNK_ROWS, help="rows tokenised, length-sorted and checkpointed together")
    read_ahead: bool | None = option(
        None,
        help="read and tokenise the next chunk while the model scores this one (default: on a GPU, where "
        "the CPU is otherwise idle)",
    )
    compile: bool = option(
        False,
        help="torch.compile the model first: 10-30 s once, then faster batches; for long runs of models "
        "with hidden size 512 and up",
    )
    prefix_sharing: bool = option(
        True,
        help="score the answers of one prompt (pairs, best-of-N) after one pass over the prompt, on causal "
        "models (exact; off: every answer with its full sequence)",
    )
    share_across_rows: bool = option(
        False,
        help="rows of one response that repeat a prompt (RL rollouts) share its pass within a chunk, as a "
        "best-of-N row's answers do (exact to float rounding; the last bits then depend on --chunk-rows)",
    )
    top_k: int | None = option(None, help="best-of-N rows: keep the k best in 'ranking'")
    min_score: float | None = option(
        None, help="best-of-N rows: keep in 'ranking' only responses scoring at least this"
    )
    normalize: bool = option(
        False,
        help="standardise scores with the model's stored mean and std (rmkit's, safe-rlhf's, OpenRLHF's)",
    )
    resume: bool = option(False, help="continue a killed run from its part files instead of starting over")
    cost_model: str | None = option(
        None,
        help="a safety cost model scored beside --model: each row gets its cost columns too, and the summary "
        "the share of pairs whose chosen answer is also the safer (costs less)",
        path="model",
    )
    ranks: ClassVar[bool] = False  # rmkit rank: only best-of-N rows
    command: ClassVar[str] = "score"  # the name its messages speak in

    def validate(self) -> None:
        """Refuse, before any model loads, an output that is neither JSON nor JSONL, an input that cannot be
        read, and options that would do nothing for its rows: ``rank`` of rows that are not best-of-N, and a
        ranking's cut (``--top-k``, ``--min-score``) of rows that have no ranking."""
        if Path(self.output).suffix not in (".json", ".jsonl"):
            raise RMKitError(f"--output must end in .json or .jsonl, got '{self.output}'")
        self.replica_range()
        self.check_batch_cost()
        if self.cost_model and self.backend == "ray":
            raise RMKitError(
                "--cost-model runs in one process or under torchrun for now, not with --backend ray"
            )
        fmt = self.row_format()
        if fmt is None or fmt == "responses":
            return
        if self.ranks:
            raise RMKitError(
                f"rmkit rank ranks best-of-N rows (a prompt and a list 'responses'); {self.input} holds "
                f"'{fmt}' rows: score them with rmkit score"
            )
        cuts = [f for f, v in (("--top-k", self.top_k), ("--min-score", self.min_score)) if v is not None]
        if cuts:
            raise RMKitError(
                f"{' and '.join(cuts)} cut the ranking of best-of-N rows; {self.input} holds '{fmt}' rows, "
                "which have none"
            )

    def row_format(self) -> str | None:
        """The format named, else the one detected from the first record (so every process reads rows
        alike); ``None`` when none is (the normaliser then names the row)."""
        if self.format:
            return self.format
        first = first_record(self.input)
        if first is None:
            return None
        record = {(self.columns or {}).get(k, k): v for k, v in first.items()}
        try:
            return detect_vision(record) or detect_format(record)
        except ValueError:
            return None

    progress: bool = option(True, help="show a progress bar on stderr (only when it is a terminal)")


@dataclass(kw_only=True)
class RankConfig(ScoreConfig):
    """Options of ``rmkit rank``: those of ``rmkit score`` (``--top-k`` and ``--min-score`` cut the
    ranking); its input must hold best-of-N rows."""

    ranks: ClassVar[bool] = True
    command: ClassVar[str] = "rank"


@dataclass(kw_only=True)
class ConvertConfig(ModelOptions):
    """Options of ``rmkit convert``."""

    source: str = option(
        help="checkpoint directory to read (any layout rmkit reads)", positional=True, path="model"
    )
    output: str = option(help="directory to write the standard checkpoint to", positional=True)
    dtype: str = option("fp32", help="dtype of the written weights", choices=list(DTYPE_NAMES))
    layout: str = option(
        "auto",
        help="the layout to write: 'auto', the kind's own (a one-label sequence classifier; for a vision-language "
        "RM, the VLM with value_head.safetensors, as Skywork-VL-Reward's); 'value-head'; 'align-anything' (the "
        "VLM's weights with score_head.weight among them, no bias); 'sequence-classification' (transformers' "
        "class, such as Gemma3ForSequenceClassification: score.weight, no bias). Refused where not exact",
        choices=["auto", "value-head", "align-anything", "sequence-classification"],
    )
    overwrite: bool = option(False, help="write into an output directory that already holds files")
    verifier: bool = option(
        False,
        help="the source is a causal LM read as a yes/no judge (--judge verifier, --judge-template, "
        "--judge-tokens): write it as a classifier whose score is the judge's log-odds",
    )

    def __post_init__(self) -> None:
        if self.verifier:
            self.judge = "verifier"


@dataclass(kw_only=True)
class InspectConfig(DataOptions):
    data: str | None = option(
        None, help="data file (.json, .jsonl, .csv, .parquet) or save_to_disk directory", aliases=["--input"]
    )
    model: str | None = option(
        None,
        help="a checkpoint: say which kind of reward model rmkit reads it as, and why (no weight loads)",
        path="model",
    )
    attributes: list[str] | None = option(
        None, help="rated data: the rating columns (default: HelpSteer2's, or all)"
    )
    neutral_steps: str = option(
        "good", help="PRM800K steps rated 0 count as right, wrong, or are left unlabelled",
        choices=["good", "bad", "skip"],
    )  # fmt: skip


@dataclass
class DemoConfig:
    output_dir: str = option("rmkit-demo", help="directory for the data, model, evaluation and scores")
    train_pairs: int = option(600, help="synthetic training pairs")
    test_pairs: int = option(500, help="synthetic test pairs (other templates and values than train)")
    score_rows: int = option(200, help="held-out prompt/response rows to score with RMScore")
    epochs: float = option(1.0, help="passes over the training pairs")
    max_steps: int = option(0, help="stop training after this many steps (0: run the epochs)")
    batch_size: int = option(16, help="pairs per optimizer step")
    learning_rate: float = option(5e-5, help="peak learning rate")
    max_length: int = option(128, help="longest sequence in tokens")
    seed: int = option(0, help="seed of the data and the training")


@dataclass
class VisionDemoConfig:
    """Options of ``rmkit demo-vision`` (:mod:`rmkit.demo_vision`)."""

    output_dir: str = option(
        "rmkit-demo-vision", help="directory for the drawn data, the model and the evaluation"
    )
    train_pairs: int = option(200, help="drawn training pairs")
    test_pairs: int = option(100, help="drawn test pairs (other draws than train)")
    epochs: float = option(8.0, help="passes over the training pairs")
    max_steps: int = option(0, help="stop training after this many steps (0: run the epochs)")
    batch_size: int = option(8, help="pairs per optimizer step")
    learning_rate: float = option(3e-4, help="peak learning rate")
    seed: int = option(0, help="seed of the data, the model's weights and the training")
