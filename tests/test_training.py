"""``rmkit train`` on tiny real Llama models, real files and a real torchrun; MiniLM on the shared data."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rmkit import RewardModel, TrainConfig, train
from rmkit.cli import main
from rmkit.data import RowCounts, token_budget_batches
from rmkit.errors import RMKitError
from rmkit.training.data import length_grouped_batches, load_pairs

GOOD = [
    "Two plus two is four.",
    "The capital of France is Paris.",
    "Five kilometres is five thousand metres.",
    "Paris is a city in Europe.",
]
BAD = [
    "I cannot help with that request.",
    "It could hurt someone.",
    "I cannot help.",
    "The weather is sunny and warm.",
]
PROMPTS = ["What is two plus two?", "What is the capital of France?", "Convert five kilometres to metres."]


def write_pairs(path: Path, n: int, seed: int, *, extra: bool = False) -> Path:
    """Synthetic preference: a GOOD sentence (possibly repeated) is always preferred to a BAD one."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            row = {
                "prompt": rng.choice(PROMPTS),
                "chosen": " ".join(rng.choice(GOOD) for _ in range(rng.randint(1, 3))),
                "rejected": " ".join(rng.choice(BAD) for _ in range(rng.randint(1, 3))),
            }
            if extra:
                row["margin"] = 0.5
                row["subset"] = "even" if i % 2 == 0 else "odd"
            f.write(json.dumps(row) + "\n")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("pairs")
    return write_pairs(d / "train.jsonl", 64, 0), write_pairs(d / "eval.jsonl", 32, 1)


def config(model: Path, data: tuple[Path, Path], out: Path, **kw) -> TrainConfig:
    base = dict(
        model=str(model),
        data=str(data[0]),
        eval_data=str(data[1]),
        output_dir=str(out),
        batch_size=8,
        learning_rate=3e-3,
        warmup_ratio=0.0,
        logging_steps=2,
    )
    return TrainConfig(**{**base, **kw})


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


