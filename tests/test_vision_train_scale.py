"""``rmkit train`` on image pairs as on text pairs: LoRA merged at save, several processes under a real
torchrun (DDP, FSDP on gloo) equal to one process, bf16, ``--resume`` to the same final weights,
``--loss token_wise`` by its formula, and ``--packing on`` refused in one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import write_jsonl
from safetensors.torch import load_file
from vision_models import make_vlm, picture

from rmkit import TrainConfig, train
from rmkit.errors import RMKitError

COLOURS = [("red", "blue"), ("blue", "green"), ("green", "yellow"), ("yellow", "red")]


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return make_vlm(tmp_path_factory.mktemp("vlm_scale"))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    """8 pairs, each with its own drawn square (two sizes, so the rows differ in length): the answer naming
    its colour is the better."""
    folder = tmp_path_factory.mktemp("pairs")
    rows = []
    for i, (colour, other) in enumerate(COLOURS * 2):
        picture(colour, (56, 56) if i % 2 else (84, 56), seed=i).save(folder / f"{i}.png")
        answer = f"It is {colour}." if i < 4 else f"The square is {colour}, I think."
        rows.append({"question": "What colour is the square?", "image": f"{i}.png",
                     "chosen": answer, "rejected": f"It is {other}."})  # fmt: skip
    return write_jsonl(folder / "pairs.jsonl", rows)


@pytest.fixture(scope="module")
def mixed(pairs) -> Path:
    """The pairs of :func:`pairs`, every other one without its image (a text pair)."""
    rows = [json.loads(x) for x in pairs.read_text().splitlines()]
    return write_jsonl(
        pairs.parent / "mixed.jsonl",
        [{**r, "image": [] if i % 2 else r["image"]} for i, r in enumerate(rows)],
    )


def options(backbone: Path, pairs: Path, out: Path, **more) -> dict:
    base = dict(model=str(backbone), data=str(pairs), output_dir=str(out), batch_size=4, max_steps=2,
                learning_rate=1e-3, warmup_ratio=0.0, logging_steps=1, progress=False)  # fmt: skip
    return {**base, **more}


def weights(out: Path) -> dict[str, torch.Tensor]:
    return {**load_file(str(out / "model.safetensors")), **load_file(str(out / "value_head.safetensors"))}


def losses(out: Path) -> list[float]:
    lines = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    return [x["loss"] for x in lines if "loss" in x]


def scores(model: Path, data: Path) -> tuple[list[float], list[float]]:
    """The chosen and rejected end scores of the pairs of ``data`` by the checkpoint at ``model``."""
    from rmkit import kinds
    from rmkit.vlm import VisionRewardModel

    rm = VisionRewardModel.from_pretrained(model)
    examples = list(kinds.VisionKind().pairs(data, kinds.Reading()))
    rows = [r for ex in rm.example_tokenizer().tokenize(examples) for r in ex]
    out = rm.score_rows(rows)
    return out[0::2], out[1::2]


def test_lora_adapts_the_language_model_and_its_merged_checkpoint_scores_as_in_memory(
    backbone, pairs, tmp_path
):
    out = tmp_path / "lora"
    train(TrainConfig(**options(backbone, pairs, out, lora=True, lora_r=4, learning_rate=1e-2,
                                eval_data=str(pairs))))  # fmt: skip
    before, after = load_file(str(backbone / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert after.keys() == before.keys()  # merged: the plain VLM's keys, no adapter left
    language = [k for k in before if k.startswith("model.layers.")]
    untouched = [k for k in before if k.startswith(("visual.", "lm_head.")) or "norm" in k or "embed" in k]
    assert untouched and all(torch.equal(before[k], after[k]) for k in untouched)
    assert any(not torch.equal(before[k], after[k]) for k in language if k.endswith("proj.weight"))
    # the metrics of the final eval, scored by the in-memory model (adapters unmerged), are the saved model's
    metrics = json.loads((out / "metrics.json").read_text())["eval"]
    chosen, rejected = scores(out, pairs)
    assert sum(chosen) / len(chosen) == pytest.approx(metrics["chosen_mean"], abs=1e-5)
    assert sum(rejected) / len(rejected) == pytest.approx(metrics["rejected_mean"], abs=1e-5)
    assert sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(chosen) == metrics["accuracy"]


def test_lora_trains_the_score_layer_of_a_gemma3_sequence_classifier(pairs, tmp_path):
    """A head without bias inside the model (Gemma3ForSequenceClassification's ``score``) trains whole beside
    the adapters, and is written as the value head with a zero bias."""
    from transformers import AutoConfig, Gemma3ForSequenceClassification

    backbone = make_vlm(tmp_path / "vlm", "gemma3")
    config = AutoConfig.from_pretrained(backbone)
    config.num_labels = 1
    source = tmp_path / "cls"
    Gemma3ForSequenceClassification(config).save_pretrained(source)
    for name in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
        (source / name).write_bytes((backbone / name).read_bytes())
    out = tmp_path / "lora"
    train(TrainConfig(**options(source, pairs, out, lora=True, lora_r=4, learning_rate=1e-2)))
    before, head = (
        load_file(str(source / "model.safetensors")),
        load_file(str(out / "value_head.safetensors")),
    )
    assert not torch.equal(before["score.weight"], head["v_head.summary.weight"])
    assert head["v_head.summary.bias"].tolist() == [0.0]


@pytest.mark.parametrize("dtype", ["fp32", "bf16-weights"])
def test_resume_after_a_stop_gives_the_same_final_weights(backbone, pairs, tmp_path, dtype):
    full, stopped = tmp_path / "full", tmp_path / "stopped"
    train(TrainConfig(**options(backbone, pairs, full, max_steps=4, save_steps=2, dtype=dtype)))
    stopped.mkdir()
    shutil.copytree(full / "checkpoint-2", stopped / "checkpoint-2")  # a run stopped after step 2
    train(
        TrainConfig(
            **options(backbone, pairs, stopped, max_steps=4, save_steps=2, dtype=dtype, resume="auto")
        )
    )
    a, b = weights(full), weights(stopped)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(
        a["v_head.summary.weight"], load_file(str(full / "checkpoint-2" / "model.safetensors"))["head.weight"]
    )
    assert losses(stopped) == losses(full)[2:]


def test_bf16_trains_as_fp32_does(backbone, pairs, tmp_path):
    """Autocast (``bf16``) and bf16 weights over fp32 masters follow fp32's losses to bf16's precision; the
    value head is written in fp32."""
    runs = {}
    for dtype in ("fp32", "bf16", "bf16-weights"):
        train(TrainConfig(**options(backbone, pairs, tmp_path / dtype, max_steps=3, dtype=dtype)))
        runs[dtype] = losses(tmp_path / dtype)
        assert (
            load_file(str(tmp_path / dtype / "value_head.safetensors"))["v_head.summary.weight"].dtype
            == torch.float32
        )
    assert runs["bf16"] == pytest.approx(runs["fp32"], abs=2e-2)
    assert runs["bf16-weights"] == pytest.approx(runs["fp32"], abs=2e-2)


def test_packing_on_is_refused_in_one_line(backbone, pairs, tmp_path):
    with pytest.raises(RMKitError, match="--packing on: a vision-language RM's rows are not packed"):
        train(TrainConfig(**options(backbone, pairs, tmp_path / "out", packing="on")))


def test_token_wise_loss_equals_the_formula_on_each_row_alone(backbone, pairs, tmp_path):
    """``--loss token_wise``: the mean of -log σ(s_c[t] - s_r[t] - m) over the positions from where the two
    rows part to the later end (a row past its end keeping its last score), from one padded forward pass,
    equals the same sum over each row scored alone; and a run trains with it."""
    import torch.nn.functional as F

    from rmkit import kinds
    from rmkit.training.vision import VisionPair, pair_scores
    from rmkit.vlm import VisionRewardModel

    rm = VisionRewardModel.from_pretrained(backbone)
    examples = list(kinds.VisionKind().pairs(pairs, kinds.Reading()))[3:6]  # answers of different lengths
    chunk = [
        VisionPair(*rows, margin=0.5 * i) for i, rows in enumerate(rm.example_tokenizer().tokenize(examples))
    ]
    config = TrainConfig(model=str(backbone), data="x", output_dir="y", loss="token_wise")
    with torch.no_grad():
        loss, _, _ = pair_scores(rm, chunk, config, shared=True)
        by_hand = []
        for p in chunk:
            alone = [rm(**rm.batch([row]), token_scores=True).scores[0] for row in (p.chosen, p.rejected)]
            start = next(
                t for t, (a, b) in enumerate(zip(p.chosen.ids, p.rejected.ids, strict=False)) if a != b
            )
            end = max(len(p.chosen.ids), len(p.rejected.ids))
            diffs = [
                alone[0][min(t, len(alone[0]) - 1)] - alone[1][min(t, len(alone[1]) - 1)]
                for t in range(start, end)
            ]
            by_hand.append(float(torch.stack([-F.logsigmoid(d - p.margin) for d in diffs]).mean()))
    assert len({len(p.chosen.ids) for p in chunk} | {len(p.rejected.ids) for p in chunk}) > 2
    assert loss.tolist() == pytest.approx(by_hand, abs=1e-5)
    train(TrainConfig(**options(backbone, pairs, tmp_path / "tw", loss="token_wise")))
    assert len(losses(tmp_path / "tw")) == 2


def torchrun(backbone: Path, pairs: Path, out: Path, *flags: str) -> None:
    """``rmkit train`` in 2 processes under a real torchrun (gloo on the CPU), with :func:`options`."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "rmkit.cli", "train", "--model", str(backbone), "--data", str(pairs), "--output-dir", str(out),
        "--batch-size", "4", "--max-steps", "2", "--learning-rate", "1e-3", "--warmup-ratio", "0",
        "--logging-steps", "1", "--no-progress", *flags,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as run:
        try:
            _, err = run.communicate(timeout=300)
        except subprocess.TimeoutExpired:  # a hang: processes waiting on each other's collectives
            run.terminate()  # torchrun stops its workers on SIGTERM
            run.communicate(timeout=60)
            raise
    assert run.returncode == 0, err[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("fsdp", ["off", "full_shard"])
def test_two_processes_equal_one_on_the_same_global_batch(backbone, mixed, tmp_path, fsdp):
    """DDP and FSDP on pairs with and without images: the same losses and final weights as one process. Under a
    budget of 168 tokens a process runs micro-batches of text pairs only while the other encodes images (step 1),
    and the second step's shares run 2 and 1 micro-batches (FSDP's stand-in pair); DDP finds the vision
    encoder's unused parameters, FSDP's passes all reach the encoder (its gradients are reduced together)."""
    one, two = tmp_path / "one", tmp_path / "two"
    train(TrainConfig(**options(backbone, mixed, one, micro_batch_tokens=168, eval_data=str(mixed))))
    torchrun(backbone, mixed, two, "--micro-batch-tokens", "168", "--eval-data", str(mixed), "--fsdp", fsdp)
    assert losses(two) == pytest.approx(losses(one), rel=1e-5)
    a, b = weights(one), weights(two)
    assert a.keys() == b.keys()
    # Adam's first steps move a weight by about the learning rate (1e-3) whatever its gradient's size, so a
    # gradient near Adam's eps whose last bits differ (sums in another order) moves it by a visible fraction
    # The head's bias is left out: both answers add it, so its gradient is 0 up to rounding, which Adam turns
    # into steps of the learning rate either way.
    for name in a.keys() - {"v_head.summary.bias"}:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-4, msg=name)
    m1, m2 = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    assert m2["train"]["processes"] == 2 and m2["train"]["tokens"] == m1["train"]["tokens"]
    assert m2["eval"]["pairs"] == m1["eval"]["pairs"] == 8  # each held-out pair scored once, by one process
    assert m2["eval"]["loss"] == pytest.approx(m1["eval"]["loss"], rel=1e-5)
