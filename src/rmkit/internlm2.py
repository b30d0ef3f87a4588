"""InternLM2-Reward (``InternLM2ForRewardModel``: internlm2-1_8b/7b/20b-reward) read without its remote code.

Its backbone is Llama's computation under other names, with the query, key and value projections fused:
``attention.wqkv`` holds, for each of the K key/value heads in turn, its G = heads / K query heads, then its key
head, then its value head (``head_dim`` rows each). :func:`llama_state` splits it into transformers' Llama
``q_proj``, ``k_proj`` and ``v_proj`` and renames the rest (``attention.wo`` to ``self_attn.o_proj``,
``feed_forward.w1/w3/w2`` to ``mlp.gate/up/down_proj``, ``attention_norm`` and ``ffn_norm`` to the layer
norms, ``tok_embeddings`` to ``embed_tokens``), as InternLM's own ``convert2llama`` does; :func:`llama_config`
maps its config (``bias`` to ``attention_bias``; ``rope_scaling`` of type ``linear`` or ``dynamic`` is
transformers' Llama RoPE of the same name and formula). Its head, a bias-free ``v_head``, is read at the last
real token, which is the reward token (``reward_token_id``, 92527) its ``get_score`` appends to the chat
template's text encoded with ``add_special_tokens=False``: rmkit appends it in place of EOS (``end_token_id``
in rmkit's metadata).

Its tokenizer is a sentencepiece BPE model (``tokenizer.model``, remote code on the hub). :func:`tokenizer`
builds the fast tokenizer from it with the settings of InternLM2's and transformers' Llama (legacy)
converters: byte-fallback BPE over the model's pieces (the first three named ``<unk>``, ``<s>``, ``</s>``), a
``▁`` put before the text when the model's ``add_dummy_prefix`` says so and every space written ``▁``, no
pre-tokenizer; the BOS added, the EOS not, pad ``</s>``; the ``added_tokens_decoder`` of
``tokenizer_config.json`` renaming pieces (``<|im_start|>``, ``<|im_end|>``, ...) and its chat template.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from rmkit.errors import RMKitError

ARCHITECTURE = "InternLM2ForRewardModel"
REWARD_TOKEN = 92527  # InternLM2-Reward's reward_token_id, unless its config names one
RENAMES = {
    "attention.wo.": "self_attn.o_proj.",
    "feed_forward.w1.": "mlp.gate_proj.",
    "feed_forward.w3.": "mlp.up_proj.",
    "feed_forward.w2.": "mlp.down_proj.",
    "attention_norm.": "input_layernorm.",
    "ffn_norm.": "post_attention_layernorm.",
    "tok_embeddings.": "embed_tokens.",
}
# InternLM2's config keys that transformers' Llama config has no use for (auto_map: its remote code).
DROPPED = ("auto_map", "reward_token_id", "bias", "attn_implementation", "pretraining_tp", "tokenizer_class")


def recognises(config: dict[str, Any], keys: set[str]) -> bool:
    """Whether a checkpoint is InternLM2's: its model type, or fused ``wqkv`` weights."""
    return config.get("model_type") == "internlm2" or any(k.endswith(".attention.wqkv.weight") for k in keys)