@pytest.fixture(scope="module")
def trained(llama_path, data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    train(config(llama_path, data, out, epochs=4, eval_steps=8))
    return out


def test_tiny_model_learns_a_synthetic_preference(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["eval"]["pairs"] == 32
    assert metrics["eval"]["accuracy"] >= 0.9
    assert metrics["eval"]["margin"] > 0
    assert metrics["train"]["steps"] == 32  # 4 epochs of 64 pairs in batches of 8
    lines = [json.loads(line) for line in (trained / "train_log.jsonl").read_text().splitlines()]
    train_lines = [x for x in lines if "loss" in x]
    eval_lines = [x for x in lines if "eval_loss" in x]
    assert [x["step"] for x in train_lines] == list(range(2, 33, 2))
    assert [x["step"] for x in eval_lines] == [8, 16, 24, 32]
    assert train_lines[-1]["loss"] < train_lines[0]["loss"]
    assert {"accuracy", "ties", "margin", "chosen_mean", "rejected_std", "lr", "tokens_per_s"} <= set(
        train_lines[0]
    )


def test_final_checkpoint_scores_reproduce_the_eval_metrics(trained, data):
    rm = RewardModel.from_pretrained(trained)
    meta = json.loads((trained / "config.json").read_text())["rmkit"]
    metrics = json.loads((trained / "metrics.json").read_text())["eval"]
    assert meta["template"] == "plain" and meta["max_length"] == 512
    assert meta["score_mean"] == pytest.approx(metrics["reward_mean"])
    assert meta["score_std"] == pytest.approx(metrics["reward_std"])
    rows = [json.loads(line) for line in data[1].read_text().splitlines()]
    chosen = rm.score([r["prompt"] for r in rows], [r["chosen"] for r in rows])
    rejected = rm.score([r["prompt"] for r in rows], [r["rejected"] for r in rows])
    accuracy = sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(rows)
    assert accuracy == pytest.approx(metrics["accuracy"])
    assert sum(chosen) / len(chosen) == pytest.approx(metrics["chosen_mean"], abs=1e-4)


def test_resume_after_a_stop_gives_the_same_final_weights(llama_path, data, tmp_path):
    full = tmp_path / "full"
    train(config(llama_path, data, full, max_steps=10, save_steps=4, logging_steps=5, epochs=2))
    assert sorted(p.name for p in full.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-8"]
    # A run killed after writing checkpoint-4 (before checkpoint-8): only that checkpoint survives.
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    shutil.copytree(full / "checkpoint-4", stopped / "checkpoint-4")
    train(
        config(
            llama_path, data, stopped, max_steps=10, save_steps=4, logging_steps=5, epochs=2, resume="auto"
        )
    )
    a, b = weights(full), weights(stopped)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    lines = (stopped / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [5, 10, 10]  # two logging steps and the final eval
    with pytest.raises(RMKitError, match="batch_size"):
        train(
            config(llama_path, data, stopped, max_steps=10, batch_size=4, resume=str(full / "checkpoint-8"))
        )
    # A checkpoint whose optimizer state is keyed by index (rmkit before sharding) is refused by name.
    old = tmp_path / "old" / "checkpoint-8"
    shutil.copytree(full / "checkpoint-8", old)
    state = torch.load(old / "optimizer.pt", weights_only=True)
    index = {name: i for i, name in enumerate(state["state"])}
    state["state"] = {index[n]: v for n, v in state["state"].items()}
    torch.save(state, old / "optimizer.pt")
    with pytest.raises(RMKitError, match="optimizer.pt keys the optimizer state by parameter index"):
        train(config(llama_path, data, old.parent, max_steps=10, save_steps=4, epochs=2, resume=str(old)))
    # Resuming is not a no-op: the checkpoint's weights differ from the final ones.
    mid = weights(full / "checkpoint-4")
    assert not torch.equal(mid["model.score.weight"], a["score.weight"])


def test_lora_run_saves_a_merged_checkpoint_plain_transformers_loads(llama_path, data, tmp_path):
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "lora"
    train(config(llama_path, data, out, lora=True, epochs=2, learning_rate=1e-2, lora_r=4))
    model, info = AutoModelForSequenceClassification.from_pretrained(str(out), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    saved = weights(out)
    assert not any("lora" in k or "modules_to_save" in k or "base_layer" in k for k in saved)
    torch.manual_seed(42)  # the seed training used: the same fresh head as before training
    initial = RewardModel.from_pretrained(llama_path).model
    assert not torch.allclose(model.score.weight, initial.score.weight)  # the head was trained and kept
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(model.state_dict()[q], initial.state_dict()[q])  # the adapters were merged
    # Plain transformers reproduces the run's eval accuracy and mean chosen reward.
    rm = RewardModel.from_pretrained(out)
    tokenizer = rm.example_tokenizer()
    rows = [json.loads(line) for line in data[1].read_text().splitlines()]
    from rmkit.data.formats import Example

    examples = [
        Example(i, [{"role": "user", "content": r["prompt"]}], [r["chosen"], r["rejected"]], is_pair=True)
        for i, r in enumerate(rows)
    ]
    model.eval()
    with torch.no_grad():
        scores = [
            [model(torch.tensor([e.ids])).logits.item() for e in encs]
            for encs in tokenizer.tokenize(examples)
        ]
    metrics = json.loads((out / "metrics.json").read_text())["eval"]
    assert sum(c > r for c, r in scores) / len(scores) == pytest.approx(metrics["accuracy"])
    assert sum(c for c, _ in scores) / len(scores) == pytest.approx(metrics["chosen_mean"], abs=1e-4)


def torchrun_train(model: Path, data: tuple[Path, Path], out: Path, *flags: str) -> str:
    """``rmkit train`` in 2 processes under a real torchrun, with the base options of :func:`config`;
    returns what the run wrote on stderr."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "rmkit.cli", "train", "--model", str(model), "--data", str(data[0]),
        "--eval-data", str(data[1]), "--output-dir", str(out),
        "--batch-size", "8", "--learning-rate", "3e-3", "--warmup-ratio", "0", *flags,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as run:
        try:
            _, err = run.communicate(timeout=300)
        except subprocess.TimeoutExpired:  # a hang: processes waiting on each other's collectives
            run.terminate()  # torchrun stops its workers on SIGTERM (a kill would orphan them)
            run.communicate(timeout=60)
            raise
    assert run.returncode == 0, err[-3000:]
    return err


def assert_same_weights(a: Path, b: Path) -> None:
    """The two runs' final models are equal to float tolerance (the order of sums differs)."""
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.slow
def test_two_process_torchrun_equals_one_process(llama_path, data, tmp_path):
    args = dict(max_steps=4, batch_size=8, micro_batch_size=2, logging_steps=1)
    train(config(llama_path, data, tmp_path / "one", **args))
    two = tmp_path / "two"
    torchrun_train(
        llama_path, data, two, "--micro-batch-size", "2", "--max-steps", "4", "--logging-steps", "1"
    )
    assert_same_weights(tmp_path / "one", two)
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((two / "metrics.json").read_text())
    assert m2["train"]["processes"] == 2 and m2["train"]["tokens"] == m1["train"]["tokens"]
    assert m2["eval"]["pairs"] == 32
    assert m2["eval"]["accuracy"] == pytest.approx(m1["eval"]["accuracy"])
    log1 = [
        json.loads(x)["loss"] for x in (tmp_path / "one" / "train_log.jsonl").read_text().splitlines()[:4]
    ]
    log2 = [json.loads(x)["loss"] for x in (two / "train_log.jsonl").read_text().splitlines()[:4]]
    assert log2 == pytest.approx(log1, rel=1e-4)


def two_node_train(model: Path, data: tuple[Path, Path], out: Path, *flags: str) -> list[str]:
    """``rmkit train`` on two "nodes" of one process each: two torchrun launchers on this machine that meet
    by static rendezvous on 127.0.0.1 (``--nnodes 2 --node-rank 0|1``), as ``srun torchrun`` starts them on
    a cluster; each node tokenises into its own cache (a node's local disk). Returns each node's stderr."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    runs = []
    for node in (0, 1):
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
            "--node-rank", str(node), "--master-addr", "127.0.0.1", "--master-port", str(port),
            "-m", "rmkit.cli", "train", "--model", str(model), "--data", str(data[0]),
            "--eval-data", str(data[1]), "--output-dir", str(out), "--cache-dir", str(out.parent / f"cache{node}"),
            "--batch-size", "8", "--learning-rate", "3e-3", "--warmup-ratio", "0", *flags,
        ]  # fmt: skip
        runs.append(
            subprocess.Popen(
                cmd,
                env={**env, "OMP_NUM_THREADS": "1"},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    errs = []
    try:
        for run in runs:
            errs.append(run.communicate(timeout=300)[1])
    finally:
        for run in runs:
            if run.poll() is None:
                run.terminate()  # torchrun stops its workers on SIGTERM
                run.communicate(timeout=60)
    for run, err in zip(runs, errs, strict=True):
        assert run.returncode == 0, err[-3000:]
    return errs


@pytest.mark.slow
def test_two_node_torchrun_equals_one_process(llama_path, data, tmp_path):
    args = dict(max_steps=4, batch_size=8, micro_batch_size=2, logging_steps=1, save_steps=2)
    train(config(llama_path, data, tmp_path / "one", **args))
    flags = ["--micro-batch-size", "2", "--max-steps", "4", "--logging-steps", "1", "--save-steps", "2"]
    errs = two_node_train(llama_path, data, tmp_path / "two", *flags)

    assert_same_weights(tmp_path / "one", tmp_path / "two")
    assert all(err.count("tokenising") == 2 for err in errs)  # train and eval data, once a node
    assert [len(list((tmp_path / f"cache{n}").glob("pairs-*"))) for n in (0, 1)] == [2, 2]
    # the output is written once, by the first process of the first node: the files of one process's run,
    # and the second process's random state in the checkpoint
    one = {
        p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if "token-cache" not in p.parts
    }
    two = {p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*")}
    assert two == one | {Path("checkpoint-2/rng-1.pt")}
    assert (tmp_path / "two" / "checkpoint-2").is_dir()
    lines = (tmp_path / "two" / "train_log.jsonl").read_text().splitlines()
    assert len(lines) == len((tmp_path / "one" / "train_log.jsonl").read_text().splitlines())
    assert json.loads((tmp_path / "two" / "metrics.json").read_text())["train"]["processes"] == 2


# A token budget under which the two processes run different numbers of forward passes: 2 and 1 micro-batches
# at step 3, 7 and 8 eval batches (checked in the test), so FSDP's equal pass counts are exercised.
FSDP_ARGS = dict(max_steps=4, micro_batch_tokens=250, eval_batch_tokens=250, logging_steps=1)
FSDP_FLAGS = [f"--{k.replace('_', '-')}={v}" for k, v in FSDP_ARGS.items()]


@pytest.fixture(scope="module")
def fsdp_run(llama_path, data, tmp_path_factory) -> Path:
    """A 2-process ``--fsdp full_shard`` run of 4 steps with a checkpoint at step 2."""
    out = tmp_path_factory.mktemp("fsdp")
    torchrun_train(llama_path, data, out, "--fsdp", "full_shard", "--save-steps", "2", *FSDP_FLAGS)
    return out


@pytest.mark.slow
def test_two_process_fsdp_equals_one_process_with_uneven_pass_counts(llama_path, data, fsdp_run, tmp_path):
    from transformers import AutoModelForSequenceClassification

    cfg = config(llama_path, data, tmp_path / "one", **FSDP_ARGS)
    tokenizer = RewardModel.from_pretrained(llama_path).example_tokenizer(max_length=512)
    pairs = load_pairs(cfg.data, tokenizer, cfg, RowCounts())
    eval_pairs = load_pairs(cfg.eval_data, tokenizer, cfg, RowCounts())

    def passes(share: list) -> int:
        return len(token_budget_batches([2 * p.length for p in share], 250))

    steps = length_grouped_batches([p.length for p in pairs], 8, seed=cfg.seed)[:4]
    assert any(passes([pairs[i] for i in b[0::2]]) != passes([pairs[i] for i in b[1::2]]) for b in steps)
    assert passes(eval_pairs[0::2]) != passes(eval_pairs[1::2])

    train(cfg)
    assert_same_weights(tmp_path / "one", fsdp_run)
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((fsdp_run / "metrics.json").read_text())
    assert m2["train"]["processes"] == 2 and m2["train"]["tokens"] == m1["train"]["tokens"]
    assert m2["eval"]["pairs"] == 32 and m2["eval"]["accuracy"] == pytest.approx(m1["eval"]["accuracy"])
    assert m2["eval"]["loss"] == pytest.approx(m1["eval"]["loss"], rel=1e-4)
    grad_norms = [
        json.loads(x).get("grad_norm") for x in (fsdp_run / "train_log.jsonl").read_text().splitlines()
    ]
    assert all(isinstance(g, float) and g > 0 for g in grad_norms[:4])
    model, info = AutoModelForSequenceClassification.from_pretrained(str(fsdp_run), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    meta = json.loads((fsdp_run / "config.json").read_text())["rmkit"]
    assert meta["score_mean"] == pytest.approx(m2["eval"]["reward_mean"])


@pytest.mark.slow
def test_fsdp_checkpoint_resumes_in_either_sharding_and_in_one_process(llama_path, data, fsdp_run, tmp_path):
    # The sharded run's checkpoint holds whole tensors: the same names and shapes as the final model's.
    mid, final = weights(fsdp_run / "checkpoint-2"), weights(fsdp_run)
    assert {n.removeprefix("model."): t.shape for n, t in mid.items()} == {
        n: t.shape for n, t in final.items()
    }
    # A full_shard run stopped after step 2, resumed with ZeRO-2-like sharding, ends bit-exact the same.
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(fsdp_run / "checkpoint-2", resumed / "checkpoint-2")
    torchrun_train(llama_path, data, resumed, "--fsdp", "shard_grad_op", "--resume", *FSDP_FLAGS)
    after = weights(resumed)
    for name, tensor in final.items():
        assert torch.equal(tensor, after[name]), name
    # One process resumes it too.
    one = tmp_path / "one"
    train(config(llama_path, data, one, **FSDP_ARGS, resume=str(fsdp_run / "checkpoint-2")))
    assert_same_weights(fsdp_run, one)


def losses_of(out: Path) -> list[float]:
    return [
        r["loss"] for r in map(json.loads, (out / "train_log.jsonl").read_text().splitlines()) if "loss" in r
    ]


@pytest.mark.slow
@pytest.mark.parametrize("sharding", ["fsdp", "ddp"])
def test_two_processes_with_bf16_weights_train_as_one_process_does(llama_path, data, tmp_path, sharding):
    # FSDP: the fp32 shards are the masters, gathered in bf16; DDP: each process's MasterWeights, the
    # gradients reduced in bf16. One process: MasterWeights accumulating in fp32. The same run to bf16
    # precision, each saving fp32 weights.
    flags = ["--fsdp", "full_shard"] if sharding == "fsdp" else []
    torchrun_train(llama_path, data, tmp_path / "two", *flags, "--dtype", "bf16-weights", *FSDP_FLAGS)
    train(config(llama_path, data, tmp_path / "one", dtype="bf16-weights", **FSDP_ARGS))
    one, two = losses_of(tmp_path / "one"), losses_of(tmp_path / "two")
    assert len(two) == 4 and two == pytest.approx(one, abs=0.02)
    assert {t.dtype for t in weights(tmp_path / "two").values()} == {torch.float32}
    m1, m2 = (json.loads((tmp_path / r / "metrics.json").read_text())["eval"] for r in ("one", "two"))
    assert m2["loss"] == pytest.approx(m1["loss"], abs=0.02)


def test_bf16_weights_train_an_encoder_whose_classifier_reads_in_fp32(minilm_path, data, tmp_path):
    metrics = train(config(minilm_path, data, tmp_path / "o", dtype="bf16-weights", max_steps=2))
    assert math.isfinite(metrics["eval"]["loss"]) and metrics["train"]["steps"] == 2
    assert {t.dtype for t in weights(tmp_path / "o").values()} == {torch.float32}


def test_bf16_weights_train_as_fp32_does_and_resume_exactly(llama_path, data, tmp_path):
    train(config(llama_path, data, tmp_path / "fp32", **FSDP_ARGS))
    train(config(llama_path, data, tmp_path / "bf16", dtype="bf16-weights", save_steps=2, **FSDP_ARGS))
    assert losses_of(tmp_path / "bf16") == pytest.approx(losses_of(tmp_path / "fp32"), abs=0.02)
    final = weights(tmp_path / "bf16")
    assert {t.dtype for t in final.values()} == {torch.float32}  # the masters, not their bf16 rounding
    assert any(not torch.equal(t, t.bfloat16().float()) for t in final.values())
    mid = weights(tmp_path / "bf16" / "checkpoint-2")
    assert {t.dtype for t in mid.values()} == {torch.float32}
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(tmp_path / "bf16" / "checkpoint-2", resumed / "checkpoint-2")
    train(config(llama_path, data, resumed, dtype="bf16-weights", resume="auto", **FSDP_ARGS))
    after = weights(resumed)
    for name, tensor in final.items():
        assert torch.equal(tensor, after[name]), name


def test_fsdp_with_lora_is_refused(llama_path, data, tmp_path):
    with pytest.raises(RMKitError, match="--lora with --fsdp full_shard"):
        train(config(llama_path, data, tmp_path, lora=True, fsdp="full_shard"))


def test_token_wise_loss_with_margin_and_subset_accuracy(llama_path, tmp_path):
    pairs = write_pairs(tmp_path / "pairs.jsonl", 48, 2, extra=True)
    out = tmp_path / "tw"
    metrics = train(
        TrainConfig(
            model=str(llama_path), data=str(pairs), output_dir=str(out), eval_split=0.25, loss="token_wise",
            batch_size=8, epochs=2, learning_rate=3e-3, score_reg=0.001,
        )
    )  # fmt: skip
    assert metrics["eval"]["pairs"] == 12
    assert set(metrics["eval"]["subset_accuracy"]) == {"even", "odd"}
    assert metrics["eval"]["accuracy"] > 0.5
    assert metrics["train"]["steps"] == 10  # 2 epochs of 36 pairs: batches of 8, 8, 8, 8, 4


def test_cli_yaml_flags_override_and_unknown_key(llama_path, data, tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"model: {llama_path}\ndata: {data[0]}\nmax_steps: 1\nbatch_size: 4\nbogus: 1\n")
    assert main(["train", "--config", str(cfg), "--output-dir", str(tmp_path / "x")]) == 2
    assert "bogus" in capsys.readouterr().err
    cfg.write_text(f"model: {llama_path}\ndata: {data[0]}\nmax_steps: 5\nbatch_size: 4\nlogging_steps: 1\n")
    out = tmp_path / "y"
    assert (
        main(["train", "--config", str(cfg), "--output-dir", str(out), "--max-steps", "2", "--resume"]) == 0
    )
    assert json.loads((out / "metrics.json").read_text())["train"]["steps"] == 2


def test_bad_input_is_one_line_error(llama_path, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "chosen": "b"}\n')
    code = main(
        ["train", "--model", str(llama_path), "--data", str(bad), "--output-dir", str(tmp_path / "o")]
    )
    assert code == 2
    assert "bad.jsonl, row 2" in capsys.readouterr().err
    with pytest.raises(RMKitError, match="unknown tracker 'mlflow'"):
        train(
            TrainConfig(model=str(llama_path), data=str(bad), output_dir=str(tmp_path), report_to=["mlflow"])
        )
    with pytest.raises(RMKitError, match="eval-split"):
        train(TrainConfig(model=str(llama_path), data=str(bad), output_dir=str(tmp_path), eval_split=1.5))


def test_length_grouped_batches_cover_every_pair_once_and_pad_less():
    rng = random.Random(0)
    lengths = [rng.randint(5, 500) for _ in range(1000)]
    grouped = length_grouped_batches(lengths, 16, seed=3)
    assert sorted(i for b in grouped for i in b) == list(range(1000))
    assert grouped == length_grouped_batches(lengths, 16, seed=3)
    assert grouped != length_grouped_batches(lengths, 16, seed=4)
    plain = length_grouped_batches(lengths, 16, seed=3, group=False)

    def padded(batches):
        return sum(len(b) * max(lengths[i] for i in b) for b in batches)

    assert padded(grouped) < 0.7 * padded(plain)


@pytest.mark.slow
def test_minilm_on_shared_sharegpt_data_end_to_end(minilm_path, shared_data, tmp_path):
    out = tmp_path / "minilm"
    code = main(
        [
            "train", "--model", str(minilm_path), "--data", str(shared_data / "sharegpt_pref_en.json"),
            "--eval-split", "0.02", "--output-dir", str(out), "--max-steps", "2", "--batch-size", "4",
            "--max-length", "128", "--save-steps", "1", "--eval-batch-tokens", "4096",
        ]
    )  # fmt: skip
    assert code == 0
    assert (out / "checkpoint-1" / "model.safetensors").is_file()
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval"]["pairs"] == 6 and metrics["train"]["pairs"] == 294
    assert metrics["train"]["truncated"] > 0
    assert len((out / "train_log.jsonl").read_text().splitlines()) == 2  # step 2 and the final eval
    rm = RewardModel.from_pretrained(out)
    assert rm.metadata["max_length"] == 128


@pytest.mark.parametrize("example", sorted(Path(__file__).parents[1].glob("examples/train_*.yaml")), ids=str)
def test_each_example_config_trains_in_a_fresh_clone(example, llama_path, tmp_path, monkeypatch):
    """``rmkit train --config examples/train_*.yaml`` from the repository root, on the data shipped with the
    examples, cut to two steps; a hub model (no hub here) is replaced by a local decoder."""
    from rmkit.options import build

    monkeypatch.chdir(Path(__file__).parents[1])
    model = build(TrainConfig, {}, example).model
    argv = ["train", "--config", str(example), "--output-dir", str(tmp_path / "out"), "--max-steps", "2"]
    argv += [] if model == "minilm" else ["--model", str(llama_path)]
    assert main(argv) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 2 and metrics["eval"]["pairs"] == 24  # eval_split 0.1 of 240


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_schedules_warm_up_from_the_first_step_and_decay_to_zero(schedule):
    from rmkit.training.step import make_scheduler

    total, peak = 40, 1e-3
    cfg = TrainConfig(
        model="m", data="d", output_dir="o", lr_scheduler=schedule, warmup_ratio=0.1, learning_rate=peak
    )
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=peak)
    scheduler = make_scheduler(optimizer, cfg, total)
    lrs = []
    for _ in range(total):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    warmup = 4  # ceil(0.1 * 40)
    # warm-up: (s + 1) / (warmup + 1) of the peak, so the very first step trains
    assert lrs[:warmup] == pytest.approx([peak * (s + 1) / (warmup + 1) for s in range(warmup)])
    decay = [(s - warmup) / (total - warmup) for s in range(warmup, total)]
    expected = {
        "cosine": [0.5 * (1 + math.cos(math.pi * p)) for p in decay],
        "linear": [1 - p for p in decay],
        "constant": [1.0 for _ in decay],
    }[schedule]
    assert lrs[warmup:] == pytest.approx([peak * f for f in expected])
    if schedule != "constant":
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # after the last step


def test_held_out_eval_with_prefix_sharing_equals_it_without(llama_path, tmp_path):
    rng = random.Random(3)
    long_prompts = [" ".join(rng.choice(GOOD + BAD) for _ in range(12)) for _ in range(4)]
    rows = [
        {
            "prompt": rng.choice(long_prompts),
            "chosen": rng.choice(GOOD),
            "rejected": rng.choice(BAD),
            "margin": 0.1,
        }
        for _ in range(24)
    ]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    evals = {}
    for sharing in ("auto", "off"):
        out = tmp_path / f"run_{sharing}"
        train(config(llama_path, (pairs, pairs), out, max_steps=2, score_reg=0.01, prefix_sharing=sharing))
        evals[sharing] = json.loads((out / "metrics.json").read_text())["eval"]
    for key in ("loss", "accuracy", "margin", "chosen_mean", "rejected_mean", "reward_std"):
        assert evals["auto"][key] == pytest.approx(evals["off"][key], abs=1e-5), key


KILLED_TRAINING = """
import os, signal, sys, json
import rmkit.training.checkpoint as ckpt
import rmkit.training.loop as loop
from rmkit import TrainConfig, train

where, config = sys.argv[1], TrainConfig(**json.loads(sys.argv[2]))
real_step, real_save, calls = loop.train_step, ckpt.save_file, []

def step(*args, **kwargs):  # killed inside the 7th step, after checkpoint-4
    calls.append(1)
    if where == "step" and len(calls) == 7:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_step(*args, **kwargs)

def save(tensors, path):  # killed half-way through writing checkpoint-8's weights
    if where == "save" and len(calls) == 8:
        open(path, "wb").write(b"half a safetensors file")
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(tensors, path)

loop.train_step, ckpt.save_file = step, save
train(config)
"""


@pytest.mark.slow
@pytest.mark.parametrize("where", ["step", "save"])
def test_a_kill_during_a_step_or_a_checkpoint_save_then_resume_gives_the_same_weights(
    llama_path, data, tmp_path, where
):
    full = tmp_path / "full"
    train(config(llama_path, data, full, max_steps=10, save_steps=4, epochs=2))
    killed = tmp_path / "killed"
    options = dict(
        model=str(llama_path), data=str(data[0]), eval_data=str(data[1]), output_dir=str(killed), batch_size=8,
        learning_rate=3e-3, warmup_ratio=0.0, logging_steps=2, max_steps=10, save_steps=4, epochs=2,
    )  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_TRAINING, where, json.dumps(options)], capture_output=True
    )
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert sorted(p.name for p in killed.glob("checkpoint-*")) == ["checkpoint-4"]
    assert not (killed / "model.safetensors").exists()
    train(config(llama_path, data, killed, max_steps=10, save_steps=4, epochs=2, resume="auto"))
    a, b = weights(full), weights(killed)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name


# --- training without held-out data -----------------------------------------------------------------------


def test_without_held_out_data_nothing_is_scored_after_training_whatever_the_data_size(
    llama_path, tmp_path, monkeypatch
):
    """``rmkit train --model M --data pairs.jsonl --output-dir out`` (no --eval-data, no --eval-split): no
    pass after the last step, on 40 pairs as on 400; the figures are the last steps' training ones."""
    scored_after = []  # rows the model scored without gradients (evaluation passes), per run
    forward = RewardModel.forward

    def counted(self, input_ids, *args, **kwargs):
        if not torch.is_grad_enabled():
            scored_after[-1] += len(input_ids)
        return forward(self, input_ids, *args, **kwargs)

    monkeypatch.setattr(RewardModel, "forward", counted)
    runs = {}
    for n, held_out in ((40, 0.0), (400, 0.0), (40, 0.25)):
        scored_after.append(0)
        out = tmp_path / f"{n}_{held_out}"
        pairs = write_pairs(tmp_path / f"pairs{n}.jsonl", n, 0)
        argv = ["train", "--model", str(llama_path), "--data", str(pairs), "--output-dir", str(out)]
        argv += ["--max-steps", "3", "--batch-size", "8", "--eval-split", str(held_out), "--no-progress"]
        assert main(argv) == 0
        runs[(n, held_out)] = json.loads((out / "metrics.json").read_text()), out
    assert scored_after == [
        0,
        0,
        10 * 2,
    ]  # only the run with held-out pairs scores them: 10 pairs, 2 rows each
    metrics, out = runs[(400, 0.0)]
    assert metrics["eval"] is None and metrics["eval_data"] is None and "no held-out" in metrics["eval_note"]
    last = metrics["train"]["last_steps"]
    assert last["steps"] == 3 and last["pairs"] == 24 and 0.0 <= last["accuracy"] <= 1.0
    stored = json.loads((out / "config.json").read_text())["rmkit"]
    assert stored["score_mean"] == pytest.approx(last["reward_mean"])
    assert stored["score_std"] == pytest.approx(last["reward_std"])
    assert runs[(40, 0.25)][0]["eval"]["pairs"] == 10


def test_eval_steps_without_held_out_data_is_refused(llama_path, data, tmp_path):
    with pytest.raises(RMKitError, match="--eval-steps 5 evaluates on held-out data"):
        train(TrainConfig(model=str(llama_path), data=str(data[0]), output_dir=str(tmp_path), eval_steps=5))
