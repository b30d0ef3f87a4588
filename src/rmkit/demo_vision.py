"""``rmkit demo-vision``: a vision-language RM learns a visual preference task the code draws, offline.

1. draw the data: squares of four colours on noisy grounds (56x56 PNG files); each pair asks the square's
   colour, and the answer that names the colour drawn is chosen over one that names another (RLAIF-V's
   columns: ``question``, ``image``, ``chosen``, ``rejected``), train and test pairs from different draws;
2. build a small Qwen2-VL from a config (hidden size 64, 2 layers in the language model and in the vision
   encoder, random weights) with a tokenizer trained on the spot and a PIL image processor
   (:func:`tiny_vlm`): no download;
3. train it with ``rmkit train`` (a fresh value head), evaluated on the test pairs;
4. evaluate it with ``rmkit eval``.

The model must read the image to choose: the two answers differ only in the colour named, and each colour is
chosen as often as rejected. Measured with the defaults (8 epochs of 200 pairs): held-out accuracy 1.000 on
100 pairs, the whole demo in 109 s on 2 CPU cores (``rmkit demo-vision``; 6 epochs of 120 pairs gave 0.825).
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from rmkit.data.synthetic import COLOURS, picture, write_jsonl
from rmkit.evaluation import EvalConfig, evaluate
from rmkit.jobs.config import VisionDemoConfig
from rmkit.training import TrainConfig, train

QWEN_SPECIALS = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"]
# The tokens of the other families' images: LLaVA's, and Gemma3's begin, soft and end of image.
SPECIALS = [*QWEN_SPECIALS, "<image>", "<start_of_image>", "<image_soft_token>", "<end_of_image>"]
# What each family's chat template writes for an image part.
IMAGE_TEXT = {
    "qwen2_vl": "<|vision_start|><|image_pad|><|vision_end|>",
    "qwen2_5_vl": "<|vision_start|><|image_pad|><|vision_end|>",
    "llava": "<image>",
    "gemma3": "<start_of_image>",
}
# The Qwen2-VL chat template's shape, its image part the family's (Qwen: <|vision_start|><|image_pad|>...).
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.content is string %}{{ m.content }}{% else %}{% for p in m.content %}"
    "{% if p.type == 'image' %}IMAGE{% else %}{{ p.text }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
)
VIDEO_PAD = "<|video_pad|>"  # Qwen's video token (tiny_vlm's video=True)
VIDEO_TEXT = "<|vision_start|><|video_pad|><|vision_end|>"
QUESTION = "What colour is the square?"


def colour_pairs(n: int, folder: Path, seed: int, name: str) -> list[dict[str, Any]]:
    """``n`` pairs of the visual task (module docstring), their images written to ``folder``."""
    rng, colours = random.Random(seed), list(COLOURS)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        drawn = rng.choice(colours)
        other = rng.choice([c for c in colours if c != drawn])
        picture(drawn, (56, 56), seed=seed * 100_003 + i).save(folder / f"{name}-{i}.png")
        rows.append({"question": QUESTION, "image": f"images/{name}-{i}.png",
                     "chosen": f"The square is {drawn}.", "rejected": f"The square is {other}."})  # fmt: skip
    return rows


def tiny_vlm(
    path: Path,
    family: str = "qwen2_vl",
    *,
    corpus: list[str],
    seed: int = 0,
    template: bool = True,
    hidden: int = 32,
    layers: int = 2,
    max_pixels: int = 112 * 112,
    video: bool = False,
) -> Path:
    """A tiny VLM of ``family`` (qwen2_vl, qwen2_5_vl, llava: CLIP and Llama on 28x28 images, gemma3: SigLIP on
    56x56 images, 4 tokens each) of hidden size ``hidden``, ``layers`` layers, random weights seeded by ``seed``,
    saved to ``path`` with a BPE tokenizer trained on ``corpus`` (the image tokens; with ``template``, a
    Qwen-shaped chat template) and a PIL image processor (Qwen's: 56x56 .. ``max_pixels``); no value head.
    ``video``: Qwen's ``<|video_pad|>`` in the tokenizer, the template and the config (else ``<unk>``)."""
    import torch
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
    )
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tok = _tokenizer(corpus, _template(family, video) if template else None, [VIDEO_PAD] if video else [])
    tok.save_pretrained(str(path))
    if family in ("llava", "gemma3"):
        for part in _other_vlm(family, tok, hidden, layers, seed):
            part.save_pretrained(str(path))
        return path
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    half = hidden // 4 // 2  # M-RoPE's sections (temporal, height, width) share half a head's dimensions
    text = dict(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                         "mrope_section": [half - 2 * (half // 4), half // 4, half // 4]},
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    vision = dict(depth=layers, hidden_size=hidden, num_heads=4, patch_size=14, spatial_merge_size=2)
    if family == "qwen2_vl":
        config_cls, model_cls = Qwen2VLConfig, Qwen2VLForConditionalGeneration
        vision.update(embed_dim=hidden, mlp_ratio=2)
    else:
        config_cls, model_cls = Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
        vision.update(
            intermediate_size=2 * hidden, out_hidden_size=hidden, window_size=56, fullatt_block_indexes=[1]
        )
    config = config_cls(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
                        video_token_id=tok.convert_tokens_to_ids(VIDEO_PAD))  # fmt: skip
    torch.manual_seed(seed)
    model_cls(config).save_pretrained(str(path))
    Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=max_pixels).save_pretrained(str(path))
    return path


def _template(family: str, video: bool) -> str:
    """The Qwen-shaped chat template writing the family's image text for an image part (and, with ``video``,
    Qwen's video text for a video part)."""
    chat = TEMPLATE.replace("IMAGE", IMAGE_TEXT[family])
    if not video:
        return chat
    return chat.replace(
        "{% else %}{{ p.text }}", "{% elif p.type == 'video' %}" + VIDEO_TEXT + "{% else %}{{ p.text }}"
    )


def _other_vlm(family: str, tok: Any, hidden: int, layers: int, seed: int) -> tuple[Any, Any]:
    """A tiny LLaVA or Gemma3 (:func:`tiny_vlm`), its weights seeded by ``seed``, and its PIL image processor."""
    import torch
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessorPil,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaImageProcessorPil,
    )

    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIALS}
    text = dict(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    vision = dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers, num_attention_heads=4,
                  patch_size=14)  # fmt: skip
    torch.manual_seed(seed)
    if family == "llava":
        config = LlavaConfig(
            text_config={**text, "model_type": "llama"},
            vision_config={**vision, "model_type": "clip_vision_model", "image_size": 28},
            image_token_id=ids["<image>"],
        )
        crop = {"height": 28, "width": 28}
        return LlavaForConditionalGeneration(config), LlavaImageProcessorPil(
            size={"shortest_edge": 28}, crop_size=crop
        )
    config = Gemma3Config(
        text_config={**text, "model_type": "gemma3_text", "head_dim": hidden // 4, "sliding_window": 512},
        vision_config={**vision, "model_type": "siglip_vision_model", "image_size": 56},
        mm_tokens_per_image=4,
        image_token_index=ids["<image_soft_token>"],
        boi_token_index=ids["<start_of_image>"],
        eoi_token_index=ids["<end_of_image>"],
    )
    return Gemma3ForConditionalGeneration(config), Gemma3ImageProcessorPil(size={"height": 56, "width": 56})


def _tokenizer(corpus: list[str], chat_template: str | None, extra: list[str] | None = None) -> Any:
    """A byte-level BPE tokenizer (400 pieces) trained on ``corpus``, with the families' image tokens (and the
    ``extra`` special tokens after them)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    tok.train_from_iterator(
        corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=specials, initial_alphabet=alphabet)
    )
    tok.post_processor = TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    fast.add_special_tokens({"additional_special_tokens": SPECIALS + (extra or [])})
    fast.chat_template = chat_template
    return fast


def demo_vision(config: VisionDemoConfig) -> dict[str, Any]:
    """Run the four steps (module docstring); return the paths written and the held-out accuracy."""
    start, out = time.perf_counter(), Path(config.output_dir)
    print("\n== [1/4] drawing the visual preference task", flush=True)
    data = out / "data"
    train_file = write_jsonl(
        colour_pairs(config.train_pairs, data / "images", config.seed, "train"), data / "train.jsonl"
    )
    test_file = write_jsonl(
        colour_pairs(config.test_pairs, data / "images", config.seed + 1, "test"), data / "test.jsonl"
    )
    print(f"{config.train_pairs} train pairs and {config.test_pairs} test pairs in {data}")
    print("\n== [2/4] building a small Qwen2-VL from a config (random weights)", flush=True)
    corpus = [f"{QUESTION} The square is {c}." for c in COLOURS] * 20
    backbone = tiny_vlm(out / "backbone", corpus=corpus, seed=config.seed, hidden=64, max_pixels=56 * 56)
    print("\n== [3/4] training a vision-language reward model", flush=True)
    model_dir = out / "model"
    train(TrainConfig(
        model=str(backbone), data=str(train_file), eval_data=str(test_file), output_dir=str(model_dir),
        epochs=config.epochs, max_steps=config.max_steps, batch_size=config.batch_size,
        learning_rate=config.learning_rate, seed=config.seed, overwrite=True, token_cache=False,
    ))  # fmt: skip
    print("\n== [4/4] evaluating on the test pairs", flush=True)
    eval_dir = out / "eval"
    metrics = evaluate(
        EvalConfig(model=[str(model_dir)], data=[str(test_file)], output_dir=str(eval_dir), overwrite=True)
    )
    (label,) = metrics["results"]
    (result,) = metrics["results"][label].values()
    accuracy = result["all"]["accuracy"]
    print(f"\nDone in {time.perf_counter() - start:.0f} s. Held-out accuracy {accuracy:.3f} "
          f"({result['all']['pairs']} pairs); model in {model_dir}/, report in {eval_dir / 'report.md'}")  # fmt: skip
    return {"accuracy": accuracy, "model": str(model_dir), "eval": str(eval_dir)}
