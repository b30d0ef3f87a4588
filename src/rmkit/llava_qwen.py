"""A ``llava_qwen`` checkpoint (LLaVA-NeXT's ``LlavaQwenForCausalLM``: LLaVA-OneVision, the layout
MM-RLHF-Reward-7B is published in) read as transformers' ``LlavaOnevisionForConditionalGeneration``, without
LLaVA-NeXT's code and without a conversion step: its ``config.json`` is translated to a ``LlavaOnevisionConfig``
and its safetensors' names are mapped to transformers' as they load (the names of transformers'
``convert_llava_onevision_weights_to_hf.py``)::

    model.embed_tokens / layers / norm              -> model.language_model.*
    lm_head.weight                                  -> lm_head.weight
    model.vision_tower.vision_tower.vision_model.*  -> model.vision_tower.*
    model.mm_projector.0 / .2                       -> model.multi_modal_projector.linear_1 / linear_2
    model.image_newline                             -> (the same name)

Other weights (MM-RLHF's ``rm_head.*``) stay where they are for their reader (:mod:`rmkit.vision_critique`).
The config holds the Qwen2 language model's keys at its top level and LLaVA's ``mm_*`` keys; the SigLIP tower's
own config is not in it (LLaVA-NeXT reads it from ``mm_vision_tower``): rmkit reads it from that folder where it
is one, else takes SigLIP-so400m-patch14-384's (the tower LLaVA-OneVision names), and counts its layers from the
weights (LLaVA-NeXT drops the tower's last layer and its head). The image processor is LLaVA-OneVision's with the
settings of the checkpoint's ``preprocessor_config.json`` (SigLIP's: mean and std 0.5, the tower's size where
there is none) and the config's ``image_grid_pinpoints`` (LLaVA-NeXT's ``"(1x1),...,(6x6)"`` form expanded in
tiles of the tower's size, as its ``process_anyres_image`` does). Images enter as an ``<image>`` token (LLaVA's
``-200`` in its own code), added to the tokenizer where it lacks one. Conversations are written as LLaVA-NeXT's
``qwen_1_5`` conversation writes them (MM-RLHF's ``--conv-mode``: its system line, ChatML turns).
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

from rmkit.errors import RMKitError

MODEL_TYPE = "llava_qwen"
IMAGE_TOKEN = "<image>"
# the names LLaVA-NeXT saves -> transformers' (each pattern anchored at the start of the name)
RENAMES = {
    r"^model\.vision_tower\.vision_tower\.vision_model\.": "model.vision_tower.",
    r"^model\.mm_projector\.0\.": "model.multi_modal_projector.linear_1.",
    r"^model\.mm_projector\.2\.": "model.multi_modal_projector.linear_2.",
    r"^model\.(embed_tokens|layers|norm)\.": r"model.language_model.\1.",
}
# google/siglip-so400m-patch14-384's vision config (the tower LLaVA-OneVision is built on)
SO400M = {"hidden_size": 1152, "intermediate_size": 4304, "num_attention_heads": 16, "image_size": 384,
          "patch_size": 14}  # fmt: skip
SIGLIP_NORM = [0.5, 0.5, 0.5]  # SigLIP's image mean and std
# LLaVA-NeXT's qwen_1_5 conversation (conv_templates["qwen_1_5"], CHATML), images as <image>
QWEN_1_5 = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}"
    "{{ m['content'] }}{% else %}{% for p in m['content'] %}{% if p['type'] == 'image' %}<image>{% else %}"
    "{{ p['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def is_llava_qwen(config: dict[str, Any]) -> bool:
    return config.get("model_type") == MODEL_TYPE


def renamed(name: str) -> str:
    """transformers' name of a weight LLaVA-NeXT saves as ``name`` (others unchanged)."""
    for pattern, new in RENAMES.items():
        if re.match(pattern, name):
            return re.sub(pattern, new, name)
    return name


