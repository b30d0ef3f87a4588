"""The GPU path's logic, on the CPU: packed batches, token budgets sized from memory, the copy-back of
scores at the end of a run of batches, reading ahead, and the dtype rule; then the same on CUDA
(``-m cuda``, skipped without a GPU)."""

from __future__ import annotations

import importlib.util
import json
import random
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import WORDS, make_tokenizer, write_jsonl
from transformers import LlamaConfig

import rmkit
from rmkit import RewardModel, RMKitError, TrainConfig, train
from rmkit.inference import BATCH_TOKENS, ahead, score_sequences, token_budget
from rmkit.memory import GPU_MEMORY_SHARE, MAX_BATCH_TOKENS, activation_bytes, budget_for, kv_bytes
from rmkit.packing import pack, packs
from rmkit.runtime import resolve_dtype
from rmkit.training.data import Pair
from rmkit.training.step import forward_pairs

cuda = pytest.mark.cuda


def rows(n: int, seed: int, vocab: int = 300) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(5, vocab) for _ in range(rng.randint(1, 40))] for _ in range(n)]


def test_pack_lays_sequences_end_to_end_with_positions_restarting():
    p = pack([[5, 6, 7], [8, 9], [4]])
    assert p.input_ids.tolist() == [[5, 6, 7, 8, 9, 4]]
    assert p.position_ids.tolist() == [[0, 1, 2, 0, 1, 0]]
    assert p.ends.tolist() == [2, 4, 5]
    with pytest.raises(ValueError, match="at least one token"):
        pack([[5], []])


def pair_list(seed: int, n: int = 6) -> list[Pair]:
    chosen, rejected = rows(n, seed), rows(n, seed + 1)
    return [Pair(c, r, margin=0.5 * (i % 2)) for i, (c, r) in enumerate(zip(chosen, rejected, strict=True))]


def grads(rm: RewardModel) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in rm.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_pairs_give_the_padded_losses_scores_and_gradients(llama_path, attention):
    torch.manual_seed(0)
    rm = RewardModel.from_pretrained(llama_path, attn_implementation=attention).train()
    config = TrainConfig(model="m", data="d", output_dir="o", score_reg=0.01, center_rewards=0.01)
    pairs = pair_list(0)
    out = {}
    for packed in (False, True):
        rm.zero_grad()
        loss, chosen, rejected = forward_pairs(rm, pairs, rm.pad_token_id, config, rm.device, packed)
        loss.sum().backward()
        out[packed] = loss.detach(), chosen.detach(), rejected.detach(), grads(rm)
    for a, b in zip(out[False][:3], out[True][:3], strict=True):
        torch.testing.assert_close(a, b, atol=2e-6, rtol=1e-5)
    assert out[False][3].keys() == out[True][3].keys() and len(out[True][3]) > 10
    for name, g in out[False][3].items():
        torch.testing.assert_close(out[True][3][name], g, atol=2e-6, rtol=1e-4, msg=name)


def test_an_attention_kernel_that_is_unknown_or_not_installed_is_a_one_line_error(
    llama_path, tmp_path, capsys
):
    from rmkit.cli import main

    data = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "hi", "response": "hello"}])
    args = ["score", "--model", str(llama_path), "--input", str(data), "--output", str(tmp_path / "o.jsonl")]
    assert main([*args, "--attn-implementation", "bogus"]) == 2
    err = capsys.readouterr().err
    assert "--attn-implementation bogus" in err and "Traceback" not in err
    if importlib.util.find_spec("flash_attn") is not None:
        return  # installed: the kernel loads (or fails on the CPU alone, which is another test's business)
    with pytest.raises(RMKitError, match="--attn-implementation flash_attention_2: .*FlashAttention2"):
        RewardModel.from_pretrained(llama_path, attn_implementation="flash_attention_2")


def test_packing_is_on_by_default_only_where_attention_skips_across_sequences(llama_path, minilm_path):
    rm = RewardModel.from_pretrained(llama_path)
    assert rm.model.config._attn_implementation == "sdpa"
    assert not packs(rm, "auto") and packs(rm, "on") and not packs(rm, "off")
    rm.model.config._attn_implementation = "flex_attention"
    assert packs(rm, "auto")
    assert not packs(RewardModel.from_pretrained(minilm_path), "on")


