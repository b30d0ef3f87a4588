"""The vision-language benchmark suites (VL-RewardBench, Multimodal RewardBench, MM-RLHF-RewardBench) on a
tiny random Qwen2-VL RM: files in each benchmark's shape with images drawn in code, each row's label set from
the model's own scores so that every outcome is known, and the official numbers checked against a hand
computation of each benchmark's rule (macro against overall, ties dropped, the seeded coin, ACC+ per id)."""

from __future__ import annotations

import base64
import json
import random
import re

import pytest
from conftest import write_jsonl
from PIL import Image
from vision_models import picture, saved_rm

from rmkit.data.images import Picture
from rmkit.data.vision import VisionExample


@pytest.fixture(scope="module")
def vlm(tmp_path_factory):
    """``(rm, path)``: a tiny Qwen2-VL with a seeded value head, saved by rmkit."""
    return saved_rm(tmp_path_factory, "qwen2_vl", seed=1)


def scored(rm, question: str, image, answers: list[str]) -> list[float]:
    """The RM's scores of ``answers`` to ``question`` about ``image`` (the image before the question)."""
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    example = VisionExample(0, prompt, answers, True, images=[Picture(image, "x.png")])
    return rm.score_rows(rm.example_tokenizer().tokenize([example])[0])


def drawn(folder, name: str, k: int):
    """A drawn image saved as ``folder/name``; returns the PIL image."""
    image = picture(["red", "green", "blue", "yellow"][k % 4], (56 + 28 * (k % 2), 56), seed=k)
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    image.save(folder / name)
    return image


def ordered(rm, question, image, answers, outcome: str) -> tuple[list[str], int]:
    """The two answers and the index of the one to call better so that the model's verdict is ``outcome``:
    agree (it scores the better one higher), reject, or tie (the same answer twice)."""
    if outcome == "tie":
        return [answers[0], answers[0]], 0
    s = scored(rm, question, image, answers)
    higher = int(s[1] > s[0])
    assert abs(s[0] - s[1]) > 1e-4  # a clear verdict, whatever the batching
    return answers, higher if outcome == "agree" else 1 - higher


def run(path, data, out, *extra):
    from rmkit.cli import main

    args = ["eval", "--model", str(path), "--data", str(data), "--output-dir", str(out)]
    assert main([*args, "--bootstrap", "20", "--no-plots", *extra]) == 0
    return json.loads((out / "metrics.json").read_text())


VL_ROWS = [  # id, data set, outcome
    ("LRVInstruction-000001", "vlfeedback", "agree"),
    ("wildvision_2", "wildvision-battle", "agree"),
    ("LRVInstruction-000003", "vlfeedback", "reject"),
    ("LRVInstruction-000004", "vlfeedback", "tie"),
    ("RLAIF-V-5", "rlaif-v", "agree"),
    ("RLHF-V-6", "rlhf-v", "reject"),
    ("hallucination_pair-7", "povid", "reject"),
    ("RLAIF-V-8", "rlaif-v", "reject"),
    ("mathverse_9", "reasoning_tasks", "agree"),
]


def vl_rows(rm, folder, embedded: bool) -> list[dict]:
    """VL-RewardBench rows: the GitHub release's (``image_path`` beside the file) or, with ``embedded``, the
    hub's (an ``image`` feature: a dict with the path, or bytes as a data URL)."""
    rows = []
    for k, (row_id, dataset, outcome) in enumerate(VL_ROWS):
        name = f"images/{dataset}/{row_id}.png"
        image = drawn(folder, name, k)
        question = f"What is drawn in picture {k}?"
        answers, better = ordered(
            rm, question, image, [f"A square, {k}.", f"Nothing at all {k} here"], outcome
        )
        row = {"id": row_id, "query": question, "response": answers, "human_ranking": [better, 1 - better]}
        if not embedded:
            row["image_path"] = name
        elif k % 2:
            raw = (folder / name).read_bytes()
            row["image"] = "data:image/png;base64," + base64.b64encode(raw).decode()
        else:
            row["image"] = {"bytes": None, "path": name}
        rows.append(row)
    return rows


