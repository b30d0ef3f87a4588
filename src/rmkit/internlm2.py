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
SPECIAL_TOKENS = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "</s>"}
# InternLM2's config keys that transformers' Llama config has no use for (auto_map: its remote code).
DROPPED = ("auto_map", "reward_token_id", "bias", "attn_implementation", "pretraining_tp", "tokenizer_class")


def recognises(config: dict[str, Any], keys: set[str]) -> bool:
    """Whether a checkpoint is InternLM2's: its model type, or fused ``wqkv`` weights."""
    return config.get("model_type") == "internlm2" or any(k.endswith(".attention.wqkv.weight") for k in keys)


def split_wqkv(wqkv: torch.Tensor, heads: int, kv_heads: int) -> list[torch.Tensor]:
    """``[q, k, v]`` projection weights of a fused ``wqkv`` (``(heads + 2 * kv_heads) * head_dim``, hidden):
    per key/value group, its query heads, its key head, its value head."""
    groups, hidden = heads // kv_heads, wqkv.shape[-1]
    grouped = wqkv.reshape(kv_heads, groups + 2, -1, hidden)
    parts = (grouped[:, :groups], grouped[:, groups], grouped[:, groups + 1])
    return [part.reshape(-1, hidden) for part in parts]


def llama_state(state: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """``state`` under transformers' Llama names (``v_head.weight`` and unknown keys kept as they are)."""
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key.endswith("attention.wqkv.weight"):
            layer = key[: -len("attention.wqkv.weight")]
            for name, part in zip("qkv", split_wqkv(tensor, heads, kv_heads), strict=True):
                out[f"{layer}self_attn.{name}_proj.weight"] = part
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
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import import_protobuf

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
    if proto.trainer_spec.model_type != 2:  # sentencepiece's 2: BPE
        raise RMKitError(f"'{path / 'tokenizer.model'}' is not a BPE sentencepiece model, as InternLM2's is")
    settings_file = path / "tokenizer_config.json"
    settings = json.loads(settings_file.read_text(encoding="utf-8")) if settings_file.is_file() else {}
    renamed = {int(i): t["content"] for i, t in (settings.get("added_tokens_decoder") or {}).items()}
    model, vocab = _bpe(proto, renamed)
    tokens = {k: settings.get(k) or v for k, v in SPECIAL_TOKENS.items()}
    tokens = {k: v["content"] if isinstance(v, dict) else v for k, v in tokens.items()}
    if settings.get("add_bos_token", True):
        bos = tokens["bos_token"]
        model.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, vocab[bos])]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=model,
        **tokens,
        chat_template=settings.get("chat_template"),
        clean_up_tokenization_spaces=False,
    )


def _bpe(proto: Any, renamed: dict[int, str]) -> tuple[Any, dict[str, int]]:
    """``(tokenizers' Tokenizer, its vocabulary)`` of a sentencepiece BPE ``proto``, pieces ``renamed`` by id:
    the converter settings of the module docstring, the control and renamed pieces special tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers
    from tokenizers.models import BPE
    from transformers.tokenization_utils_base import generate_merges

    pieces = [renamed.get(i, p.piece) for i, p in enumerate(proto.pieces)]
    pieces[:3] = ["<unk>", "<s>", "</s>"]
    vocab = {piece: i for i, piece in enumerate(pieces)}
    scores = {piece: p.score for piece, p in zip(pieces, proto.pieces, strict=True)}
    model = Tokenizer(
        BPE(vocab, generate_merges(vocab, scores), unk_token="<unk>", fuse_unk=True, byte_fallback=True)
    )
    prefix = [normalizers.Prepend("▁")] if proto.normalizer_spec.add_dummy_prefix else []
    model.normalizer = normalizers.Sequence([*prefix, normalizers.Replace(" ", "▁")])
    model.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    kinds = {i: p.type for i, p in enumerate(proto.pieces)}  # sentencepiece's 3: CONTROL, 4: USER_DEFINED
    special = [pieces[i] for i, kind in kinds.items() if i < 3 or kind == 3 or i in renamed]
    model.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in special])
    user = [pieces[i] for i, kind in kinds.items() if kind == 4 and i not in renamed]
    model.add_tokens([AddedToken(t, normalized=False) for t in user])
    return model, vocab
