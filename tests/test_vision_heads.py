"""More vision-language RM heads: DocReward's special-token value head (a ``<|regression|>`` token appended to
each conversation, the value head read at it) by hand on a tiny Qwen2.5-VL, and IXC-2.5-Reward (a model only
its own code reads) refused in one line without --trust-remote-code."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import write_jsonl
from safetensors.torch import save_file
from vision_models import make_vlm, picture

from rmkit.data.images import Picture
from rmkit.data.vision import VisionExample


@pytest.fixture(scope="module")
def docreward(tmp_path_factory):
    """A DocReward-layout checkpoint: the VLM with ``<|regression|>`` in its tokenizer and embeddings, and
    ``value_head.safetensors`` (``v_head.summary``) beside it. Returns ``(path, weight, bias)``."""
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    path = make_vlm(tmp_path_factory.mktemp("docreward"), "qwen2_5_vl", seed=5)
    tok = AutoTokenizer.from_pretrained(str(path))
    tok.add_tokens(["<|regression|>"], special_tokens=True)
    tok.save_pretrained(str(path))
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(path))
    model.resize_token_embeddings(len(tok))
    model.save_pretrained(str(path))
    torch.manual_seed(7)
    weight, bias = torch.randn(1, model.config.text_config.hidden_size), torch.randn(1)
    save_file(
        {"v_head.summary.weight": weight, "v_head.summary.bias": bias}, str(path / "value_head.safetensors")
    )
    return path, weight, bias


@torch.no_grad()
def test_docreward_head_is_read_at_the_appended_regression_token(docreward):
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from rmkit.vlm import VisionRewardModel

    path, weight, bias = docreward
    rm = VisionRewardModel.from_pretrained(path)
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Rate this page."}]}]
    answers = ["A tidy page.", "A page with a title and two columns"]
    example = VisionExample(1, prompt, answers, True, images=[Picture(picture("blue"), "page.png")])
    rows = rm.example_tokenizer().tokenize([example])[0]
    scores = rm.score_rows(rows)

    tok = AutoTokenizer.from_pretrained(str(path))
    regression, pad = tok.convert_tokens_to_ids("<|regression|>"), tok.convert_tokens_to_ids("<|image_pad|>")
    images = Qwen2VLImageProcessorPil.from_pretrained(str(path))(
        images=[picture("blue")], return_tensors="pt"
    )
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(path)).eval()
    for row, score, answer in zip(rows, scores, answers, strict=True):
        text = (
            "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Rate this page.<|im_end|>\n"
            f"<|im_start|>assistant\n{answer}<|im_end|>\n"
        )
        ids = []
        for t in tok(text, add_special_tokens=False)["input_ids"]:
            ids += [pad] * int(images["image_grid_thw"].prod() // 4) if t == pad else [t]
        ids.append(regression)  # DocReward's inference appends it after the last real token
        assert row.ids == ids
        input_ids = torch.tensor([ids])
        hidden = model.model(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            pixel_values=images["pixel_values"],
            image_grid_thw=images["image_grid_thw"],
            mm_token_type_ids=(input_ids == pad).int(),
        ).last_hidden_state[0, -1]
        assert score == pytest.approx(float(weight[0] @ hidden + bias[0]), abs=1e-4)


def test_ixc_reward_is_refused_without_trust_remote_code(tmp_path, capsys):
    from rmkit.cli import main

    model = tmp_path / "internlm-xcomposer2d5-7b-reward"
    model.mkdir()
    config = {
        "model_type": "internlmxcomposer2",
        "architectures": ["InternLMXComposer2ForRewardModel"],
        "auto_map": {
            "AutoConfig": "configuration_internlm_xcomposer2.InternLMXcomposer2Config",
            "AutoModel": "modeling_internlm_xcomposer2.InternLMXComposer2ForRewardModel",
        },
    }
    (model / "config.json").write_text(json.dumps(config))
    data = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": "Hi", "response": "Hello"}])
    assert (
        main(["score", "--model", str(model), "--data", str(data), "--output", str(tmp_path / "o.jsonl")])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--trust-remote-code" in err[0] and "internlmxcomposer2" in err[0]
