"""Prefix sharing on vision-language RMs (Qwen2-VL, LLaVA, Gemma3 built tiny from configs): a group's prompt,
images and all, run once with a cache and each answer after it scores as the whole rows do (within 1e-5,
whatever the other prefixes padded beside it, a best-of-N of 3, a sliding window shorter than the prompt);
rows whose images differ share nothing; ``--no-prefix-sharing`` turns it off; one training step sharing each
pair's prefix equals the unshared step (loss and every gradient)."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from conftest import write_jsonl
from vision_models import picture, saved_rm

from rmkit.data import RowCounts
from rmkit.data.images import Picture
from rmkit.data.vision import VisionExample
from rmkit.jobs.config import ScoreConfig
from rmkit.kinds import Reading
from rmkit.kinds.vision import VisionKind
from rmkit.training.config import TrainConfig
from rmkit.training.vision import VisionPair, pair_scores, plan_pairs


def seeing_rm(tmp_path_factory, family: str):
    """``(rm, path)``: a tiny VLM of ``family`` with a seeded value head, saved by rmkit and read back; Gemma3's
    projector of image features into the language model drawn at random (transformers starts it at zero,
    which would make every image read alike)."""
    from rmkit.vlm import VisionRewardModel

    rm, path = saved_rm(tmp_path_factory, family, seed=2)
    if family != "gemma3":
        return rm, path
    torch.manual_seed(3)
    with torch.no_grad():
        rm.model.model.multi_modal_projector.mm_input_projection_weight.normal_()
    path = tmp_path_factory.mktemp("gemma3_seeing")
    rm.save_pretrained(path)
    return VisionRewardModel.from_pretrained(path), path


@pytest.fixture(scope="module", params=["qwen2_vl", "llava", "gemma3"])
def family_rm(request, tmp_path_factory):
    return seeing_rm(tmp_path_factory, request.param)


def question(text: str, images: int = 1) -> list[dict]:
    intro = {"type": "text", "text": "Look at this picture, please, and answer:"}
    return [
        {"role": "user", "content": [intro, *[{"type": "image"}] * images, {"type": "text", "text": text}]}
    ]


def examples() -> list[VisionExample]:
    """A pair, a best-of-N of 3 answers, a pair on two images and a text-only pair: prompts of different
    lengths (so the prefixes are padded) and answers of different lengths."""
    red, blue = Picture(picture("red"), "r.png"), Picture(picture("blue", (84, 56), seed=1), "b.png")
    text = [{"role": "user", "content": "hello, what is the colour of the sky on a clear day today?"}]
    return [
        VisionExample(1, question("What colour is the square in it?"), ["red", "It is blue, like the sky"], True,
                      images=[red]),
        VisionExample(2, question("Which colour?"), ["blue", "red it is", "it is green, I think"], None,
                      images=[blue]),
        VisionExample(3, question("Which two colours do you see in these two pictures?", 2),
                      ["red and blue", "green"], False, images=[red, blue]),
        VisionExample(4, text, ["blue", "It is blue on a clear day"], True),
    ]  # fmt: skip


def rows_and_groups(rm, exs):
    prepared = rm.example_tokenizer().tokenize(exs)
    rows = [r for row in prepared for r in row]
    groups, start = [], 0
    for row in prepared:
        groups.append(list(range(start, start + len(row))))
        start += len(row)
    return rows, groups


def test_shared_prefix_scores_equal_the_whole_rows(family_rm):
    """Every group shares its prompt (images and all) and every answer scores as its whole row alone does,
    one row a batch without padding, within 1e-5: all groups at once in a small budget (prefixes and
    answers in several passes, prefixes of different lengths padded together), and each group alone."""
    rm, _ = family_rm
    rows, groups = rows_and_groups(rm, examples())
    alone = [rm.score_rows([r])[0] for r in rows]
    stats = RowCounts()
    shared = rm.score_rows(rows, batch_tokens=150, groups=groups, stats=stats)
    assert stats.shared == len(rows) and stats.unshared == 0
    assert stats.prefix_tokens >= 16 * sum(len(g) - 1 for g in groups)
    assert shared == pytest.approx(alone, abs=1e-5)
    for group in groups:
        one = rm.score_rows([rows[i] for i in group], groups=[list(range(len(group)))])
        assert one == pytest.approx([alone[i] for i in group], abs=1e-5)


def test_the_pass_cost_cuts_the_passes_and_never_the_scores(family_rm, monkeypatch):
    """The fixed cost of a pass decides how the prefixes and the answers after them are cut into passes: the
    cost measured on the model (once, a power of two) by default, the one given (the server's
    ``--batch-cost``, score's, rank's and eval's) where there is one; a high cost runs fewer passes, and every
    cut scores alike."""
    rm, _ = family_rm
    rows, groups = rows_and_groups(rm, examples())
    alone = [rm.score_rows([r])[0] for r in rows]
    passes = []
    run = rm.run
    monkeypatch.setattr(rm, "run", lambda *a, **k: passes.append(1) or run(*a, **k))
    counted = {}
    for cost in (1.0, 1e9):
        passes.clear()
        assert rm.score_rows(rows, groups=groups, batch_cost=cost) == pytest.approx(alone, abs=1e-5)
        counted[cost] = len(passes)
    assert counted[1e9] == 2 < counted[1.0]  # one pass of all prefixes, one of all answers
    passes.clear()  # --batch-cost reaches it from score, rank and eval (rmkit.kinds.Reading)
    reading = Reading.of(ScoreConfig(model="-", input="-", output="-", batch_cost=1e9))
    scored = [s for _, raw in VisionKind().score(rm, examples(), reading) for s in raw]
    assert len(passes) == 2 and scored == pytest.approx(alone, abs=1e-5)
    measured = rm.pass_cost()
    assert measured >= 1 and measured == 2 ** round(math.log2(measured)) and rm.pass_cost() == measured
    assert rm.score_rows(rows, groups=groups) == pytest.approx(alone, abs=1e-5)


def test_sharing_off_and_rows_whose_images_differ(family_rm):
    """``prefix_sharing`` off (as ``--no-prefix-sharing`` sets it) runs every row whole; answers to the same
    text about different pictures share nothing (their image tokens are alike, their images are not)."""
    rm, _ = family_rm
    rows, groups = rows_and_groups(rm, examples())
    stats = RowCounts()
    rm.prefix_sharing = False
    try:
        off = rm.score_rows(rows, groups=groups, stats=stats)
    finally:
        rm.prefix_sharing = True
    assert stats.shared == 0 and off == pytest.approx(rm.score_rows(rows), abs=1e-6)
    red = VisionExample(1, question("What colour is it?"), ["it is red"], True,
                        images=[Picture(picture("red"), "r.png")])  # fmt: skip
    green = VisionExample(2, question("What colour is it?"), ["it is red"], True,
                          images=[Picture(picture("green"), "g.png")])  # fmt: skip
    two, _ = rows_and_groups(rm, [red, green])
    assert two[0].ids == two[1].ids
    stats = RowCounts()
    scores = rm.score_rows(two, groups=[[0, 1]], stats=stats)
    assert stats.shared == 0 and stats.unshared == 2
    assert scores == pytest.approx(rm.score_rows(two), abs=1e-6) and abs(scores[0] - scores[1]) > 1e-6


def test_a_repeated_answer_scores_exactly_alike(family_rm):
    """The same answer twice in one example (a benchmark's tie) gets the same score to the bit, and that
    score is its whole row's."""
    rm, _ = family_rm
    ex = VisionExample(1, question("What colour is the square in it?"), ["It is red", "blue", "It is red"],
                       None, images=[Picture(picture("red"), "r.png")])  # fmt: skip
    rows, groups = rows_and_groups(rm, [ex])
    stats = RowCounts()
    scores = rm.score_rows(rows, groups=groups, stats=stats)
    assert scores[0] == scores[2] and stats.shared == 2
    assert scores == pytest.approx(rm.score_rows(rows), abs=1e-5)


def test_gemma3_sliding_window_shorter_than_the_prompt(tmp_path_factory):
    """Gemma3 with a sliding window of 6 tokens, far shorter than the prompts: shared equals whole, and the
    window does change the scores (it is exercised)."""
    from rmkit.vlm import VisionRewardModel

    wide, path = seeing_rm(tmp_path_factory, "gemma3")
    narrow_path = tmp_path_factory.mktemp("gemma3_window")
    shutil.copytree(path, narrow_path, dirs_exist_ok=True)
    config = json.loads((narrow_path / "config.json").read_text())
    config["text_config"]["sliding_window"] = 6
    (narrow_path / "config.json").write_text(json.dumps(config))
    rm = VisionRewardModel.from_pretrained(narrow_path)
    rows, groups = rows_and_groups(rm, examples())
    whole = rm.score_rows(rows)
    stats = RowCounts()
    assert rm.score_rows(rows, batch_tokens=80, groups=groups, stats=stats) == pytest.approx(whole, abs=1e-5)
    assert stats.shared == len(rows)
    assert max(abs(a - b) for a, b in zip(whole, wide.score_rows(rows), strict=True)) > 1e-4


def test_training_step_sharing_each_prefix_equals_the_unshared_step(family_rm):
    """One step over pairs (one with two images, one with a margin) whose prompts run once: the loss, the
    scores and every gradient (vision encoder, projector, language model, head) equal the unshared step's."""
    from rmkit.vlm import VisionRewardModel

    _, path = family_rm
    rm = VisionRewardModel.from_pretrained(path).train()
    exs = [ex for ex in examples() if len(ex.responses) == 2]
    pairs = [VisionPair(*rows) for rows in rm.example_tokenizer().tokenize(exs)]
    pairs[0].margin = 0.5
    config = TrainConfig(model=str(path), data="x", output_dir="y", score_reg=0.01)
    plan = plan_pairs(rm, pairs, "on")
    assert len(plan[0]) == len(pairs) and not plan[1]
    assert plan_pairs(rm, pairs, "off") == ([], list(range(2 * len(pairs))))
    results = []
    for shared in (plan, None):
        rm.zero_grad()
        loss, chosen, rejected = pair_scores(rm, pairs, config, shared=True, plan=shared)
        loss.sum().backward()
        grads = {n: p.grad.clone() for n, p in rm.named_parameters() if p.grad is not None}
        results.append((loss.detach(), torch.cat([chosen, rejected]).detach(), grads))
    (loss_s, scores_s, grads_s), (loss_u, scores_u, grads_u) = results
    assert torch.allclose(loss_s, loss_u, atol=1e-5) and torch.allclose(scores_s, scores_u, atol=1e-5)
    assert grads_s.keys() == grads_u.keys() and len(grads_s) > 10
    for name, grad in grads_s.items():
        assert torch.allclose(grad, grads_u[name], atol=1e-5), name


def test_train_and_score_report_the_shared_prefixes(tmp_path, tmp_path_factory, capsys):
    """``rmkit train`` on image pairs shares their prompts (``shared_pairs`` in metrics.json) and refuses
    ``--prefix-sharing on`` with gradient checkpointing in one line; ``rmkit score`` counts the answers that
    shared their prompt's pass, none with ``--no-prefix-sharing``, the scores alike."""
    from rmkit.cli import main

    _, model = saved_rm(tmp_path_factory, "qwen2_vl", seed=2)
    rows = []
    for i, (colour, other) in enumerate([("red", "blue"), ("blue", "green")] * 2):
        picture(colour, seed=i).save(tmp_path / f"{i}.png")
        rows.append({"question": "Look at this picture, please: what colour is the square in it?",
                     "image": f"{i}.png", "chosen": f"It is {colour}.", "rejected": f"It is {other}."})  # fmt: skip
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "rm"
    args = ["train", "--model", str(model), "--data", str(data), "--max-steps", "1", "--batch-size", "4"]
    assert main([*args, "--output-dir", str(out)]) == 0
    train = json.loads((out / "metrics.json").read_text())["train"]
    assert train["prefix_sharing"] == "auto" and train["shared_pairs"] == 4
    refused = [
        *args,
        "--output-dir",
        str(tmp_path / "b"),
        "--prefix-sharing",
        "on",
        "--gradient-checkpointing",
    ]
    assert main(refused) != 0
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "rmkit train: error: --prefix-sharing on: gradient checkpointing runs the language model without the "
        "prefix's cache"
    )
    summaries = []
    for flag in ("--prefix-sharing", "--no-prefix-sharing"):
        output = tmp_path / f"s{flag}.jsonl"
        assert (
            main(["score", "--model", str(model), "--input", str(data), "--output", str(output), flag]) == 0
        )
        summaries.append(json.loads((tmp_path / f"s{flag}.summary.json").read_text()))
        summaries[-1]["lines"] = [json.loads(x) for x in output.read_text().splitlines()]
    on, off = summaries
    assert (on["prefix_shared"], off["prefix_shared"]) == (2 * len(rows), 0)
    for a, b in zip(on["lines"], off["lines"], strict=True):
        assert [a["score_chosen"], a["score_rejected"]] == pytest.approx(
            [b["score_chosen"], b["score_rejected"]], abs=1e-5
        )


def test_rows_of_one_response_that_repeat_a_prompt_and_image_share_its_pass(tmp_path, tmp_path_factory):
    """A scoring file of one response a row (an RL rollout's shape), with ``--share-across-rows``: the rows
    asking the same prompt about the same picture (the file named twice, and once more under another name)
    run it once and their answers after it; the same prompt about another picture shares nothing; the scores
    equal those without sharing; without the option nothing is shared."""
    from rmkit.cli import main

    _, model = saved_rm(tmp_path_factory, "qwen2_vl", seed=2)
    picture("red", seed=1).save(tmp_path / "red.png")
    shutil.copy(tmp_path / "red.png", tmp_path / "same.png")
    picture("blue", seed=2).save(tmp_path / "blue.png")
    prompt = "Look at this picture, please, and tell me: what colour is the square in it?"
    rows = [{"prompt": prompt, "response": answer, "images": [image]}
            for answer, image in [("It is red.", "red.png"), ("Blue, I think.", "red.png"),
                                  ("It is green.", "same.png"), ("It is red.", "blue.png")]]  # fmt: skip
    data = write_jsonl(tmp_path / "rollouts.jsonl", rows)
    outputs = []
    for name, flags in [("on", ["--share-across-rows"]), ("off", ["--no-prefix-sharing", "--share-across-rows"]),
                        ("default", [])]:  # fmt: skip
        output = tmp_path / f"{name}.jsonl"
        assert (
            main(["score", "--model", str(model), "--input", str(data), "--output", str(output), *flags]) == 0
        )
        summary = json.loads((tmp_path / f"{name}.summary.json").read_text())
        outputs.append((summary, [json.loads(x)["score"] for x in output.read_text().splitlines()]))
    (on, shared), (off, whole), (default, _) = outputs
    assert (on["prefix_shared"], off["prefix_shared"], default["prefix_shared"]) == (3, 0, 0)
    assert shared == pytest.approx(whole, abs=1e-5)


def test_a_resumed_run_cuts_its_passes_by_the_cost_its_first_run_measured(
    tmp_path, tmp_path_factory, monkeypatch
):
    """The pass cost a VLM run measured goes into its state file; a resumed run takes it back rather than
    measuring anew (a measure landing in another power of two would round its scores otherwise), and writes
    the file an uninterrupted run writes, byte for byte."""
    import rmkit.inference
    import rmkit.jobs.score as score_job
    from rmkit.cli import main

    _, model = saved_rm(tmp_path_factory, "qwen2_vl", seed=2)
    rows = []
    for i, colour in enumerate(["red", "blue", "green"]):
        picture(colour, seed=i).save(tmp_path / f"{i}.png")
        rows.append({"question": "Look at this picture, please: what colour is the square in it?",
                     "image": f"{i}.png", "chosen": f"It is {colour}.", "rejected": "It is a square."})  # fmt: skip
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    used = []
    scores = rmkit.vlm_sharing.scores
    monkeypatch.setattr(rmkit.vlm_sharing, "scores", lambda *a: used.append(a[5]) or scores(*a))
    measure = {"value": 100.0}  # rounded up: 128
    monkeypatch.setattr(rmkit.inference, "batch_cost", lambda *a, **k: measure["value"])

    def score(out, *flags):
        return main(["score", "--model", str(model), "--input", str(data), "--output", str(out),
                     "--chunk-rows", "1", *flags])  # fmt: skip

    assert score(tmp_path / "whole.jsonl") == 0
    lines = score_job.part_lines
    calls = []

    def stop_at_the_second_chunk(*a):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return lines(*a)

    monkeypatch.setattr(score_job, "part_lines", stop_at_the_second_chunk)
    assert score(tmp_path / "cut.jsonl") != 0
    state = json.loads((tmp_path / "cut.jsonl.rank0-of-1.part.state.json").read_text())
    assert state["records"] == 1 and state["pass_cost"] == 128.0
    monkeypatch.setattr(score_job, "part_lines", lines)
    measure["value"] = 3.0  # this run would measure 4
    used.clear()
    assert score(tmp_path / "cut.jsonl", "--resume") == 0
    assert used and set(used) == {128.0}
    assert (tmp_path / "cut.jsonl").read_bytes() == (tmp_path / "whole.jsonl").read_bytes()
