"""What a vision-language judge reads: the judge prompt of :mod:`rmkit.data.judging` with the example's
images before it, in the one user turn the judge's chat template renders (``<|vision_start|><|image_pad|>
<|vision_end|>`` an image for Qwen2-VL), then the generation prompt and the template's prefix, so that the
next token is the verdict. The question shown is the prompt's text (its image parts are the images shown
first). Images are processed and their tokens expanded as for a vision RM (:mod:`rmkit.data.processing`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from rmkit.data.formats import Example
from rmkit.data.judging import Judge, JudgeTokenizer
from rmkit.data.processing import ImageTokens, VisionTokenizer
from rmkit.data.rendering import render_plain


class VisionJudgeTokenizer(VisionTokenizer, JudgeTokenizer):
    """A :class:`JudgeTokenizer` whose prompts show the example's images (module docstring); ``tokenize``
    gives :class:`rmkit.data.processing.VisionRow` s, one a judge prompt (a pairwise judge: one an ordered
    pair of answers, every one with the example's images)."""

    def __init__(self, tokenizer: Any, processor: Any, tokens: ImageTokens, judge: Judge, **options: Any):
        JudgeTokenizer.__init__(self, tokenizer, judge, **options)
        self.processor, self.tokens, self._shown = processor, tokens, 0

    def texts(self, ex: Example) -> list[str]:
        """The judge prompts of ``ex``, each after its images (the prompt's text is the question)."""
        images = len(getattr(ex, "images", []))
        prompt = [{**m, "content": _text(m["content"])} for m in ex.prompt]
        self._shown = images
        try:
            return JudgeTokenizer.texts(self, replace(ex, prompt=prompt))
        finally:
            self._shown = 0

    def render(self, prompt: Any, response: str) -> str:
        return JudgeTokenizer.render(self, prompt, response)

    def _chat(self, content: str) -> str:
        parts = [{"type": "image"}] * self._shown + [{"type": "text", "text": content}]
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
