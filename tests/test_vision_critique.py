"""MM-RLHF's critique-then-score RM on a tiny random Qwen2-VL with its LM head and an ``rm_head`` (dense, tanh,
out_proj) among its weights: rmkit's score of each answer equals a by-hand run of MM-RLHF's steps with plain
transformers (the critique prompt written out, transformers' own greedy ``generate``, the critique decoded and
stripped, the conversation holding it through the VLM, the head at its last token); a ``llava_qwen``
checkpoint without safetensors is refused in one line (its native reading: tests/test_llava_qwen.py)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import write_jsonl
from safetensors.torch import load_file, save_file
from vision_models import make_vlm, picture

from rmkit.vision_critique import CRITIQUE_PROMPT

NEW_TOKENS = 6
ROWS = [("What colour is the square?", "It is red.", "A blue circle"), ("Is there a circle?", "yes", "No")]


@pytest.fixture(scope="module")
def critic(tmp_path_factory):
    """A tiny Qwen2-VL whose safetensors also hold MM-RLHF's rm_head (random, seeded)."""
    path = make_vlm(tmp_path_factory.mktemp("critic"), "qwen2_vl", seed=4)
    weights = load_file(str(path / "model.safetensors"))
    torch.manual_seed(9)
    hidden = json.loads((path / "config.json").read_text())["text_config"]["hidden_size"]
    weights |= {"rm_head.dense.weight": torch.randn(hidden, hidden) / hidden**0.5, "rm_head.dense.bias": torch.randn(hidden),
                "rm_head.out_proj.weight": torch.randn(1, hidden), "rm_head.out_proj.bias": torch.randn(1)}  # fmt: skip
    save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


@torch.no_grad()
def by_hand(path, question: str, answer: str, image) -> tuple[str, float]:
    """MM-RLHF's eval_mm_reward_bench.py steps with plain transformers: its critic prompt after the image, the
    model's greedy critique, then the reward head on the conversation's last token."""
    from transformers import AutoTokenizer, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tok = AutoTokenizer.from_pretrained(str(path))
    model = Qwen2VLForConditionalGeneration.from_pretrained(str(path)).eval()
    processed = Qwen2VLImageProcessorPil.from_pretrained(str(path))(images=[image], return_tensors="pt")
    grid, pad = processed["image_grid_thw"], tok.convert_tokens_to_ids("<|image_pad|>")

    def ids_of(text: str) -> torch.Tensor:
        ids = []
        for t in tok(text, add_special_tokens=False)["input_ids"]:
            ids += [pad] * int(grid.prod() // 4) if t == pad else [t]
        return torch.tensor([ids])

    def inputs(ids: torch.Tensor) -> dict:
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": processed["pixel_values"],
                "image_grid_thw": grid, "mm_token_type_ids": (ids == pad).int()}  # fmt: skip

    user = ("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>\n"
            + CRITIQUE_PROMPT.format(question=question, answer=answer) + "<|im_end|>\n")  # fmt: skip
    prompt = ids_of(user)
    out = model.generate(
        **inputs(prompt), max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=tok.pad_token_id
    )
    critique = tok.decode(out[0, prompt.shape[1] :], skip_special_tokens=True).strip()
    conversation = ids_of(user + f"<|im_start|>assistant\n{critique}<|im_end|>\n")
    hidden = model.model(**inputs(conversation)).last_hidden_state[0, -1]
    weights = load_file(str(path / "model.safetensors"))
    dense = torch.tanh(weights["rm_head.dense.weight"] @ hidden + weights["rm_head.dense.bias"])
    return critique, float(
        weights["rm_head.out_proj.weight"][0] @ dense + weights["rm_head.out_proj.bias"][0]
    )


