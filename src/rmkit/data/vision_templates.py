"""Judge prompts of the vision-language judges and benchmarks, for a judge that sees the image, placed where
their own code puts it (``images``: before the prompt, or ``last``: VL-RewardBench's ``inference.py`` and
Multimodal RewardBench's runner send the prompt's text part, then the image). Each is read in one pass: the
prompt, the chat template's generation prompt, then the ``prefix``, after which the verdict token's logits are
read (first answer against second); or, with ``--judge generate``, the judge writes its judgment and the
template's ``parser`` reads the verdict (:mod:`rmkit.data.verdicts`), the pair shown in the ``pair_order`` its
project shows it: ``shuffled`` (VL-RewardBench: each judgment's order a coin) or ``given``. The prompts are
each project's own; the prefixes are where their judgments write the verdict:

- ``llava-critic``: LLaVA-Critic's pairwise critic prompt (lmms-lab/llava-critic-7b's model card); its
  judgments name "the first/second response".
- ``unified-reward``: UnifiedReward's pairwise prompt for image understanding (CodeGoat24/UnifiedReward-7b's
  example), whose judgment ends "Overall Judgment: Answer X is better."
- ``vl-rewardbench``: VL-RewardBench's judge prompt (``prompt.py``), whose ``cal.py`` reads
  "Overall Judgment: Answer N is better".
- ``mmrb``: Multimodal RewardBench's judge prompt (``scripts/1_run_model_as_judge_gpt4o.py``), whose
  ``2_get_accuracy.py`` reads ``[[A]]`` or ``[[B]]``.

They are plain dictionaries (the fields of :class:`rmkit.data.judging.Template`), so this module imports
nothing of rmkit's.
"""

from __future__ import annotations

_CRITERIA = (
    "Please evaluate both answers based on the following criteria:\n"
    "1. Accuracy: How well does the answer align with the visual information in the image?\n"
    "2. Completeness: Does the answer fully address all aspects of the question?\n"
    "3. Clarity: Is the answer easy to understand and well-articulated?\n"
    "4. Relevance: Does the answer directly relate to the question and the image?\n"
)

VISION_TEMPLATES: dict[str, dict] = {
    "llava-critic": {
        "readout": "pairwise",
        "text": "Given an image and a corresponding question, please serve as an unbiased and fair judge to "
        "evaluate the quality of the answers provided by a Large Multimodal Model (LMM). Determine which "
        "answer is better and explain your reasoning with specific details. Your task is provided as "
        "follows:\nQuestion: [{question}]\nThe first response: [{answer_a}]\nThe second response: "
        "[{answer_b}]\nASSISTANT:\n",
        "prefix": "The better response is the ",
        "tokens": ("first", "second"),
        "parser": "first-second",
        "pair_order": "shuffled",
    },
    "unified-reward": {
        "readout": "pairwise",
        "text": "You are a highly capable multimodal AI assistant tasked with evaluating answers to visual "
        "questions. Please analyze the following image and question, then determine which of the two "
        "provided answers is better\nQuestion: {question}\nAnswer 1: {answer_a}\nAnswer 2: {answer_b}\n"
        + _CRITERIA
        + "After your evaluation, please:\n1. Explain your reasoning for each criterion.\n2. Provide an "
        'overall judgment on which answer is better (Answer 1 or Answer 2). For example: "Overall '
        'Judgment: Answer X is better."\nYour response should be structured and detailed, demonstrating '
        "your understanding of both the visual and textual elements of the task.",
        "prefix": "Overall Judgment: Answer ",
        "tokens": ("1", "2"),
        "parser": "overall-judgment",
        "pair_order": "shuffled",
    },
    "vl-rewardbench": {
        "readout": "pairwise",
        "text": " You are a highly capable multimodal AI assistant tasked with evaluating answers to visual "
        "questions. Please analyze the following image and question, then determine which of the two "
        "provided answers is better.\n\nQuestion: {question}\n\nAnswer 1: {answer_a}\n\nAnswer 2: "
        "{answer_b}\n\n"
        + _CRITERIA
        + "\nAfter your evaluation, please:\n1. Explain your reasoning for each criterion.\n2. Provide an "
        "overall judgment on which answer is better (Answer 1 or Answer 2). For example: Overall Judgment: "
        "Answer X is better.\n\nYour response should be structured and detailed, demonstrating your "
        "understanding of both the visual and textual elements of the task.",
        "prefix": "Overall Judgment: Answer ",
        "tokens": ("1", "2"),
        "parser": "overall-judgment",
        "pair_order": "shuffled",
        "images": "last",
    },
    "mmrb": {
        "readout": "pairwise",
        "text": "Please act as an impartial judge and evaluate the quality of the responses provided by two AI "
        "assistants to the user question displayed below. You should choose the assistant that follows the "
        "user's instructions and answers the user's question better. Your evaluation should consider "
        "factors such as the helpfulness, relevance, accuracy, depth, creativity, and level of detail of "
        "their responses. Begin your evaluation by comparing the two responses and provide a short "
        "explanation. Avoid any position biases and ensure that the order in which the responses were "
        "presented does not influence your decision. Do not allow the length of the responses to influence "
        "your evaluation. Do not favor certain names of the assistants. Be as objective as possible. After "
        "providing your explanation, output your final verdict by strictly following this format: "
        '"[[A]]" if assistant A is better, "[[B]]" if assistant B is better.\n\n[User Question]\n'
        "{question}\n\n[The Start of Assistant A's Answer]\n{answer_a}\n[The End of Assistant A's Answer]"
        "\n\n[The Start of Assistant B's Answer]\n{answer_b}\n[The End of Assistant B's Answer]",
        "prefix": "[[",
        "tokens": ("A", "B"),
        "parser": "mmrb",
        "pair_order": "given",
        "images": "last",
    },
}
