"""How a checkpoint becomes a one-label classifier and its tokenizer, whoever saved it.

- transformers' own layout (``*ForSequenceClassification``, or a backbone, which gets a fresh head);
- another trainer's full checkpoint (:mod:`rmkit.layouts`), converted in memory;
- a LoRA adapter directory (``adapter_config.json``, no ``config.json``) as TRL's ``RewardTrainer`` with PEFT
  (a ``SEQ_CLS`` adapter carrying the score head) or LLaMA-Factory's LoRA reward runs (a causal-LM adapter,
  ``value_head.safetensors`` beside it) save them: merged into its base model with PEFT, then read as the
  full checkpoint of its layout.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
)

from rmkit import internlm2, layouts
from rmkit.defaults import resolve_name
from rmkit.errors import RMKitError
from rmkit.locations import snapshot
from rmkit.version import __version__

log = logging.getLogger(__name__)

ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
HEAD_NAMES = ("score.", "classifier.")


def load(
    name: str,
    *,
    dtype: torch.dtype,
    allow_pickle: bool,
    trust_remote_code: bool,
    dimension: int | None,
    tokenizer: str | Path | None,
    base_model: str | Path | None,
    kwargs: dict[str, Any],
) -> tuple[PreTrainedModel, Any, dict[str, Any] | None]:
    """``(classifier, tokenizer, metadata of a conversion or None)`` of checkpoint ``name``: a directory, or a
    hub name read as its snapshot directory at ``kwargs``' ``revision`` (:func:`rmkit.locations.snapshot`)."""
    kwargs = dict(kwargs)
    revision = kwargs.pop("revision", None)  # --revision: which snapshot of a hub name
    name = snapshot(
        resolve_name(name), allow_pickle=allow_pickle, trust_remote_code=trust_remote_code, revision=revision
    )
    path = Path(name)
    head = kwargs.pop("head", None)  # --head: the layout to read, where recognising it is not wanted
    if head is not None and head not in (layouts.STANDARD, *layouts.LAYOUTS):
        raise RMKitError(f"--head {head}: rmkit reads {', '.join((layouts.STANDARD, *layouts.LAYOUTS))}")
    if not path.is_dir():
        raise RMKitError(f"{name}: a file, not a checkpoint directory (config.json and weights)")
    found = layouts.inspect(path, allow_pickle)
    if found.config is None and (path / "adapter_config.json").is_file():
        model, metadata, base = _load_adapter(
            found, base_model, dtype, allow_pickle, dimension, trust_remote_code
        )
        own = any(f.startswith("tokenizer") for f in found.files)
        return model, _load_tokenizer(name if own else base, tokenizer, trust_remote_code), metadata
    layout = head or layouts.recognise(found)
    if layout == layouts.STANDARD:
        model, metadata = _load_standard(name, dtype, trust_remote_code, allow_pickle, kwargs), None
    else:
        try:
            converted = layouts.load(
                found, layout, dtype=dtype, allow_pickle=allow_pickle, dimension=dimension
            )
        except KeyError as e:  # a layout forced by --head whose weights this checkpoint lacks
            raise layouts.unreadable(found, f"it has no {e} that a {layouts.LAYOUTS[layout]} holds") from None
        model, metadata = converted.model, converted.metadata
        log.info("read '%s' as a %s", name, layouts.LAYOUTS[layout])
        if layout == "internlm2" and tokenizer is None:  # its own is remote code: built from tokenizer.model
            return model, internlm2.tokenizer(path), metadata
    return model, _load_tokenizer(name, tokenizer, trust_remote_code), metadata


