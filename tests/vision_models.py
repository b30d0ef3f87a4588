"""Tiny vision-language models for the tests and the benchmark: Qwen2-VL and Qwen2.5-VL built from configs
(hidden size 32, 2 layers, random weights), a tokenizer trained on the spot with the Qwen chat template's
image tokens, a PIL image processor, and small images drawn in code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

QWEN_SPECIALS = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"]
# The Qwen2-VL chat template's shape: an image part is <|vision_start|><|image_pad|><|vision_end|>.
QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.content is string %}{{ m.content }}{% else %}{% for p in m.content %}"
    "{% if p.type == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ p.text }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
)
COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (230, 220, 40)}


def picture(colour: str, size: tuple[int, int] = (56, 56), seed: int = 0):
    """A PIL image of ``size`` (width, height): a ``colour`` square on a noisy grey ground."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    pixels = rng.integers(90, 160, (h, w, 3), dtype=np.uint8)
    pixels[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = COLOURS[colour]
    return Image.fromarray(pixels)


def make_vlm(
    path: Path,
    family: str = "qwen2_vl",
    *,
    seed: int = 0,
    template: bool = True,
    hidden: int = 32,
    layers: int = 2,
    max_pixels: int = 112 * 112,
) -> Path:
    """A VLM of ``family`` (qwen2_vl, qwen2_5_vl; hidden size ``hidden``, ``layers`` layers in the language
    model and in the vision encoder) saved to ``path`` with its tokenizer and a PIL image processor (images
    resized to 56x56 .. ``max_pixels``): no value head (a backbone)."""
    from conftest import make_tokenizer
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
    )
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tok = make_tokenizer(path, chat_template=QWEN_TEMPLATE if template else None)
    tok.add_special_tokens({"additional_special_tokens": QWEN_SPECIALS})
    tok.save_pretrained(str(path))
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    half = hidden // 4 // 2  # M-RoPE's sections (temporal, height, width) share half a head's dimensions
    mrope = [half - 2 * (half // 4), half // 4, half // 4]
    text = dict(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope},
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    vision = dict(
        depth=layers,
        hidden_size=hidden,
        num_heads=4,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
    )
    if family == "qwen2_vl":
        config_cls, model_cls = Qwen2VLConfig, Qwen2VLForConditionalGeneration
        vision.update(embed_dim=hidden, mlp_ratio=2)
    else:
        config_cls, model_cls = Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
        vision.update(
            intermediate_size=2 * hidden, out_hidden_size=hidden, window_size=56, fullatt_block_indexes=[1]
        )
    config = config_cls(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        video_token_id=tok.unk_token_id,
    )
    torch.manual_seed(seed)
    model_cls(config).save_pretrained(str(path))
    Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=max_pixels).save_pretrained(str(path))
    return path
