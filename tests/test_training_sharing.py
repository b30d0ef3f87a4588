"""Training with a pair's shared prefix run once (``--prefix-sharing``): one step, a whole run, LoRA and two
processes give what the unshared path gives, on tiny Llama and Qwen2 RMs built from configs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from conftest import TINY, make_llama, make_tokenizer
from test_training import BAD, GOOD, assert_same_weights, config, torchrun_train

from rmkit import train
from rmkit.errors import RMKitError
from rmkit.modeling import RewardModel
from rmkit.packing import share_pairs, shared_prefix
from rmkit.training.config import TrainConfig
from rmkit.training.step import PairTask, forward_pairs
from rmkit.training.store import Pair

HISTORY = [
    "User: I am planning a trip to France next spring and want to see the capital first.",
    "Assistant: Paris is a good start; the museums open early and the river walks are pleasant.",
    "User: What should I know about distances there, in metres and kilometres?",
    "Assistant: Five kilometres is five thousand metres, a long walk across the city centre.",
]


def make_qwen2(path: Path) -> Path:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = make_tokenizer(path)
    torch.manual_seed(0)
    config_ = Qwen2Config(
        vocab_size=len(tok), **TINY, bos_token_id=1, eos_token_id=2, pad_token_id=tok.pad_token_id
    )
    Qwen2ForCausalLM(config_).save_pretrained(str(path))
    return path


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def backbone(request, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp(request.param)
    return make_llama(path) if request.param == "llama" else make_qwen2(path)


@pytest.fixture(scope="module")
def multiturn(tmp_path_factory) -> tuple[Path, Path]:
    """Pairs after long shared histories (most of a pair's tokens), as in HH or ShareGPT data."""
    out = tmp_path_factory.mktemp("multiturn")

    def rows(n: int, seed: int) -> list[dict]:
        rng = random.Random(seed)
        return [
            {
                "prompt": " ".join(rng.sample(HISTORY, rng.randint(2, 4))),
                "chosen": " ".join(rng.choice(GOOD) for _ in range(rng.randint(1, 2))),
                "rejected": " ".join(rng.choice(BAD) for _ in range(rng.randint(1, 2))),
                "margin": rng.choice([0.0, 0.5]),
            }
            for _ in range(n)
        ]

    paths = []
    for name, n, seed in (("train", 48, 0), ("eval", 16, 1)):
        paths.append(out / f"{name}.jsonl")
        paths[-1].write_text("".join(json.dumps(r) + "\n" for r in rows(n, seed)), encoding="utf-8")
    return paths[0], paths[1]


def test_a_shared_row_holds_the_prefix_once_and_each_answer_sees_only_itself_after_it():
    packed = share_pairs([([5, 6, 7], [5, 6, 8, 9]), ([4, 5], [3])], pad_id=0)
    assert packed.input_ids.tolist() == [[5, 6, 7, 8, 9], [4, 5, 3, 0, 0]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 2, 3], [0, 1, 0, 0, 0]]
    assert packed.ends.tolist() == [2, 6, 4, 7]  # chosen ends, then rejected ends (flat: row * 5 + column)
    mask = packed.mask[:, 0].int().tolist()
    assert mask[0] == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 0, 1, 0], [1, 1, 0, 1, 1]]
    assert mask[1] == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1]]
    assert shared_prefix([1, 2, 3], [1, 2, 3, 4]) == 2  # each side keeps a token of its own to be read at
    assert shared_prefix([1, 2], [3, 2]) == 0


def step_pairs() -> list[Pair]:
    """Ragged prefixes, a pair sharing nothing, answers that differ in their first token, an answer that is
    the other's start, and two sequences cut from the left by different amounts (so no longer aligned)."""
    g = torch.Generator().manual_seed(1)

    def tokens(n: int) -> list[int]:
        return torch.randint(5, 300, (n,), generator=g).tolist()

    a, b, c, long = tokens(40), tokens(7), tokens(25), tokens(60)
    return [
        Pair(a + tokens(5), a + tokens(9), 0.5),
        Pair(b + [11] + tokens(30), b + [12] + tokens(3)),
        Pair(tokens(12), tokens(15)),
        Pair(c + [9, 10, 11], c + [9, 10, 11, 12], 0.25),
        Pair(long[5:] + tokens(4), long[9:] + tokens(6)),
    ]


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_one_shared_step_gives_the_unshared_loss_scores_and_every_gradient(
    backbone, tmp_path, attention, checkpointing
):
    rm = RewardModel.from_pretrained(backbone, attn_implementation=attention).train()
    if checkpointing:
        rm.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    cfg = TrainConfig(
        model=str(backbone), data="-", output_dir=str(tmp_path), score_reg=0.01, center_rewards=0.1
    )
    pairs = step_pairs()
    runs = []
    for shared in (False, True):
        rm.zero_grad()
        loss, chosen, rejected = forward_pairs(
            rm, pairs, rm.pad_token_id, cfg, torch.device("cpu"), shared=shared
        )
        loss.sum().backward()
        grads = {n: p.grad.clone() for n, p in rm.named_parameters() if p.requires_grad}
        runs.append((loss.detach(), chosen.detach(), rejected.detach(), grads))
    (l0, c0, r0, g0), (l1, c1, r1, g1) = runs
    for x, y in ((l0, l1), (c0, c1), (r0, r1)):
        torch.testing.assert_close(y, x, rtol=0, atol=1e-5)
    assert g0.keys() == g1.keys() and all(g0[n] is not None for n in g0)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-4, atol=1e-5, msg=name)


