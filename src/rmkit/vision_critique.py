"""MM-RLHF's critique-then-score reward model (MM-RLHF-Reward-7B; its ``llava/eval/eval_mm_reward_bench.py``
and ``llava/model/language_model/llava_qwen.py``): the VLM first writes a critique of an answer, then its
reward head reads the conversation that holds the critique::

    user:      <image>\\n[the critique prompt: the question and the answer]
    assistant: (the critique the model writes, greedy, decoded without special tokens and stripped)
    score = out_proj(tanh(dense(h))) at the conversation's last token

The head is MM-RLHF's ``RewardHead`` (``rm_head.dense``: H→H, then tanh, then ``rm_head.out_proj``: H→1; its
dropouts are off at inference), stored among the model's weights. rmkit reads this RM on the Qwen2-VL and
Qwen2.5-VL backbones transformers has (``rm_head.*`` beside the VLM's weights) and on MM-RLHF's own checkpoint,
LLaVA-OneVision in LLaVA-NeXT's layout (model type ``llava_qwen``), read as transformers' LLaVA-OneVision
(:mod:`rmkit.llava_qwen`: its config translated, its weights renamed as they load, no remote code).

The critique prompts are a pointwise generating judge's (:class:`rmkit.data.vision_judging.VisionJudgeTokenizer`:
the images, then the prompt's text); the critiques are written as a generating image judge writes
(:func:`rmkit.vision_judges.write`), then each answer's conversation is tokenised and scored as a vision RM's
rows are (:meth:`rmkit.vlm.VisionRewardModel.score_rows`), at its last token (no EOS appended, as MM-RLHF reads
it after its chat template's ``<|im_end|>\\n``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from rmkit import llava_qwen
from rmkit.data.judging import Judge
from rmkit.data.processing import VisionRow
from rmkit.data.vision_judging import VisionJudgeTokenizer
from rmkit.errors import RMKitError
from rmkit.runtime import keep_fp32, resolve_device, resolve_dtype
from rmkit.vision_judges import write
from rmkit.vlm import VisionRewardModel

HEAD = "rm_head"
HEAD_FILE = "rm_head.safetensors"  # where rmkit convert writes the head (beside the VLM's own weights)
CRITIQUE_TOKENS = 4096  # MM-RLHF's --max_new_tokens
# MM-RLHF's critic prompt (make_conv_rm), its fields named as rmkit's judge templates name them
CRITIQUE_PROMPT = (
    "You are an unbiased and fair evaluator tasked with assessing the quality of answers provided by a Large "
    "Multimodal Model (LMM). Given the following question and the LMM's response, please evaluate the "
    "correctness, clarity, and completeness of the answer. Provide a detailed explanation of your assessment, "
    "including specific points of strength and areas for improvement.\n\n[Question]: {question}\n[LMM Response]: "
    "{answer}\n\n[Evaluation]:"
)


class CritiqueHead(nn.Module):
    """MM-RLHF's reward head: ``out_proj(tanh(dense(h)))``, (..., H) -> (..., 1)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.dense, self.out_proj = nn.Linear(hidden, hidden), nn.Linear(hidden, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.out_proj(torch.tanh(self.dense(hidden)))


class CritiqueTokenizer(VisionJudgeTokenizer):
    """The critique prompts of each example's answers (one a row, the generation prompt last) and, given the
    critiques, the conversations the head reads (:meth:`scored`)."""

    _written: Any = None

    def _chat(self, content: str) -> str:
        if self._shown:  # LLaVA's "<image>\n" before the prompt
            content = "\n" + content
        if self._written is None:
            return super()._chat(content)
        images = [{"type": "image"}] * self._shown
        messages = [
            {"role": "user", "content": [*images, {"type": "text", "text": content}]},
            {"role": "assistant", "content": next(self._written)},
        ]
        return self.tokenizer.apply_chat_template(messages, tokenize=False)

    def scored(self, examples: Sequence[Any], critiques: Sequence[str]) -> list[list[VisionRow] | None]:
        """The conversations of ``examples``' answers, each with its critique (in the order of their prompts);
        ``None`` for an example too long to keep whole."""
        self._written = iter(critiques)
        try:
            return self.tokenize(examples)  # type: ignore[return-value]
        finally:
            self._written = None


