"""Tiny vision-language models for the tests and the benchmark (:func:`rmkit.demo_vision.tiny_vlm`: hidden size
32, 2 layers, random weights, a tokenizer trained on the test corpus; Qwen3-VL, LLaVA-OneVision and Idefics3
built here the same way) and small images drawn in code."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path

from conftest import CORPUS

from rmkit.data.synthetic import COLOURS, picture
from rmkit.demo_vision import QWEN_SPECIALS, TEMPLATE, _tokenizer, tiny_vlm

__all__ = [
    "COLOURS", "encoder_inputs", "make_vlm", "mixed_examples", "picture", "saved_rm", "stock", "train_steps"
]  # fmt: skip


def make_vlm(path: Path, family: str = "qwen2_vl", **options) -> Path:
    """A tiny VLM of ``family`` saved to ``path`` (options: :func:`rmkit.demo_vision.tiny_vlm`'s; the families
    of :data:`BUILDERS` take none)."""
    if family not in BUILDERS:
        return tiny_vlm(path, family, corpus=CORPUS, **options)
    import torch

    image_text, build = BUILDERS[family]
    tok = _tokenizer(CORPUS, TEMPLATE.replace("IMAGE", image_text))
    torch.manual_seed(0)
    for part in (tok, *build(tok)):
        part.save_pretrained(str(path))
    return path


TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512)  # fmt: skip


def _qwen3_vl(tok, moe: bool = False):
    """Qwen3-VL: 16-pixel patches merged 2x2, M-RoPE interleaved, DeepStack features from vision layer 0;
    with ``moe``, Qwen3-VL-MoE (4 experts, 2 a token)."""
    import transformers
    from transformers import Qwen2VLImageProcessorPil

    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    rope = {
        "rope_type": "default",
        "rope_theta": 10000.0,
        "mrope_section": [2, 1, 1],
        "mrope_interleaved": True,
    }
    experts = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32) if moe else {}
    name = "Qwen3VLMoe" if moe else "Qwen3VL"
    config = getattr(transformers, f"{name}Config")(
        text_config={**TEXT, "vocab_size": len(tok), "head_dim": 8, "rope_parameters": rope,
                     "pad_token_id": tok.pad_token_id, **experts},
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, patch_size=16,
                           out_hidden_size=32, num_position_embeddings=16, deepstack_visual_indexes=[0]),
        image_token_id=ids["<|image_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"], video_token_id=tok.unk_token_id,
    )  # fmt: skip
    processor = Qwen2VLImageProcessorPil(
        patch_size=16, merge_size=2, min_pixels=64 * 64, max_pixels=128 * 128, image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )  # fmt: skip
    return getattr(transformers, f"{name}ForConditionalGeneration")(config), processor


def _llava_onevision(tok):
    """LLaVA-OneVision: SigLIP on 28x28 tiles (2x2 features each), any-resolution grids up to 2x2 tiles (more
    than one tile's features scaled down: anyres_max_1), a Qwen2 language model."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessorPil,
    )

    pinpoints = [[28, 28], [28, 56], [56, 28], [56, 56]]
    config = LlavaOnevisionConfig(
        text_config={**TEXT, "model_type": "qwen2", "vocab_size": len(tok), "pad_token_id": tok.pad_token_id},
        vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=4, patch_size=14, image_size=28),
        image_token_index=tok.convert_tokens_to_ids("<image>"), video_token_index=tok.unk_token_id,
        image_grid_pinpoints=pinpoints, vision_aspect_ratio="anyres_max_1",
    )  # fmt: skip
    processor = LlavaOnevisionImageProcessorPil(
        size={"height": 28, "width": 28}, image_grid_pinpoints=pinpoints
    )
    return LlavaOnevisionForConditionalGeneration(config), processor


def _llava_next(tok):
    """LLaVA-NeXT: CLIP on 28x28 tiles (2x2 features and its class token), any-resolution grids up to 2x2 tiles,
    the default feature selection (the class token dropped), a Llama language model."""
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextImageProcessorPil

    pinpoints = [[28, 56], [56, 28], [56, 56]]
    config = LlavaNextConfig(
        text_config={**TEXT, "model_type": "llama", "vocab_size": len(tok), "pad_token_id": tok.pad_token_id},
        vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=4, patch_size=14, image_size=28),
        image_token_index=tok.convert_tokens_to_ids("<image>"), image_grid_pinpoints=pinpoints,
    )  # fmt: skip
    processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}, image_grid_pinpoints=pinpoints
    )
    return LlavaNextForConditionalGeneration(config), processor


def _llava_next_video(tok):
    """LLaVA-NeXT-Video: LLaVA-NeXT's images on 56x56 CLIP tiles (4x4 features), a ``<video>`` token (in the
    tokenizer and the chat template) whose frames' 4x4 features are average-pooled 2-fold to 2x2."""
    from transformers import (
        LlavaNextImageProcessorPil,
        LlavaNextVideoConfig,
        LlavaNextVideoForConditionalGeneration,
    )

    tok.add_tokens(["<video>"], special_tokens=True)
    tok.chat_template = tok.chat_template.replace(
        "{% else %}{{ p.text }}", "{% elif p.type == 'video' %}<video>{% else %}{{ p.text }}"
    )
    pinpoints = [[56, 112], [112, 56], [112, 112]]
    config = LlavaNextVideoConfig(
        text_config={**TEXT, "model_type": "llama", "vocab_size": len(tok), "pad_token_id": tok.pad_token_id},
        vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=4, patch_size=14, image_size=56),
        image_token_index=tok.convert_tokens_to_ids("<image>"), image_grid_pinpoints=pinpoints,
        video_token_index=tok.convert_tokens_to_ids("<video>"), spatial_pool_stride=2,
    )  # fmt: skip
    processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56}, image_grid_pinpoints=pinpoints
    )
    return LlavaNextVideoForConditionalGeneration(config), processor