def split_wqkv(
    wqkv: torch.Tensor, heads: int, kv_heads: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(q, k, v)`` projection weights of a fused ``wqkv`` (``(heads + 2 * kv_heads) * head_dim``, hidden):
    per key/value group, its query heads, its key head, its value head."""
    groups = heads // kv_heads
    grouped = wqkv.reshape(kv_heads, groups + 2, -1, wqkv.shape[-1])
    q = grouped[:, :groups].reshape(-1, wqkv.shape[-1])
    return (
        q,
        grouped[:, groups].reshape(-1, wqkv.shape[-1]),
        grouped[:, groups + 1].reshape(-1, wqkv.shape[-1]),
    )


def llama_state(state: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """``state`` under transformers' Llama names (``v_head.weight`` and unknown keys kept as they are)."""
    heads, kv_heads = (
        config["num_attention_heads"],
        config.get("num_key_value_heads") or config["num_attention_heads"],
    )
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key.endswith("attention.wqkv.weight"):
            layer = key[: -len("attention.wqkv.weight")]
            q, k, v = split_wqkv(tensor, heads, kv_heads)
            out |= {f"{layer}self_attn.q_proj.weight": q, f"{layer}self_attn.k_proj.weight": k}
            out[f"{layer}self_attn.v_proj.weight"] = v
            continue
        old = next((o for o in RENAMES if f".{o}" in key or key.startswith(o)), None)
        out[key.replace(old, RENAMES[old]) if old else key] = tensor
    return out


def llama_config(config: dict[str, Any]) -> dict[str, Any]:
    """transformers' Llama config of InternLM2 ``config`` (its ``reward_token_id`` kept for the metadata);
    ``ValueError`` where the computation would differ (attention biases, an unknown RoPE scaling)."""
    if config.get("bias"):
        raise ValueError("its attention has biases (bias: true), which InternLM2's Llama form has not")
    scaling = config.get("rope_scaling")
    if scaling and scaling.get("type", scaling.get("rope_type")) not in ("linear", "dynamic"):
        raise ValueError(f"its rope_scaling {scaling} is neither InternLM2's linear nor its dynamic")
    llama = {k: v for k, v in config.items() if k not in DROPPED}
    llama |= {"model_type": "llama", "attention_bias": False, "mlp_bias": False}
    llama["reward_token_id"] = int(config.get("reward_token_id") or REWARD_TOKEN)
    return llama


def tokenizer(path: Path) -> Any:
    """The fast tokenizer of InternLM2 checkpoint ``path``, built from its ``tokenizer.model`` (module
    docstring) with its ``tokenizer_config.json``'s renamed tokens, special tokens and chat template."""
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, processors
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import import_protobuf
    from transformers.tokenization_utils_base import generate_merges

    if not (path / "tokenizer.model").is_file():
        raise RMKitError(
            f"'{path}' is an InternLM2 checkpoint without its tokenizer.model; name a tokenizer with --tokenizer"
        )
    try:
        proto = import_protobuf().ModelProto()
    except ImportError:
        raise RMKitError(
            "reading InternLM2's tokenizer.model needs protobuf: pip install 'rmkit[internlm2]'"
        ) from None
    proto.ParseFromString((path / "tokenizer.model").read_bytes())
    settings_file = path / "tokenizer_config.json"
    settings = json.loads(settings_file.read_text(encoding="utf-8")) if settings_file.is_file() else {}
    renamed = {int(i): t["content"] for i, t in (settings.get("added_tokens_decoder") or {}).items()}
    pieces = [renamed.get(i, p.piece) for i, p in enumerate(proto.pieces)]
    pieces[:3] = ["<unk>", "<s>", "</s>"]
    vocab = {piece: i for i, piece in enumerate(pieces)}
    scores = {piece: p.score for piece, p in zip(pieces, proto.pieces, strict=True)}
    merges = generate_merges(vocab, scores)
    model = Tokenizer(BPE(vocab, merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    prefix = [normalizers.Prepend("▁")] if proto.normalizer_spec.add_dummy_prefix else []
    model.normalizer = normalizers.Sequence([*prefix, normalizers.Replace(" ", "▁")])
    model.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    control = [
        pieces[i] for i, p in enumerate(proto.pieces) if i < 3 or p.type == 3 or i in renamed
    ]  # 3: CONTROL
    model.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in control])
    model.add_tokens(
        [
            AddedToken(pieces[i], normalized=False)
            for i, p in enumerate(proto.pieces)
            if p.type == 4 and i not in renamed
        ]
    )  # 4: USER_DEFINED
    bos = settings.get("bos_token") or "<s>"
    bos = bos["content"] if isinstance(bos, dict) else bos
    if settings.get("add_bos_token", True):
        model.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, vocab[bos])]
        )
    named = {k: settings.get(k) for k in ("unk_token", "bos_token", "eos_token", "pad_token")}
    defaults = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "</s>"}
    return PreTrainedTokenizerFast(
        tokenizer_object=model,
        **{k: v or defaults[k] for k, v in named.items()},
        chat_template=settings.get("chat_template"),
        clean_up_tokenization_spaces=False,
    )
