"""The kinds of reward model rmkit reads, and the one place every command asks which kind it holds.

============  =======================================  ==========================================
kind          a checkpoint of this kind                its data (eval, train)
============  =======================================  ==========================================
guard         a judge given ``--judge-template``       safety-labelled responses (the cost kind's)
              ``llama-guard`` or ``shieldgemma``: a
              cost model (judge settings' ``meaning``)
vision-judge  a Qwen2-VL or Qwen2.5-VL model given     preference pairs with images
              ``--judge`` (a VLM read at its verdict)
judge         a causal LM given ``--judge``, or rmkit  preference pairs
              judge settings (a converted verifier)
audio         a Qwen2-Audio model and its value head   preference pairs with audio
vision-       a Qwen2-VL or Qwen2.5-VL model with      preference pairs with images
critique      MM-RLHF's ``rm_head``, or MM-RLHF's own
              ``llava_qwen`` checkpoint: it writes a
              critique, then scores (MM-RLHF-Reward)
vision        a Qwen2-VL, Qwen2.5-VL, LLaVA or Gemma3  preference pairs with images
              VLM and its value head
process       token classifier, rmkit step settings,   step-labelled solutions
              or ``--good-token``/``--bad-token``
decision-     a rated RM with ``decision_tree.pkl``    rated responses; its pairs and best-of-N
tree          beside it (:mod:`rmkit.kinds.tree`)      rows judged by the tree
rated         sequence classifier with K > 1 labels    rated responses
cost          one-label classifier whose rmkit         safety-labelled responses (BeaverTails;
              settings say cost, or safe-rlhf's        PKU-SafeRLHF with ``--objective cost``)
              ``score_type: cost``
pairwise      anything else (one score a response)     preference pairs
============  =======================================  ==========================================

:data:`KINDS` lists them most specific first; the first that recognises a checkpoint (:func:`load`), owns a
loaded model (:func:`of_model`) or holds a data file (:func:`for_data`) is the one, and the last, pairwise, is
the fallback: a checkpoint no kind recognises is a pairwise RM, data no kind holds is preference pairs. A checkpoint whose rmkit
settings name a kind (``"rmkit": {"kind": ...}``) is that kind, or an error when no kind has that name.
:func:`register` adds a kind (ahead of the built-in ones); :mod:`rmkit.kinds.base` says what a kind answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rmkit.defaults import NATIVE_MODEL_TYPES
from rmkit.errors import RMKitError
from rmkit.kinds.audio import AudioKind
from rmkit.kinds.base import Checkpoint, Kind, Reading, Sequences
from rmkit.kinds.cost import CostKind
from rmkit.kinds.critique import CritiqueKind
from rmkit.kinds.guard import GuardKind
from rmkit.kinds.judge import JudgeKind
from rmkit.kinds.pairwise import PairwiseKind
from rmkit.kinds.process import ProcessKind
from rmkit.kinds.rated import RatedKind
from rmkit.kinds.tree import TreeKind
from rmkit.kinds.vision import VisionKind
from rmkit.kinds.vision_judge import VisionJudgeKind

KINDS: list[Kind] = [
    GuardKind(),
    VisionJudgeKind(),
    JudgeKind(),
    AudioKind(),
    CritiqueKind(),
    VisionKind(),
    ProcessKind(),
    TreeKind(),
    RatedKind(),
    CostKind(),
    PairwiseKind(),
]

__all__ = [
    "KINDS",
    "Checkpoint",
    "Kind",
    "Reading",
    "Sequences",
    "for_data",
    "load",
    "of_model",
    "recognise",
    "register",
    "require_head",
    "unregister",
]


def register(kind: Kind) -> Kind:
    """Add ``kind`` to the registry, ahead of the kinds there (a new kind is more specific than they are;
    the fallback stays last); returns it. A kind of the same name is replaced."""
    if kind.name == KINDS[-1].name:
        raise RMKitError(
            f"the kind '{kind.name}' is the registry's fallback; give a new kind a name of its own"
        )
    KINDS[:] = [kind] + [k for k in KINDS if k.name != kind.name]
    return kind


def unregister(name: str) -> None:
    """Remove the kind called ``name`` (a kind :func:`register` added)."""
    if name == KINDS[-1].name:
        raise RMKitError(f"the kind '{name}' is the registry's fallback and stays")
    KINDS[:] = [k for k in KINDS if k.name != name]


def named(name: str) -> Kind | None:
    return next((k for k in KINDS if k.name == name), None)


def recognise(checkpoint: Checkpoint) -> Kind:
    """The kind of ``checkpoint``: the one its rmkit settings name, else the first that recognises it."""
    name = checkpoint.metadata.get("kind")
    if name is not None:
        kind = named(str(name))
        if kind is None:
            raise RMKitError(
                f"{checkpoint.path}: its rmkit settings name the kind '{name}', which this rmkit does not "
                f"know (it knows {', '.join(k.name for k in KINDS)}); it looks like: {checkpoint.describe()}"
            )
        return kind
    refuse_remote_code(checkpoint)
    return next((k for k in KINDS if k.recognises(checkpoint)), KINDS[-1])


def refuse_remote_code(checkpoint: Checkpoint) -> None:
    """Refuse, in one line and before any weight loads, a checkpoint that only its own code reads (its config's
    ``auto_map`` names classes for a model type transformers does not have: IXC-2.5-Reward's
    ``internlmxcomposer2``) unless ``--trust-remote-code`` was given; one rmkit reads natively
    (:data:`rmkit.defaults.NATIVE_MODEL_TYPES`: InternLM2-Reward) passes."""
    auto_map, model_type = checkpoint.config.get("auto_map"), checkpoint.config.get("model_type")
    if not auto_map or checkpoint.options.get("trust_remote_code"):
        return
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if model_type in CONFIG_MAPPING_NAMES or model_type in NATIVE_MODEL_TYPES:
        return
    classes = ", ".join(sorted({str(v).split(".")[-1] for v in dict(auto_map).values()}))
    raise RMKitError(
        f"{checkpoint.path}: model type '{model_type}' is read only by the checkpoint's own code ({classes}); "
        "rmkit runs that code only with --trust-remote-code (read it first)"
    )


def load(
    path: str | Path | Checkpoint,
    options: dict[str, Any] | None = None,
    steps: dict[str, Any] | None = None,
    *,
    dtype: Any = "auto",
    device: Any = None,
) -> tuple[Kind, Any]:
    """``(kind, model)`` of the checkpoint at ``path`` (or a :class:`Checkpoint` already read), loaded by its
    kind with the loading ``options`` (those of :meth:`rmkit.RewardModel.from_pretrained`) and the step
    format ``steps`` (:class:`Checkpoint`)."""
    checkpoint = path if isinstance(path, Checkpoint) else Checkpoint.read(path, options, steps)
    model = recognise(checkpoint).load(checkpoint, dtype, device)
    require_head(model, checkpoint.path)
    return of_model(model, where=checkpoint.path), model


def of_model(model: Any, *, where: str | None = None) -> Kind:
    """The kind of a loaded ``model``: the one its metadata names, else the first that owns it."""
    name = (getattr(model, "metadata", None) or {}).get("kind")
    kind = named(str(name)) if name is not None else next((k for k in KINDS if k.owns(model)), None)
    if kind is None or not kind.owns(model):
        said = f"its rmkit settings name the kind '{name}'" if name is not None else "no kind reads it"
        raise RMKitError(
            f"{where or type(model).__name__}: {said} (a {type(model).__name__}; rmkit knows "
            f"{', '.join(k.name for k in KINDS)})"
        )
    return kind


def for_data(paths: Sequence[str], reading: Reading) -> Kind:
    """The kind whose data the files ``paths`` hold (the first kind that holds each); all must agree."""
    found = [next((k for k in KINDS if k.holds(p, reading)), KINDS[-1]) for p in paths]
    if len({k.name for k in found}) > 1:
        held = "; ".join(f"{p} holds {k.data}" for p, k in zip(paths, found, strict=True))
        raise RMKitError(f"the data files hold different kinds of data, which one run cannot mix: {held}")
    return found[0]


def check(judge: Kind, checkpoint: Checkpoint, kind: Kind, data: str) -> None:
    """Refuse, in one line, a model of ``kind`` that ``judge``'s evaluation cannot judge."""
    if not judge.evaluates(kind):
        raise RMKitError(
            f"{checkpoint.path} is a {kind.name} reward model ({checkpoint.describe()}), which scores "
            f"{kind.unit}; {data} holds {judge.data}, which a {kind.name} reward model does not score"
        )


