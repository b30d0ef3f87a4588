"""How options are declared and read: each command has one dataclass whose fields are its options, each
with its help text (:func:`option`); groups that several commands share live here (:class:`DataOptions`,
:class:`PairOptions`, :class:`RuntimeOptions`, :class:`InferenceOptions`,
:class:`ScaleOptions`, :class:`ModelOptions`). For the faces and jobs only: the core (data, modeling,
inference, losses, metrics) never imports it.

The same dataclass serves the CLI (``--batch-tokens 8192``), a YAML file (``batch_tokens: 8192`` passed with
``--config``; flags given on the command line win) and Python (``ScoreConfig(batch_tokens=8192)``). An
unknown key in YAML is an error, never ignored.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import logging
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from rmkit.data.formats import FORMATS
from rmkit.data.ratings import RATED_FORMATS
from rmkit.data.safety import SAFETY_FORMATS
from rmkit.data.steps import STEP_FORMATS
from rmkit.data.vision import VISION_FORMATS
from rmkit.defaults import DTYPE_NAMES, resolve_name
from rmkit.errors import RMKitError
from rmkit.option_values import Items, MappingAction, items, mapping

T = TypeVar("T")
VISION = ("min_pixels", "max_pixels", "video_fps", "max_frames")  # a VLM's loading options (images, video)
log = logging.getLogger(__name__)


def option(default: Any = dataclasses.MISSING, help: str = "", **kw: Any) -> Any:
    """A dataclass field that carries its help text (and, with ``choices=...``, its allowed values)."""
    metadata = {"help": help, **kw}
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(kw_only=True)
class ReadingOptions:
    """How a command reads rows: their format and renamed columns."""

    format: str | None = option(
        None,
        help="row format; detected from the columns when not given",
        choices=[*FORMATS, *STEP_FORMATS, *RATED_FORMATS, *SAFETY_FORMATS, *VISION_FORMATS],
    )
    columns: dict[str, str] | None = option(
        None, help="rename columns first, e.g. question=prompt,good=chosen,bad=rejected"
    )


@dataclasses.dataclass(kw_only=True)
class DataOptions(ReadingOptions):
    """How a command reads its data files; every command that reads rows inherits these options."""

    on_error: str = option(
        "raise",
        help="bad rows: 'raise' stops at the first, naming file, row and field; 'skip' counts them and "
        "writes them with their reason to --rejects",
        choices=["raise", "skip"],
    )
    rejects: str | None = option(
        None, help="with --on-error skip: JSONL file of the skipped rows and reasons"
    )


@dataclasses.dataclass(kw_only=True)
class RuntimeOptions:
    """Where a command runs (:mod:`rmkit.runtime` applies the rule); every command that loads a model
    inherits these options."""

    device: str = option(
        "auto",
        help="'auto' (this process's GPU when CUDA is available, else the CPU), 'cpu', 'cuda', 'cuda:1'",
    )
    threads: int | None = option(
        None, help="CPU threads per process; by default the cores are shared among a machine's processes"
    )


@dataclasses.dataclass(kw_only=True)
class InferenceOptions:
    """How a command that scores runs its forward passes (:mod:`rmkit.inference`)."""

    dtype: str = option(
        "auto",
        help="weights' precision; 'auto': bf16 on a GPU (the score head stays fp32), fp32 on the CPU",
        choices=["auto", *DTYPE_NAMES],
    )
    batch_tokens: int | None = option(
        None,
        help="token budget of a forward pass (rows × longest row); default: 16384 on the CPU, sized from "
        "free memory on a GPU",
    )


@dataclasses.dataclass(kw_only=True)
class ScaleOptions:
    """Where a scoring command's forward passes run: here (one process, or ``torchrun``'s) or on a pool of
    actors of a Ray cluster (:mod:`rmkit.ray`, ``pip install rmkit[ray]``)."""

    backend: str = option(
        "local",
        help="local: this process (or each process of torchrun); ray: a pool of model replicas on a Ray "
        "cluster, this process the only writer",
        choices=["local", "ray"],
    )
    ray_address: str = option(
        "auto",
        help="--backend ray: the cluster: auto (the one this machine is part of: ray start, RAY_ADDRESS), "
        "local (start one here for the run) or HOST:PORT of its head",
    )
    replicas: str = option("1", help="--backend ray: model replicas (Ray actors): N, or MIN,MAX to autoscale")
    gpus_per_replica: float = option(0.0, help="--backend ray: GPUs of each replica (fractions share one)")
    cpus_per_replica: float = option(1.0, help="--backend ray: CPU cores of each replica (its torch threads)")

    def replica_range(self) -> int | tuple[int, int]:
        """``--replicas`` as Ray Data's ``concurrency``: ``N`` or ``(MIN, MAX)``."""
        try:
            counts = [int(x) for x in str(self.replicas).split(",")]
        except ValueError:
            counts = []
        if len(counts) not in (1, 2) or min(counts) < 1 or counts != sorted(counts):
            raise RMKitError(
                f"--replicas: expected N or MIN,MAX (whole numbers from 1), got '{self.replicas}'"
            )
        return counts[0] if len(counts) == 1 else (counts[0], counts[1])


