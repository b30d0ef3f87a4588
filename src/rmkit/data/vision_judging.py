"""What a vision-language judge reads: the judge prompt of :mod:`rmkit.data.judging` with the example's
images before it (or after it: the template's ``images``), in the one user turn the judge's chat template
renders (``<|vision_start|><|image_pad|><|vision_end|>`` an image for Qwen2-VL), then the generation prompt
and the template's prefix, so that the next token is the verdict (a generating judge: no prefix, it writes its
judgment there). The question shown is the prompt's text (its image parts are the images shown). Images are
processed and their tokens expanded as for a vision RM (:mod:`rmkit.data.processing`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from rmkit.data.formats import Example
from rmkit.data.judging import Judge, JudgeTokenizer, question_of
from rmkit.data.processing import ImageTokens, VisionTokenizer
from rmkit.data.rendering import render_plain
from rmkit.errors import RMKitError


class VisionJudgeTokenizer(VisionTokenizer, JudgeTokenizer):
    """A :class:`JudgeTokenizer` whose prompts show the example's images (module docstring); ``tokenize``
    gives :class:`rmkit.data.processing.VisionRow` s, one a judge prompt (a pairwise judge: one an ordered
    pair of answers, every one with the example's images)."""

    def __init__(self, tokenizer: Any, processor: Any, tokens: ImageTokens, judge: Judge, **options: Any):
        JudgeTokenizer.__init__(self, tokenizer, judge, **options)
        self.processor, self.tokens, self._shown = processor, tokens, 0

    def texts(self, ex: Example) -> list[str]:
        """The judge prompts of ``ex``, each with its images (the prompt's text is the question); a generating
        judge's, one a judgment (:meth:`judged`)."""
        images = len(getattr(ex, "images", []))
        prompt = [{**m, "content": _text(m["content"])} for m in ex.prompt]
        self._shown = images
        try:
            if self.judge.readout == "generate":
                return self.judged(replace(ex, prompt=prompt))
            return JudgeTokenizer.texts(self, replace(ex, prompt=prompt))
        finally:
            self._shown = 0

    def judged(self, ex: Example) -> list[str]:
        """A generating judge's prompts of ``ex``, one a judgment: a pairwise judge's ``votes`` prompts of its
        pair, each in its order (:meth:`rmkit.data.judging.Judge.orders`); a pointwise judge's ``votes`` of each
        answer."""
        judge, question = self.judge, question_of(ex.prompt)
        if not judge.pairwise:
            return [t for t in JudgeTokenizer.texts(self, ex) for _ in range(judge.votes)]
        if len(ex.responses) != 2:
            raise RMKitError(
                f"row {ex.row}: a generating pairwise image judge compares the two answers of a pair, not "
                f"{len(ex.responses)}"
            )
        return [
            self._chat(
                judge.text.format(question=question, answer_a=ex.responses[i], answer_b=ex.responses[j])
            )
            for i, j in judge.orders(ex.row)
        ]

    def render(self, prompt: Any, response: str) -> str:
        return JudgeTokenizer.render(self, prompt, response)

    def _chat(self, content: str) -> str:
        images, text = [{"type": "image"}] * self._shown, [{"type": "text", "text": content}]
        parts = text + images if self.judge.images == "last" else images + text
        if self.use_chat:
            messages = [{"role": "user", "content": parts}]
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            text = render_plain([{"role": "user", "content": self._plain(parts)}]) + "\n\nAssistant: "
        return text + self.judge.prefix


def _text(content: Any) -> str:
    """A message's text without its image parts."""
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if p.get("type") != "image")