@pytest.mark.parametrize("embedded", [False, True], ids=["image_path", "image"])
def test_vl_rewardbench_overall_macro_and_ties(vlm, tmp_path, embedded):
    """general 2 of 3 judged (a tie left out), hallucination 1 of 4, reasoning 1 of 1: overall 4/8 and macro
    the mean of the three groups, as cal.py computes them; the results file reads back to the same numbers."""
    rm, path = vlm
    data = write_jsonl(tmp_path / "data.jsonl", vl_rows(rm, tmp_path, embedded))
    metrics = run(path, data, tmp_path / "ev")
    assert metrics["suite"]["name"] == "vl-rewardbench"  # recognised from its columns
    (official,) = metrics["suite"]["models"].values()
    groups = {"general": (2, 3), "hallucination": (1, 4), "reasoning": (1, 1)}
    for group, (agree, judged) in groups.items():
        assert official["subsets"][group]["score"] == pytest.approx(agree / judged)
        assert official["subsets"][group]["judged"] == judged
    assert official["subsets"]["general"]["unjudged"] == 1 and official["subsets"]["general"]["rows"] == 4
    assert official["score"] == pytest.approx(4 / 8)
    assert official["macro"] == pytest.approx((2 / 3 + 1 / 4 + 1) / 3)
    assert official["leaderboard"]["macro"] == official["macro"]

    lines = [
        json.loads(x) for x in (tmp_path / "ev" / "vl-rewardbench_results.jsonl").read_text().splitlines()
    ]
    agree = {}
    for line in lines:  # cal.py's reparse: the answer its pattern finds against the rejected one's position
        rejected = line["ranking"].index(1) + 1
        found = re.search(r"Overall Judgment.*Answer\s*(\d+)\s*is\s*better", line["meta"]["filter_choice"])
        if found:
            agree.setdefault(line["image_path"].split("/")[1], []).append(int(found.group(1)) != rejected)
    assert sum(map(sum, agree.values())) / sum(map(len, agree.values())) == pytest.approx(official["score"])


def test_vl_rewardbench_missing_image_is_named_or_skipped_and_counted(vlm, tmp_path, capsys):
    """A row whose image file is missing stops the run with one line naming file, row, field and path; with
    --on-error skip it is left out, counted in metrics.json and written to the rejects file."""
    from rmkit.cli import main

    rm, path = vlm
    rows = vl_rows(rm, tmp_path, embedded=False)[:3]
    rows[1]["image_path"] = "images/vlfeedback/gone.png"
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    args = ["eval", "--model", str(path), "--data", str(data), "--output-dir", str(tmp_path / "ev")]
    assert main(args) == 2
    (said,) = [x for x in capsys.readouterr().err.splitlines() if "gone.png" in x]
    assert "data.jsonl" in said and "row 2" in said and "image_path" in said
    metrics = run(path, data, tmp_path / "skip", "--on-error", "skip")
    assert metrics["data"]["data"]["skipped"] == 1 and metrics["data"]["data"]["rows"] == 2
    (reject,) = (tmp_path / "skip" / "rejects.jsonl").read_text().splitlines()
    assert "gone.png" in reject


MMRB_ROWS = [  # ID, Category, outcome (right, wrong or tie: the coin)
    ("nocaps_1", "open_generation/correctness_task", "agree"),
    ("visitbench_2", "open_generation/correctness_task", "tie"),
    ("pairs_3", "safety", "agree"),
    ("hatefulmemes_4", "safety", "reject"),
    ("mathvista_5", "reasoning", "tie"),
    ("emma_coding_6", "reasoning", "agree"),
    ("vqa_7", "vqa", "tie"),
    ("vqa_8", "vqa", "reject"),
]