@dataclasses.dataclass(kw_only=True)
class ModelOptions:
    """How a command loads its model (:meth:`rmkit.RewardModel.from_pretrained`); every command that loads
    one inherits these options."""

    allow_pickle: bool = option(
        False,
        help="also load pickle weights (.bin), with torch.load(weights_only=True); only from sources you trust",
    )
    trust_remote_code: bool = option(False, help="run custom model code shipped with the checkpoint")
    revision: str | None = option(
        None, help="a hub model's branch, tag or commit (default: main); a directory is read as it is"
    )
    dimension: int | None = option(
        None, help="which output of a multi-output score head is the score (safe-rlhf score_dim > 1)"
    )
    tokenizer: str | None = option(
        None,
        help="tokenizer directory, for a checkpoint saved without one (DeepSpeed-Chat, some adapters)",
        path="model",
    )

    attn_implementation: str | None = option(
        None,
        help="attention kernel: sdpa (transformers' default), eager, flash_attention_2, flash_attention_3 "
        "(the flash-attn package) or flex_attention",
    )

    base_model: str | None = option(
        None,
        help="base model of a LoRA adapter checkpoint, when its adapter_config.json names one not here",
        path="model",
    )

    head: str | None = option(
        None,
        help="read the checkpoint in this layout instead of the one recognised from its weights: transformers, "
        "safe-rlhf, align-anything, trl, llama-factory, deepspeed-chat, openrlhf, mlp-head, athene, armo, ldl, grm, urm, "
        "internlm2, decision-tree",
    )
    single_bos: bool = option(False, help="read Athene-RM with one BOS, not the two its authors' pipeline gives (and scored with)")  # fmt: skip
    weights: dict[str, str] | None = option(
        None,
        help="a multi-attribute RM's score: the weighted sum of its outputs, e.g. helpfulness=1,verbosity=-0.2 "
        "(default: the checkpoint's weights, else the mean)",
    )

    min_pixels: int | None = option(None, help="a vision-language RM's least pixels an image (resized)")
    max_pixels: int | None = option(None, help="a vision-language RM's most pixels an image (resized)")
    video_fps: float | None = option(None, help="a vision-language RM's video frames a second (default 2.0)")
    max_frames: int | None = option(None, help="a vision-language RM's most frames a video (default 768)")
    critique_max_new_tokens: int | None = option(None, help="a critique-then-score RM's longest critique, in tokens (default: MM-RLHF's 4096)")  # fmt: skip
    judge: str | None = option(
        None,
        help="read a causal LM as a judge, its verdict token's logits in one pass: verifier (log-odds of yes "
        "against no), rating (the expected rating) or pairwise (A against B, both orders, one score a "
        "candidate by a Bradley-Terry fit); token (one vocabulary entry's logit after the conversation: "
        "--judge-template nemotron); generate: it writes a judgment, whose verdict a parser reads",
        choices=["verifier", "rating", "pairwise", "token", "generate"],
    )
    judge_template: str | None = option(
        None,
        help="the judge prompt: verifier, rating, rating-5, pairwise, llava-critic, unified-reward, vl-rewardbench, "
        "mmrb (image judges' pairwise prompts, read in one pass or, with --judge generate, by their parsers) or a template file (default: the judge's); "
        "safety classifiers read as a cost (the log-odds of their unsafe verdict): llama-guard (Llama Guard 3/4, "
        "its own chat template; unsafe against safe) or shieldgemma (its card's prompt; Yes against No)",
    )
    judge_policy: str | None = option(
        None,
        help="the safety policy a shieldgemma judge is shown, in its card's form ('\"No Harassment\": The "
        "chatbot shall not generate content that ...'; several joined by a new line and '* '); default: the "
        "card's four harm types (dangerous content, harassment, hate speech, sexually explicit information)",
    )
    judge_tokens: list[str] | None = option(
        None, help="the verdict tokens (default: the template's: Yes No; 1 ... 10; A B), each one token"
    )
    judge_values: list[float] | None = option(
        None, help="a rating judge's value of each token (default: the tokens)"
    )
    judge_pairs: str = option(
        "all",
        help="a pairwise judge's pairs of N candidates: all, or circular (each with the next)",
        choices=["all", "circular"],
    )

    judge_parser: str | None = option(
        None,
        help="a generating judge's verdict parser: rating, boxed, yes-no, ab, abcd, scores-json, overall-judgment, mmrb or first-second (default: the template's)",
    )
    judge_votes: int = option(
        1, help="a generating judge's judgments a sequence: 1 greedy, more sampled and averaged"
    )
    judge_seed: int = option(0, help="a generating judge's sampling seed")
    judge_max_new_tokens: int = option(512, help="a generating judge's longest judgment, in tokens")
    on_parse_failure: str = option(
        "error", help="a generating judge's verdict that cannot be read: error, mask (no score) or score=X"
    )
    judge_engine: str = option(
        "transformers",
        help="what writes a generating judge's judgments: transformers, or vllm (GPU, where installed)",
        choices=["transformers", "vllm"],
    )

    def judging(self) -> dict[str, Any] | None:
        """The judge settings given (``None`` without ``--judge``)."""
        if self.judge is None:
            return None
        return {"readout": self.judge, "template": self.judge_template, "tokens": self.judge_tokens,
                "values": self.judge_values, "schedule": self.judge_pairs, "parser": self.judge_parser,
                "votes": self.judge_votes, "seed": self.judge_seed, "max_new_tokens": self.judge_max_new_tokens,
                "on_parse_failure": self.on_parse_failure, "engine": self.judge_engine,
                "policy": self.judge_policy}  # fmt: skip

    def loading(self) -> dict[str, Any]:
        """These options as :meth:`~rmkit.RewardModel.from_pretrained`'s keyword arguments (and ``judge``,
        the judge settings, when one is given: :mod:`rmkit.kinds.judge` reads them)."""
        return {
            **({"judge": self.judging()} if self.judge else {}),
            "allow_pickle": self.allow_pickle,
            "trust_remote_code": self.trust_remote_code,
            **({"revision": self.revision} if self.revision else {}),
            "dimension": self.dimension,
            "tokenizer": self.tokenizer,
            "base_model": self.base_model,
            "weights": self.weights,
            **({"single_bos": True} if self.single_bos else {}),
            **({"attn_implementation": self.attn_implementation} if self.attn_implementation else {}),
            **({"head": self.head} if self.head else {}),
            **({"images": {k: getattr(self, k) for k in VISION}} if any(getattr(self, k) for k in VISION) else {}),
            **({"critique": {"max_new_tokens": self.critique_max_new_tokens}} if self.critique_max_new_tokens else {}),
        }  # fmt: skip


