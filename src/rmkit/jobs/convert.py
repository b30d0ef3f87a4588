"""``rmkit convert SRC DST``: write any reward-model checkpoint rmkit reads as the standard layout.

The source is read as its kind reads it (:func:`rmkit.kinds.load`; another trainer's layout is converted
in memory, :mod:`rmkit.layouts`; a kind with no standard layout to write is refused); the result is a one-label ``*ForSequenceClassification``
checkpoint in safetensors with the tokenizer beside it, which transformers, TRL, vLLM and RewardBench load
with no missing or unexpected key. What the standard layout has no field for (a head bias, the source's
normalisation, the layout it came from) is kept in rmkit's metadata in ``config.json``. ``--layout`` names
another layout the kind writes (:meth:`rmkit.kinds.Kind.convert`): a vision-language RM's are the VLM with
``value_head.safetensors`` (its ``auto``), align-anything's and transformers' sequence classifier
(:mod:`rmkit.vlm_layouts`), each where exact.

With ``--verifier`` (``--judge verifier``) the source is a causal LM read as a yes/no judge, written as a
classifier whose one logit is the judge's log-odds (:func:`rmkit.judges.verifier_classifier`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from rmkit import kinds
from rmkit.errors import RMKitError
from rmkit.files import claim_output_dir
from rmkit.jobs.config import ConvertConfig

log = logging.getLogger(__name__)


def convert(config: ConvertConfig) -> dict[str, Any]:
    """Convert ``config.source`` into ``config.output``; return (and print) what was done."""
    out = Path(config.output)
    if Path(config.source).resolve() == out.resolve():
        raise RMKitError("convert: the output directory must differ from the source")
    claim_output_dir(out, overwrite=config.overwrite, flag="the output directory")
    if config.judge is not None:
        return _verifier(config, out)
    kind, rm = kinds.load(kinds.Checkpoint.read(config.source, config.loading()), dtype=config.dtype)
    why = kind.convertible(rm)
    if why is not None:
        raise RMKitError(f"{config.source}: {why}")
    try:
        written = kind.convert(rm, out, config.layout)
    except RMKitError as e:
        raise RMKitError(f"{config.source}: {e}") from None
    source = written["layout"]
    kept = {k: rm.metadata[k] for k in ("score_bias", "score_mean", "score_std") if k in rm.metadata}
    summary = {
        "source": config.source,
        "layout": source,
        "output": str(out),
        "architecture": written["architecture"],
        "metadata": kept,
    }
    as_layout = "" if config.layout == "auto" else f" ({config.layout})"
    print(f"{config.source} ({source}) -> {out}{as_layout}: a {summary['architecture']} in safetensors")
    if "score_bias" in kept:
        print(
            f"  head bias {kept['score_bias']:.6g}: in rmkit's metadata (rmkit adds it; plain transformers "
            "gives every score less this constant, so rankings and margins are unchanged)"
        )
    if source in ("mlp-head", "grm"):
        print(
            "  its score head (linear layers with ReLU between) is not linear: written in its own layout "
            "(score.0, score.2, ...), which rmkit reads and serves; plain transformers, TRL and vLLM would not read "
            "it as a one-label classifier"
        )
    if "score_std" in kept:
        print(
            f"  normalisation: mean {kept.get('score_mean', 0.0):.6g}, std {kept['score_std']:.6g} "
            "(applied with --normalize)"
        )
    return summary


def _verifier(config: ConvertConfig, out: Path) -> dict[str, Any]:
    """``rmkit convert SRC DST --verifier``: a yes/no judge as a one-label classifier (:mod:`rmkit.judges`)."""
    from rmkit.data.judging import Judge
    from rmkit.judges import verifier_classifier

    judge = Judge.of(config.judging() or {})
    verifier_classifier(
        config.source,
        out,
        judge,
        allow_pickle=config.allow_pickle,
        trust_remote_code=config.trust_remote_code,
    )
    what = (
        f"the log-odds of {judge.tokens[0]!r} against {judge.tokens[1]!r}"
        if judge.readout == "verifier"
        else f"the logit of vocabulary entry {(judge.ids or judge.tokens)[0]}"
    )
    print(
        f"{config.source} (a causal LM read as a {judge.template!r} judge) -> {out}: a one-label classifier "
        f"whose score is {what}; its judge prompt is in its rmkit settings"
    )
    return {"source": config.source, "output": str(out), "judge": judge.stored()}