class CritiqueRewardModel(VisionRewardModel):
    """A VLM with its LM head and MM-RLHF's reward head (module docstring)."""

    generates = True  # it writes before it scores (the server does not serve it)
    critique_tokens = CRITIQUE_TOKENS

    def example_tokenizer(
        self, *, max_length: int | None = None, template: str | None = None, truncation: str = "left"
    ) -> CritiqueTokenizer:
        """The critique prompts' tokenizer (the chat template is needed: the critique is the assistant's turn)."""
        judge = Judge("generate", CRITIQUE_PROMPT, votes=1)
        return CritiqueTokenizer(
            self.tokenizer,
            self.processor,
            self.tokens,
            judge,
            max_length=max_length or self.max_length,
            template=template or "chat",
            truncation=truncation,
        )

    def critiques(self, rows: Sequence[VisionRow], batch_tokens: int | None = None) -> list[str]:
        """The critique of each prompt row, greedy (MM-RLHF's temperature 0), stripped."""
        return [t.strip() for t in write(self, rows, batch_tokens, self.critique_tokens)]


def load_critique_rm(
    path: str | Path,
    *,
    dtype: Any = "auto",
    device: Any = None,
    allow_pickle: bool = False,
    max_new_tokens: int | None = None,
    **sizes: Any,
) -> CritiqueRewardModel:
    """The critique-then-score RM at ``path``: a Qwen2-VL or Qwen2.5-VL checkpoint with ``rm_head.*`` among its
    weights, or MM-RLHF's own ``llava_qwen`` one (:mod:`rmkit.llava_qwen`)."""
    if llava_qwen.is_llava_qwen(json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))):
        if any(sizes.values()):
            raise RMKitError(f"{path}: --min-pixels/--max-pixels bound Qwen's image processors, not LLaVA's")
        parts = llava_qwen.load(path, resolve_dtype(dtype, torch.device("cpu")))
        rm = CritiqueRewardModel.assembled(Path(path), *parts, allow_pickle=allow_pickle, device=None)
        rm.metadata["converted_from"] = {"layout": llava_qwen.MODEL_TYPE}
    else:
        rm = CritiqueRewardModel.from_pretrained(path, dtype=dtype, allow_pickle=allow_pickle, **sizes)
    if rm.model.get_output_embeddings() is None:
        raise RMKitError(f"{path}: its model has no LM head to write a critique with")
    hidden = rm.model.config.get_text_config().hidden_size
    head = CritiqueHead(hidden)
    head.load_state_dict(_head_weights(Path(path)))
    rm.head = head
    keep_fp32(rm.head)
    rm.model.fresh_head = None
    rm.critique_tokens = max_new_tokens or CRITIQUE_TOKENS
    rm.metadata["kind"] = "vision-critique"
    if device is not None:
        rm.to(resolve_device(device))
    return rm.eval()


def save_critique_rm(rm: CritiqueRewardModel, path: Path) -> str:
    """Write ``rm`` as transformers writes its VLM (a ``llava_qwen`` one as a standard LLaVA-OneVision), with
    its tokenizer, image processor, rmkit's settings (the kind) and ``rm_head.safetensors``; its architecture."""
    from safetensors.torch import save_file

    from rmkit.checkpoints import save_model

    def extra(folder: Path) -> None:
        rm.processor.save_pretrained(str(folder))
        head = {f"{HEAD}.{k}": v.detach().float().cpu().contiguous() for k, v in rm.head.state_dict().items()}
        save_file(head, str(folder / HEAD_FILE), metadata={"format": "pt"})

    metadata = {**rm.metadata, "kind": "vision-critique"}
    save_model(rm.model, rm.tokenizer, metadata, Path(path), extra=extra)
    return rm.model.config.architectures[0]


def _head_weights(path: Path) -> dict[str, torch.Tensor]:
    """``rm_head.*`` of the checkpoint's safetensors (``rm_head.safetensors`` where rmkit wrote one), named as
    :class:`CritiqueHead` names them."""
    index = path / "model.safetensors.index.json"
    files = (
        sorted(
            {path / f for k, f in json.loads(index.read_text())["weight_map"].items() if k.startswith(HEAD)}
        )
        if index.is_file()
        else sorted(path.glob("*.safetensors"))
    )
    if (path / HEAD_FILE).is_file() and path / HEAD_FILE not in files:
        files.append(path / HEAD_FILE)
    found: dict[str, torch.Tensor] = {}
    for f in files:
        with safe_open(str(f), "pt") as weights:
            for key in weights.keys():  # noqa: SIM118 (a safetensors file is no dict)
                if key.startswith(HEAD + "."):
                    found[key[len(HEAD) + 1 :]] = weights.get_tensor(key)
    want = {"dense.weight", "dense.bias", "out_proj.weight", "out_proj.bias"}
    if set(found) != want:
        raise RMKitError(
            f"{path}: a critique-then-score RM keeps {HEAD}.dense and {HEAD}.out_proj (weight, bias) among its "
            f"weights; found {sorted(found) or 'none'}"
        )
    return found