def test_the_score_is_a_by_hand_critique_then_forward(critic, tmp_path):
    from rmkit.cli import main

    rows = []
    for k, (question, chosen, rejected) in enumerate(ROWS):
        picture(["red", "blue"][k], seed=k).save(tmp_path / f"{k}.png")
        rows.append({"question": question, "image": f"{k}.png", "chosen": chosen, "rejected": rejected})
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "scores.jsonl"
    args = ["score", "--model", str(critic), "--data", str(data), "--output", str(out)]
    assert main([*args, "--critique-max-new-tokens", str(NEW_TOKENS)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    for k, (line, (question, chosen, rejected)) in enumerate(zip(lines, ROWS, strict=True)):
        from PIL import Image

        image = Image.open(tmp_path / f"{k}.png").convert("RGB")
        for answer, key, critique in zip((chosen, rejected), ("score_chosen", "score_rejected"), line["critiques"],
                                         strict=True):  # fmt: skip
            written, score = by_hand(critic, question, answer, image)
            assert critique == written and critique  # the model's own words, stripped
            assert line[key] == pytest.approx(score, abs=1e-5)


def test_a_llava_qwen_checkpoint_without_safetensors_is_refused_in_one_line(tmp_path, capsys):
    from rmkit.cli import main

    model = tmp_path / "MM-RLHF-Reward-7B-llava-ov-qwen"
    model.mkdir()
    (model / "config.json").write_text(
        json.dumps({"model_type": "llava_qwen", "architectures": ["LlavaQwenForCausalLM"]})
    )
    picture("red").save(tmp_path / "x.png")
    data = write_jsonl(
        tmp_path / "pairs.jsonl", [{"question": "Q?", "image": "x.png", "chosen": "a", "rejected": "b"}]
    )
    assert (
        main(["score", "--model", str(model), "--data", str(data), "--output", str(tmp_path / "o.jsonl")])
        == 2
    )
    (said,) = capsys.readouterr().err.strip().splitlines()
    assert "llava_qwen" in said and "safetensors" in said


def test_a_critique_rm_is_recognised_by_its_head_and_not_served(critic):
    from rmkit import kinds

    kind, model = kinds.load(str(critic), {})
    assert kind.name == "vision-critique" and "critique first" in kind.servable(model)


def test_mm_rlhf_rewardbench_reads_the_critique_rms_scores(critic, tmp_path):
    """rmkit eval --suite mm-rlhf-rewardbench with the critique RM: ACC is the share of pairs whose chosen
    answer the RM scores higher, from the scores rmkit score writes for the same pairs (critiques and all)."""
    from rmkit.cli import main

    bench, pairs = [], []
    for k, (question, chosen, rejected) in enumerate(ROWS):
        (tmp_path / "mcq").mkdir(exist_ok=True)
        picture(["red", "blue"][k], seed=k).save(tmp_path / "mcq" / f"{k}.png")
        bench.append({"id": str(k), "prompt": question, "image": f"mcq/{k}.png", "chosen": chosen,
                      "rejected": rejected, "chosen_reason": "", "rejected_reason": ""})  # fmt: skip
        pairs.append({"question": question, "image": f"mcq/{k}.png", "chosen": chosen, "rejected": rejected})
    tokens = ["--critique-max-new-tokens", str(NEW_TOKENS)]
    out = tmp_path / "scores.jsonl"
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    assert main(["score", "--model", str(critic), "--data", str(data), "--output", str(out), *tokens]) == 0
    right = [
        line["score_chosen"] > line["score_rejected"]
        for line in map(json.loads, out.read_text().splitlines())
    ]
    data = write_jsonl(tmp_path / "bench.jsonl", bench)
    ev = tmp_path / "ev"
    args = ["eval", "--model", str(critic), "--data", str(data), "--output-dir", str(ev), "--no-plots"]
    assert main([*args, "--bootstrap", "10", *tokens]) == 0
    (official,) = json.loads((ev / "metrics.json").read_text())["suite"]["models"].values()
    assert official["subsets"]["mcq"]["score"] == pytest.approx(sum(right) / len(right))