def test_auto_shares_a_pair_whose_prefix_pays_and_budgets_its_row_once():
    long, short = list(range(10, 60)), [7, 8]
    task = PairTask(sharing="auto")
    pays, too_short = Pair(long + [1, 2], long + [3]), Pair(short + [1, 2], short + [3])
    assert [task.shares(p) for p in (pays, too_short)] == [50, 0]
    assert task.lengths([pays, too_short]) == [53, 8]  # its row (the prefix once); two padded rows
    assert PairTask(sharing="on").shares(too_short) == 2 and PairTask(sharing="off").shares(pays) == 0


def run(backbone: Path, data: tuple[Path, Path], out: Path, **kw) -> dict:
    """A run of 20 steps of 8 pairs, one micro-batch each: the two paths sum the same pairs' gradients in the
    same order (micro-batches grouped by cost differ, and Adam turns the rounding of a near-zero gradient
    into up to a step's size)."""
    args = dict(
        max_steps=20, batch_size=8, micro_batch_size=8, logging_steps=5, score_reg=0.01, max_length=128
    )
    train(config(backbone, data, out, **{**args, **kw}))
    return json.loads((out / "metrics.json").read_text())


def test_a_run_with_sharing_trains_the_model_a_run_without_trains(llama_path, multiturn, tmp_path):
    metrics = {
        mode: run(llama_path, multiturn, tmp_path / mode, prefix_sharing=mode) for mode in ("off", "auto")
    }
    assert_same_weights(tmp_path / "off", tmp_path / "auto")
    shared, alone = metrics["auto"]["train"], metrics["off"]["train"]
    assert shared["prefix_sharing"] == "auto" and shared["shared_pairs"] >= 20 * 8 // 2
    assert shared["prefix_tokens_saved"] > 0.3 * shared["tokens"]  # histories are most of the tokens
    assert alone["shared_pairs"] == alone["prefix_tokens_saved"] == 0
    assert shared["tokens"] == alone["tokens"]  # the pairs' own tokens, whatever ran
    for key in ("loss", "accuracy", "chosen_mean", "rejected_mean"):
        assert metrics["auto"]["eval"][key] == pytest.approx(metrics["off"]["eval"][key], abs=1e-5), key
    logged = [json.loads(x) for x in (tmp_path / "auto" / "train_log.jsonl").read_text().splitlines()]
    assert logged[0]["shared_pairs"] > 0 and logged[0]["prefix_tokens_saved"] > 0


def test_lora_with_sharing_trains_what_lora_without_trains(llama_path, multiturn, tmp_path):
    for mode in ("off", "on"):
        run(llama_path, multiturn, tmp_path / mode, prefix_sharing=mode, lora=True, lora_r=4, max_steps=6)
    assert_same_weights(tmp_path / "off", tmp_path / "on")


def test_sharing_on_is_refused_where_it_cannot_be_exact(llama_path, multiturn, tmp_path):
    with pytest.raises(RMKitError, match="--prefix-sharing on: --loss token_wise"):
        run(llama_path, multiturn, tmp_path / "a", prefix_sharing="on", loss="token_wise", max_steps=1)
    with pytest.raises(RMKitError, match="--prefix-sharing on: packed micro-batches"):
        run(llama_path, multiturn, tmp_path / "b", prefix_sharing="on", packing="on", max_steps=1)
    # auto keeps the unshared path there, and says so in metrics.json
    assert (
        run(llama_path, multiturn, tmp_path / "c", loss="token_wise", max_steps=1)["train"]["prefix_sharing"]
        == "off"
    )


@pytest.mark.slow
@pytest.mark.parametrize("sharding", [[], ["--fsdp", "full_shard"]], ids=["ddp", "fsdp"])
def test_two_processes_with_sharing_train_what_one_process_without_trains(
    llama_path, multiturn, tmp_path, sharding
):
    """DDP, and FSDP, where every process runs the same number of passes (a shared micro-batch is one)."""
    run(llama_path, multiturn, tmp_path / "one", prefix_sharing="off", max_steps=4, logging_steps=1)
    flags = ["--max-steps", "4", "--micro-batch-size", "8", "--score-reg", "0.01", "--max-length", "128"]
    torchrun_train(llama_path, multiturn, tmp_path / "two", *flags, *sharding, "--prefix-sharing", "on")
    assert_same_weights(tmp_path / "one", tmp_path / "two")
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())["train"]
    assert two["processes"] == 2 and two["shared_pairs"] > 0


def test_the_option_s_earlier_switch_still_reads_and_a_bad_value_is_refused(multiturn, tmp_path):
    base = dict(model="-", data=str(multiturn[0]), output_dir=str(tmp_path / "o"))
    for given, read in ((True, "auto"), (False, "off"), ("on", "on")):
        config = TrainConfig(**base, prefix_sharing=given)
        config.validate()
        assert config.prefix_sharing == read
    with pytest.raises(RMKitError, match="--prefix-sharing is auto, on or off, got 'sometimes'"):
        TrainConfig(**base, prefix_sharing="sometimes").validate()
