"""Vision-language judges on a tiny random Qwen2-VL (its LM head in the weights): the one-pass readouts equal
transformers' own logits at the verdict position of a judge prompt written out by hand (the image where the
template's project puts it), for a pairwise judge in both orders and a rating judge's expectation; and a pairwise judge
scored on VL-RewardBench through the suite, each item's verdict the sign of its two orders' log-odds."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import write_jsonl
from vision_models import make_vlm, picture

from rmkit.data.images import Picture
from rmkit.data.judging import TEMPLATES, Judge
from rmkit.data.vision import VisionExample

QUESTION, ANSWERS = "What colour is the square?", ["It is red.", "A blue circle"]


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return make_vlm(tmp_path_factory.mktemp("qwen2_vl_judge"), "qwen2_vl", seed=3)


def example() -> VisionExample:
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    return VisionExample(1, prompt, ANSWERS, True, images=[Picture(picture("red"), "red.png")])


@torch.no_grad()
def by_hand(path, text: str, tokens: list[str]) -> tuple[list[int], torch.Tensor]:
    """The ids of ``text`` (one image part first, as the Qwen chat template writes it) with the image token
    expanded by the processor's rule, and transformers' logits of ``tokens`` at the last position."""
    from transformers import AutoTokenizer, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tok = AutoTokenizer.from_pretrained(str(path))
    model = Qwen2VLForConditionalGeneration.from_pretrained(str(path)).eval()
    processed = Qwen2VLImageProcessorPil.from_pretrained(str(path))(
        images=[picture("red")], return_tensors="pt"
    )
    grid = processed["image_grid_thw"]
    pad = tok.convert_tokens_to_ids("<|image_pad|>")
    ids = []
    for t in tok(text, add_special_tokens=False)["input_ids"]:
        ids += [pad] * int(grid.prod() // 4) if t == pad else [t]
    input_ids = torch.tensor([ids])
    logits = model(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        pixel_values=processed["pixel_values"],
        image_grid_thw=grid,
        mm_token_type_ids=(input_ids == pad).int(),
    ).logits[0, -1]
    return ids, logits[[tok.convert_tokens_to_ids(t) for t in tokens]]


def prompt_text(judge: Judge, **fields: str) -> str:
    """The judge prompt by hand: the image before the text, or after it where the template's benchmark puts it
    (Multimodal RewardBench's runner sends the text part first)."""
    shown, image = (
        judge.text.format(question=QUESTION, **fields),
        "<|vision_start|><|image_pad|><|vision_end|>",
    )
    content = shown + image if judge.images == "last" else image + shown
    return f"<|im_start|>user\n{content}<|im_end|>\n{judge.prefix}"


def test_pairwise_readout_equals_transformers_logits_in_both_orders(backbone):
    from rmkit.vision_judges import load_vision_judge

    judge = Judge.of({"readout": "pairwise", "template": "mmrb"})
    rm = load_vision_judge(backbone, judge)
    rows = rm.example_tokenizer().tokenize([example()])[0]
    readouts = rm.score_rows(rows, batch_tokens=4096)
    for row, value, (a, b) in zip(rows, readouts, [(0, 1), (1, 0)], strict=True):
        text = prompt_text(judge, answer_a=ANSWERS[a], answer_b=ANSWERS[b])
        ids, logits = by_hand(backbone, text, ["A", "B"])
        assert row.ids == ids  # the judge prompt as written out by hand, image tokens expanded
        assert value == pytest.approx(float(logits[0] - logits[1]), abs=1e-4)
    assert readouts[0] != pytest.approx(readouts[1])  # the two orders are two different readings


def test_rating_readout_is_the_expectation_under_the_rating_tokens(backbone):
    from rmkit.vision_judges import load_vision_judge

    judge = Judge.of({"readout": "rating", "template": "rating-5"})
    rm = load_vision_judge(backbone, judge)
    rows = rm.example_tokenizer().tokenize([example()])[0]
    readouts = rm.score_rows(rows)
    for row, value, answer in zip(rows, readouts, ANSWERS, strict=True):
        ids, logits = by_hand(backbone, prompt_text(judge, answer=answer), list("12345"))
        assert row.ids == ids
        expected = float(logits.softmax(-1) @ torch.arange(1.0, 6.0))
        assert value == pytest.approx(expected, abs=1e-4)


def test_the_benchmarks_judge_templates_are_pairwise_with_their_verdicts():
    for name, (a, b) in {"llava-critic": ("first", "second"), "unified-reward": ("1", "2"),
                         "vl-rewardbench": ("1", "2"), "mmrb": ("A", "B")}.items():  # fmt: skip
        judge = Judge.of({"readout": "pairwise", "template": name})
        assert judge.pairwise and judge.tokens == [a, b]
    assert "[[A]]" in TEMPLATES["mmrb"].text and "Overall Judgment" in TEMPLATES["vl-rewardbench"].text


def test_a_pairwise_judge_on_vl_rewardbench_through_the_suite(backbone, tmp_path):
    """rmkit eval --judge pairwise --judge-template vl-rewardbench --suite vl-rewardbench: each item right
    when the log-odds of its two orders, averaged, favour the human's better answer."""
    from rmkit.cli import main
    from rmkit.vision_judges import load_vision_judge

    rm = load_vision_judge(backbone, Judge.of({"readout": "pairwise", "template": "vl-rewardbench"}))
    rows, right = [], []
    for k, colour in enumerate(["red", "blue", "green"]):
        picture(colour, seed=k).save(tmp_path / f"{k}.png")
        answers = [f"The square is {colour}.", f"I see {k} cats"]
        prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"Q{k}?"}]}]
        ex = VisionExample(k, prompt, answers, True, images=[Picture(picture(colour, seed=k), "x")])
        ab, ba = rm.score_rows(rm.example_tokenizer().tokenize([ex])[0])
        better = k % 2
        right.append((ab - ba > 0) == (better == 0))
        rows.append({"id": f"RLAIF-V-{k}", "query": f"Q{k}?", "response": answers,
                     "human_ranking": [better, 1 - better], "image_path": f"{k}.png"})  # fmt: skip
    data = write_jsonl(tmp_path / "vl.jsonl", rows)
    out = tmp_path / "ev"
    args = ["eval", "--model", str(backbone), "--judge", "pairwise", "--judge-template", "vl-rewardbench"]
    assert (
        main([*args, "--data", str(data), "--output-dir", str(out), "--bootstrap", "10", "--no-plots"]) == 0
    )
    (official,) = json.loads((out / "metrics.json").read_text())["suite"]["models"].values()
    assert official["subsets"]["hallucination"]["score"] == pytest.approx(sum(right) / 3)
