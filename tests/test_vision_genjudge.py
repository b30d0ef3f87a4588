"""Generating vision-language judges on a tiny random Qwen2-VL: the judgments rmkit writes are transformers' own
``generate`` of the judge prompt written out by hand (the image where the benchmark's code puts it), their
verdicts a hand parse of those texts by the benchmark's rule, each judgment's order the seeded coin
(reproducible), the votes decided by VL-RewardBench's majority, and unreadable verdicts dropped (VL-RewardBench)
or given the seeded coin (Multimodal RewardBench), counted.

A random model writes no verdict, so the judge checkpoints here carry a ``generation_config.json`` whose
``sequence_bias`` (a transformers generation setting, applied the same by rmkit and by hand) makes the first
tokens of every judgment a fixed verdict text; what follows is the model's own."""

from __future__ import annotations

import json
import math
import random
import re
import shutil

import pytest
import torch
from conftest import write_jsonl
from vision_models import make_vlm, picture

from rmkit.data.images import Picture
from rmkit.data.judging import TEMPLATES, Judge
from rmkit.data.vision import VisionExample

VERDICT = "Therefore Answer 2 is better [[A]]"  # VL-RewardBench's: the second shown; MMRB's: the first
QUESTIONS = ["What colour is the square?", "Is there a circle?", "How many shapes?", "Which side?"]
ANSWERS = [
    ["It is red.", "A blue circle"],
    ["yes", "No, a square"],
    ["two", "three of them"],
    ["left", "right"],
]
COLOURS = ["red", "blue", "green", "red"]
NEW_TOKENS = 30


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """A tiny Qwen2-VL whose judgments are its own (no verdict in them)."""
    return make_vlm(tmp_path_factory.mktemp("genjudge_plain"), "qwen2_vl", seed=5)


@pytest.fixture(scope="module")
def forced(plain, tmp_path_factory):
    """The same model whose judgments start with :data:`VERDICT` (its generation config's sequence bias)."""
    from transformers import AutoTokenizer

    path = tmp_path_factory.mktemp("genjudge_forced")
    shutil.copytree(plain, path, dirs_exist_ok=True)
    tok = AutoTokenizer.from_pretrained(str(path))
    end = tok("<|im_end|>\n", add_special_tokens=False)["input_ids"][-1]  # a judge prompt's last token
    verdict = [end, *tok(VERDICT, add_special_tokens=False)["input_ids"]]
    bias = [[verdict[: k + 1], 100.0] for k in range(1, len(verdict))]
    (path / "generation_config.json").write_text(json.dumps({"sequence_bias": bias}))
    return path


def examples() -> list[VisionExample]:
    out = []
    for k, (question, answers) in enumerate(zip(QUESTIONS, ANSWERS, strict=True)):
        prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        image = Picture(picture(COLOURS[k], seed=k), f"{k}.png")
        out.append(VisionExample(k + 1, prompt, answers, True, images=[image]))
    return out