def write_pairs(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    text = lambda k: " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, k)))  # noqa: E731
    return write_jsonl(
        path, [{"prompt": text(8), "chosen": text(20), "rejected": text(20)} for _ in range(n)]
    )


def test_training_packed_equals_training_padded(llama_path, tmp_path):
    data, held = write_pairs(tmp_path / "train.jsonl", 32, 0), write_pairs(tmp_path / "eval.jsonl", 8, 1)
    logs, final = {}, {}
    for packing in ("off", "on"):
        out = tmp_path / packing
        config = TrainConfig(
            model=str(llama_path), data=str(data), eval_data=str(held), output_dir=str(out), batch_size=8,
            micro_batch_size=3, max_steps=4, logging_steps=1, learning_rate=3e-3, packing=packing,
        )  # fmt: skip
        metrics = train(config)
        logs[packing] = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
        final[packing] = metrics
    steps = [r for r in logs["on"] if "loss" in r]
    assert len(steps) == 4
    for a, b in zip([r for r in logs["off"] if "loss" in r], steps, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
    assert final["on"]["eval"]["loss"] == pytest.approx(final["off"]["eval"]["loss"], abs=1e-5)
    assert final["on"]["train"]["tokens"] == final["off"]["train"]["tokens"]
    assert final["on"]["train"]["packed"] and not final["off"]["train"]["packed"]


def test_the_train_log_has_each_records_tokens_and_seconds_and_the_bar_can_be_off(
    llama_path, tmp_path, capfd
):
    data = write_pairs(tmp_path / "train.jsonl", 16, 0)
    config = TrainConfig(
        model=str(llama_path), data=str(data), output_dir=str(tmp_path / "o"), batch_size=4, max_steps=4,
        logging_steps=1, eval_split=0.25, progress=False,
    )  # fmt: skip
    metrics = train(config)
    records = [json.loads(x) for x in (tmp_path / "o" / "train_log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert sum(r["tokens"] for r in steps) == metrics["train"]["tokens"]
    assert sum(r["seconds"] for r in steps) == pytest.approx(metrics["train"]["seconds"], abs=1e-3)
    assert all(r["tokens_per_s"] == pytest.approx(r["tokens"] / r["seconds"], rel=1e-3) for r in steps)
    assert "train:" not in capfd.readouterr().err
    train(replace(config, progress=True, max_steps=1, output_dir=str(tmp_path / "shown")))
    assert "train:" in capfd.readouterr().err


def test_packing_on_is_refused_where_it_cannot_work(llama_path, minilm_path, tmp_path):
    data = write_pairs(tmp_path / "train.jsonl", 8, 0)
    base = dict(data=str(data), output_dir=str(tmp_path / "o"), max_steps=1, packing="on")
    with pytest.raises(RMKitError, match="causal decoder"):
        train(TrainConfig(model=str(minilm_path), **base))
    with pytest.raises(RMKitError, match="token_wise"):
        train(TrainConfig(model=str(llama_path), loss="token_wise", **base))


LLAMA_8B = LlamaConfig(
    hidden_size=4096, intermediate_size=14336, num_attention_heads=32, num_key_value_heads=8,
    num_hidden_layers=32, vocab_size=128256,
)  # fmt: skip


def test_activation_bytes_count_one_layer_and_the_fp32_head_input():
    # residual, normed copy, attention output and projection (4 h), q/k/v (32 + 2·8 heads of 128), the MLP's
    # 3 intermediates, in bf16; the last hidden state twice in fp32 (cast and head)
    layer = (4 * 4096 + (32 + 16) * 128 + 3 * 14336) * 2
    assert activation_bytes(LLAMA_8B, torch.bfloat16) == layer + 8 * 4096
    assert activation_bytes(LLAMA_8B, torch.float32) == 2 * layer + 8 * 4096
    LLAMA_8B._attn_implementation = "eager"  # scores and probabilities of every key, per head, in fp32
    try:
        assert activation_bytes(LLAMA_8B, torch.bfloat16, 1000) == layer + 8 * 4096 + 8 * 32 * 1000
    finally:
        LLAMA_8B._attn_implementation = "sdpa"


def test_a_prefix_cache_keeps_each_tokens_keys_and_values_of_every_layer():
    assert kv_bytes(LLAMA_8B, torch.bfloat16) == 2 * 32 * 8 * 128 * 2  # 128 KiB a token


def test_budget_takes_the_memory_share_in_whole_kilotokens_between_the_bounds():
    per_token = activation_bytes(LLAMA_8B, torch.bfloat16)
    free = 100 * 2**30  # what an H200 has free beside an 8B model's weights
    budget = budget_for(free, per_token)
    assert budget % 1024 == 0 and budget * per_token <= GPU_MEMORY_SHARE * free
    assert (budget + 1024) * per_token > GPU_MEMORY_SHARE * free or budget == MAX_BATCH_TOKENS
    assert budget_for(2**30, per_token) == 3072  # half a GiB over 160 KiB a token: 3,276 tokens
    assert budget_for(10, per_token) == 1024  # a floor: one pass must run
    assert budget_for(10**15, per_token) == MAX_BATCH_TOKENS


def test_training_token_bytes_count_every_blocks_saved_tensors_or_checkpointed_inputs():
    from rmkit.memory import block_bytes, token_bytes
    from rmkit.training.budget import state_bytes

    block = 18 * 4096 + 4 * 8 * 128 + 8 * 14336  # Llama-3-8B: 191 KiB a token and block
    assert block_bytes(LLAMA_8B) == block
    assert token_bytes(LLAMA_8B, checkpointing=False) == 32 * block + 2 * block
    assert token_bytes(LLAMA_8B, checkpointing=True) == 32 * 4 * 4096 + 3 * block
    model = torch.nn.Sequential(torch.nn.Linear(10, 10), torch.nn.Linear(10, 1))
    model[0].requires_grad_(False)
    assert state_bytes(model) == 12 * 11 and state_bytes(model, shards=2) == 6 * 11


def test_training_micro_batches_are_unbounded_on_the_cpu_unless_given(llama_path):
    from rmkit.training.budget import micro_batch_tokens

    rm = RewardModel.from_pretrained(llama_path)
    cpu = torch.device("cpu")
    assert micro_batch_tokens(rm, TrainConfig(model="m", data="d", output_dir="o"), cpu) is None
    given = TrainConfig(model="m", data="d", output_dir="o", micro_batch_tokens=500)
    assert micro_batch_tokens(rm, given, cpu) == 500


def test_the_budget_on_the_cpu_is_the_fixed_one(llama_path):
    assert token_budget(RewardModel.from_pretrained(llama_path)) == BATCH_TOKENS


def test_dtype_auto_is_fp32_on_the_cpu(llama_path):
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto") == torch.float32
    rm = RewardModel.from_pretrained(llama_path, device="cpu")
    assert {p.dtype for p in rm.parameters()} == {torch.float32}
    with pytest.raises(RMKitError, match="expected auto or one of"):
        resolve_dtype("fp8")


def test_ahead_keeps_order_raises_in_place_and_stops_when_closed():
    made = []

    def items():
        for i in range(5):
            made.append(i)
            if i == 3:
                raise KeyError("row 3")
            yield i

    got = []
    with pytest.raises(KeyError, match="row 3"):
        for item in ahead(items()):
            got.append(item)
    assert got == [0, 1, 2]  # everything made before the failure arrives first

    made.clear()

    def many():
        for i in range(1000):
            made.append(i)
            yield i

    it = ahead(many())
    assert next(it) == 0
    it.close()  # the thread stops after the item it is making, not at the end
    assert len(made) <= 3 and not any(t.name == "rmkit-ahead" for t in threading.enumerate())

    main = threading.get_ident()
    where = [threading.get_ident() for _ in ahead(iter(range(3)), enabled=False)]
    assert where == [main] * 3


def test_ahead_makes_the_next_item_while_the_caller_works():
    def slow():
        for i in range(4):
            time.sleep(0.1)
            yield i

    start = time.perf_counter()
    for _ in ahead(slow()):
        time.sleep(0.1)
    overlapped = time.perf_counter() - start
    assert overlapped < 0.7  # serial would be 0.8 s; overlapped about 0.5 s


def test_scores_read_back_at_the_end_are_those_of_each_batch(llama_path):
    rm = RewardModel.from_pretrained(llama_path)
    seqs = rows(30, 3)
    alone = [score_sequences(rm, [s])[0] for s in seqs]
    assert score_sequences(rm, seqs, batch_tokens=64) == pytest.approx(alone, abs=1e-5)
    positions = [[0, len(s) - 1] if i % 3 else [] for i, s in enumerate(seqs)]
    steps = score_sequences(rm, seqs, batch_tokens=64, positions=positions)
    assert [len(p) for p in steps] == [len(p) for p in positions]
    assert [p[-1] for p in steps if p] == pytest.approx(
        [a for a, p in zip(alone, positions, strict=True) if p], abs=1e-5
    )


def prompt_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    text = lambda k: " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, k)))  # noqa: E731
    return [{"id": f"r{i}", "prompt": text(10), "response": text(30)} for i in range(n)]


def test_score_reading_ahead_writes_the_same_files(rm_path, tmp_path):
    rows_in = prompt_rows(60)
    rows_in[7]["response"] = ""  # rejected on the way, by the reading thread
    data = write_jsonl(tmp_path / "in.jsonl", rows_in)
    for read_ahead in (False, True):
        summary = rmkit.score(
            model=str(rm_path), input=str(data), output=str(tmp_path / f"{read_ahead}.jsonl"),
            chunk_rows=8, on_error="skip", read_ahead=read_ahead,
        )  # fmt: skip
        assert summary["rows"] == 59 and summary["skipped"] == 1
    assert (tmp_path / "True.jsonl").read_bytes() == (tmp_path / "False.jsonl").read_bytes()
    assert (tmp_path / "True.rejects.jsonl").read_text() == (tmp_path / "False.rejects.jsonl").read_text()


# ---- on a GPU (pytest -m cuda) ----


@pytest.fixture(scope="module")
def gpu() -> torch.device:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return torch.device("cuda", 0)


@cuda
def test_cuda_auto_dtype_is_bf16_with_an_fp32_head_and_keeps_the_fp32_order(rm_path, gpu):
    fp32 = RewardModel.from_pretrained(rm_path, dtype="fp32", device=gpu)
    bf16 = RewardModel.from_pretrained(rm_path, device=gpu)
    assert bf16.model.model.embed_tokens.weight.dtype == torch.bfloat16
    assert bf16.model.score.weight.dtype == torch.float32
    seqs = rows(400, 7)
    a, b = score_sequences(fp32, seqs), score_sequences(bf16, seqs)
    cpu = score_sequences(RewardModel.from_pretrained(rm_path), seqs)
    assert a == pytest.approx(cpu, abs=1e-4)
    agree = sum((a[i] > a[i + 1]) == (b[i] > b[i + 1]) for i in range(0, len(a), 2))
    assert agree / (len(a) // 2) >= 0.9  # random weights: some pairs are near ties


@cuda
def test_cuda_budget_fits_the_memory_it_is_sized_from(gpu, tmp_path):
    from transformers import LlamaForSequenceClassification

    config = LlamaConfig(
        hidden_size=1024, intermediate_size=2816, num_attention_heads=16, num_key_value_heads=4,
        num_hidden_layers=4, vocab_size=1000, num_labels=1, pad_token_id=0,
    )  # fmt: skip
    model = LlamaForSequenceClassification(config).to(gpu, torch.bfloat16).eval()
    rm = RewardModel(model, _Tok())
    model.score.float()
    budget = token_budget(rm)
    assert budget > BATCH_TOKENS
    length = 512
    seqs = [[1] * length] * (min(budget, 32768) // length)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated(gpu)
    torch.cuda.reset_peak_memory_stats(gpu)
    score_sequences(rm, seqs, batch_tokens=budget)
    per_token = (torch.cuda.max_memory_allocated(gpu) - base) / (len(seqs) * length)
    assert per_token <= activation_bytes(config, torch.bfloat16)
    # sharing prefixes (groups of 4 answers after one 400-token prompt) keeps within the budget it sized
    assert rm.shares_prefixes
    prompt = [2] * 400
    shared = [prompt + [3 + i % 50] * (20 + i % 90) for i in range(4 * (budget // 400))]
    groups = [list(range(k, k + 4)) for k in range(0, len(shared), 4)]
    free = (
        torch.cuda.mem_get_info(gpu)[0] + torch.cuda.memory_reserved(gpu) - torch.cuda.memory_allocated(gpu)
    )
    torch.cuda.reset_peak_memory_stats(gpu)
    score_sequences(rm, shared, groups=groups)
    assert torch.cuda.max_memory_allocated(gpu) - base <= GPU_MEMORY_SHARE * free * 1.5


class _Tok:
    pad_token_id = 0
    model_max_length = 4096


@cuda
def test_cuda_packed_pairs_equal_padded_ones(llama_path, gpu):
    rm = RewardModel.from_pretrained(llama_path, dtype="fp32", device=gpu)
    config = TrainConfig(model="m", data="d", output_dir="o")
    pairs = pair_list(5)
    padded = forward_pairs(rm, pairs, rm.pad_token_id, config, gpu, False)
    packed = forward_pairs(rm, pairs, rm.pad_token_id, config, gpu, True)
    for a, b in zip(padded, packed, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@cuda
def test_cuda_score_job_reads_ahead_and_equals_the_cpu_file(rm_path, gpu, tmp_path):
    data = write_jsonl(tmp_path / "in.jsonl", prompt_rows(300))
    rmkit.score(model=str(rm_path), input=str(data), output=str(tmp_path / "cpu.jsonl"), device="cpu")
    rmkit.score(
        model=str(rm_path), input=str(data), output=str(tmp_path / "gpu.jsonl"), dtype="fp32", chunk_rows=64
    )
    read = lambda p: [json.loads(line) for line in p.read_text().splitlines()]  # noqa: E731
    cpu, on_gpu = read(tmp_path / "cpu.jsonl"), read(tmp_path / "gpu.jsonl")
    assert [r["id"] for r in on_gpu] == [r["id"] for r in cpu]
    assert [r["score"] for r in on_gpu] == pytest.approx([r["score"] for r in cpu], abs=1e-4)


@cuda
def test_cuda_training_in_bf16_runs_packed_with_checkpointing(llama_path, gpu, tmp_path):
    data, held = write_pairs(tmp_path / "train.jsonl", 64, 0), write_pairs(tmp_path / "eval.jsonl", 16, 1)
    metrics = train(
        TrainConfig(
            model=str(llama_path), data=str(data), eval_data=str(held), output_dir=str(tmp_path / "o"),
            batch_size=8, max_steps=6, dtype="bf16", gradient_checkpointing=True, packing="on",
        )
    )  # fmt: skip
    assert metrics["train"]["steps"] == 6 and torch.isfinite(torch.tensor(metrics["eval"]["loss"]))


@cuda
def test_cuda_server_scores_concurrent_requests_as_the_python_api(rm_path, gpu):
    from concurrent.futures import ThreadPoolExecutor
    from urllib.request import Request, urlopen

    from rmkit.serving import running

    rm = RewardModel.from_pretrained(rm_path, device=gpu)
    texts = prompt_rows(64, seed=2)
    expected = rm.score(prompts=[t["prompt"] for t in texts], responses=[t["response"] for t in texts])

    def one(base: str, row: dict) -> float:
        body = json.dumps({"prompts": [row["prompt"]], "responses": [row["response"]]}).encode()
        request = Request(base + "/score", data=body, headers={"Content-Type": "application/json"})
        with urlopen(request, timeout=60) as reply:
            return json.loads(reply.read())["scores"][0]

    with running(rmkit.serve(rm, max_wait_ms=20)) as base, ThreadPoolExecutor(16) as pool:
        got = list(pool.map(lambda row: one(base, row), texts))
    assert got == pytest.approx(expected, abs=2e-2)  # bf16 weights, batched differently


def test_master_weights_keep_updates_bf16_alone_would_round_away():
    from torch import nn

    from rmkit.training.precision import MasterWeights

    body, head = nn.Linear(4, 4, bias=False), nn.Linear(4, 1, bias=False)
    model = nn.ModuleDict({"body": body, "score": head})
    with torch.no_grad():
        body.weight.fill_(1.0)
    masters = MasterWeights(model)
    assert body.weight.dtype == torch.bfloat16 and head.weight.dtype == torch.float32
    master = masters.param(body.weight)
    assert master.dtype == torch.float32 and masters.param(head.weight) is head.weight

    x = torch.ones(2, 4, dtype=torch.bfloat16)
    for _ in range(2):  # two micro-batches: their gradients add up on the master, in fp32
        body(x).float().sum().backward()
    assert body.weight.grad is None
    assert torch.equal(master.grad, torch.full((4, 4), 4.0))

    optimizer = torch.optim.SGD([master], lr=1e-4 / 4)  # a step of 1e-4: below bf16's resolution at 1.0
    for _ in range(100):
        optimizer.step()
        masters.publish()
    assert master[0, 0].item() == pytest.approx(1.0 - 1e-2, abs=1e-5)
    assert body.weight[0, 0].item() == pytest.approx(0.9883, abs=1e-4)  # the master, rounded to bf16
    plain = torch.ones(1, dtype=torch.bfloat16)
    for _ in range(100):
        plain -= 1e-4
    assert plain.item() == 1.0  # bf16 weights updated in place never move


@cuda
def test_cuda_batch_loop_waits_for_the_gpu_only_to_read_the_scores(rm_path, gpu):
    import warnings

    rm = RewardModel.from_pretrained(rm_path, device=gpu)
    seqs = rows(600, 11)
    score_sequences(rm, seqs[:50])  # kernels chosen, allocator grown
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            scores = score_sequences(rm, seqs, batch_tokens=2048)  # many batches
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(scores) == 600 and len(syncs) <= 2, [str(w.message) for w in syncs[:5]]


@cuda
def test_cuda_right_padded_bf16_batches_run_the_flash_attention_kernel(rm_path, gpu):
    from torch.profiler import ProfilerActivity, profile

    rm = RewardModel.from_pretrained(rm_path, device=gpu)
    seqs = rows(64, 12)
    score_sequences(rm, seqs)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        score_sequences(rm, seqs)
        torch.cuda.synchronize()
    kernels = [e.key.lower() for e in prof.key_averages()]
    assert any("flash" in k for k in kernels), kernels


@cuda
def test_cuda_training_sizes_its_micro_batches_from_free_memory_and_fits(gpu, tmp_path):
    from transformers import LlamaForCausalLM

    from rmkit.training.budget import micro_batch_tokens

    path = tmp_path / "model"
    tok = make_tokenizer(path)
    config = LlamaConfig(
        hidden_size=1024, intermediate_size=2816, num_attention_heads=16, num_key_value_heads=4,
        num_hidden_layers=4, vocab_size=len(tok), pad_token_id=tok.pad_token_id,
        max_position_embeddings=4096,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(path)
    rng = random.Random(0)
    text = lambda k: " ".join(rng.choice(WORDS) for _ in range(k))  # noqa: E731
    data = write_jsonl(
        tmp_path / "train.jsonl",
        [{"prompt": text(600), "chosen": text(400), "rejected": text(300)} for _ in range(64)],
    )
    free = torch.cuda.mem_get_info(gpu)[0]
    torch.cuda.reset_peak_memory_stats(gpu)
    metrics = train(
        TrainConfig(
            model=str(path), data=str(data), output_dir=str(tmp_path / "o"), batch_size=64, max_steps=2,
            max_length=4096, dtype="bf16", eval_split=0.0,
        )
    )  # fmt: skip
    sized = metrics["train"]["micro_batch_tokens"]
    rm = RewardModel.from_pretrained(path, device=gpu)
    assert sized is not None and sized >= 1024
    assert micro_batch_tokens(rm, TrainConfig(model="m", data="d", output_dir="o"), gpu) >= 1024
    assert torch.cuda.max_memory_allocated(gpu) <= 0.9 * free