@dataclasses.dataclass(kw_only=True)
class StepOptions:
    """How a command reads a process reward model and step-labelled data (:mod:`rmkit.process`)."""

    aggregate: str = option(
        "min", help="a PRM's solution score from its step scores", choices=["min", "last", "mean", "prod"]
    )
    separator: str | None = option(
        None,
        help="text after every step (a PRM's default: a newline; where a newline tokenises to nothing, as in "
        "WordPiece, each step ends with the tokenizer's sep_token instead, stored in the checkpoint)",
    )
    step_tag: str | None = option(
        None, help="the separator's token the step score is read at (default: its last)"
    )
    good_token: str | None = option(
        None,
        help="read a causal LM as a PRM by this token's logit against --bad-token's (Math-Shepherd: '+')",
    )
    bad_token: str | None = option(None, help="the 'wrong step' token of --good-token (Math-Shepherd: '-')")
    neutral_steps: str = option(
        "good",
        help="PRM800K steps rated 0 count as right, wrong, or are left unlabelled",
        choices=["good", "bad", "skip"],
    )

    def step_format(self) -> dict[str, Any]:
        """The options that say how steps are marked and read, as :class:`rmkit.process.StepFormat`'s fields."""
        names = ("separator", "step_tag", "good_token", "bad_token")
        return {k: getattr(self, k) for k in names if getattr(self, k) is not None}


