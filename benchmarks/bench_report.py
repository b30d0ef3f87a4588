"""report.html at scale: its size and the time to its first render in headless Chromium, for N pairs.

For each N (default 10,000 and 100,000) it writes a data file of N preference pairs (prompts and answers of
``--chars`` characters on average, in ``--subsets`` subsets), fills rmkit's own pair evaluation
(:class:`rmkit.kinds.pairwise.PairEvaluation`) with two models' random scores instead of running models,
writes ``metrics.json`` and ``scores.jsonl`` from it as ``rmkit eval`` does, then builds the page with
``rmkit report``'s code and opens it from ``file://`` in Debian's chromium (through chromedriver), the network
off. Printed per N: the page's size, its size per pair, the size of the texts it carries, the time to build it,
and the time from navigation start to the page having drawn its figures, plots and first page of rows (the
best of ``--repeats`` loads).

With ``--images K`` the rows are image pairs (RLAIF-V's columns), each showing one of K distinct pictures of
``--image-size`` pixels drawn in code; the page then carries their thumbnails, and the figures add the
thumbnails' share of the page and how many the budget left out.

    python benchmarks/bench_report.py [--pairs 10000 100000] [--chars 400] [--repeats 3] [--images 2000]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from rmkit.evaluation.page import write_page
from rmkit.files import write_json
from rmkit.kinds import Reading
from rmkit.kinds.pairwise import PairEvaluation

WORDS = [
    "the",
    "a",
    "reward",
    "model",
    "answer",
    "prompt",
    "because",
    "which",
    "first",
    "second",
    "longer",
    "shorter",
    "helpful",
    "harmless",
]


def text(rng: random.Random, chars: int) -> str:
    words: list[str] = []
    target = rng.randint(chars // 2, chars * 3 // 2)
    while sum(len(w) + 1 for w in words) < target:
        words.append(rng.choice(WORDS))
    return " ".join(words)


def pictures(root: Path, count: int, size: tuple[int, int]) -> list[str]:
    """``count`` distinct PNG pictures written to ``root``; their names."""
    from rmkit.data.synthetic import COLOURS, picture

    names = []
    for k in range(count):
        names.append(f"img{k}.png")
        picture(list(COLOURS)[k % len(COLOURS)], size, seed=k).save(root / names[-1])
    return names


def eval_dir(root: Path, pairs: int, chars: int, subsets: int, images: list[str]) -> Path:
    """An eval directory of ``pairs`` pairs and two models, written by rmkit's pair evaluation (with
    ``images``, image pairs: row i shows ``images[i % len(images)]``)."""
    rng, gen = random.Random(0), np.random.default_rng(0)
    data = root / "pairs.jsonl"
    rows = []
    with open(data, "w") as f:
        for i in range(pairs):
            row = {"subset": f"s{i % subsets}", "prompt": text(rng, chars // 2)}
            if images:  # RLAIF-V's columns
                row = {"subset": row["subset"], "question": row["prompt"], "image": images[i % len(images)]}
            row.update(chosen=text(rng, chars), rejected=text(rng, chars))
            f.write(json.dumps(row) + "\n")
            rows.append(row)
    config = SimpleNamespace(model=["a", "b"], data=[str(data)], bootstrap=50, seed=0)
    evaluation = PairEvaluation(config, ["a", "b"], ["pairs"])
    ds = evaluation.datasets["pairs"]
    ds.rows, ds.subsets, ds.has_subset_column = list(range(1, pairs + 1)), [r["subset"] for r in rows], True
    ds.lengths = [(len(r["chosen"]), len(r["rejected"])) for r in rows]
    lengths = np.asarray(ds.lengths, dtype=float)
    for label, bias in (("a", 0.002), ("b", 0.004)):
        ds.scores[label] = gen.normal(size=(pairs, 2)) + bias * lengths
        ds.truncated[label] = 0
    out = root / "out"
    out.mkdir()
    with open(out / "scores.jsonl", "w") as f:
        f.writelines(json.dumps(line) + "\n" for line in evaluation.lines())
    write_json(out / "metrics.json", evaluation.metrics())
    return out


def browser():
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or ""
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd(
        "Network.emulateNetworkConditions",
        {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
    )
    return driver


def first_render_ms(driver, page: Path) -> tuple[float, float]:
    """Milliseconds from navigation start to the data parsed, and to the page drawn."""
    driver.get("about:blank")
    driver.get(page.as_uri())  # returns once the page has loaded, its scripts run
    return tuple(
        float(x)
        for x in driver.execute_script("const d = document.body.dataset; return [d.parseMs, d.renderMs]")
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--chars", type=int, default=400, help="mean characters of an answer (prompt: half)")
    parser.add_argument("--subsets", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=0, help="distinct images over the rows (0: text pairs)")
    parser.add_argument("--image-size", type=int, nargs=2, default=[448, 336], metavar=("W", "H"))
    args = parser.parse_args()
    if not shutil.which("chromedriver"):
        print("needs chromium and chromedriver (Debian: apt-get install chromium chromium-driver)")
        return 1
    driver = browser()
    print(f"chromium headless, answers of {args.chars} characters on average, prompts of half that, 2 models")
    print(
        f"{'pairs':>8} {'page MB':>8} {'bytes/pair':>10} {'texts MB':>9} {'build s':>8} {'data read s':>12} "
        f"{'first render s':>15}" + (f" {'thumbnails MB':>14} {'left out':>9}" if args.images else "")
    )
    try:
        for n in args.pairs:
            with tempfile.TemporaryDirectory() as tmp:
                images = pictures(Path(tmp), args.images, tuple(args.image_size))
                out = eval_dir(Path(tmp), n, args.chars, args.subsets, images)
                texts = (Path(tmp) / "pairs.jsonl").stat().st_size
                start = time.perf_counter()
                page = write_page(out, Reading())
                build = time.perf_counter() - start
                size = page.stat().st_size
                parse, render = (
                    x / 1000 for x in min(first_render_ms(driver, page) for _ in range(args.repeats))
                )
                line = (
                    f"{n:>8} {size / 1e6:>8.1f} {size / n:>10.0f} {texts / 1e6:>9.1f} {build:>8.2f} {parse:>12.2f} "
                    f"{render:>15.2f}"
                )
                if args.images:
                    html = page.read_text()
                    thumbs = sum(len(u) for u in re.findall(r'"data:image/jpeg;base64,[^"]*"', html))
                    left = re.search(r"(\d+) images not shown", html)
                    line += f" {thumbs / 1e6:>14.2f} {left.group(1) if left else 0:>9}"
                print(line)
    finally:
        driver.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