def test_multimodal_rewardbench_categories_split_and_the_seeded_coin(vlm, tmp_path):
    rm, path = vlm
    rows, right = [], []
    coin = random.Random(
        123
    )  # scripts/2_get_accuracy.py: random.seed(123), a draw per verdict it cannot read
    for k, (row_id, category, outcome) in enumerate(MMRB_ROWS):
        name = f"images/{row_id.split('_')[0]}/{k}.jpg"
        image = drawn(tmp_path, name.replace(".jpg", ".png"), k)
        image.save(tmp_path / name, quality=95)
        image = Image.open(tmp_path / name)  # scored as the suite reads it: JPEG's pixels, not the drawing's
        image.load()
        question = f"Describe picture {k}."
        answers, better = ordered(rm, question, image, [f"It shows {k} things.", f"A dog {k}"], outcome)
        label = "AB"[better]
        if outcome == "tie":
            right.append(("A" if coin.random() < 0.5 else "B") == label)
        else:
            right.append(outcome == "agree")
        rows.append({"ID": row_id, "Text": question, "Image": name, "Output1": answers[0],
                     "Output2": answers[1], "Better": f"Output{better + 1}", "Category": category})  # fmt: skip
    (tmp_path / "all_data.json").write_text(json.dumps(rows))
    metrics = run(path, tmp_path / "all_data.json", tmp_path / "ev")
    assert metrics["suite"]["name"] == "multimodal-rewardbench"
    (official,) = metrics["suite"]["models"].values()
    cats = {"open_generation/correctness_task": [0, 1], "safety/bias": [2], "safety/toxicity": [3],
            "reasoning/math": [4], "reasoning/coding": [5], "vqa": [6, 7]}  # fmt: skip
    for cat, members in cats.items():
        assert official["subsets"][cat]["score"] == pytest.approx(
            sum(right[i] for i in members) / len(members)
        )
    assert sum(s["coins"] for s in official["subsets"].values()) == 3
    assert official["score"] == pytest.approx(sum(right) / len(right))
    lines = (tmp_path / "ev" / "multimodal-rewardbench_results.jsonl").read_text().splitlines()
    outputs = [
        json.loads(x)["output"] for x in lines
    ]  # what 2_get_accuracy.py reads: a tie writes no verdict
    assert outputs[:2] == ["[[A]]" if rows[0]["Better"] == "Output1" else "[[B]]", ""]


MMRLHF_ROWS = [  # id, image path, chosen scored higher?
    ("a", "mcq/1.png", True),
    ("a", "mcq/1.png", True),
    ("b", "mcq/2.png", True),
    ("b", "mcq/2.png", False),
    ("c", "long/3.png", True),
    ("d", "short/4.png", False),
]


def test_mm_rlhf_rewardbench_acc_and_acc_plus_per_id(vlm, tmp_path):
    rm, path = vlm
    rows = []
    for k, (row_id, name, right) in enumerate(MMRLHF_ROWS):
        image = drawn(tmp_path, name, k)
        question = f"Question {k} about the picture?"
        answers, better = ordered(rm, question, image, [f"Yes, {k}.", f"No, it is {k} and more"], "agree")
        chosen = answers[better] if right else answers[1 - better]
        rejected = answers[1 - better] if right else answers[better]
        rows.append({"id": row_id, "prompt": question, "image": name, "chosen": chosen, "rejected": rejected,
                     "chosen_reason": "", "rejected_reason": ""})  # fmt: skip
    data = write_jsonl(tmp_path / "mm_reward_bench.jsonl", rows)
    metrics = run(path, data, tmp_path / "ev")
    assert metrics["suite"]["name"] == "mm-rlhf-rewardbench"
    (official,) = metrics["suite"]["models"].values()
    assert official["score"] == pytest.approx(4 / 6)  # ACC: right pairs over pairs
    assert official["acc_plus"] == pytest.approx(2 / 4)  # ACC+: ids a and c of a, b, c, d
    mcq = official["subsets"]["mcq"]
    assert (mcq["score"], mcq["acc_plus"], mcq["pairs"], mcq["rows"]) == (pytest.approx(3 / 4), 0.5, 4, 2)
    assert (official["subsets"]["long"]["acc_plus"], official["subsets"]["short"]["acc_plus"]) == (1.0, 0.0)


def test_a_text_rm_is_refused_on_an_image_suite(rm_path, tmp_path, capsys):
    """A model that reads no images cannot judge image questions: refused in one line before it loads."""
    from rmkit.cli import main

    row = {
        "id": "RLAIF-V-1",
        "query": "q",
        "response": ["a", "b"],
        "human_ranking": [0, 1],
        "image_path": "x.png",
    }
    data = write_jsonl(tmp_path / "data.jsonl", [row])
    args = ["eval", "--model", str(rm_path), "--data", str(data), "--output-dir", str(tmp_path / "ev")]
    assert main(args) == 2
    (said,) = [x for x in capsys.readouterr().err.splitlines() if "VL-RewardBench" in x]
    assert "pairwise reward model" in said and "images" in said
