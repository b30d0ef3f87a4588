"""report.html: written by every rmkit eval and by rmkit report DIR, checked in a real headless Chromium.

The browser tests (marked ``browser``) start Debian's ``chromium`` through its ``chromedriver`` with the
network off, open each page from ``file://`` and read what it shows; they skip with the reason where the
browser, its driver or selenium is absent. ``RMKIT_DOC_SCREENSHOTS=1`` saves the screenshots they take into
docs/images (otherwise into the test's temporary directory).
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import make_llama, write_jsonl
from test_process import solutions, tiny
from test_ratings import rated_rows
from test_suites import rb1_rows, rb2_rows
from transformers import AutoModelForSequenceClassification, AutoTokenizer, LlamaForCausalLM

from rmkit import RewardModel, evaluate
from rmkit.cli import main
from rmkit.process import ProcessRewardModel
from rmkit.reporting.page import embedded_json

DOCS_IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"
TRICKY = "<script>window.hacked = 1</script></script><!-- <b>bold?</b> \u2028 & done"


def test_embedded_data_cannot_end_its_script_element():
    value = {"text": TRICKY, "list": ["</SCRIPT>", "<!--"], "n": 1.5}
    text = embedded_json(value)
    assert "<" not in text and ">" not in text and "\u2028" not in text
    assert json.loads(text) == value


# --- evaluation directories, one per kind ---------------------------------------------------------------


@pytest.fixture(scope="module")
def pair_models(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("page_rms")
    dirs = []
    for seed in (0, 1):
        backbone = make_llama(root / f"backbone{seed}", seed=seed)
        torch.manual_seed(seed)
        RewardModel.from_pretrained(backbone).save_pretrained(root / f"m{seed}" / "rm")
        dirs.append(root / f"m{seed}" / "rm")
    return dirs


def pair_rows(n: int) -> list[dict]:
    return [
        {
            "subset": ["chat", "safety", "math"][i % 3],
            "prompt": f"Question {i}: {TRICKY}" if i == 0 else f"Question {i}: what is {i} plus {i}?",
            "chosen": f"It is {2 * i}." + " Indeed." * (i % 5),
            "rejected": ("<b>bold?</b> " if i == 0 else "") + f"Maybe {i}." + " Long story." * (i % 7),
        }
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def pairs_dir(pair_models, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("page_pairs")
    data = write_jsonl(root / "pairs.jsonl", pair_rows(30))
    evaluate(model=[str(m) for m in pair_models], data=str(data), output_dir=str(root / "out"), bootstrap=50)
    return root / "out"


@pytest.fixture(scope="module")
def kind_dirs(pair_models, tmp_path_factory) -> dict[str, Path]:
    """One eval directory of each other kind: a process RM, a multi-attribute RM on ratings, two suites
    (RewardBench 2's subsets, RewardBench's sections)."""
    root = tmp_path_factory.mktemp("page_kinds")
    torch.manual_seed(4)
    prm = ProcessRewardModel.from_pretrained(tiny(root / "lm", LlamaForCausalLM))
    prm.save_pretrained(root / "prm")
    backbone = make_llama(root / "attr_backbone")
    torch.manual_seed(2)
    names = ["helpfulness", "correctness", "verbosity"]
    attr = AutoModelForSequenceClassification.from_pretrained(
        backbone, num_labels=3, id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)}
    )
    RewardModel(attr, AutoTokenizer.from_pretrained(backbone)).save_pretrained(root / "attr")
    runs = {
        "process": (root / "prm", write_jsonl(root / "labelled.jsonl", solutions(12))),
        "rated": (root / "attr", write_jsonl(root / "rated.jsonl", rated_rows(12, 3))),
        "suite": (pair_models[0], write_jsonl(root / "reward-bench-2.jsonl", rb2_rows())),
        "rewardbench": (pair_models[0], write_jsonl(root / "filtered.jsonl", rb1_rows())),
    }
    # this random PRM scores every step about 0.483: a threshold there makes some solutions right, some wrong
    options = {"process": {"threshold": 0.4825}}
    for kind, (model, data) in runs.items():
        out = str(root / kind)
        evaluate(
            model=str(model),
            data=str(data),
            output_dir=out,
            bootstrap=50,
            plots=False,
            **options.get(kind, {}),
        )
    return {kind: root / kind for kind in runs}


def read_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]


def test_every_eval_writes_one_self_contained_page(pairs_dir, kind_dirs):
    for out in [pairs_dir, *kind_dirs.values()]:
        text = (out / "report.html").read_text()
        assert text.count("<script") == 2 and "src=" not in text and "<link" not in text
        assert "default-src 'none'" in text  # the page may load nothing, even if a script asked


def test_no_page_writes_none(pair_models, tmp_path, capsys):
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(3))
    evaluate(
        model=str(pair_models[0]), data=str(data), output_dir=str(tmp_path / "out"), page=False, plots=False
    )
    assert not (tmp_path / "out" / "report.html").exists() and (tmp_path / "out" / "report.md").exists()
    assert capsys.readouterr().out.endswith(
        f"wrote metrics.json, scores.jsonl and report.md to {tmp_path / 'out'}\n"
    )


def test_rmkit_report_builds_the_same_page_again_and_refuses_other_directories(pairs_dir, tmp_path, capsys):
    before = (pairs_dir / "report.html").read_text()
    (pairs_dir / "report.html").unlink()
    assert main(["report", str(pairs_dir)]) == 0
    assert (pairs_dir / "report.html").read_text() == before
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"rmkit report: error: {tmp_path} holds no metrics.json: it is not an rmkit eval output directory"
    )


def test_a_broken_eval_directory_is_named_in_one_line(pairs_dir, tmp_path, capsys):
    out = tmp_path / "broken"
    out.mkdir()
    shutil.copy(pairs_dir / "metrics.json", out / "metrics.json")
    lines = (pairs_dir / "scores.jsonl").read_text().splitlines()
    (out / "scores.jsonl").write_text("\n".join([lines[0], lines[1][:20], *lines[2:]]) + "\n")
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"rmkit report: error: {out / 'scores.jsonl'}, line 2: not JSON")
        and err.count("\n") == 1
    )


def test_a_page_whose_data_file_has_gone_says_so(pairs_dir, tmp_path):
    out = tmp_path / "copy"
    out.mkdir()
    metrics = json.loads((pairs_dir / "metrics.json").read_text())
    metrics["data"]["pairs"]["path"] = str(tmp_path / "gone.jsonl")
    (out / "metrics.json").write_text(json.dumps(metrics))
    shutil.copy(pairs_dir / "scores.jsonl", out / "scores.jsonl")
    assert main(["report", str(out)]) == 0
    assert f"Texts not shown for {tmp_path / 'gone.jsonl'}" in (out / "report.html").read_text()


# --- in the browser -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the test extra)")
    binary = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        pytest.skip("no chromium with chromedriver here (Debian: apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd(
        "Network.emulateNetworkConditions",
        {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
    )
    yield driver
    driver.quit()


def open_page(driver, out: Path) -> None:
    driver.get((out / "report.html").as_uri())
    assert driver.execute_script("return document.body.getAttribute('data-ready')") == "1"
    errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == []
    assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0


def screenshot(driver, name: str, tmp_path: Path) -> None:
    """The page as shown, a PNG of 64 colours (small enough for the docs)."""
    from PIL import Image

    folder = DOCS_IMAGES if os.environ.get("RMKIT_DOC_SCREENSHOTS") else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    with Image.open(io.BytesIO(driver.get_screenshot_as_png())) as shot:
        assert shot.size[0] >= 1000 and len(set(shot.resize((64, 64)).getdata())) > 5
        shot.convert("RGB").quantize(64).save(folder / f"report-{name}.png", optimize=True)


def assert_figures_equal_metrics(driver, out: Path) -> int:
    metrics = json.loads((out / "metrics.json").read_text())
    cells = driver.execute_script(
        "return [...document.querySelectorAll('td[data-key]')].map(td => [td.dataset.key, td.textContent])"
    )
    for key, text in cells:
        value = metrics
        for part in json.loads(key):
            value = value[part]
        if value is None:
            assert text == "–", key
        elif isinstance(value, list):
            lo, hi = (float(x) for x in text.strip("[]").split(","))
            assert (lo, hi) == pytest.approx(value, abs=5.001e-4), key
        else:
            assert float(text) == pytest.approx(value, abs=5.001e-4), key
    return len(cells)


def choose(driver, field: str, value: str) -> None:
    driver.execute_script(
        "const e = document.getElementById('f-' + arguments[0]); e.value = arguments[1];"
        "e.dispatchEvent(new Event(e.tagName === 'SELECT' ? 'change' : 'input'));",
        field,
        value,
    )


def shown(driver) -> list[int]:
    """The line numbers (0-based, scores.jsonl's order) of the rows the table shows, top to bottom."""
    return driver.execute_script(
        "return [...document.querySelectorAll('#rows tbody tr')].map(tr => Number(tr.dataset.i))"
    )


@pytest.mark.browser
def test_pairs_page_shows_metrics_and_filters_and_sorts_rows(browser, pairs_dir, tmp_path):
    open_page(browser, pairs_dir)
    metrics = json.loads((pairs_dir / "metrics.json").read_text())
    assert assert_figures_equal_metrics(browser, pairs_dir) > 50
    keys = browser.execute_script(
        "return [...document.querySelectorAll('td[data-key]')].map(td => JSON.parse(td.dataset.key))"
    )
    assert ["results", "rm-2", "pairs", "subsets", "math", "accuracy_ci"] in keys
    assert ["comparisons", "rm-2 vs rm", "pairs", "difference_ci"] in keys
    assert metrics["results"]["rm"]["pairs"]["all"]["pairs"] == 30
    screenshot(browser, "pairs", tmp_path)
    choose(browser, "verdict", "wrong")
    browser.execute_script("document.querySelector('.controls').scrollIntoView()")
    screenshot(browser, "pairs-rows", tmp_path)
    choose(browser, "verdict", "all")

    lines = read_lines(pairs_dir)
    choose(browser, "size", "1000")
    default = shown(browser)  # most confident errors first: margins ascending
    margins = [lines[i]["margin_rm"] for i in default]
    assert len(default) == 30 and margins == sorted(margins)
    choose(browser, "sort", "margin_desc")
    assert [lines[i]["margin_rm"] for i in shown(browser)] == sorted(margins, reverse=True)

    choose(browser, "verdict", "wrong")
    assert sorted(shown(browser)) == [i for i, x in enumerate(lines) if not x["margin_rm"] > 0]
    choose(browser, "verdict", "right")
    assert sorted(shown(browser)) == [i for i, x in enumerate(lines) if x["margin_rm"] > 0]
    choose(browser, "verdict", "all")
    choose(browser, "group", "pairs / math")
    assert sorted(shown(browser)) == [i for i, x in enumerate(lines) if x["subset"] == "math"]
    choose(browser, "group", "")
    choose(browser, "lmin", "40")
    long = [i for i, x in enumerate(lines) if max(x["chosen_length"], x["rejected_length"]) >= 40]
    assert sorted(shown(browser)) == long and 0 < len(long) < 30
    choose(browser, "lmin", "")
    choose(browser, "mmin", "0")
    assert sorted(shown(browser)) == [i for i, x in enumerate(lines) if x["margin_rm"] >= 0]
    choose(browser, "mmin", "")
    choose(browser, "q", "question 1")
    assert sorted(shown(browser)) == [i for i in range(30) if f"Question {i}:".startswith("Question 1")]


@pytest.mark.browser
def test_html_in_the_data_is_shown_as_text(browser, pairs_dir):
    open_page(browser, pairs_dir)
    choose(browser, "q", "window.hacked")
    assert shown(browser) == [0]
    text = browser.execute_script("return document.querySelector('#rows tbody tr').textContent")
    assert "<script>window.hacked = 1</script></script><!-- <b>bold?</b>" in text
    assert browser.execute_script("return window.hacked === undefined && document.scripts.length") == 2
    assert browser.execute_script("return document.querySelectorAll('#rows b').length") == 3  # our labels


@pytest.mark.browser
def test_two_model_page_lists_exactly_the_flipped_pairs(browser, pairs_dir):
    open_page(browser, pairs_dir)
    lines = read_lines(pairs_dir)
    gained = [i for i, x in enumerate(lines) if x["margin_rm-2"] > 0 and not x["margin_rm"] > 0]
    lost = [i for i, x in enumerate(lines) if not x["margin_rm-2"] > 0 and x["margin_rm"] > 0]
    assert gained or lost
    flips = browser.execute_script("return document.getElementById('flips').textContent")
    assert f"rm-2 gets {len(gained)} pairs right that rm gets wrong, and {len(lost)} wrong" in flips
    choose(browser, "size", "1000")
    choose(browser, "model", "rm-2")
    choose(browser, "verdict", "gained")
    assert sorted(shown(browser)) == gained
    choose(browser, "verdict", "lost")
    assert sorted(shown(browser)) == lost


@pytest.mark.browser
def test_a_point_of_a_plot_opens_its_row(browser, pairs_dir):
    open_page(browser, pairs_dir)
    canvas = browser.find_element("css selector", "#plots canvas")
    assert int(canvas.get_attribute("data-points")) == 60  # chosen and rejected of 30 pairs
    picked = browser.execute_script(
        "const c = arguments[0], r = c.getBoundingClientRect(); let hit = null;"
        "for (let y = 10; y < c.height - 40 && hit === null; y += 2) for (let x = 40; x < c.width - 10; x += 2) {"
        "  const p = c.getContext('2d').getImageData(x, y, 1, 1).data; if (p[3] > 0 && p[1] > p[0]) {"
        "  c.dispatchEvent(new MouseEvent('click', {clientX: r.left + x, clientY: r.top + y})); hit = [x, y]; break; } }"
        "return hit;",
        canvas,
    )
    assert picked is not None
    assert len(shown(browser)) == 1
    assert "one row picked" in browser.execute_script(
        "return document.getElementById('rows-info').textContent"
    )


@pytest.mark.browser
@pytest.mark.parametrize("kind", ["process", "rated", "suite", "rewardbench"])
def test_each_kind_page_opens_with_its_figures(browser, kind_dirs, kind, tmp_path):
    out = kind_dirs[kind]
    open_page(browser, out)
    assert assert_figures_equal_metrics(browser, out) > 5
    lines = read_lines(out)
    choose(browser, "size", "1000")
    assert sorted(shown(browser)) == list(range(len(lines)))
    if kind == "process":  # a solution is right when the PRM finds its first wrong step (or none) exactly
        choose(browser, "verdict", "wrong")
        wrong = [i for i, x in enumerate(lines) if x["predicted_error"] != x["first_error"]]
        assert sorted(shown(browser)) == wrong and 0 < len(wrong) < len(lines)
        choose(browser, "verdict", "right")
        assert sorted(shown(browser)) == sorted(set(range(len(lines))) - set(wrong))
    else:  # no verdict a row of ratings or of a suite's candidates would have
        assert browser.execute_script("return document.getElementById('f-verdict')") is None
    count = "return document.querySelectorAll(arguments[0]).length"
    if kind in ("process", "rated"):
        assert browser.execute_script(count, "#plots canvas") >= 1
    else:
        assert browser.execute_script(count, "#leaderboard td[data-key]") > 1
        assert browser.execute_script(count, "#sections td[data-key]") == (8 if kind == "rewardbench" else 0)
    screenshot(browser, kind, tmp_path)