def load(path: str | Path, dtype: Any) -> tuple[Any, Any, Any]:
    """``(model, tokenizer, image processor)`` of the ``llava_qwen`` checkpoint at ``path``."""
    from transformers import AutoTokenizer, LlavaOnevisionForConditionalGeneration

    path = Path(path)
    raw = json.loads((path / "config.json").read_text(encoding="utf-8"))
    shapes = weight_shapes(path)
    tokenizer = AutoTokenizer.from_pretrained(str(path), config=_language(raw))
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    tokenizer.chat_template = QWEN_1_5  # MM-RLHF's conversation (its --conv-mode), whatever the tokenizer's
    config = translate(path, raw, shapes, tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
    _check_weights(path, config, shapes)
    model = LlavaOnevisionForConditionalGeneration.from_pretrained(
        str(path), config=config, dtype=dtype, key_mapping=RENAMES
    )
    model._weight_conversions = None  # saved as transformers saves its own LLaVA-OneVision, not renamed back
    return model, tokenizer, image_processor(path, raw, config)


def translate(path: Path, raw: dict[str, Any], shapes: dict[str, list[int]], image_id: int) -> Any:
    """The ``LlavaOnevisionConfig`` of a ``llava_qwen`` config (module docstring); what transformers' model
    does not compute as LLaVA-NeXT's does is refused in one line."""
    from transformers import LlavaOnevisionConfig

    wanted = {
        "mm_projector_type": "mlp2x_gelu",
        "mm_patch_merge_type": "spatial_unpad",
        "mm_vision_select_feature": "patch",
    }
    for key, value in wanted.items():
        if raw.get(key, value) != value:
            raise RMKitError(f"{path}: {key} {raw[key]!r} in a llava_qwen config; rmkit reads {value!r}")
    aspect = str(raw.get("image_aspect_ratio", "anyres_max_9"))
    if not aspect.startswith("anyres_max_"):
        raise RMKitError(f"{path}: image_aspect_ratio {aspect!r}; rmkit reads LLaVA-OneVision's anyres_max_N")
    text = _language(raw).to_dict()
    vision = tower(path, raw, shapes)
    side = vision["image_size"]
    if image_id >= text["vocab_size"]:
        raise RMKitError(f"{path}: the tokenizer's {IMAGE_TOKEN} ({image_id}) is past the model's vocabulary")
    config = LlavaOnevisionConfig(
        text_config=text,
        vision_config=vision,
        image_token_index=image_id,
        video_token_index=image_id,  # video is not read from a llava_qwen checkpoint
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,  # the tower's last kept layer (LLaVA-NeXT drops the last one)
        vision_aspect_ratio=aspect,
        image_grid_pinpoints=pinpoints(raw.get("image_grid_pinpoints"), side),
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        multimodal_projector_bias=True,
    )
    config.dtype = raw.get("torch_dtype", raw.get("dtype"))
    return config


def _language(raw: dict[str, Any]) -> Any:
    """The Qwen2 language model's config: the keys at the config's top level that are not LLaVA's."""
    from transformers import Qwen2Config

    text = {k: v for k, v in raw.items() if not k.startswith(("mm_", "image_", "architectures", "_name"))}
    return Qwen2Config(**{**text, "model_type": "qwen2"})


def tower(path: Path, raw: dict[str, Any], shapes: dict[str, list[int]]) -> dict[str, Any]:
    """The SigLIP tower's vision config: from the folder ``mm_vision_tower`` names where it is one, else
    SigLIP-so400m's; its layer count from the weights, no head."""
    name = str(raw.get("mm_vision_tower") or "")
    folder = Path(name) if name and not name.startswith("google/") else None
    if folder is not None and (folder / "config.json").is_file():
        own = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        own = own.get("vision_config", own)
    elif "siglip-so400m-patch14-384" in name:
        own = dict(SO400M)
    else:
        raise RMKitError(
            f"{path}: mm_vision_tower {name!r} is neither a folder holding its config.json nor "
            "google/siglip-so400m-patch14-384 (LLaVA-OneVision's tower)"
        )
    prefix = "model.vision_tower.vision_tower.vision_model.encoder.layers."
    layers = {int(k[len(prefix) :].split(".")[0]) for k in shapes if k.startswith(prefix)}
    keys = ("hidden_size", "intermediate_size", "num_attention_heads", "image_size", "patch_size")
    return {**{k: own[k] for k in keys if k in own}, "model_type": "siglip_vision_model",
            "num_hidden_layers": max(layers) + 1 if layers else 0, "vision_use_head": False}  # fmt: skip


def pinpoints(value: Any, side: int) -> list[list[int]]:
    """The grids of ``image_grid_pinpoints``: a list of [height, width], or LLaVA-NeXT's ``"(1x1),...,(6x6)"``
    (every grid from the first to the last, in tiles of ``side`` pixels)."""
    if isinstance(value, str) and "x" in value:
        found = [tuple(map(int, m)) for m in re.findall(r"\((\d+)x(\d+)\)", value)]
        (a, b), (c, d) = found[0], found[-1]
        return [[i * side, j * side] for i in range(a, c + 1) for j in range(b, d + 1)]
    if isinstance(value, list) and value:
        return [[int(h), int(w)] for h, w in value]
    return [[side, side]]


def image_processor(path: Path, raw: dict[str, Any], config: Any) -> Any:
    """LLaVA-OneVision's image processor with the checkpoint's ``preprocessor_config.json`` settings."""
    from transformers import LlavaOnevisionImageProcessorPil

    side = config.vision_config.image_size
    own: dict[str, Any] = {}
    if (path / "preprocessor_config.json").is_file():
        own = json.loads((path / "preprocessor_config.json").read_text(encoding="utf-8"))
    size = own.get("size") or {}
    if "height" not in size:
        side = int(size.get("shortest_edge", side))
        size = {"height": side, "width": side}
    kept = ("image_mean", "image_std", "resample", "rescale_factor", "do_convert_rgb")
    settings = {"image_mean": SIGLIP_NORM, "image_std": SIGLIP_NORM, **{k: own[k] for k in kept if k in own}}
    return LlavaOnevisionImageProcessorPil(
        size=size, image_grid_pinpoints=config.image_grid_pinpoints, **settings
    )


def weight_shapes(path: Path) -> dict[str, list[int]]:
    """The name and shape of every tensor of the checkpoint's safetensors, from their headers (no weight
    loads); a checkpoint without safetensors is refused (pickle is not read for this layout)."""
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise RMKitError(f"{path}: a llava_qwen checkpoint is read from its *.safetensors; there are none")
    shapes: dict[str, list[int]] = {}
    for f in files:
        try:
            with open(f, "rb") as stream:
                (size,) = struct.unpack("<Q", stream.read(8))
                header = json.loads(stream.read(size))
        except (OSError, ValueError, struct.error) as e:
            raise RMKitError(f"{f}: not a readable safetensors file ({e})") from None
        shapes |= {k: v["shape"] for k, v in header.items() if k != "__metadata__"}
    return shapes


def _check_weights(path: Path, config: Any, shapes: dict[str, list[int]]) -> None:
    """Refuse, naming it, the first weight transformers' model needs that the checkpoint lacks, or holds in
    another shape than the translated config gives it."""
    import torch
    from transformers import LlavaOnevisionForConditionalGeneration

    with torch.device("meta"):
        wanted = LlavaOnevisionForConditionalGeneration(config).state_dict()
    have = {renamed(k): v for k, v in shapes.items()}
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    missing = sorted(set(wanted) - set(have) - tied)
    if missing:
        raise RMKitError(
            f"{path}: the llava_qwen checkpoint lacks {_saved_name(missing[0])} ({len(missing)} weight(s) "
            "missing in all)"
        )
    for name, tensor in wanted.items():
        if name in have and list(tensor.shape) != list(have[name]):
            raise RMKitError(
                f"{path}: {_saved_name(name)} is {have[name]} in the llava_qwen checkpoint; its config.json "
                f"gives {list(tensor.shape)}"
            )


def _saved_name(name: str) -> str:
    """The name LLaVA-NeXT saves transformers' weight ``name`` under."""
    out = {
        "model.vision_tower.": "model.vision_tower.vision_tower.vision_model.",
        "model.multi_modal_projector.linear_1.": "model.mm_projector.0.",
        "model.multi_modal_projector.linear_2.": "model.mm_projector.2.",
        "model.language_model.": "model.",
    }
    for prefix, saved in out.items():
        if name.startswith(prefix):
            return saved + name[len(prefix) :]
    return name
