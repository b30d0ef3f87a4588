"""Reward-model checkpoints of other trainers, read as the standard layout.

rmkit's layout is transformers' ``*ForSequenceClassification`` with one label. Other trainers save the same
thing (a backbone and a one-output linear head on its last hidden state, read at the last real token) under
their own names:

==============  ==========================================  =====================  ==================
layout          head                                        backbone keys          normalisation
==============  ==========================================  =====================  ==================
safe-rlhf       ``score_head`` (score_dim outputs, bias      ``model.*``            config ``mean``/``var``,
                optional)                                                          ``normalizer.*`` buffers
align-anything  ``score_head`` (no bias)                     ``model.*``            none
trl             ``v_head.summary`` (bias) beside a causal LM  causal LM's keys       none
llama-factory   ``v_head.summary`` in ``value_head.*``       causal LM's keys       none
deepspeed-chat  ``v_head`` (no bias)                         ``rwtransformer.*``    none
openrlhf        ``score`` or ``value_head`` (no bias)        ``model.*``            config ``mean``/``std``
internlm2       ``v_head`` (no bias), at its reward token     fused ``wqkv``, ...    none
==============  ==========================================  =====================  ==================

:func:`inspect` reads a directory's config and weight names (from safetensors headers, without loading
them), :func:`recognise` names its layout, and :func:`load` builds the standard model from it, in memory:
backbone keys renamed to the classifier's, the head's one output as ``score.weight``, every key accounted
for (an unknown or missing key is an error, never a silent fresh weight). What the standard layout has no
field for goes to rmkit's metadata: a head bias as ``score_bias`` (added to every score by rmkit; plain
transformers gives the scores less this constant, so rankings and pair margins are the same), the
normalisation as ``score_mean``/``score_std``, and the source under ``converted_from``.

Pickle weights (``.bin``) are read only when the caller allows them, and then with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

from rmkit import heads, internlm2
from rmkit.errors import RMKitError

log = logging.getLogger(__name__)

STANDARD = "transformers"
LAYOUTS = {
    "safe-rlhf": "safe-rlhf score model (score_head, normalizer)",
    "align-anything": "align-anything score model (score_head)",
    "trl": "TRL value-head model (v_head.summary beside a causal LM)",
    "llama-factory": "LLaMA-Factory reward model (value_head.safetensors or .bin beside a causal LM)",
    "deepspeed-chat": "DeepSpeed-Chat step-2 reward model (rwtransformer, v_head)",
    "openrlhf": "OpenRLHF reward model (score or value_head, config mean/std)",
    "mlp-head": "classifier with a two-layer score head (score.0, score.2: INF-ORM)",
    "athene": "Athene-RM (v_head on a LlamaModel, read at a CLS token appended to the conversation)",
    "armo": "ArmoRM or QRM (regression_layer, gating network and reward_transform_matrix on a LlamaModel)",
    "urm": "URM (score: a mean and an uncertainty for each attribute, the means weighed by weights.fc, on a LlamaModel)",
    "ldl": "LDL-Reward (regression_layer.pt and gating_layer.pt beside the backbone, read as tensors only)",
    "grm": "GRM (a ReLU value head, v_head.summary.0, .2, ..., beside a causal LM's model)",
    "decision-tree": "Decision-Tree RM (score: K attributes with a bias, beside its pickled tree decision_tree.pkl)",
    "internlm2": "InternLM2-Reward (v_head at its reward token; fused wqkv and InternLM2's names: rmkit.internlm2)",
}
ATHENE_CLS = (
    128003  # Athene-RM's CLS_ID (<|reserved_special_token_1|> of Llama 3), unless its config names one
)
MLP_KEYS = ("score.0.weight", "score.0.bias", "score.2.weight", "score.2.bias")
OPENRLHF_CLASSES = {
    "RewardModel",
    "CriticModel",
    "LLMForSequenceRegression",
    "LLMForSequenceClassification",
}
# Keys the layouts keep in config.json that the standard config has no use for (kept in converted_from).
FOREIGN_CONFIG_KEYS = {
    "score_dim",
    "score_bias",
    "bias",
    "score_type",
    "do_normalize",
    "normalizer_type",
    "momentum",
    "mean",
    "var",
    "std",
    "normalize_reward",
    "value_head_prefix",
    "end_token_id",
    "reward_token_id",
}
# Buffers derived from the config that old checkpoints saved (rotary frequencies, GPT-2's causal mask).
DERIVED_SUFFIXES = (".rotary_emb.inv_freq", ".attn.bias", ".attn.masked_bias")
DS_CHAT_PREFIXES = ("rwtransformer.", "rwtranrsformer.")  # the second: its spelling before October 2023
VALUE_HEAD_FILES = ("value_head.safetensors", "value_head.bin")
SAFE_EPS = 1e-8  # safe-rlhf divides by sqrt(var) + 1e-8


@dataclass
class Found:
    """What a checkpoint directory holds: ``config`` (config.json, or ``None``), its ``files``, the model's
    ``weights`` files, their key names (``None`` while pickle weights are unread) and a ``value_head`` file."""

    path: Path
    config: dict[str, Any] | None
    files: list[str]
    weights: list[Path]
    keys: set[str] | None
    value_head: Path | None = None
    state: dict[str, torch.Tensor] | None = None  # the weights, when reading their names meant loading them

    @property
    def pickled(self) -> list[Path]:
        return [p for p in [*self.weights, self.value_head] if p is not None and p.suffix != ".safetensors"]


@dataclass
class Converted:
    """A standard classifier built from another layout, with the ``metadata`` its layout implies."""

    model: PreTrainedModel
    layout: str
    metadata: dict[str, Any] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)


def _weight_files(path: Path) -> list[Path]:
    """The model's weight files: an index's shards, else ``model.safetensors``, else ``pytorch_model.bin``.
    (Never any ``.bin`` lying about: ``training_args.bin`` is a pickle of the trainer's arguments.)"""
    for index, single in (
        ("model.safetensors.index.json", "model.safetensors"),
        ("pytorch_model.bin.index.json", "pytorch_model.bin"),
    ):
        if (path / index).is_file():
            shards = json.loads((path / index).read_text(encoding="utf-8"))["weight_map"].values()
            return [path / name for name in sorted(set(shards))]
        if (path / single).is_file():
            return [path / single]
    return []


def _keys(files: list[Path]) -> set[str] | None:
    if any(f.suffix != ".safetensors" for f in files):
        return None
    keys: set[str] = set()
    for f in files:
        with safe_open(str(f), "pt") as weights:
            keys.update(weights.keys())
    return keys


def inspect(path: Path, allow_pickle: bool = False) -> Found:
    """What ``path`` holds. Safetensors weights are named from their headers, unloaded; pickle weights are
    loaded (only with ``allow_pickle``) to name them, and kept."""
    config_file = path / "config.json"
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else None
    weights = _weight_files(path)
    head = next((path / name for name in VALUE_HEAD_FILES if (path / name).is_file()), None)
    files = sorted(p.name for p in path.iterdir() if p.is_file())
    found = Found(path, config, files, weights, _keys(weights), head)
    standard = any(a.endswith("ForSequenceClassification") for a in (config or {}).get("architectures") or [])
    if found.keys is None and allow_pickle and not standard:  # transformers reads a classifier's own
        found.state = read_weights(weights, allow_pickle)
        found.keys = set(found.state)
    return found


def _head_keys(keys: set[str]) -> list[str]:
    """Keys that look like a head rather than a backbone layer, to name them in an error."""
    words = ("head", "score", "summary", "classifier")
    return sorted(k for k in keys if any(w in k for w in words) and ".layers." not in k)[:6]


def unreadable(found: Found, why: str) -> RMKitError:
    """One line on a directory rmkit cannot read: why, what it holds, and the layouts rmkit reads."""
    shown = ", ".join(found.files[:12]) + (
        f" and {len(found.files) - 12} more" if len(found.files) > 12 else ""
    )
    heads = _head_keys(found.keys or set())
    saw = f"; head keys: {', '.join(heads)}" if heads else ""
    guess = _by_weights(found)
    saw += f"; its weights look like a {LAYOUTS[guess]}" if guess else ""
    known = "; ".join(LAYOUTS.values())
    return RMKitError(
        f"'{found.path}' is not a checkpoint rmkit can read: {why} (found: {shown or 'no files'}{saw}). "
        f"rmkit reads transformers checkpoints (a one-label *ForSequenceClassification reward model, or a "
        f"causal LM or encoder backbone) and these trainers' layouts: {known}"
    )


def _by_weights(found: Found) -> str | None:
    """The layout the weights' names show, if any (the config tells safe-rlhf from align-anything)."""
    keys, config = found.keys or set(), found.config or {}
    if found.value_head is not None:
        return "llama-factory"
    if all(f in found.files for f in heads.LDL_FILES):
        return "ldl"
    if internlm2.recognises(config, keys):
        return "internlm2"
    if "decision_tree.pkl" in found.files and {"score.weight", "score.bias"} <= keys:
        return "decision-tree"
    if "v_head.summary.0.weight" in keys:
        return "grm"
    if any(k.startswith(("v_head.summary.", "pretrained_model.v_head.summary.")) for k in keys):
        return "trl"
    if "v_head.weight" in keys and any(k.startswith(DS_CHAT_PREFIXES) for k in keys):
        return "deepspeed-chat"
    if "score_head.weight" in keys:
        safe = {"do_normalize", "normalizer_type", "score_type"} & set(config) or "normalizer.mean" in keys
        return "safe-rlhf" if safe else "align-anything"
    if "weights.fc.0.weight" in keys and "score.weight" in keys:
        return "urm"
    if all(k in keys for k in MLP_KEYS):
        return "mlp-head"
    if {"regression_layer.weight", "reward_transform_matrix", "gating.logit_scale"} <= keys:
        return "armo"
    if "v_head.weight" in keys and any(k.startswith("model.") for k in keys) and "lm_head.weight" not in keys:
        return "athene"
    return None


def recognise(found: Found) -> str:
    """The layout of ``found``: a key of :data:`LAYOUTS`, or :data:`STANDARD` for transformers' own."""
    if found.config is None:
        raise unreadable(found, "it has no config.json")
    if not found.weights:  # transformers' loader says what is missing (or that custom code needs trust)
        return STANDARD
    architectures = set(found.config.get("architectures") or [])
    if found.keys is None:  # pickle weights, unread
        if any(a.endswith("ForSequenceClassification") for a in architectures):
            return STANDARD  # transformers' loader refuses them with the same advice
        raise RMKitError(pickle_refused(found.pickled[0]))
    layout = _by_weights(found)
    if layout is not None:
        return layout
    if architectures & OPENRLHF_CLASSES or "value_head_prefix" in found.config:
        return "openrlhf"
    return STANDARD


def read_weights(files: list[Path], allow_pickle: bool) -> dict[str, torch.Tensor]:
    """Every tensor of ``files``; pickle files only with ``allow_pickle``, and then without running code."""
    state: dict[str, torch.Tensor] = {}
    for f in files:
        if f.suffix == ".safetensors":
            state.update(load_file(str(f)))
        elif not allow_pickle:
            raise RMKitError(pickle_refused(f))
        else:
            state.update(torch.load(str(f), map_location="cpu", weights_only=True))
    return state


def pickle_refused(f: Path) -> str:
    return (
        f"'{f}' is a pickle file; rmkit loads pickle weights only with --allow-pickle (allow_pickle=True in "
        "Python), and then with torch.load(weights_only=True), which runs no code. Convert it once with "
        "'rmkit convert --allow-pickle SRC DST' to get safetensors"
    )


def _scalar(values: Any, dimension: int) -> float:
    if isinstance(values, torch.Tensor):
        values = values.flatten().tolist()
    if isinstance(values, (list, tuple)):
        return float(values[dimension] if len(values) > 1 else values[0])
    return float(values)


def _score_head(found: Found, state: dict, dimension: int | None, layout: str) -> tuple[torch.Tensor, dict]:
    """safe-rlhf's and align-anything's ``score_head`` (one row of it), and safe-rlhf's normalisation."""
    config = found.config or {}
    weight, bias = state.pop("score_head.weight"), state.pop("score_head.bias", None)
    outputs = weight.shape[0]
    if outputs > 1 and dimension is None:
        raise RMKitError(
            f"'{found.path}' is a {layout} score model with score_dim={outputs}: rmkit reads one score; "
            f"choose the output to read with --dimension 0..{outputs - 1} (dimension= in Python)"
        )
    d = dimension or 0
    if not 0 <= d < outputs:
        raise RMKitError(
            f"--dimension {d}: '{found.path}' has score_dim={outputs} (outputs 0..{outputs - 1})"
        )
    meta: dict[str, Any] = {"score_bias": float(bias[d])} if bias is not None else {}
    mean = state.pop("normalizer.mean", None)
    var = state.pop("normalizer.var", None)
    state.pop("normalizer.count", None)
    mean = config.get("mean") if mean is None else mean
    var = config.get("var") if var is None else var
    function = {"reward": "affine", "cost": "scale"}.get(config.get("score_type", "reward"))
    if config.get("normalizer_type") and mean is not None and var is not None and function:
        meta["score_mean"] = _scalar(mean, d) if function == "affine" else 0.0
        meta["score_std"] = math.sqrt(_scalar(var, d)) + SAFE_EPS
        meta["normalized_by_source"] = bool(config.get("do_normalize"))
    if outputs > 1:
        meta["dimension"] = d
    return weight[d : d + 1], meta


def _head(found: Found, layout: str, state: dict, dimension: int | None) -> tuple[torch.Tensor, dict]:
    """``(head weight (1, H), metadata)`` of ``layout``, popping the head's keys out of ``state``."""
    config = found.config or {}
    if layout in ("safe-rlhf", "align-anything"):
        return _score_head(found, state, dimension, layout)
    if layout in ("trl", "llama-factory"):
        prefix = (
            "pretrained_model.v_head.summary." if "pretrained_model.v_head.summary.weight" in state else ""
        )
        prefix = prefix or "v_head.summary."
        weight, bias = state.pop(prefix + "weight"), state.pop(prefix + "bias", None)
        return weight, {"score_bias": float(bias[0])} if bias is not None else {}
    if layout == "deepspeed-chat":
        return state.pop("v_head.weight"), {}
    if layout == "internlm2":
        return state.pop("v_head.weight"), {"end_token_id": config["reward_token_id"]}
    if layout == "athene":  # its model card's pipeline: the chat template's BOS, and the tokenizer's again
        cls_id = int(config.get("cls_token_id") or ATHENE_CLS)
        return state.pop("v_head.weight"), {"end_token_id": cls_id, "double_bos": True}
    name = config.get("value_head_prefix") or ("score" if "score.weight" in state else "value_head")
    if f"{name}.weight" not in state:
        raise unreadable(found, f"its config names an OpenRLHF head '{name}', but no {name}.weight is stored")
    weight, bias = state.pop(f"{name}.weight"), state.pop(f"{name}.bias", None)
    meta: dict[str, Any] = {"score_bias": float(bias[0])} if bias is not None else {}
    if config.get("mean") is not None and config.get("std") is not None:
        meta.update(score_mean=float(config["mean"]), score_std=float(config["std"]))
        meta["normalized_by_source"] = bool(config.get("normalize_reward"))
    return weight, meta


def _classifier_config(found: Found) -> PretrainedConfig:
    """The standard one-label classifier config of the backbone ``found`` was trained on."""
    raw = {k: v for k, v in (found.config or {}).items() if k not in FOREIGN_CONFIG_KEYS}
    model_type = raw.pop("model_type", None)
    for key in ("architectures", "transformers_version", "id2label", "label2id", "num_labels"):
        raw.pop(key, None)
    try:
        config = AutoConfig.for_model(model_type, **raw)
    except (ValueError, KeyError, TypeError) as e:
        raise unreadable(
            found, f"its config's model_type {model_type!r} is not one transformers knows ({e})"
        ) from None
    config.num_labels = 1
    if type(config) not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING:
        raise unreadable(found, f"transformers has no sequence classifier for model_type {model_type!r}")
    config.architectures = [MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[type(config)].__name__]
    return config


def _rename(state: dict, expected: set[str], prefix: str) -> tuple[dict, list[str], list[str]]:
    """``(state under the classifier's key names, dropped keys, unknown keys)``."""
    out, dropped, unknown = {}, [], []
    strip = ("pretrained_model.", "module.", *DS_CHAT_PREFIXES)
    for key, tensor in state.items():
        bare = next((key[len(p) :] for p in strip if key.startswith(p)), key)
        name = next((n for n in (bare, f"{prefix}.{bare}") if n in expected), None)
        if name is not None:
            out[name] = tensor
        elif bare.startswith("lm_head.") or bare.endswith(DERIVED_SUFFIXES):
            dropped.append(key)
        else:
            unknown.append(key)
    return out, dropped, unknown


def _build(found: Found, config: PretrainedConfig, state: dict, dtype: torch.dtype) -> PreTrainedModel:
    cls = MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[type(config)]
    try:
        model, info = cls.from_pretrained(
            None, config=config, state_dict=state, dtype=dtype, output_loading_info=True
        )
    except (RuntimeError, ValueError) as e:  # a tensor of the wrong shape
        raise unreadable(found, f"its weights do not fit a {cls.__name__}: {e}") from None
    problems = {k: sorted(map(str, v))[:6] for k, v in info.items() if k != "error_msgs" and v}
    if problems:
        raise unreadable(found, f"its weights do not fit a {cls.__name__}: {problems}")
    return model


def load(
    found: Found, layout: str, *, dtype: torch.dtype, allow_pickle: bool, dimension: int | None
) -> Converted:
    """The standard classifier of checkpoint ``found`` in ``layout``, converted in memory."""
    state = dict(found.state) if found.state is not None else read_weights(found.weights, allow_pickle)
    if found.value_head is not None:
        state.update(read_weights([found.value_head], allow_pickle))
    if layout == "internlm2":  # transformers' Llama under InternLM2's names (rmkit.internlm2)
        try:
            config = internlm2.llama_config(found.config or {})
        except ValueError as e:
            raise unreadable(found, str(e)) from None
        found, state = dataclasses.replace(found, config=config), internlm2.llama_state(state, config)
    own = ("score.", "regression_layer.", "gating.", "reward_transform", "v_head.", "weights.fc.")
    head_state = (
        {k: state.pop(k) for k in list(state) if k.startswith(own)}
        if layout in ("mlp-head", "armo", "ldl", "grm", "urm", "decision-tree")
        else None
    )
    hidden = int((found.config or {}).get("hidden_size", 0))
    weight, metadata = (
        _head(found, layout, state, dimension) if head_state is None else (torch.zeros(1, hidden), {})
    )
    config = _classifier_config(found)
    cls = MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[type(config)]
    with torch.device("meta"):
        expected = set(cls(config).state_dict())
    state, dropped, unknown = _rename(state, expected, cls.base_model_prefix)
    if unknown:
        raise unreadable(
            found, f"it has weights a {layout} checkpoint does not: {', '.join(sorted(unknown)[:6])}"
        )
    state["score.weight"] = weight.reshape(1, -1)
    metadata["converted_from"] = {
        "layout": layout,
        "architectures": (found.config or {}).get("architectures"),
        **{k: v for k, v in (found.config or {}).items() if k in FOREIGN_CONFIG_KEYS},
    }
    model = _build(found, config, state, dtype)
    if head_state is not None:  # a head that is no one linear layer (rmkit.heads)
        try:
            model.score = heads.build_head(layout, head_state, found.config or {}, found.path, dtype)
        except ValueError as e:
            raise unreadable(found, str(e)) from None
    return Converted(model, layout, metadata, dropped)
