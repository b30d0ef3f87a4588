"""``rmkit train`` on image pairs: a step whose pairs encode their image once equals the unshared step (loss
and every gradient), and a run with ``--freeze vision,projector`` trains the rest, leaves those parts as
they were, reports them by module and writes a value-head checkpoint that ``rmkit score`` reads."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import write_jsonl
from safetensors.torch import load_file
from vision_models import make_vlm, picture

from rmkit.data.images import Picture
from rmkit.data.vision import VisionExample
from rmkit.training.config import TrainConfig
from rmkit.training.vision import VisionPair, pair_scores


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return make_vlm(tmp_path_factory.mktemp("vlm_train"))


def test_a_step_sharing_each_pairs_image_equals_the_unshared_step(backbone):
    from rmkit.vlm import VisionRewardModel

    torch.manual_seed(0)
    rm = VisionRewardModel.from_pretrained(backbone).train()
    question = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour?"}]}]
    examples = [
        VisionExample(1, question, ["red", "It is blue today"], True, images=[Picture(picture("red"), "")]),
        VisionExample(2, question, ["the colour is blue", "red"], True,
                      images=[Picture(picture("blue", (84, 56)), "")]),
    ]  # fmt: skip
    pairs = [VisionPair(*rows) for rows in rm.example_tokenizer().tokenize(examples)]
    config = TrainConfig(model=str(backbone), data="x", output_dir="y", score_reg=0.01)
    results = []
    for shared in (True, False):
        rm.zero_grad()
        loss, chosen, rejected = pair_scores(rm, pairs, config, shared=shared)
        loss.sum().backward()
        grads = {n: p.grad.clone() for n, p in rm.named_parameters() if p.grad is not None}
        results.append((loss.detach(), chosen.detach(), grads))
    (loss_s, chosen_s, grads_s), (loss_u, chosen_u, grads_u) = results
    assert torch.allclose(loss_s, loss_u, atol=1e-6) and torch.allclose(chosen_s, chosen_u, atol=1e-6)
    assert grads_s.keys() == grads_u.keys() and any(n.startswith("model.model.visual.") for n in grads_s)
    for name, grad in grads_s.items():
        assert torch.allclose(grad, grads_u[name], atol=1e-5), name


def test_train_with_frozen_vision_then_score(backbone, tmp_path):
    from rmkit.cli import main

    rows = []
    for i, (colour, other) in enumerate(
        [("red", "blue"), ("blue", "green"), ("green", "yellow"), ("yellow", "red")] * 3
    ):
        picture(colour, seed=i).save(tmp_path / f"{i}.png")
        rows.append({"question": "What colour is the square?", "image": f"{i}.png",
                     "chosen": f"It is {colour}.", "rejected": f"It is {other}."})  # fmt: skip
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "rm"
    args = ["train", "--model", str(backbone), "--data", str(data), "--output-dir", str(out), "--max-steps", "2",
            "--batch-size", "4", "--eval-split", "0.25", "--freeze", "vision,projector", "--learning-rate", "1e-3"]  # fmt: skip
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    before, after = load_file(str(backbone / "model.safetensors")), load_file(str(out / "model.safetensors"))
    # the checkpoint keeps the hub's key names (visual.*, model.layers.*), as Qwen2-VL's own checkpoints do
    vision = {k for k in before if k.startswith("visual.")}
    projector = {k for k in vision if k.startswith("visual.merger.")}
    assert metrics["train"]["frozen"] == {
        "vision": sum(before[k].numel() for k in vision - projector),
        "projector": sum(before[k].numel() for k in projector),
    }
    assert all(torch.equal(before[k], after[k]) for k in vision)
    language = [k for k in before if k.startswith("model.layers.")]
    assert any(not torch.equal(before[k], after[k]) for k in language)
    assert set(load_file(str(out / "value_head.safetensors"))) == {
        "v_head.summary.weight",
        "v_head.summary.bias",
    }
    assert metrics["eval"]["accuracy"] is not None and metrics["eval_data"] == "--eval-split 0.25"
    assert (
        main(["score", "--model", str(out), "--input", str(data), "--output", str(tmp_path / "s.jsonl")]) == 0
    )
    assert len((tmp_path / "s.jsonl").read_text().splitlines()) == len(rows)


def test_text_pairs_train_a_vlm_and_inspect_names_what_it_wrote(backbone, tmp_path):
    """A VLM trains on text pairs too (the vision task reads them without images); rmkit inspect --model
    names the kind, the modality and the value-head file, and a backbone as one that cannot score yet."""
    from rmkit.cli import main
    from rmkit.inspect_data import inspect_model

    data = write_jsonl(
        tmp_path / "text.jsonl", [{"prompt": "hello", "chosen": "Paris", "rejected": "two"}] * 2
    )
    out = tmp_path / "rm"
    args = [
        "train",
        "--model",
        str(backbone),
        "--data",
        str(data),
        "--output-dir",
        str(out),
        "--max-steps",
        "1",
    ]
    assert main([*args, "--batch-size", "2"]) == 0
    summary = inspect_model(str(out))
    assert (summary["kind"], summary["modality"], summary["head"], summary["scores"]) == (
        "vision", "image+text", "value_head.safetensors", True,
    )  # fmt: skip
    assert inspect_model(str(backbone))["scores"] is False


def test_demo_vision_writes_its_data_model_and_evaluation(tmp_path):
    """A two-step rmkit demo-vision: drawn pairs, a VLM built from a config, trained and evaluated."""
    from rmkit.cli import main

    out = tmp_path / "demo"
    args = [
        "demo-vision",
        "--output-dir",
        str(out),
        "--train-pairs",
        "8",
        "--test-pairs",
        "4",
        "--max-steps",
        "2",
    ]
    assert main(args) == 0
    rows = [json.loads(x) for x in (out / "data" / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all((out / "data" / r["image"]).is_file() for r in rows)
    assert all(r["chosen"] != r["rejected"] for r in rows)
    assert (out / "model" / "value_head.safetensors").is_file()
    assert json.loads((out / "eval" / "metrics.json").read_text())["data"]["test"]["pairs"] == 4


@pytest.mark.slow
def test_demo_vision_learns_to_read_the_image(tmp_path):
    """The default demo: held-out accuracy at least 0.9 (the answers differ only in the colour named)."""
    from rmkit.demo_vision import demo_vision
    from rmkit.jobs.config import VisionDemoConfig

    assert demo_vision(VisionDemoConfig(output_dir=str(tmp_path)))["accuracy"] >= 0.9
