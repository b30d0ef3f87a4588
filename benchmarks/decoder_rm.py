"""The small Llama-architecture RM both benchmarks use (seeded HF init, the MiniLM tokenizer), and the
long-context preference data it is trained on.

Real RMs are decoders with long contexts; this one is small enough to run on 2 CPU cores and takes 8,192
positions, so no text of ``../shared/data`` is cut. ``[SEP]`` ends every text (it is the EOS token) and
``[PAD]``, which no text contains, only ever pads, so HF's last-non-pad pooling reads the same token rmkit's
attention-mask rule does.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

from rmkit import RewardModel
from rmkit.data import iter_examples
from rmkit.data.synthetic import generate

SHAREGPT = Path(__file__).resolve().parents[2] / "shared" / "data" / "sharegpt_pref_en.json"
SIZES = {
    # Small enough that a plain loop over 2,000 texts takes minutes on 2 cores; attention and element-wise
    # work are a large share of its time.
    "small": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=344),
    # 12.7M non-embedding parameters: the matrix products dominate, as in a real RM (about 16x the work of
    # "small" per token).
    "base": dict(hidden_size=512, num_hidden_layers=4, num_attention_heads=8, intermediate_size=1376),
}
POSITIONS = 8192
# How :func:`train_decoder_rm` trains each size: "base" on pairs cut to 1,024 tokens, to keep it near 7 minutes.
TRAINING = {
    "small": dict(pairs=400, epochs=2.0, max_length=POSITIONS, learning_rate=1e-3),
    "base": dict(pairs=200, epochs=2.0, max_length=1024, learning_rate=5e-4),
}


def save_decoder_rm(path: Path, minilm: str, size: str = "small") -> None:
    """Build the untrained RM of ``size`` (seed 0) and save it through rmkit to ``path``."""
    tok = AutoTokenizer.from_pretrained(minilm)
    tok.model_max_length = POSITIONS
    tok.eos_token = tok.sep_token
    config = LlamaConfig(
        vocab_size=len(tok),
        max_position_embeddings=POSITIONS,
        num_key_value_heads=SIZES[size]["num_attention_heads"],
        num_labels=1,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.cls_token_id,
        eos_token_id=tok.sep_token_id,
        attn_implementation="sdpa",
        **SIZES[size],
    )
    torch.manual_seed(0)
    RewardModel(LlamaForSequenceClassification(config), tok).save_pretrained(path)


def long_context_pairs(split: str, n: int, seed: int = 0) -> list[dict]:
    """``n`` pairs of rmkit's synthetic generator (``split`` "train" or "test"), each question following a
    real conversation of the shared ShareGPT file (its turns and chosen answer), cycled in order.

    The rule to learn is the generator's; the contexts give the length variety of real chat data (a few
    dozen to over 4,000 tokens). Training pairs take the first 4/5 of the conversations, test pairs the
    rest, so a held-out pair never follows a conversation a training pair used.
    """
    contexts = [
        ex.prompt + [{"role": "assistant", "content": ex.responses[0]}] for ex in iter_examples(SHAREGPT)
    ]
    cut = len(contexts) * 4 // 5
    contexts = contexts[:cut] if split == "train" else contexts[cut:]
    return [
        {**p, "prompt": contexts[i % len(contexts)] + [{"role": "user", "content": p["prompt"]}]}
        for i, p in enumerate(generate(split, n, seed))
    ]


def train_decoder_rm(path: Path, minilm: str, size: str = "small") -> dict:
    """Save the RM of ``size`` (HF's init) and train it with ``rmkit train`` on :func:`long_context_pairs`
    as ``TRAINING[size]`` says into ``path``; returns the training metrics. On 2 CPU cores about a minute for
    "small", 7 for "base"."""
    from rmkit.training import TrainConfig, train

    work = path.parent / f"{path.name}-work"
    save_decoder_rm(work / "init", minilm, size)
    data = work / "train.json"
    plan = TRAINING[size]
    data.write_text(json.dumps(long_context_pairs("train", plan["pairs"])), encoding="utf-8")
    config = TrainConfig(
        model=str(work / "init"),
        data=str(data),
        output_dir=str(path),
        max_length=plan["max_length"],
        batch_size=8,
        learning_rate=plan["learning_rate"],
        epochs=plan["epochs"],
        eval_split=0.1,
    )
    return train(config)
