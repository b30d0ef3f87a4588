"""Vision-language judges: a VLM (Qwen2-VL, Qwen2.5-VL) read in one pass at its verdict token, the image
in the judge prompt (:mod:`rmkit.data.vision_judging`).

The judge is a :class:`rmkit.vlm.VisionRewardModel` whose head is :class:`rmkit.judges.ReadoutHead`: the rows
of the VLM's own output layer (its LM head) for the verdict tokens, read at each sequence's last real token,
so it computes exactly the logits transformers' forward gives there, and only those K. A pairwise judge's
score of a sequence is ``l(first) - l(second)``, read for both orders of an example's answers; a rating
judge's the expected rating under the softmax of its rating tokens. Everything a vision RM does holds: the
example's images through the vision encoder once for all its judge prompts, token-budget batches, either
padding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rmkit.data.judging import JUDGE_KEY, Judge
from rmkit.errors import RMKitError
from rmkit.judges import ReadoutHead, fitted, verdict_ids
from rmkit.runtime import keep_fp32, resolve_device
from rmkit.vlm import VisionRewardModel


class VisionJudge(VisionRewardModel):
    """A VLM read as a judge (module docstring)."""

    @property
    def judge(self) -> Judge:
        return Judge.of(self.metadata[JUDGE_KEY])

    def example_tokenizer(
        self, *, max_length: int | None = None, template: str | None = None, truncation: str = "left"
    ) -> Any:
        """The judge prompts' tokenizer, with the example's images (:class:`VisionJudgeTokenizer`)."""
        from rmkit.data.vision_judging import VisionJudgeTokenizer

        return VisionJudgeTokenizer(
            self.tokenizer,
            self.processor,
            self.tokens,
            self.judge,
            max_length=max_length or self.max_length,
            template=template or "auto",
            truncation=truncation,
        )


def load_vision_judge(
    path: str | Path,
    judge: Judge,
    *,
    dtype: str | torch.dtype = "auto",
    device: str | torch.device | None = None,
    allow_pickle: bool = False,
    **sizes: Any,
) -> VisionJudge:
    """The VLM at ``path`` as the readout judge ``judge`` (``sizes``: ``min_pixels``/``max_pixels``)."""
    if judge.readout not in ("pairwise", "rating", "verifier"):
        raise RMKitError(
            f"{path}: a vision-language judge reads its verdict in one pass (--judge pairwise, rating or "
            f"verifier); --judge {judge.readout} is not built for images yet"
        )
    rm = VisionJudge.from_pretrained(path, dtype=dtype, allow_pickle=allow_pickle, **sizes)
    out = rm.model.get_output_embeddings()
    if out is None:
        raise RMKitError(f"{path}: its model has no output layer (LM head) to read a verdict from")
    judge = fitted(judge, rm.tokenizer)
    ids = verdict_ids(rm.tokenizer, judge)
    bias = out.bias[ids] if getattr(out, "bias", None) is not None else None
    rm.head = ReadoutHead(out.weight[ids].detach(), bias, judge, None)
    keep_fp32(rm.head)
    rm.model.fresh_head = None
    rm.metadata.update({JUDGE_KEY: judge.stored(), "kind": "vision-judge"})
    if device is not None:
        rm.to(resolve_device(device))
    return rm.eval()
