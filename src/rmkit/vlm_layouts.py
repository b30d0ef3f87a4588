"""The checkpoint layouts of vision-language RMs, written by ``rmkit convert --layout`` where exact.

A :class:`rmkit.vlm.VisionRewardModel` is a VLM's language model read at the last real token by one linear head.
Three public layouts hold that; rmkit reads each (:mod:`rmkit.vlm_heads`) and writes each here:

=========================  ====================================================  ===================================
layout                     the model's weights                                   the head
=========================  ====================================================  ===================================
``value-head``             the VLM unmodified (``...ForConditionalGeneration``)  ``value_head.safetensors``:
                                                                                 ``v_head.summary.weight``, ``.bias``
``align-anything``         the VLM's, with the head among them                   ``score_head.weight``, no bias
``sequence-classification``  transformers' ``Gemma3ForSequenceClassification``:    ``score.weight``, no bias
                           the VLM's ``model.*`` without its LM head
=========================  ====================================================  ===================================

``value-head`` is Skywork-VL-Reward's, DocReward's and LLaMA-Factory's, and rmkit's own. The other two have no
bias, so a head whose bias is not zero is refused for them (the bias named: dropping it would shift every score).
transformers has a sequence-classification class for Gemma3 only; the other families are refused it. Written
from a sequence-classification checkpoint, the VLM's LM head is its input embeddings (Gemma3 ties them; a config
that does not is refused, for the checkpoint holds no LM head). No layout changes a score: each is the same
model, head and readout.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn
from transformers import AutoModelForImageTextToText

from rmkit.checkpoints import save_model

LAYOUTS = ("value-head", "align-anything", "sequence-classification")
CONDITIONAL, CLASSIFIER = "ForConditionalGeneration", "ForSequenceClassification"


def layout_of(rm: Any) -> str:
    """The layout ``rm`` was read from: its head is its model's ``score`` (sequence classification), a head
    without bias (align-anything's ``score_head``), or a value head."""
    if type(rm.model).__name__.endswith(CLASSIFIER):
        return "sequence-classification"
    return "align-anything" if rm.head.bias is None else "value-head"


def why_not(rm: Any, layout: str) -> str | None:
    """Why ``rm`` cannot be written exactly in ``layout`` (``None``: it can)."""
    bias = rm.head.bias
    if layout != "value-head" and bias is not None and bool(bias.detach().ne(0).any()):
        return (
            f"--layout {layout}: its value head has a bias (v_head.summary.bias = {float(bias.detach()[0]):.6g}), "
            f"which {layout}'s head has no field for: every score would change by it"
        )
    name = type(rm.model).__name__
    if layout == "sequence-classification" and not hasattr(
        transformers, name.replace(CONDITIONAL, CLASSIFIER)
    ):
        return (
            f"--layout sequence-classification: transformers has no {name.replace(CONDITIONAL, CLASSIFIER)} "
            "(of the vision-language families, Gemma3 alone has a sequence-classification class)"
        )
    tied = getattr(rm.model.config, "tie_word_embeddings", False)
    if layout != "sequence-classification" and name.endswith(CLASSIFIER) and not tied:
        return (
            f"--layout {layout}: a {name} checkpoint holds no LM head, and its config does not tie the LM head "
            "to the input embeddings, so the VLM's weights cannot be written whole"
        )
    return None


def write(rm: Any, out: Path, layout: str) -> str:
    """Write ``rm`` to ``out`` in ``layout`` (checked by :func:`why_not`); returns the architecture written."""
    from rmkit.vlm import VisionRewardModel

    if layout == "value-head":
        vlm = _conditional(rm)
        VisionRewardModel(
            vlm, rm.tokenizer, rm.processor, rm.metadata, head=_linear(rm.head, bias=True)
        ).save_pretrained(out)
        return type(vlm).__name__
    metadata = {**rm.metadata, "kind": "vision"}
    model = _classifier(rm) if layout == "sequence-classification" else _conditional(rm)
    if layout == "align-anything":
        model.score_head = _linear(
            rm.head, bias=False
        )  # saved among the VLM's weights, as align-anything's are
    try:
        save_model(model, rm.tokenizer, metadata, out, extra=lambda f: rm.processor.save_pretrained(str(f)))
    finally:
        if layout == "align-anything":
            del model.score_head
    return type(model).__name__


def _linear(head: nn.Linear, bias: bool) -> nn.Linear:
    """A copy of ``head`` in fp32, with a bias (``head``'s, else zero) or without (``head``'s being zero)."""
    out = nn.Linear(head.in_features, 1, bias=bias)
    with torch.no_grad():
        out.weight.copy_(head.weight.detach().float())
        if bias:
            out.bias.copy_(head.bias.detach().float() if head.bias is not None else torch.zeros(1))
    return out


def _conditional(rm: Any) -> Any:
    """The VLM of ``rm``: its model, or for a sequence classifier the VLM around the same ``model`` with the LM
    head tied to the input embeddings."""
    if not type(rm.model).__name__.endswith(CLASSIFIER):
        return rm.model
    config = copy.deepcopy(rm.model.config)
    config.architectures = [type(rm.model).__name__.replace(CLASSIFIER, CONDITIONAL)]
    with torch.device("meta"):
        vlm = AutoModelForImageTextToText.from_config(config)
    vlm.model = rm.model.model
    vlm.lm_head.weight = vlm.get_input_embeddings().weight
    return vlm


def _classifier(rm: Any) -> Any:
    """transformers' sequence classifier of ``rm``'s family around the same ``model``, ``score`` its head."""
    if type(rm.model).__name__.endswith(CLASSIFIER):
        return rm.model
    name = type(rm.model).__name__.replace(CONDITIONAL, CLASSIFIER)
    config = copy.deepcopy(rm.model.config)
    config.num_labels, config.architectures = 1, [name]
    with torch.device("meta"):
        model = getattr(transformers, name)(config)
    model.model, model.score = rm.model.model, _linear(rm.head, bias=False)
    return model
