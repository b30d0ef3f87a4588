"""MM-RLHF-Reward's own layout (``llava_qwen``: LLaVA-NeXT's config keys and weight names, plus ``rm_head``)
read natively: a tiny random LLaVA-OneVision is written as LLaVA-NeXT saves one, rmkit reads it back (every
weight equal to the original's), its critique-then-score RM equals a by-hand run of MM-RLHF's steps on the
original transformers model, and a checkpoint that lacks a weight is refused in one line naming it."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import write_jsonl
from safetensors.torch import load_file, save_file
from vision_models import make_vlm, picture

from rmkit.vision_critique import CRITIQUE_PROMPT

NEW_TOKENS = 5
ROWS = [("What colour is the square?", "It is red.", "A blue circle"), ("Is there a circle?", "yes", "No")]
# transformers' names -> the names LLaVA-NeXT's LlavaQwenForCausalLM saves (its state dict's own prefixes)
SAVED = {
    "model.language_model.": "model.",
    "model.vision_tower.": "model.vision_tower.vision_tower.vision_model.",
    "model.multi_modal_projector.linear_1.": "model.mm_projector.0.",
    "model.multi_modal_projector.linear_2.": "model.mm_projector.2.",
}
SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"  # LLaVA-NeXT's qwen_1_5 conversation
SIGLIP_HEAD = "model.vision_tower.head."  # SigLIP's pooling head: unused, and LLaVA-NeXT deletes it


def saved_name(name: str) -> str:
    for prefix, saved in SAVED.items():
        if name.startswith(prefix):
            return saved + name[len(prefix) :]
    return name


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    return make_vlm(tmp_path_factory.mktemp("ov"), "llava_onevision")


def state_of(path) -> dict[str, torch.Tensor]:
    """The original model's weights under transformers' names (its file keeps the legacy ones)."""
    from transformers import LlavaOnevisionForConditionalGeneration

    state = LlavaOnevisionForConditionalGeneration.from_pretrained(str(path)).state_dict()
    return {k: v for k, v in state.items() if not k.startswith(SIGLIP_HEAD)}


@pytest.fixture(scope="module")
def llava_qwen(original, tmp_path_factory):
    """The original written in the llava_qwen layout: the Qwen2 config at the top with LLaVA's mm_* keys, the
    SigLIP tower's config in the folder mm_vision_tower names, SigLIP's preprocessor settings, the weights
    under LLaVA-NeXT's names, and MM-RLHF's rm_head (random, seeded)."""
    out = tmp_path_factory.mktemp("MM-RLHF-Reward-tiny-llava-ov-qwen")
    config = json.loads((original / "config.json").read_text())
    tower = tmp_path_factory.mktemp("siglip")
    (tower / "config.json").write_text(json.dumps(config["vision_config"]))
    text = config["text_config"]
    raw = {k: text[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                "num_key_value_heads", "max_position_embeddings", "vocab_size", "rms_norm_eps")}  # fmt: skip
    raw |= {
        "architectures": ["LlavaQwenForCausalLM"], "model_type": "llava_qwen", "torch_dtype": "float32",
        "rope_theta": text["rope_parameters"]["rope_theta"], "tie_word_embeddings": False,
        "image_aspect_ratio": config["vision_aspect_ratio"], "image_grid_pinpoints": "(1x1),...,(2x2)",
        "mm_hidden_size": config["vision_config"]["hidden_size"], "mm_patch_merge_type": "spatial_unpad",
        "mm_projector_type": "mlp2x_gelu", "mm_vision_select_feature": "patch", "mm_vision_select_layer": -2,
        "mm_vision_tower": str(tower), "mm_newline_position": "grid", "mm_use_im_start_end": False,
    }  # fmt: skip
    (out / "config.json").write_text(json.dumps(raw))
    processor = json.loads((original / "preprocessor_config.json").read_text())
    keep = ("image_mean", "image_std", "resample", "rescale_factor", "size", "do_convert_rgb")
    (out / "preprocessor_config.json").write_text(
        json.dumps({k: processor[k] for k in keep if k in processor})
    )
    for f in original.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(f, out / f.name)
    weights = {saved_name(k): v.contiguous() for k, v in state_of(original).items()}
    torch.manual_seed(9)
    hidden = text["hidden_size"]
    weights |= {"rm_head.dense.weight": torch.randn(hidden, hidden) / hidden**0.5, "rm_head.dense.bias": torch.randn(hidden),
                "rm_head.out_proj.weight": torch.randn(1, hidden), "rm_head.out_proj.bias": torch.randn(1)}  # fmt: skip
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def test_every_weight_equals_the_original(original, llava_qwen):
    from rmkit import kinds

    kind, rm = kinds.load(str(llava_qwen), {})
    assert kind.name == "vision-critique" and rm.model.config.model_type == "llava_onevision"
    theirs = state_of(original)
    ours = rm.model.state_dict()
    assert set(theirs) == set(ours)
    for name, value in theirs.items():
        assert torch.equal(ours[name], value), name
    assert rm.processor.image_grid_pinpoints == [[28, 28], [28, 56], [56, 28], [56, 56]]
    assert torch.equal(
        rm.head.out_proj.weight, load_file(str(llava_qwen / "model.safetensors"))["rm_head.out_proj.weight"]
    )


@torch.no_grad()
def by_hand(original, head, question: str, answer: str, image) -> tuple[str, float]:
    """MM-RLHF's steps on the original transformers LLaVA-OneVision: its critic prompt after ``<image>\\n`` in
    LLaVA-NeXT's qwen_1_5 conversation (its system line, ChatML turns), transformers' greedy critique, decoded and stripped, then the head on the conversation's last token."""
    from transformers import (
        AutoTokenizer,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessorPil,
    )

    tok = AutoTokenizer.from_pretrained(str(original))
    model = LlavaOnevisionForConditionalGeneration.from_pretrained(str(original)).eval()
    processed = LlavaOnevisionImageProcessorPil.from_pretrained(str(original))(
        images=[image], return_tensors="pt"
    )
    config, image_id = model.config, tok.convert_tokens_to_ids("<image>")
    sizes = processed["image_sizes"]
    features = model.model.get_image_features(
        processed["pixel_values"], sizes, batch_num_images=[1]
    ).pooler_output
    count = sum(len(f) for f in features)
    assert config.image_token_id == image_id

    def inputs(text: str) -> dict:
        ids = []
        for t in tok(text, add_special_tokens=False)["input_ids"]:
            ids += [image_id] * count if t == image_id else [t]
        ids = torch.tensor([ids])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": processed["pixel_values"],
                "image_sizes": sizes, "batch_num_images": torch.tensor([1])}  # fmt: skip

    user = (
        SYSTEM
        + "<|im_start|>user\n<image>\n"
        + CRITIQUE_PROMPT.format(question=question, answer=answer)
        + "<|im_end|>\n<|im_start|>assistant\n"
    )
    prompt = inputs(user)
    out = model.generate(**prompt, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=tok.pad_token_id)
    critique = tok.decode(out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    hidden = model.model(**inputs(user + f"{critique}<|im_end|>\n")).last_hidden_state
    dense = torch.tanh(head["rm_head.dense.weight"] @ hidden[0, -1] + head["rm_head.dense.bias"])
    return critique, float(head["rm_head.out_proj.weight"][0] @ dense + head["rm_head.out_proj.bias"][0])


def test_the_score_is_a_by_hand_critique_then_forward(original, llava_qwen, tmp_path):
    from PIL import Image

    from rmkit.cli import main

    rows = []
    for k, (question, chosen, rejected) in enumerate(ROWS):
        picture(["red", "blue"][k], (56, 28) if k else (28, 28), seed=k).save(tmp_path / f"{k}.png")
        rows.append({"question": question, "image": f"{k}.png", "chosen": chosen, "rejected": rejected})
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "scores.jsonl"
    args = ["score", "--model", str(llava_qwen), "--data", str(data), "--output", str(out)]
    assert main([*args, "--critique-max-new-tokens", str(NEW_TOKENS)]) == 0
    head = load_file(str(llava_qwen / "model.safetensors"))
    for k, line in enumerate(map(json.loads, out.read_text().splitlines())):
        question, chosen, rejected = ROWS[k]
        image = Image.open(tmp_path / f"{k}.png").convert("RGB")
        for answer, key, critique in zip((chosen, rejected), ("score_chosen", "score_rejected"), line["critiques"],
                                         strict=True):  # fmt: skip
            written, score = by_hand(original, head, question, answer, image)
            assert critique == written and critique
            assert line[key] == pytest.approx(score, abs=1e-5)


def test_a_missing_weight_is_refused_in_one_line(llava_qwen, tmp_path, capsys):
    from rmkit.cli import main

    broken = tmp_path / "broken"
    shutil.copytree(llava_qwen, broken)
    weights = load_file(str(broken / "model.safetensors"))
    del weights["model.mm_projector.2.weight"]
    save_file(weights, str(broken / "model.safetensors"), metadata={"format": "pt"})
    picture("red").save(tmp_path / "x.png")
    data = write_jsonl(
        tmp_path / "p.jsonl", [{"question": "Q?", "image": "x.png", "chosen": "a", "rejected": "b"}]
    )
    assert (
        main(["score", "--model", str(broken), "--data", str(data), "--output", str(tmp_path / "o.jsonl")])
        == 2
    )
    (said,) = capsys.readouterr().err.strip().splitlines()
    assert "lacks model.mm_projector.2.weight" in said and str(broken) in said


def test_convert_writes_a_standard_llava_onevision_with_the_head(original, llava_qwen, tmp_path):
    """rmkit convert writes transformers' LLaVA-OneVision (plain transformers reads every weight as the
    original's) with rm_head.safetensors; rmkit reads it back as the same critique RM."""
    from transformers import LlavaOnevisionForConditionalGeneration

    from rmkit import kinds
    from rmkit.cli import main

    out = tmp_path / "converted"
    assert main(["convert", str(llava_qwen), str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llava_onevision" and config["rmkit"]["kind"] == "vision-critique"
    plain = LlavaOnevisionForConditionalGeneration.from_pretrained(str(out)).state_dict()
    for name, value in state_of(original).items():
        assert torch.equal(plain[name], value), name
    kind, rm = kinds.load(str(out), {})
    _, before = kinds.load(str(llava_qwen), {})
    assert kind.name == "vision-critique"
    for name, value in before.head.state_dict().items():
        assert torch.equal(rm.head.state_dict()[name], value), name
    assert rm.tokenizer.chat_template == before.tokenizer.chat_template
    assert rm.processor.to_dict() == before.processor.to_dict()


@pytest.mark.parametrize(
    ("key", "value", "said"),
    [
        ("mm_projector_type", "linear", "mm_projector_type 'linear'"),
        ("image_aspect_ratio", "pad", "image_aspect_ratio 'pad'"),
        (
            "mm_vision_tower",
            "openai/clip-vit-large-patch14",
            "mm_vision_tower 'openai/clip-vit-large-patch14'",
        ),
    ],
)
def test_a_config_transformers_would_compute_otherwise_is_refused_in_one_line(
    llava_qwen, tmp_path, capsys, key, value, said
):
    from rmkit.cli import main

    other = tmp_path / "other"
    shutil.copytree(llava_qwen, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, key: value}))
    picture("red").save(tmp_path / "x.png")
    data = write_jsonl(
        tmp_path / "p.jsonl", [{"question": "Q?", "image": "x.png", "chosen": "a", "rejected": "b"}]
    )
    assert (
        main(["score", "--model", str(other), "--data", str(data), "--output", str(tmp_path / "o.jsonl")])
        == 2
    )
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert said in line and str(other) in line


def test_a_tokenizer_without_image_token_gets_one(original, llava_qwen, tmp_path):
    """Qwen2's tokenizer (MM-RLHF's) has no ``<image>`` (LLaVA-NeXT's code puts -200 in the ids): rmkit adds
    it, at the next id, which the model's vocabulary holds; here that is the original's own id."""
    from transformers import AutoTokenizer

    from rmkit import kinds

    bare = tmp_path / "bare"
    shutil.copytree(llava_qwen, bare)
    cut = ["<image>", "<start_of_image>", "<image_soft_token>", "<end_of_image>"]
    tokenizer = json.loads((bare / "tokenizer.json").read_text())
    tokenizer["added_tokens"] = [t for t in tokenizer["added_tokens"] if t["content"] not in cut]
    (bare / "tokenizer.json").write_text(json.dumps(tokenizer))
    settings = json.loads((bare / "tokenizer_config.json").read_text())
    settings["extra_special_tokens"] = [t for t in settings["extra_special_tokens"] if t not in cut]
    (bare / "tokenizer_config.json").write_text(json.dumps(settings))
    assert "<image>" not in AutoTokenizer.from_pretrained(str(bare)).get_vocab()
    _, rm = kinds.load(str(bare), {})
    image_id = AutoTokenizer.from_pretrained(str(original)).convert_tokens_to_ids("<image>")
    assert rm.tokenizer.convert_tokens_to_ids("<image>") == rm.model.config.image_token_id == image_id
    assert rm.tokens.image_id == image_id


def test_a_weight_of_another_shape_is_refused_in_one_line(llava_qwen, tmp_path, capsys):
    from rmkit.cli import main

    other = tmp_path / "other"
    shutil.copytree(llava_qwen, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "intermediate_size": 48}))
    picture("red").save(tmp_path / "x.png")
    data = write_jsonl(
        tmp_path / "p.jsonl", [{"question": "Q?", "image": "x.png", "chosen": "a", "rejected": "b"}]
    )
    assert (
        main(["score", "--model", str(other), "--data", str(data), "--output", str(tmp_path / "o.jsonl")])
        == 2
    )
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "model.layers.0.mlp.gate_proj.weight is [64, 32]" in line and "gives [48, 32]" in line