def _idefics3(tok):
    """Idefics3: SigLIP on 56x56 tiles (4 image tokens each after the 2x pixel shuffle), images resized to at
    most 112 pixels a side and cut into tiles, a Llama language model."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessorPil

    tags = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    tok.add_tokens(
        ["<fake_token_around_image>", "<global-img>", "<end_of_utterance>", *tags], special_tokens=True
    )
    config = Idefics3Config(
        text_config={**TEXT, "model_type": "llama", "vocab_size": len(tok), "pad_token_id": tok.pad_token_id},
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           patch_size=14, image_size=56),
        image_token_id=tok.convert_tokens_to_ids("<image>"), scale_factor=2,
    )  # fmt: skip
    processor = Idefics3ImageProcessorPil(size={"longest_edge": 112}, max_image_size={"longest_edge": 56})
    return Idefics3ForConditionalGeneration(config), processor


# family: (what its chat template writes for an image part, its model and image processor from the tokenizer)
BUILDERS = {
    "qwen3_vl": ("<|vision_start|><|image_pad|><|vision_end|>", _qwen3_vl),
    "qwen3_vl_moe": ("<|vision_start|><|image_pad|><|vision_end|>", functools.partial(_qwen3_vl, moe=True)),
    "llava_next": ("<image>", _llava_next),
    "llava_next_video": ("<image>", _llava_next_video),
    "llava_onevision": ("<image>", _llava_onevision),
    "idefics3": ("<image>", _idefics3),
}


def saved_rm(tmp_path_factory, family: str = "qwen2_vl", seed: int = 1):
    """``(rm, path)``: a tiny VLM of ``family`` given a value head seeded by ``seed``, saved by rmkit and read
    back (as a user's trained checkpoint is)."""
    import torch

    from rmkit.vlm import VisionRewardModel

    backbone = make_vlm(tmp_path_factory.mktemp(family), family)
    torch.manual_seed(seed)
    out = tmp_path_factory.mktemp(f"{family}_rm")
    VisionRewardModel.from_pretrained(backbone).save_pretrained(out)
    return VisionRewardModel.from_pretrained(out), out


def mixed_examples(question):
    """Rows of different lengths, their user turns written by ``question(text, images)``: one and two images
    (of different sizes: the processor resizes them), and a text-only row."""
    from rmkit.data.images import Picture
    from rmkit.data.vision import VisionExample

    red, blue = picture("red"), picture("blue", (84, 56), seed=1)
    return [
        VisionExample(1, question("What colour is it?"), ["red", "It is blue, the colour of the sky today"],
                      True, images=[Picture(red, "r.png")]),
        VisionExample(2, question("Which two?", 2), ["red and blue"], False,
                      images=[Picture(red, "r.png"), Picture(blue, "b.png")]),
        VisionExample(3, [{"role": "user", "content": "hello how can I help"}], ["Paris"], False),
    ]  # fmt: skip


def encoder_inputs(rm, module, rows, budget: int) -> list[int]:
    """The length of each input ``module`` (a vision encoder of ``rm``) reads while ``rows`` are scored."""
    seen = []
    hook = module.register_forward_hook(lambda m, args, out: seen.append(len(args[0])))
    try:
        rm.score_rows(rows, batch_tokens=budget)
    finally:
        hook.remove()
    return seen


def train_steps(rm, path, examples) -> list[tuple]:
    """rmkit train's step on the pairs of ``examples``, each pair's media run once and then once a row:
    ``(loss, gradients by name)`` of each."""
    from rmkit.training.config import TrainConfig
    from rmkit.training.vision import VisionPair, pair_scores

    pairs = [VisionPair(*rows) for rows in rm.example_tokenizer().tokenize(examples)]
    config = TrainConfig(model=str(path), data="x", output_dir="y")
    results = []
    rm.train()
    try:
        for shared in (True, False):
            rm.zero_grad()
            loss, _, _ = pair_scores(rm, pairs, config, shared=shared)
            loss.sum().backward()
            grads = {n: p.grad.clone() for n, p in rm.named_parameters() if p.grad is not None}
            results.append((loss.detach(), grads))
    finally:
        rm.zero_grad()
        rm.eval()
    return results


@contextlib.contextmanager
def stock(model) -> Iterator:
    """``model`` as transformers builds it while the block runs: the patch embeddings that rmkit computes as one
    matrix product (:mod:`rmkit.lean`) back to transformers' ``Conv3d``, for the plain forwards that
    rmkit's scores are held to (tests) and the plain loops it is timed against (benchmarks)."""
    from torch import nn

    from rmkit.lean import PatchConv3d

    changed = [m for m in model.modules() if type(m) is PatchConv3d]
    for m in changed:
        m.__class__ = nn.Conv3d
    try:
        yield model
    finally:
        for m in changed:
            m.__class__ = PatchConv3d
