"""report.html of the kinds that came after it: a cost model's evaluation, a cost model beside a reward model,
and a vision RM's rows with their images as thumbnails, checked in the same headless Chromium as
tests/test_report_html.py (whose fixtures and helpers these tests use)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import make_llama, write_jsonl
from test_report_html import (
    assert_figures_equal_metrics,
    browser,  # noqa: F401 (a fixture)
    choose,
    open_page,
    read_lines,
    screenshot,
    shown,
)
from vision_models import make_vlm, picture

from rmkit import RewardModel, evaluate
from rmkit.cli import main
from rmkit.reporting.page.thumbnails import SIDE, Thumbnails

TRICKY = "<img src=x onerror=window.hacked=1>"


def pku_row(i: int) -> dict:
    """A PKU-SafeRLHF pair: every combination of safety labels over i % 4."""
    return {
        "prompt": f"How can I help {i}?" + (f" {TRICKY}" if i == 0 else ""),
        "response_0": "two plus two is four" + " yes" * (i % 3),
        "response_1": "it could hurt someone" + " no" * (i % 2),
        "is_response_0_safe": i % 4 in (0, 1),
        "is_response_1_safe": i % 4 in (0, 2),
        "better_response_id": i % 2,
        "safer_response_id": 1 if i % 4 == 2 else 0,
    }


@pytest.fixture(scope="module")
def cost_dirs(tmp_path_factory) -> dict[str, Path]:
    """A random cost model evaluated on BeaverTails rows and PKU-SafeRLHF pairs (``cost``), and beside a reward
    model on the pairs as preferences (``beside``)."""
    root = tmp_path_factory.mktemp("page_cost")
    backbone = make_llama(root / "backbone")
    torch.manual_seed(0)
    RewardModel.from_pretrained(backbone).save_pretrained(root / "rm")
    torch.manual_seed(3)
    cm = RewardModel.from_pretrained(backbone)
    cm.metadata["kind"] = "cost"  # what rmkit train --objective cost writes
    cm.save_pretrained(root / "cm")
    beaver = [
        {"prompt": f"Question {i}", "response": f"answer {i}" + " more" * (i % 4), "is_safe": i % 3 != 0}
        for i in range(12)
    ]
    bt, pku = (
        write_jsonl(root / "beaver.jsonl", beaver),
        write_jsonl(root / "pku.jsonl", [pku_row(i) for i in range(12)]),
    )
    evaluate(model=str(root / "cm"), data=[str(bt), str(pku)], objective="cost", output_dir=str(root / "cost"),
             bootstrap=50, plots=False)  # fmt: skip
    evaluate(model=str(root / "rm"), cost_model=str(root / "cm"), data=[str(pku)], output_dir=str(root / "beside"),
             bootstrap=50, plots=False)  # fmt: skip
    return {"cost": root / "cost", "beside": root / "beside"}


def responses(out: Path) -> list[tuple[int, int, dict]]:
    """``(line, response, line's dict)`` of every response of a cost evaluation's scores.jsonl, in order."""
    return [(n, j, x) for n, x in enumerate(read_lines(out)) for j in range(len(x["signs"]))]


def shown_responses(driver) -> list[tuple[int, int]]:
    return [
        tuple(x)
        for x in driver.execute_script(
            "return [...document.querySelectorAll('#rows tbody tr')]"
            ".map(tr => [Number(tr.dataset.line), Number(tr.dataset.response)])"
        )
    ]


@pytest.mark.browser
def test_cost_page_shows_metrics_and_the_most_confidently_wrong_first(browser, cost_dirs, tmp_path):  # noqa: F811
    out = cost_dirs["cost"]
    open_page(browser, out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert assert_figures_equal_metrics(browser, out) >= 26  # 13 figures of each data set
    keys = browser.execute_script(
        "return [...document.querySelectorAll('td[data-key]')].map(td => JSON.parse(td.dataset.key))"
    )
    assert ["results", "cm", "pku", "sign_accuracy_ci"] in keys and [
        "results",
        "cm",
        "beaver",
        "safe_mean",
    ] in keys
    every = responses(out)
    assert browser.execute_script("return document.querySelectorAll('#plots canvas').length") == 2
    points = browser.execute_script(
        "return [...document.querySelectorAll('#plots canvas')].map(c => Number(c.dataset.points))"
    )
    assert sum(points) == len(every) == 12 + 24  # a strip a data set: every labelled response
    screenshot(browser, "cost", tmp_path)
    choose(browser, "size", "1000")
    for data, m in metrics["results"]["cm"].items():  # the default order is metrics.json's most_wrong
        choose(browser, "group", f"{data} / {data}")
        lines = read_lines(out)
        first = [(lines[n]["row"], j) for n, j in shown_responses(browser)[: len(m["most_wrong"])]]
        assert first == [(w["row"], w["response"]) for w in m["most_wrong"]] and first
    choose(browser, "group", "")
    wrong = [(n, j) for n, j, x in every if x["costs"][j] * x["signs"][j] > 0]
    choose(browser, "verdict", "wrong")
    assert sorted(shown_responses(browser)) == wrong and 0 < len(wrong) < len(every)
    browser.execute_script("document.querySelector('.controls').scrollIntoView()")
    screenshot(browser, "cost-rows", tmp_path)
    choose(browser, "verdict", "right")
    assert sorted(shown_responses(browser)) == sorted(set((n, j) for n, j, _ in every) - set(wrong))
    choose(browser, "label", "unsafe")
    unsafe_right = [(n, j) for n, j, x in every if x["signs"][j] < 0 and x["costs"][j] > 0]
    assert sorted(shown_responses(browser)) == unsafe_right
    choose(browser, "verdict", "all")
    assert sorted(shown_responses(browser)) == [(n, j) for n, j, x in every if x["signs"][j] < 0]
    choose(browser, "label", "")
    middle = sorted(x["costs"][j] for _, j, x in every)[len(every) // 2]
    choose(browser, "mmin", str(middle))
    assert sorted(shown_responses(browser)) == [(n, j) for n, j, x in every if x["costs"][j] >= middle]
    choose(browser, "mmin", "")
    choose(browser, "sort", "cost")
    costs = [read_lines(out)[n]["costs"][j] for n, j in shown_responses(browser)]
    assert costs == sorted(costs)


@pytest.mark.browser
def test_cost_rows_show_the_judged_response_with_its_label_as_text(browser, cost_dirs):  # noqa: F811
    out = cost_dirs["cost"]
    open_page(browser, out)
    choose(browser, "q", "onerror")  # the pair of pku row 1: two responses, both with the prompt's HTML
    rows = browser.execute_script(
        "return [...document.querySelectorAll('#rows tbody tr')].map(tr => tr.textContent)"
    )
    assert len(rows) == 2 and all(TRICKY in r for r in rows)
    assert browser.execute_script("return window.hacked === undefined && document.images.length") == 0
    # the pair is read as the cost evaluation read it: the safer answer first, each with its own label
    lines = read_lines(out)
    for (n, j), text in zip(shown_responses(browser), rows, strict=True):
        label = "safe" if lines[n]["signs"][j] > 0 else "unsafe"
        assert f"response {j + 1} ({label}, cost {lines[n]['costs'][j]:.3f})" in text


@pytest.mark.browser
def test_cost_model_beside_a_reward_model_shows_both_numbers_and_the_preferred_safer_share(
    browser,  # noqa: F811
    cost_dirs,
):
    out = cost_dirs["beside"]
    open_page(browser, out)
    assert assert_figures_equal_metrics(browser, out) > 10
    keys = browser.execute_script(
        "return [...document.querySelectorAll('#safety td[data-key]')].map(td => JSON.parse(td.dataset.key))"
    )
    assert ["safety", "cm", "pku", "preferred_safer", "rm"] in keys and [
        "safety",
        "cm",
        "pku",
        "chosen_safer_ci",
    ] in keys
    lines = read_lines(out)
    choose(browser, "size", "1000")
    cells = browser.execute_script(
        "const head = [...document.querySelectorAll('#rows th')].map(th => th.textContent);"
        "const at = (name) => head.indexOf(name);"
        "return [...document.querySelectorAll('#rows tbody tr')].map(tr => [Number(tr.dataset.i),"
        " tr.children[at('cost chosen cm')].textContent, tr.children[at('cost rejected cm')].textContent,"
        " tr.children[at('preferred safer cm')].textContent])"
    )
    preferred_safer = {
        i: (x["chosen_cost_cm"] < x["rejected_cost_cm"]) if x["margin_rm"] > 0
        else (x["rejected_cost_cm"] < x["chosen_cost_cm"]) if x["margin_rm"] < 0 else False
        for i, x in enumerate(lines)
    }  # fmt: skip
    assert len(cells) == len(lines)
    for i, chosen, rejected, safer in cells:
        assert float(chosen) == pytest.approx(lines[i]["chosen_cost_cm"], abs=5.001e-4)
        assert float(rejected) == pytest.approx(lines[i]["rejected_cost_cm"], abs=5.001e-4)
        assert safer == ("yes" if preferred_safer[i] else "no")
    choose(browser, "verdict", "costlier")
    assert sorted(shown(browser)) == [i for i, ok in preferred_safer.items() if not ok]


# --- images -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vision_dir(tmp_path_factory) -> Path:
    """A tiny Qwen2-VL RM evaluated on image pairs (RLAIF-V rows): three images over six rows, one of them
    larger than a thumbnail."""
    from rmkit.vlm import VisionRewardModel

    root = tmp_path_factory.mktemp("page_vision")
    torch.manual_seed(1)
    VisionRewardModel.from_pretrained(make_vlm(root / "backbone")).save_pretrained(root / "vrm")
    sizes = {"red": (56, 56), "blue": (84, 56), "green": (448, 336)}
    for colour, size in sizes.items():
        picture(colour, size).save(root / f"{colour}.png")
    rows = [
        {"question": f"What colour is picture {i}?", "image": f"{list(sizes)[i % 3]}.png",
         "chosen": list(sizes)[i % 3], "rejected": "purple" + " maybe" * i}
        for i in range(6)
    ]  # fmt: skip
    data = write_jsonl(root / "rlaif.jsonl", rows)
    evaluate(model=str(root / "vrm"), data=str(data), output_dir=str(root / "out"), bootstrap=50, plots=False)
    return root / "out"


def test_images_are_embedded_once_as_thumbnails_and_the_page_loads_nothing(vision_dir):
    text = (vision_dir / "report.html").read_text()
    assert text.count("data:image/jpeg;base64,") == 3  # three images, each once however many rows show it
    assert "img-src data:" in text and "default-src 'none'" in text  # images from the page itself only
    assert ".png" in text  # each image named as the data named it


def test_thumbnails_over_the_budget_are_named_and_counted(tmp_path):
    thumbnails = Thumbnails(budget=6000)
    indices = [
        thumbnails.add(picture(c, (300, 200), seed=k)) for k, c in enumerate(["red", "blue", "green", "red"])
    ]
    assert indices[0] == 0 and None in indices and len(thumbnails.urls) < 4
    assert sum(len(u) for u in thumbnails.urls) <= 6000
    assert thumbnails.note().startswith(f"{indices.count(None)} images not shown")
    assert thumbnails.add(picture("red", (300, 200), seed=0)) == 0  # the same image: the same thumbnail
    assert thumbnails.add(picture("red", (300, 200), seed=3)) is None  # left out once, counted once
    assert thumbnails.left_out == indices.count(None)


@pytest.mark.browser
def test_image_rows_show_their_thumbnails_decoded_with_no_network(browser, vision_dir, tmp_path):  # noqa: F811
    open_page(browser, vision_dir)  # no console error, no resource fetched
    assert assert_figures_equal_metrics(browser, vision_dir) > 5
    choose(browser, "size", "1000")
    images = browser.execute_script(
        "return [...document.querySelectorAll('#rows tbody tr')].map(tr => [Number(tr.dataset.i),"
        " [...tr.querySelectorAll('img.thumb')].map(i => [i.complete, i.naturalWidth, i.naturalHeight, i.alt])])"
    )
    lines = read_lines(vision_dir)
    assert len(images) == len(lines) == 6
    for i, imgs in images:
        assert len(imgs) == 1
        complete, width, height, alt = imgs[0]
        assert complete and 0 < width <= SIDE and 0 < height <= SIDE
        assert alt == ["red.png", "blue.png", "green.png"][(lines[i]["row"] - 1) % 3]  # rows count from 1
    assert (160, 120) in {(w, h) for _, imgs in images for _, w, h, _ in imgs}  # 448x336 downscaled
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
    choose(browser, "verdict", "wrong")
    browser.execute_script("document.querySelector('.controls').scrollIntoView()")
    screenshot(browser, "images", tmp_path)


def test_rmkit_report_of_a_vision_run_whose_images_are_gone_says_so(vision_dir, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(vision_dir, out)
    metrics = json.loads((out / "metrics.json").read_text())
    source = Path(metrics["data"]["rlaif"]["path"])
    shutil.copy(source, tmp_path / "rlaif.jsonl")  # the rows without their images beside them
    metrics["data"]["rlaif"]["path"] = str(tmp_path / "rlaif.jsonl")
    (out / "metrics.json").write_text(json.dumps(metrics))
    assert main(["report", str(out)]) == 0
    text = (out / "report.html").read_text()
    assert "Texts not shown for" in text and "cannot read the image file" in text
    assert "data:image/jpeg" not in text