def _load_standard(
    name: str, dtype: torch.dtype, trust_remote_code: bool, allow_pickle: bool, kwargs: dict[str, Any]
) -> PreTrainedModel:
    """A transformers checkpoint as a one-label classifier (a backbone gets a fresh head, said in the log)."""
    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise RMKitError(f"cannot load a model config from '{name}': {e}") from None
    is_classifier = any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))
    kwargs = dict(kwargs)  # a classifier keeps its outputs (K > 1: a multi-attribute RM); a backbone gets one
    labels = kwargs.pop("num_labels", config.num_labels if is_classifier else 1)
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            name,
            num_labels=labels,
            dtype=dtype,
            use_safetensors=None if allow_pickle else True,
            trust_remote_code=trust_remote_code,
            output_loading_info=True,
            **kwargs,
        )
    except OSError as e:
        hint = (
            ""
            if allow_pickle
            else " (rmkit loads safetensors only; --allow-pickle, allow_pickle=True, trusts pickle)"
        )
        raise RMKitError(f"cannot load weights from '{name}': {e}{hint}") from None
    except (ValueError, ImportError) as e:  # an attention kernel transformers lacks, or its package
        if "attn_implementation" not in kwargs:
            raise
        raise RMKitError(f"--attn-implementation {kwargs['attn_implementation']}: {e}") from None
    # The head weights made new (a backbone's fresh head): scoring says so (rmkit.kinds), training need not.
    model.fresh_head = sorted(k for k in info["missing_keys"] if k.startswith(HEAD_NAMES))
    model.unused_weights = sorted(info["unexpected_keys"])  # in the checkpoint, read by no part of the model
    return model


def ensure_pad_token(tokenizer) -> None:
    """Give a tokenizer without a pad token an existing one (EOS, else UNK); never add a token."""
    if tokenizer.pad_token_id is not None:
        return
    for name in ("eos_token", "unk_token", "bos_token"):
        token = getattr(tokenizer, name)
        if token is not None:
            tokenizer.pad_token = token
            log.info(
                "tokenizer has no pad token; using %s %r (ends are read from the attention mask)", name, token
            )
            return
    raise RMKitError("the tokenizer has no pad, eos, unk or bos token to pad with; set tokenizer.pad_token")


def _load_tokenizer(name: str, tokenizer: str | Path | None, trust_remote_code: bool):
    source = str(tokenizer or name)
    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError) as e:
        hint = (
            ""
            if tokenizer
            else "; a checkpoint saved without one needs --tokenizer DIR (tokenizer= in Python)"
        )
        raise RMKitError(f"cannot load a tokenizer from '{source}': {e}{hint}") from None


def _load_adapter(
    found: layouts.Found,
    base_model: str | Path | None,
    dtype: torch.dtype,
    allow_pickle: bool,
    dimension: int | None,
    trust_remote_code: bool,
) -> tuple[PreTrainedModel, dict[str, Any], str]:
    """A LoRA adapter merged into its base model: ``(classifier, metadata, base model)``."""
    from peft import PeftModel

    adapter = json.loads((found.path / "adapter_config.json").read_text(encoding="utf-8"))
    base = str(base_model or adapter.get("base_model_name_or_path") or "")
    if not base:
        raise layouts.unreadable(
            found, "it is a LoRA adapter whose adapter_config.json names no base model; pass --base-model"
        )
    weights = [found.path / f for f in ADAPTER_WEIGHTS if (found.path / f).is_file()]
    if not weights:
        raise layouts.unreadable(
            found, "it is a LoRA adapter without adapter weights (adapter_model.safetensors)"
        )
    if weights[0].suffix != ".safetensors" and not allow_pickle:
        raise RMKitError(layouts.pickle_refused(weights[0]))
    seq_cls = adapter.get("task_type") == "SEQ_CLS"
    options = {
        "dtype": torch.float32,
        "use_safetensors": None if allow_pickle else True,
        "trust_remote_code": trust_remote_code,
    }
    try:
        if seq_cls:
            model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, **options)
        else:
            model = AutoModelForCausalLM.from_pretrained(base, **options)
    except OSError as e:
        raise RMKitError(
            f"'{found.path}' is a LoRA adapter of '{base}', which cannot be loaded ({e}); pass --base-model DIR"
        ) from None
    merged = PeftModel.from_pretrained(model, str(found.path)).merge_and_unload()
    source = {
        "layout": "lora",
        "base_model": base,
        "r": adapter.get("r"),
        "task_type": adapter.get("task_type"),
    }
    if seq_cls:
        if not _adapter_has_head(weights[0], allow_pickle):
            raise layouts.unreadable(
                found, "it is a SEQ_CLS LoRA adapter that saved no score head (modules_to_save)"
            )
        return merged.to(dtype), {"converted_from": source}, base
    model, metadata = _with_value_head(found, merged, source, dtype, allow_pickle, dimension)
    return model, metadata, base