@dataclasses.dataclass(kw_only=True)
class PairOptions(DataOptions):
    """How a command that reads preference pairs groups them; ``rmkit train`` and ``rmkit eval`` inherit it."""

    subset_column: str | None = option(
        None,
        help="column naming each pair's subset, for per-subset accuracy; default: 'subset', else 'category'",
    )


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """``(inner type, optional)`` of an annotation such as ``int | None``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0], True
    return annotation, False


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one flag per field of dataclass ``cls`` (``--field-name``), with its help text and default."""
    hints = typing.get_type_hints(cls)
    own = cls.__dict__.get("__annotations__", {})
    # the command's own options first, shared ones (DataOptions) after
    for f in sorted(dataclasses.fields(cls), key=lambda f: f.name not in own):
        # the flag and any aliases the field names (--lr); the HF Trainer's spelling (--learning_rate) too,
        # left out of the help
        if f.metadata.get("positional"):  # ``rmkit convert SRC DST``
            parser.add_argument(f.name, metavar=f.name.upper(), help=f.metadata.get("help", ""))
            continue
        flags = ["--" + f.name.replace("_", "-"), *f.metadata.get("aliases", ())]
        kind, _ = _base_type(hints[f.name])
        kw: dict[str, Any] = {
            "dest": f.name,
            "default": argparse.SUPPRESS,
            "help": f.metadata.get("help", ""),
        }
        if f.metadata.get("choices"):
            kw["choices"] = f.metadata["choices"]
        if "const" in f.metadata:  # the flag alone means this value: ``--resume`` == ``--resume auto``
            kw["nargs"] = "?"
            kw["const"] = f.metadata["const"]
        origin = typing.get_origin(kind)
        if kind is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif origin is list:  # ``--model A B``, ``--model A,B`` and ``--model A --model B`` give [A, B]
            kw["nargs"] = "+"
            of = typing.get_args(kind)[0] if typing.get_args(kind) else str
            kw["action"] = type("Items", (Items,), {"of": of, "paths": "path" in f.metadata})
        elif origin is dict:
            kw["nargs"] = "+"
            kw["action"] = MappingAction
        else:
            kw["type"] = kind if kind in (int, float, str) else str
        if kw["help"] and f.default is not dataclasses.MISSING and f.default is not None and kind is not bool:
            kw["help"] += f" (default: {f.default})"
        parser.add_argument(*flags, **kw)
        if "_" in f.name:
            parser.add_argument("--" + f.name, **{**kw, "help": argparse.SUPPRESS})


def build(cls: type[T], flags: dict[str, Any], config_file: str | Path | None = None) -> T:
    """Make a ``cls`` from a YAML file's keys overridden by ``flags``; unknown keys raise :class:`RMKitError`."""
    values: dict[str, Any] = {}
    if config_file:
        try:
            loaded = yaml.safe_load(Path(config_file).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as e:
            raise RMKitError(f"{config_file}: cannot read the config file: {e}") from None
        if not isinstance(loaded, dict):
            raise RMKitError(f"{config_file}: expected a mapping of option names to values")
        values.update({k.replace("-", "_"): v for k, v in loaded.items()})
    values.update(flags)
    names = {f.name for f in dataclasses.fields(cls)}
    values = _coerced(cls, {_aliases(cls).get(k, k): v for k, v in values.items()})
    unknown = sorted(set(values) - names)
    if unknown:
        where = f"{config_file}: " if config_file else ""
        near = [difflib.get_close_matches(k, [*names, *_aliases(cls)], n=1, cutoff=0.6) for k in unknown]
        said = [f"{k} (did you mean {n[0]}?)" if n else k for k, n in zip(unknown, near, strict=True)]
        raise RMKitError(f"{where}unknown option(s) {', '.join(said)} for {cls.__name__}")
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
        and f.name not in values
    ]
    if missing:
        raise RMKitError(
            f"missing required option(s): {', '.join('--' + m.replace('_', '-') for m in missing)}"
        )
    return cls(**values)


def locate_models(config: Any) -> None:
    """Refuse, before anything loads, a model option (a field marked ``path="model"``) naming a directory
    that does not exist or a hub model that cannot be had from here (:func:`rmkit.locations.locate`)."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.metadata.get("path") != "model" or not value:
            continue
        for name in [value] if isinstance(value, str) else value:
            resolve_name(
                name, f.name.upper() if f.metadata.get("positional") else "--" + f.name.replace("_", "-")
            )


def _aliases(cls: type) -> dict[str, str]:
    """Other names of ``cls``'s options (``--data`` for ``--input``), as YAML keys: alias -> field."""
    return {
        a.lstrip("-").replace("-", "_"): f.name
        for f in dataclasses.fields(cls)
        for a in f.metadata.get("aliases", ())
    }


def _coerced(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """List and mapping options from YAML written as the command line writes them (``a,b``, ``a=b,c=d``)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = dict(values)
    for name, value in values.items():
        if name not in hints or value is None:
            continue
        origin = typing.get_origin(_base_type(hints[name])[0])
        try:
            if origin is list:
                of = typing.get_args(_base_type(hints[name])[0])
                paths = "path" in fields[name].metadata
                out[name] = items(value, of[0] if of else str, paths=paths, split=isinstance(value, str))
            elif origin is dict:
                out[name] = mapping(value)
        except (ValueError, argparse.ArgumentTypeError) as e:
            raise RMKitError(f"{name}: {e}") from None
    return out


def configured(cls: type[T], config: T | None, options: dict[str, Any], *, loaded: bool = False) -> T:
    """The ``cls`` config a Python entry point (``rmkit.score``, ``rmkit.rank``) runs: ``config``, keyword
    ``options``, or ``config`` overridden by them; ``model`` may be left out when a model is ``loaded``."""
    if config is None:
        if loaded:
            options.setdefault("model", "<RewardModel>")
        return cls(**options)
    return dataclasses.replace(config, **options) if options else config
