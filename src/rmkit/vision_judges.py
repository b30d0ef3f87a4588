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

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from rmkit.data import token_budget_batches
from rmkit.data.judging import JUDGE_KEY, Judge
from rmkit.data.processing import VisionRow
from rmkit.defaults import BATCH_TOKENS, MAX_ROWS
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


class VisionGeneratingJudge(VisionJudge):
    """A VLM that writes a judgment of each judge prompt (with its images) for a parser to read
    (:mod:`rmkit.kinds.vision_judge` votes them): transformers' ``generate``, greedy with one vote, sampled
    (seeded by the judge's ``seed``) with more; each example's images through the vision encoder once, their
    features handed to ``generate`` (``mm_encoder_outputs``) for every judgment of the example."""

    generates = True

    def example_tokenizer(
        self, *, max_length: int | None = None, template: str | None = None, truncation: str = "left"
    ) -> Any:
        """The judge prompts' tokenizer; a prompt leaves ``max_new_tokens`` of the model's length free."""
        limit = max_length or (self.max_length and max(self.max_length - self.judge.max_new_tokens, 1))
        return super().example_tokenizer(max_length=limit, template=template, truncation=truncation)

    def judgments(self, rows: Sequence[VisionRow], batch_tokens: int | None = None) -> list[str]:
        """One judgment of each prompt row, in order (:func:`write`: greedy, or sampled with several votes)."""
        judge = self.judge
        return write(self, rows, batch_tokens, judge.max_new_tokens, judge.seed if judge.votes > 1 else None)


@torch.inference_mode()
def write(
    model: VisionRewardModel,
    rows: Sequence[VisionRow],
    batch_tokens: int | None,
    max_new_tokens: int,
    seed: int | None = None,
) -> list[str]:
    """What ``model`` (its LM head) writes after each prompt row, in order, decoded without special tokens:
    transformers' ``generate``, greedy, or sampled after seeding torch with ``seed``; left-padded batches of
    similar length (prompt and ``max_new_tokens`` within the token budget); each set of images through the vision
    encoder once, when its first row runs, its features kept for ``generate`` until its last row has run."""
    pad, budget = model.pad_token_id, batch_tokens or BATCH_TOKENS
    waiting = Counter(id(r.patches) for r in rows if r.patches is not None)
    features: dict[int, tuple[torch.Tensor, ...]] = {}
    out = [""] * len(rows)
    for batch in token_budget_batches([len(r.ids) + max_new_tokens for r in rows], budget, MAX_ROWS):
        part = [rows[i] for i in batch]
        features.update(model.encode([r for r in part if id(r.patches) not in features], budget))
        width = max(len(r.ids) for r in part)
        ids = torch.tensor([[pad] * (width - len(r.ids)) + list(r.ids) for r in part], device=model.device)
        mask = torch.tensor(
            [[0] * (width - len(r.ids)) + [1] * len(r.ids) for r in part], device=model.device
        )
        if seed is not None:
            torch.manual_seed(seed)
        generated = model.model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=seed is not None,
            pad_token_id=pad,
            **_images(model, ids, part, features),
            **({} if seed is not None else {"temperature": None, "top_p": None, "top_k": None}),
        )
        texts = model.tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)
        for i, text in zip(batch, texts, strict=True):
            out[i] = text
        for r in part:
            waiting[id(r.patches)] -= 1
            if r.patches is not None and not waiting[id(r.patches)]:
                del features[id(r.patches)]
    return out


def _images(
    model: VisionRewardModel,
    ids: torch.Tensor,
    part: Sequence[VisionRow],
    features: dict[int, tuple[torch.Tensor, ...]],
) -> dict[str, Any]:
    """``generate``'s inputs of a batch beside ids and mask: the family's (Qwen's image tokens' marks,
    ``mm_token_type_ids``, and grids, from which transformers computes the M-RoPE positions) and the images'
    features, encoded already."""
    with_images = [r for r in part if r.patches is not None]
    grids = [g for r in with_images for g in r.grids]
    grid = torch.tensor(grids, dtype=torch.long, device=model.device) if grids else None
    out = model.family.inputs(ids, ids.ne(model.pad_token_id), model.tokens.image_id, grid)
    out.pop("position_ids", None)  # generate counts positions itself, from the mask
    if with_images:
        pooled = model.family.encoder_outputs([f for r in with_images for f in features[id(r.patches)]])
        out["mm_encoder_outputs"] = {"image": pooled}  # the family's own output type (LLaVA's: stacked)
    return out


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
    if judge.readout not in ("pairwise", "rating", "verifier", "generate"):
        raise RMKitError(
            f"{path}: a vision-language judge reads its verdict in one pass (--judge pairwise, rating or "
            f"verifier) or writes it (--judge generate); --judge {judge.readout} is not built for images yet"
        )
    if judge.readout == "generate" and judge.engine != "transformers":
        raise RMKitError(f"{path}: an image judge writes its judgments with transformers, not {judge.engine}")
    cls = VisionGeneratingJudge if judge.readout == "generate" else VisionJudge
    rm = cls.from_pretrained(path, dtype=dtype, allow_pickle=allow_pickle, **sizes)
    out = rm.model.get_output_embeddings()
    if out is None:
        raise RMKitError(f"{path}: its model has no output layer (LM head) to read a verdict from")
    rm.model.fresh_head = None
    if judge.readout == "generate":
        rm.metadata.update({JUDGE_KEY: judge.stored(), "kind": "vision-judge"})
        return (rm.to(resolve_device(device)) if device is not None else rm).eval()
    judge = fitted(judge, rm.tokenizer)
    ids = verdict_ids(rm.tokenizer, judge)
    bias = out.bias[ids] if getattr(out, "bias", None) is not None else None
    rm.head = ReadoutHead(out.weight[ids].detach(), bias, judge, None)
    keep_fp32(rm.head)
    rm.metadata.update({JUDGE_KEY: judge.stored(), "kind": "vision-judge"})
    if device is not None:
        rm.to(resolve_device(device))
    return rm.eval()
