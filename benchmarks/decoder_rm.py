"""The small Llama-architecture RM both benchmarks use: random seeded weights, the MiniLM tokenizer.

Real RMs are decoders with long contexts; this one is small enough to run on 2 CPU cores and takes 8,192
positions, so no text of ``../shared/data`` is cut. ``[SEP]`` ends every text (it is the EOS token) and
``[PAD]``, which no text contains, only ever pads, so HF's last-non-pad pooling reads the same token rmkit's
attention-mask rule does.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

from rmkit import RewardModel

DECODER = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=344)
POSITIONS = 8192


def save_decoder_rm(
    path: Path, minilm: str, *, fan_in_init: bool = False, max_length: int | None = None
) -> None:
    """Build the RM (seed 0) and save it through rmkit to ``path``.

    With ``fan_in_init`` every weight matrix is drawn with std ``1/sqrt(fan_in)`` instead of HF's 0.02,
    so that scores depend on the text (HF's init leaves the last position's state almost only the
    ``[SEP]`` embedding).
    """
    tok = AutoTokenizer.from_pretrained(minilm)
    tok.model_max_length = POSITIONS
    tok.eos_token = tok.sep_token
    config = LlamaConfig(
        vocab_size=len(tok),
        max_position_embeddings=POSITIONS,
        num_key_value_heads=DECODER["num_attention_heads"],
        num_labels=1,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.cls_token_id,
        eos_token_id=tok.sep_token_id,
        attn_implementation="sdpa",
        **DECODER,
    )
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(config)
    if fan_in_init:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.dim() == 2 and "embed" not in name:
                    p.normal_(0.0, 1.0 / math.sqrt(p.shape[1]))
    RewardModel(model, tok).save_pretrained(path, {"max_length": max_length} if max_length else None)