def _adapter_has_head(weights: Path, allow_pickle: bool) -> bool:
    keys = layouts.read_weights([weights], allow_pickle)
    return any(k.split("base_model.model.", 1)[-1].startswith(HEAD_NAMES) for k in keys)


def _with_value_head(
    found: layouts.Found,
    merged: PreTrainedModel,
    source: dict[str, Any],
    dtype: torch.dtype,
    allow_pickle: bool,
    dimension: int | None,
) -> tuple[PreTrainedModel, dict[str, Any]]:
    """A merged causal LM with the value head saved beside its adapter (LLaMA-Factory's value_head file, or
    the ``v_head.*`` weights TRL's value-head model writes beside a PEFT adapter)."""
    head = layouts.read_weights([found.value_head] if found.value_head else found.weights, allow_pickle)
    if not any(k.startswith("v_head.") for k in head):
        raise layouts.unreadable(
            found, "it is a causal-LM LoRA adapter with no value head beside it (value_head.safetensors)"
        )
    state = {**merged.state_dict(), **head}
    config = merged.config.to_dict()
    full = layouts.Found(
        found.path, config, found.files, found.weights or [found.path], set(state), None, state
    )
    layout = "llama-factory" if found.value_head else "trl"
    converted = layouts.load(full, layout, dtype=dtype, allow_pickle=allow_pickle, dimension=dimension)
    converted.metadata["converted_from"].update(source, layout=f"{layout} (LoRA)")
    return converted.model, converted.metadata


def save_model(
    model: PreTrainedModel,
    tokenizer,
    metadata: dict[str, Any],
    path: Path,
    extra: Callable[[Path], None] | None = None,
) -> None:
    """Save ``model`` and ``tokenizer`` to ``path`` with ``metadata`` under ``"rmkit"`` in ``config.json``:
    written into a temporary directory and renamed into place, ``config.json`` last. ``extra`` writes more
    files into the temporary directory (a VLM's value head and image processor) before the renames."""
    from rmkit.heads import MIXED, AttributeHead

    if isinstance(getattr(model, "score", None), (*MIXED, AttributeHead)):
        raise RMKitError(
            "a gated head (ArmoRM, QRM, LDL-Reward, URM) or the Decision-Tree RM's (attributes with a bias) has no "
            "standard layout to write: score, rank, eval and serve read the original checkpoint directly"
        )
    metadata["version"] = __version__
    model.config.rmkit = metadata
    model.config.pad_token_id = tokenizer.pad_token_id
    path.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-save-", dir=path))
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        if extra is not None:
            extra(tmp)
        for f in sorted(tmp.iterdir(), key=lambda f: f.name == "config.json"):
            os.replace(f, path / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def require_lm_head(lm: Any, info: dict[str, Any], name: str, why: str) -> None:
    """Refuse a causal LM whose weights lack some of what its logits are made from (an encoder such as
    MiniLM has no LM head: loaded as a causal LM, its head would start at random and ``why`` would read
    noise). Tied output embeddings are the input embeddings, in the weights, and pass."""
    absent = sorted(info.get("missing_keys") or [])
    if absent:
        shown = ", ".join(absent[:4]) + (", ..." if len(absent) > 4 else "")
        raise RMKitError(
            f"{name}: not a causal LM with its LM head in its weights ({type(lm).__name__} would start "
            f"{shown} at random), and {why}; give a causal LM (a decoder trained to write text)"
        )