def require_head(model: Any, path: str) -> None:
    """Refuse, for a command that reads scores, a model whose score head is not in its weights: loaded as a
    classifier it would get a random one, and its scores would mean nothing. The error names the weights it
    has that no head of rmkit's kinds reads, and the kinds tried. (``rmkit train`` starts from such a
    backbone on purpose, through :meth:`rmkit.RewardModel.from_pretrained`.)"""
    fresh = getattr(getattr(model, "model", None), "fresh_head", None)
    if not fresh:
        return
    unused = getattr(model.model, "unused_weights", None) or []
    found = (
        f"; its weights hold {', '.join(unused[:6])}{', ...' if len(unused) > 6 else ''}, which no kind reads as a head"
        if unused
        else "; its weights hold no head at all (a backbone)"
    )
    architectures = getattr(getattr(model.model, "config", None), "architectures", None) or []
    writes = any(a.endswith(("ForCausalLM", "ForConditionalGeneration")) for a in architectures) or any(
        "lm_head" in w for w in unused
    )  # a causal LM, with its LM head, can be read as a judge; an encoder (MiniLM) cannot
    advice = (
        ", convert it from its trainer's layout (rmkit convert), or read it as a judge (--judge)"
        if writes
        else " or convert it from its trainer's layout (rmkit convert); it has no LM head, so it cannot be "
        "read as a judge"
    )
    raise RMKitError(
        f"{path}: no trained score head in its weights ({', '.join(fresh)} would start at random){found}; "
        f"rmkit tried the kinds {', '.join(k.name for k in KINDS)}. Train it first (rmkit train --model "
        f"{path}){advice}"
    )