@torch.no_grad()
def generate_by_hand(path, text: str, image) -> tuple[list[int], str]:
    """The ids of ``text`` (its image token expanded by the processor's rule) and transformers' own greedy
    ``generate`` of them, decoded."""
    from transformers import AutoTokenizer, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tok = AutoTokenizer.from_pretrained(str(path))
    model = Qwen2VLForConditionalGeneration.from_pretrained(str(path)).eval()
    processed = Qwen2VLImageProcessorPil.from_pretrained(str(path))(images=[image], return_tensors="pt")
    grid = processed["image_grid_thw"]
    pad = tok.convert_tokens_to_ids("<|image_pad|>")
    ids = []
    for t in tok(text, add_special_tokens=False)["input_ids"]:
        ids += [pad] * int(grid.prod() // 4) if t == pad else [t]
    input_ids = torch.tensor([ids])
    out = model.generate(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        pixel_values=processed["pixel_values"],
        image_grid_thw=grid,
        mm_token_type_ids=(input_ids == pad).int(),
        max_new_tokens=NEW_TOKENS,
        do_sample=False,
        pad_token_id=tok.pad_token_id,
    )
    return ids, tok.decode(out[0, len(ids) :], skip_special_tokens=True)


def vl_rewardbench_parse(text: str) -> int | None:
    """cal.py's rule, by hand: the answer number its pattern finds in the text without new lines and ``*``."""
    pattern = (
        r"(?:Overall Judgment|Therefore)\s*.*\s*-*\s*Answer\s*(\d+)\s*is\s*(?:the\s*)?(?:slightly\s*)?better"
    )
    m = re.search(pattern, text.replace("\n", "").replace("*", ""), re.IGNORECASE)
    return int(m.group(1)) if m else None


def test_judgments_are_transformers_generate_and_their_verdicts_the_benchmarks_parse(forced):
    """Each row's judgment is transformers' generate of the prompt shown in its seeded order (text, then the
    image, as VL-RewardBench's inference.py sends them), and the row's scores are the hand parse of it: the
    answer it names, in the order shown, scores 1."""
    from rmkit.kinds.vision_judge import majority, votes
    from rmkit.vision_judges import load_vision_judge

    judge = Judge.of({"readout": "generate", "template": "vl-rewardbench", "max_new_tokens": NEW_TOKENS,
                      "seed": 7})  # fmt: skip
    rm = load_vision_judge(forced, judge)
    exs = examples()
    rows = [r for row in rm.example_tokenizer().tokenize(exs) for r in row]
    written = rm.judgments(rows, batch_tokens=4096)  # several rows a batch, left-padded
    assert len(rows) == len(exs)  # one vote a pair
    assert [judge.orders(ex.row) for ex in exs[:2]] == [[(0, 1)], [(1, 0)]]  # both orders among those checked
    for ex, row, text in list(zip(exs, rows, written, strict=True))[:2]:
        ((i, j),) = judge.orders(ex.row)
        shown = TEMPLATES["vl-rewardbench"].text.format(
            question=ex.prompt[0]["content"][1]["text"], answer_a=ex.responses[i], answer_b=ex.responses[j]
        )
        hand = f"<|im_start|>user\n{shown}<|vision_start|><|image_pad|><|vision_end|><|im_end|>\n"
        ids, generated = generate_by_hand(forced, hand, ex.images[0].image)
        assert row.ids == ids and text == generated
        assert text.startswith(VERDICT) and text != VERDICT  # the verdict, then the model's own tokens
        picked = (i, j)[vl_rewardbench_parse(text) - 1]
        assert majority(judge, votes(judge, ex.row, [text])) == [float(picked == 0), float(picked == 1)]


@pytest.mark.slow
def test_the_seeded_order_is_reproducible_and_recorded(forced, tmp_path):
    """``rmkit score`` twice with one seed writes the same orders (``shown_first``: 1 where the second answer
    was shown first) and judgments; each row's orders are the seeded coin of the row (another seed draws
    others), and its scores the majority of its votes."""
    from rmkit.cli import main

    rows = []
    for k, (question, answers) in enumerate(zip(QUESTIONS, ANSWERS, strict=True)):
        picture(COLOURS[k], seed=k).save(tmp_path / f"{k}.png")
        rows.append({"question": question, "image": f"{k}.png", "chosen": answers[0], "rejected": answers[1]})
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    args = ["score", "--model", str(forced), "--data", str(data), "--judge", "generate", "--judge-template",
            "vl-rewardbench", "--judge-votes", "3", "--judge-max-new-tokens", str(NEW_TOKENS),
            "--judge-seed", "11"]  # fmt: skip
    outs = []
    for run in range(2):
        out = tmp_path / f"out{run}.jsonl"
        assert main([*args, "--output", str(out)]) == 0
        outs.append([json.loads(line) for line in out.read_text().splitlines()])
    assert outs[0] == outs[1]
    judge = Judge.of({"readout": "generate", "template": "vl-rewardbench", "votes": 3, "seed": 11})
    other = Judge.of({"readout": "generate", "template": "vl-rewardbench", "votes": 3, "seed": 12})
    for row, line in enumerate(outs[0], start=1):
        coin = random.Random(f"11:{row}")
        assert line["shown_first"] == [int(coin.random() < 0.5) for _ in range(3)]
        assert line["shown_first"] == [i for i, _ in judge.orders(row)]
        chosen_second = sum(line["shown_first"])  # the verdict names the answer shown second
        assert [line["score_chosen"], line["score_rejected"]] == ([0.0, 1.0], [1.0, 0.0])[chosen_second >= 2]
        assert len(line["judgments"]) == 3 and all(t.startswith(VERDICT) for t in line["judgments"])
    assert [judge.orders(r) for r in range(1, 9)] != [other.orders(r) for r in range(1, 9)]


def vl_rows(tmp_path) -> list[dict]:
    rows = []
    for k, (question, answers) in enumerate(zip(QUESTIONS, ANSWERS, strict=True)):
        picture(COLOURS[k], seed=k).save(tmp_path / f"{k}.png")
        better = k % 2
        rows.append({"id": f"RLAIF-V-{k}" if k < 2 else f"vlfeedback-{k}", "query": question, "response": answers,
                     "human_ranking": [better, 1 - better], "image_path": f"{k}.png"})  # fmt: skip
    return rows


def run_suite(model, data, out, *extra: str, tokens: int = NEW_TOKENS) -> dict:
    from rmkit.cli import main

    args = ["eval", "--model", str(model), "--judge", "generate", "--judge-max-new-tokens", str(tokens),
            "--data", str(data), "--output-dir", str(out), "--bootstrap", "10", "--no-plots", *extra]  # fmt: skip
    assert main(args) == 0
    (official,) = json.loads((out / "metrics.json").read_text())["suite"]["models"].values()
    return official


def test_vl_rewardbench_votes_decide_by_majority_as_cal_py(forced, tmp_path):
    """Three votes a pair, each in its seeded order; the verdict names the second shown, so the answer shown
    second in most votes wins; agree over judged per group, as cal.py counts."""
    data = write_jsonl(tmp_path / "vl.jsonl", vl_rows(tmp_path))
    official = run_suite(forced, data, tmp_path / "ev", "--judge-template", "vl-rewardbench",
                         "--judge-votes", "3", "--judge-seed", "5")  # fmt: skip
    agree: dict[str, list[int]] = {"hallucination": [], "general": []}
    for k, row in enumerate(vl_rows(tmp_path)):
        orders = Judge.of(
            {"readout": "generate", "template": "vl-rewardbench", "votes": 3, "seed": 5}
        ).orders(k + 1)
        second_shown = [j for _, j in orders]  # the answer each vote picks
        winner = max((0, 1), key=second_shown.count)
        agree["hallucination" if k < 2 else "general"].append(int(winner == row["human_ranking"].index(0)))
    for group, hits in agree.items():
        assert official["subsets"][group]["score"] == pytest.approx(sum(hits) / len(hits))
        assert official["subsets"][group]["judged"] == 2
    assert official["judge"]["votes"] == 3 and official["judge"]["seed"] == 5  # recorded in metrics.json
    assert official["parse_failures"] == 0


def test_unreadable_verdicts_leave_vl_rewardbench_and_get_mmrbs_coin(plain, tmp_path):
    """A judge that writes no verdict: under --on-parse-failure mask every VL-RewardBench item leaves the
    denominators (counted as unjudged); every Multimodal RewardBench row gets the seeded coin (counted)."""
    data = write_jsonl(tmp_path / "vl.jsonl", vl_rows(tmp_path))
    official = run_suite(plain, data, tmp_path / "vl", "--judge-template", "vl-rewardbench",
                         "--on-parse-failure", "mask", tokens=4)  # fmt: skip
    for group in ("hallucination", "general"):
        assert official["subsets"][group]["judged"] == 0 and official["subsets"][group]["unjudged"] == 2
        assert official["subsets"][group]["score"] is None
    assert official["parse_failures"] == len(QUESTIONS)  # one judgment a pair, none read
    assert official["judge"]["pair_order"] == "shuffled" and official["judge"]["seed"] == 0
    rows = [{"ID": f"{k}", "Text": q, "Image": f"{k}.png", "Output1": a[0], "Output2": a[1],
             "Better": "Output1" if k % 2 else "Output2", "Category": "general"}
            for k, (q, a) in enumerate(zip(QUESTIONS, ANSWERS, strict=True))]  # fmt: skip
    data = write_jsonl(tmp_path / "mmrb.jsonl", rows)
    official = run_suite(plain, data, tmp_path / "mmrb", "--judge-template", "mmrb", "--on-parse-failure", "mask",
                         tokens=4)  # fmt: skip
    coin = random.Random(123)  # 2_get_accuracy.py's, drawn for each row without a verdict, in file order
    right = [
        ("A" if coin.random() < 0.5 else "B") == ("A" if r["Better"] == "Output1" else "B") for r in rows
    ]
    assert official["subsets"]["general"]["coins"] == len(rows)
    assert official["subsets"]["general"]["score"] == pytest.approx(sum(right) / len(rows))


def test_mmrb_judge_shows_the_pair_as_given_and_its_verdict_picks_output1(forced, tmp_path):
    """Multimodal RewardBench's runner shows Output1 as A, one judgment a row; [[A]] picks Output1."""
    rows = [{"ID": f"{k}", "Text": q, "Image": f"{k}.png", "Output1": a[0], "Output2": a[1],
             "Better": "Output1" if k % 2 else "Output2", "Category": "general"}
            for k, (q, a) in enumerate(zip(QUESTIONS, ANSWERS, strict=True))]  # fmt: skip
    for k in range(len(rows)):
        picture(COLOURS[k], seed=k).save(tmp_path / f"{k}.png")
    data = write_jsonl(tmp_path / "mmrb.jsonl", rows)
    official = run_suite(forced, data, tmp_path / "ev", "--judge-template", "mmrb")
    assert official["subsets"]["general"]["coins"] == 0
    assert official["subsets"]["general"]["score"] == pytest.approx(0.5)  # Output1 better in half the rows


def test_the_pair_order_is_the_templates_unless_given():
    from rmkit.errors import RMKitError

    given = {"readout": "generate", "template": "vl-rewardbench", "votes": 8}
    assert {o for r in range(4) for o in Judge.of(given).orders(r)} == {(0, 1), (1, 0)}
    assert {o for r in range(4) for o in Judge.of({**given, "pair_order": "given"}).orders(r)} == {(0, 1)}
    assert Judge.of({"readout": "generate", "template": "mmrb"}).pair_order == "given"
    text_template = Judge.of({"readout": "generate", "template": "mt-bench-pairwise", "votes": 2})
    assert text_template.orders(1) == [(0, 1), (1, 0), (0, 1), (1, 0)]  # both orders, each vote
    with pytest.raises(RMKitError, match="generating judge's"):
        Judge.of({"readout": "pairwise", "template": "mmrb", "pair_order": "shuffled"})


def test_votes_without_a_majority_are_a_tie_and_unread_ones_count_for_neither():
    from rmkit.kinds.vision_judge import majority, votes

    judge = Judge.of({"readout": "generate", "template": "mmrb", "votes": 3, "on_parse_failure": "mask"})
    said = ["so [[A]]", "[[B]] then", "no verdict"]  # given order: first, second, unread
    raw = votes(judge, 1, said)
    assert [v.read for v in raw] == [1, 1, 0] and majority(judge, raw) == [0.5, 0.5]
    assert majority(judge, votes(judge, 1, ["[[A]]", "x", "[[A]]"])) == [1.0, 0.0]
    assert math.isnan(majority(judge, votes(judge, 1, ["x", "y", "z"]))[0])
    scored = Judge.of({"readout": "generate", "template": "mmrb", "votes": 3, "on_parse_failure": "score=0"})
    assert majority(scored, votes(scored, 1, ["x", "y", "z"])) == [0.0, 0.0]


def test_a_generating_vision_judge_with_more_than_two_answers_is_refused_in_one_line(
    forced, tmp_path, capsys
):
    from rmkit.cli import main

    picture("red").save(tmp_path / "x.png")
    row = {"prompt": "Q?", "images": ["x.png"], "responses": ["a", "b", "c"]}
    data = write_jsonl(tmp_path / "bon.jsonl", [row])
    args = [
        "rank",
        "--model",
        str(forced),
        "--judge",
        "generate",
        "--judge-template",
        "mmrb",
        "--data",
        str(data),
    ]
    assert main([*args, "--output", str(tmp_path / "o.jsonl")]) == 2
    (said,) = capsys.readouterr().err.strip().splitlines()
    assert "compares the two answers of a pair, not 3" in said


def test_a_generating_vision_judge_is_not_served(forced):
    from rmkit import kinds

    kind, model = kinds.load(str(forced), {"judge": {"readout": "generate", "template": "mmrb"}})
    assert kind.name == "vision-judge" and "scored offline" in kind.servable(model)


def test_an_unread_verdict_stops_the_run_by_default_naming_the_row(plain, tmp_path, capsys):
    from rmkit.cli import main

    picture("red").save(tmp_path / "x.png")
    row = {"question": "Q?", "image": "x.png", "chosen": "a", "rejected": "b"}
    data = write_jsonl(tmp_path / "pairs.jsonl", [row])
    args = ["score", "--model", str(plain), "--judge", "generate", "--judge-template", "mmrb", "--data",
            str(data), "--judge-max-new-tokens", "2", "--output", str(tmp_path / "o.jsonl")]  # fmt: skip
    assert main(args) == 2
    (said,) = capsys.readouterr().err.strip().splitlines()
    assert "row 1: the judge's verdict could not be read by the 'mmrb' parser" in said
