"""``rmkit eval --suite``: the public benchmarks' numbers, equal to hand computations of their own rules.

The rules are tested as pure functions with scores chosen by hand; the runner end to end with a tiny Llama
RM, its numbers recomputed here from the scores it wrote. Fixtures mimic the benchmarks' columns and subset
names (the real files are not in the repository)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import judgebench_rows, write_jsonl

from rmkit.errors import DataError, RMKitError
from rmkit.metrics.benchmarks import (
    REWARDBENCH_COUNTS,
    best_of_n_result,
    judgebench_right,
    pair_right,
    rmbench_figures,
    rmbench_matrix,
    ties_score,
    ties_units,
    weighted_sections,
)

# --- the rules, by hand ----------------------------------------------------------------------------------


def test_rewardbench_counts_a_tie_as_wrong_and_weights_sections_by_example_counts():
    assert pair_right(1.0, 0.5) == 1 and pair_right(0.5, 0.5) == 0 and pair_right(math.nan, 0.0) == 0
    subsets = dict.fromkeys(REWARDBENCH_COUNTS, 1.0)
    subsets.update({"math-prm": 0.5, "hep-cpp": 0.0, "alpacaeval-easy": 0.0, "donotanswer": 0.25})
    out = weighted_sections(subsets)
    # Reasoning: math-prm weighs 984 against 6 × 164 for the code subsets.
    reasoning = (0.5 * 984 + 0 * 164 + 1.0 * 164 * 5) / (984 + 6 * 164)
    chat = (0 * 100 + 95 + 95 + 28 + 40) / (100 + 95 + 95 + 28 + 40)
    safety = (100 + 100 + 154 + 250 + 0.25 * 136) / (100 + 100 + 154 + 250 + 136)
    assert out["sections"] == pytest.approx(
        {"Chat": chat, "Chat Hard": 1.0, "Safety": safety, "Reasoning": reasoning}
    )
    assert out["score"] == pytest.approx((chat + 1.0 + safety + reasoning) / 4)
    assert "prior" not in out
    prior = {"anthropic_helpful": 0.6, "anthropic_hhh": 0.8, "shp": 0.4, "summarize": 0.6}
    older = weighted_sections({**subsets, **prior})
    assert older["prior"] == pytest.approx(0.6)
    assert older["score_with_prior"] == pytest.approx((2 * (chat + 1.0 + safety + reasoning) + 0.6) / 9)


def test_rewardbench_with_a_section_missing_has_no_score():
    out = weighted_sections({"alpacaeval-easy": 1.0, "mt-bench-hard": 1.0, "donotanswer": 1.0})
    assert out["sections"]["Reasoning"] is None and out["score"] is None
    assert out["sections"]["Chat"] == 1.0  # the official helper weighs the subsets present


def test_rewardbench2_rows_earn_a_fraction_when_the_chosen_answer_ties_for_the_top():
    assert best_of_n_result([2.0, 1.0, 0.0, -1.0]) == 1
    assert best_of_n_result([2.0, 2.0, 0.0, -1.0]) == 0.5
    assert best_of_n_result([2.0, 2.0, 2.0, -1.0]) == pytest.approx(1 / 3)
    assert best_of_n_result([1.0, 2.0, 0.0, 0.0]) == 0
    assert best_of_n_result([2.0, math.nan, 0.0, 0.0]) == 0  # a missing score is a counted wrong, no crash


def ties_case():
    """Two prompts. Prompt 0: the tied margin (1.0) beats the spread (0.5), the ref margin (0.2) does not:
    cp counts it, cph does not. Prompt 1: both margins beat the spread."""
    return [
        ("ref:0", [1.2, 1.0], 1),  # margin 0.2, accurate
        ("tied:0", [3.0, 2.5, 1.5], 2),  # correct 3.0, 2.5: spread 0.5; margin 2.5 - 1.5 = 1.0
        ("ref:1", [5.0, 1.0, 0.0], 1),  # margin 4.0
        ("tied:1", [4.0, 3.5, 3.9, 1.0], 3),  # spread 0.5, margin 3.5 - 1.0 = 2.5
    ]


def test_the_ties_formula_where_cph_differs_from_cp():
    ids, units = ties_units(ties_case())
    out = ties_score(units)
    assert ids == [0, 1]
    assert out["ref_accuracy"] == 1 and out["tied_accuracy"] == 1
    assert out["correctness_preferred"] == 1.0 and out["correctness_preferred_hard"] == 0.5
    margin = (math.tanh(min(0.2, 1.0) / 0.5 - 1) + math.tanh(min(4.0, 2.5) / 0.5 - 1)) / 2
    assert out["correctness_margin"] == pytest.approx(margin)
    assert out["score"] == pytest.approx(0.3 + 0.3 + 0.2 * 1.0 + 0.2 * 0.5 + 0.01 * margin)


def test_ties_follow_v0_1_4_where_the_correct_answers_score_alike():
    """A tied prompt whose correct answers score the same (spread 0) is left out of the margin term
    (v0.1.4); cp and cph still count it (its margin is above 0)."""
    rows = [("ref:0", [1.0, 0.0], 1), ("tied:0", [2.0, 2.0, 0.0], 2)]
    out = ties_score(ties_units(rows)[1])
    assert out["correctness_margin"] == 0 and out["correctness_preferred"] == 1
    assert out["score"] == pytest.approx(1.0)


def test_ties_with_a_missing_score_count_it_as_wrong_without_crashing():
    rows = [("ref:0", [math.nan, 0.0], 1), ("tied:0", [2.0, 1.9, 0.0], 2)]
    out = ties_score(ties_units(rows)[1])
    assert out["ref_accuracy"] == 0 and out["tied_accuracy"] == 1 and out["correctness_preferred_hard"] == 0


def test_rm_bench_tiers_from_the_three_by_three_matrix():
    # Row 1: chosen styles 1, 2, 3 against rejected 0.5, 1.5, 2.5; row 2: every chosen answer wins.
    m1 = rmbench_matrix([1, 2, 3], [0.5, 1.5, 2.5])
    assert m1.tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    m2 = rmbench_matrix([9, 9, 9], [0, 0, 0])
    out = rmbench_figures(np.stack([m1, m2]))
    assert out["hard"] == pytest.approx((0 + 1) / 2)  # upper triangle: 0 of 3, then 3 of 3
    assert out["normal"] == pytest.approx(1.0)
    assert out["easy"] == pytest.approx(1.0)
    assert out["score"] == pytest.approx((0.5 + 1 + 1) / 3)


def test_judgebench_judges_both_orders_so_a_tie_is_never_right():
    assert judgebench_right(2.0, 1.0, "A>B") == 1 and judgebench_right(2.0, 1.0, "B>A") == 0
    assert judgebench_right(1.0, 2.0, "B>A") == 1
    assert judgebench_right(1.0, 1.0, "A>B") == 0 and judgebench_right(1.0, 1.0, "B>A") == 0


# --- the files ------------------------------------------------------------------------------------------

RB2 = ["Factuality", "Precise IF", "Math", "Safety", "Focus"]


def rb2_rows(ties: bool = True) -> list[dict]:
    rows = []
    for k, subset in enumerate(s for s in RB2 for _ in range(4)):
        rows.append(
            {
                "id": str(k),
                "prompt": f"Question {k} on {subset.lower()}: what is {k} plus {k}?",
                "chosen": [f"It is {2 * k}, since {k} and {k} make {2 * k}."],
                "rejected": [f"It is {2 * k + j}." + " Surely." * j for j in (1, 2, 3)],
                "num_correct": 1,
                "subset": subset,
            }
        )
    if ties:
        for p in range(3):
            rows.append({"id": f"ref:{p}", "prompt": f"Name prime {p}.", "chosen": [str([2, 3, 5][p])],
                         "rejected": ["4", "6", "9"], "num_correct": 1, "subset": "Ties"})  # fmt: skip
            rows.append({"id": f"tied:{p}", "prompt": f"Name any prime {p}.", "chosen": ["2", "3", "5"],
                         "rejected": ["4", "8"], "num_correct": 3, "subset": "Ties"})  # fmt: skip
    return rows


def evaluate(tmp_path, model, data, **options):
    import rmkit

    out = tmp_path / options.pop("out", "eval")
    options = {"bootstrap": 50, "plots": False, **options}
    metrics = rmkit.evaluate(
        model=[str(m) for m in model], data=[str(d) for d in data], output_dir=str(out), **options
    )
    return metrics, out


def by_hand(rows: list[dict], scores: list[list[float]]) -> dict[str, float]:
    """RewardBench 2 by hand: each non-Ties subset the mean of 1/k results, Ties by the formula."""
    per: dict[str, list[float]] = {}
    ties = []
    for row, s in zip(rows, scores, strict=True):
        if row["subset"] == "Ties":
            ties.append((row["id"], s, row["num_correct"]))
        else:
            top = max(s)
            per.setdefault(row["subset"], []).append(1 / s.count(top) if s[0] == top else 0.0)
    out = {k: sum(v) / len(v) for k, v in per.items()}
    if ties:
        out["Ties"] = ties_score(ties_units(ties)[1])["score"]
    return out


def test_rewardbench2_end_to_end_is_detected_scored_and_written_as_its_runner_writes(rm_path, tmp_path):
    rows = rb2_rows()
    data = write_jsonl(tmp_path / "reward-bench-2.jsonl", rows)
    metrics, out = evaluate(tmp_path, [rm_path], [data])
    block = metrics["suite"]
    assert block["name"] == "rewardbench2"
    lines = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert [line["id"] for line in lines] == [r["id"] for r in rows]
    assert all(
        len(line["scores"]) == len(r["chosen"]) + len(r["rejected"])
        for line, r in zip(lines, rows, strict=True)
    )
    hand = by_hand(rows, [line["scores"] for line in lines])
    (official,) = block["models"].values()
    assert {k: v["score"] for k, v in official["subsets"].items()} == pytest.approx(hand)
    assert official["score"] == pytest.approx(sum(hand.values()) / 6)
    assert official["missing"] == [] and official["non_finite"]["rows"] == 0
    lo, hi = official["score_ci"]
    assert lo <= official["score"] <= hi
    results = json.loads((out / "rewardbench2_results.json").read_text())
    assert results["model"] == str(rm_path) and results["Ties"] == pytest.approx(hand["Ties"])
    report = (out / "report.md").read_text()
    assert report.startswith("# RewardBench 2\n\n| Model ") and report.splitlines()[2].rstrip(" |").endswith(
        "Ties"
    )
    assert not (out / ".partial").exists()


def test_the_scores_do_not_depend_on_batching_or_prefix_sharing(rm_path, tmp_path):
    data = write_jsonl(tmp_path / "rb2.jsonl", rb2_rows())
    a, _ = evaluate(tmp_path, [rm_path], [data], out="a")
    b, _ = evaluate(tmp_path, [rm_path], [data], out="b", prefix_sharing=False, batch_tokens=64)
    sa, sb = (next(iter(m["suite"]["models"].values()))["subsets"] for m in (a, b))
    assert {k: v["score"] for k, v in sa.items()} == pytest.approx(
        {k: v["score"] for k, v in sb.items()}, abs=1e-6
    )


def test_a_missing_subset_is_reported_and_the_score_left_undefined(rm_path, tmp_path):
    data = write_jsonl(tmp_path / "rb2.jsonl", rb2_rows(ties=False))
    metrics, out = evaluate(tmp_path, [rm_path], [data], suite="rewardbench2")
    (official,) = metrics["suite"]["models"].values()
    assert official["missing"] == ["Ties"] and official["score"] is None
    assert official["leaderboard"]["Ties"] is None and official["leaderboard"]["Math"] is not None
    assert "**Missing subsets**" in (out / "report.md").read_text()


def test_bad_rows_are_named_or_skipped_and_counted(rm_path, tmp_path):
    rows = rb2_rows()
    rows[2] = {**rows[2], "chosen": []}
    rows[-1] = {**rows[-1], "id": "7"}
    data = write_jsonl(tmp_path / "rb2.jsonl", rows)
    with pytest.raises(DataError) as e:
        evaluate(tmp_path, [rm_path], [data], suite="rewardbench2")
    assert "rb2.jsonl" in str(e.value) and "row 3" in str(e.value) and "chosen" in str(e.value)
    metrics, out = evaluate(tmp_path, [rm_path], [data], suite="rewardbench2", on_error="skip", out="skip")
    assert metrics["data"]["rb2"]["skipped"] == 2 and metrics["data"]["rb2"]["rows"] == len(rows) - 2
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert [(r["row"], r["field"]) for r in rejects] == [(3, "chosen"), (len(rows), "id")]
    unknown = write_jsonl(tmp_path / "unknown.jsonl", [{**rows[0], "subset": "Chat"}])
    with pytest.raises(DataError, match="unknown subset 'Chat'"):
        evaluate(tmp_path, [rm_path], [unknown], suite="rewardbench2", out="unknown")


def rb1_rows() -> list[dict]:
    subsets = ["alpacaeval-easy", "mt-bench-hard", "refusals-dangerous", "math-prm", "hep-python"]
    return [
        {
            "prompt": f"Say something about {k}.",
            "chosen": f"Here is a careful answer about {k}.",
            "rejected": f"No {k}." * (1 + k % 3),
            "chosen_model": "a",
            "rejected_model": "b",
            "subset": subsets[k % len(subsets)],
            "id": k,
        }  # fmt: skip
        for k in range(20)
    ]


def test_rewardbench_end_to_end_and_suite_none_gives_plain_pairs(rm_path, tmp_path):
    rows = rb1_rows()
    data = write_jsonl(tmp_path / "filtered.jsonl", rows)
    metrics, out = evaluate(tmp_path, [rm_path], [data])
    (official,) = metrics["suite"]["models"].values()
    lines = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    right: dict[str, list[float]] = {}
    for row, line in zip(rows, lines, strict=True):
        right.setdefault(row["subset"], []).append(float(line["scores"][0] > line["scores"][1]))
    hand = {k: sum(v) / len(v) for k, v in right.items()}
    assert {k: v["score"] for k, v in official["subsets"].items()} == pytest.approx(hand)
    assert official["sections"]["Reasoning"]["score"] == pytest.approx(
        (hand["math-prm"] * 984 + hand["hep-python"] * 164) / (984 + 164)
    )
    plain, _ = evaluate(tmp_path, [rm_path], [data], suite="none", out="plain")
    assert "suite" not in plain and next(iter(plain["results"].values()))["filtered"]["all"]["pairs"] == 20


def test_judgebench_and_rm_bench_files_are_detected_and_scored_by_their_rules(rm_path, tmp_path):
    pairs = judgebench_rows(9)
    data = write_jsonl(tmp_path / "judgebench.jsonl", pairs)
    metrics, out = evaluate(tmp_path, [rm_path], [data])
    (official,) = metrics["suite"]["models"].values()
    lines = [json.loads(line)["scores"] for line in (out / "scores.jsonl").read_text().splitlines()]
    right = [judgebench_right(a, b, p["label"]) for (a, b), p in zip(lines, pairs, strict=True)]
    assert official["score"] == pytest.approx(sum(right) / len(right))
    assert official["subsets"]["mmlu-pro"]["score"] == pytest.approx(sum(right[0::3]) / 3)
    judged = [json.loads(line) for line in (out / "judgebench_results.jsonl").read_text().splitlines()]
    assert len(judged) == 9 and len(judged[0]["judgments"]) == 2

    rows = [
        {
            "id": k,
            "prompt": f"Explain {k}.",
            "domain": ["chat", "math", "code", "safety-refuse"][k % 4],
            "chosen": [f"{k} short.", f"{k} is explained at length.", f"**{k}** is explained."],
            "rejected": [f"{k}?", f"{k} is wrong at length.", f"**{k}** is wrong."],
        }  # fmt: skip
        for k in range(8)
    ]
    data = write_jsonl(tmp_path / "total_dataset.jsonl", rows)
    metrics, out = evaluate(tmp_path, [rm_path], [data], out="rmb")
    (official,) = metrics["suite"]["models"].values()
    lines = [json.loads(line)["scores"] for line in (out / "scores.jsonl").read_text().splitlines()]
    domains = {}
    for row, s in zip(rows, lines, strict=True):
        domains.setdefault(row["domain"].split("-")[0], []).append(rmbench_matrix(s[:3], s[3:]))
    hand = {d: rmbench_figures(np.stack(m)) for d, m in domains.items()}
    assert official["score"] == pytest.approx(sum(h["score"] for h in hand.values()) / 4)
    assert official["tiers"]["hard"] == pytest.approx(sum(h["hard"] for h in hand.values()) / 4)


def test_a_second_model_with_the_same_tokenizer_reuses_the_tokenisation(rm_path, tmp_path):
    from rmkit.evaluation import suite as suite_module

    data = write_jsonl(tmp_path / "rb2.jsonl", rb2_rows())
    seen = []
    real = suite_module.SuiteEvaluation.add

    def add(self, kind, model, label, name, rejects):
        real(self, kind, model, label, name, rejects)
        seen.append(sum(len(v) for v in self.memo.values()))

    suite_module.SuiteEvaluation.add = add
    try:
        both, _ = evaluate(tmp_path, [rm_path, rm_path], [data])
    finally:
        suite_module.SuiteEvaluation.add = real
    assert seen[0] == seen[1] == len(rb2_rows())  # the second model prepared nothing new
    one, _ = evaluate(tmp_path, [rm_path], [data], out="one")
    first, second = both["suite"]["models"].values()
    assert first["score"] == second["score"] == next(iter(one["suite"]["models"].values()))["score"]


def test_a_killed_suite_run_resumes_without_scoring_its_rows_again(rm_path, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    import rmkit

    rows = rb2_rows() * 40  # three chunks (rmkit.evaluation.suite.CHUNK)
    data = write_jsonl(tmp_path / "rb2.jsonl", rows)
    out = tmp_path / "eval"
    command = ["eval", "--model", str(rm_path), "--data", str(data), "--output-dir", str(out), "--no-plots",
               "--bootstrap", "20"]  # fmt: skip
    partial = out / ".partial" / f"{rm_path.name}--rb2.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "rmkit.cli", *command], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    while proc.poll() is None and not (partial.exists() and partial.read_text().count("\n") > 20):
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    done = partial.read_text().count("\n") - 1
    assert 0 < done < len(rows)
    with pytest.raises(RMKitError, match="--resume"):
        evaluate(tmp_path, [rm_path], [data], out="eval")
    resumed = rmkit.evaluate(model=[str(rm_path)], data=[str(data)], output_dir=str(out), resume=True,
                             bootstrap=20, plots=False)  # fmt: skip
    assert next(iter(resumed["suite"]["resumed_rows"].values())) >= done - 1
    fresh, _ = evaluate(tmp_path, [rm_path], [data], out="fresh", bootstrap=20)
    assert [m["score"] for m in resumed["suite"]["models"].values()] == pytest.approx(
        [m["score"] for m in fresh["suite"]["models"].values()]
    )
    a, b = (
        [json.loads(line) for line in (d / "scores.jsonl").read_text().splitlines()]
        for d in (out, tmp_path / "fresh")
    )
    assert [(x["row"], x["id"]) for x in a] == [(y["row"], y["id"]) for y in b]  # every row once, in order
    assert [x["scores"] for x in a] == [pytest.approx(y["scores"], abs=1e-6) for y in b]


def test_the_suite_choices_of_the_option_are_the_registry_s():
    import dataclasses

    from rmkit.evaluation.config import EvalConfig
    from rmkit.suites import CHOICES

    (field,) = [f for f in dataclasses.fields(EvalConfig) if f.name == "suite"]
    assert tuple(field.metadata["choices"]) == CHOICES


def test_the_rewardbench_package_computes_the_same_numbers_from_the_same_scores():
    pytest.importorskip("rewardbench", reason="the rewardbench package is not installed")
    from datasets import Dataset
    from rewardbench.utils import calculate_scores_per_section, process_single_model

    from rmkit.metrics.benchmarks import REWARDBENCH_SECTIONS

    rows = [{"id": i, "scores": s, "num_correct": n} for i, s, n in ties_case()]
    _, theirs = process_single_model(Dataset.from_list(rows))
    assert ties_score(ties_units(ties_case())[1])["score"] == pytest.approx(theirs)
    subsets = dict.fromkeys(REWARDBENCH_COUNTS, 0.75) | {"math-prm": 0.5}
    sections = calculate_scores_per_section(REWARDBENCH_COUNTS, REWARDBENCH_SECTIONS, subsets)
    assert weighted_sections(subsets)["sections"] == pytest.approx(sections)


def test_processbench_splits_give_their_f1_and_the_mean_of_the_four(llama_path, tmp_path):
    import torch

    from rmkit.metrics.benchmarks import harmonic
    from rmkit.metrics.graded import first_below
    from rmkit.process import ProcessRewardModel

    torch.manual_seed(4)
    prm_dir = tmp_path / "prm"
    ProcessRewardModel.from_pretrained(llama_path).save_pretrained(prm_dir)
    prm = ProcessRewardModel.from_pretrained(prm_dir)
    words = ["two", "plus", "is", "four", "so", "the", "answer"]
    files, expected = [], {}
    for s, split in enumerate(("gsm8k", "math", "olympiadbench", "omnimath")):
        rows = [
            {
                "id": f"{split}-{i}",
                "generator": "m",
                "problem": f"What is {i} plus {s}?",
                "steps": [" ".join(words[(i + j + k) % 7] for k in range(2 + j)) for j in range(1 + i % 3)],
                "label": [-1, 0, 1][i % 3] if i % 3 else -1,
                "final_answer_correct": i % 2 == 0,
            }  # fmt: skip
            for i in range(9)
        ]
        files.append(write_jsonl(tmp_path / f"{split}.jsonl", rows))
        matches = {True: [], False: []}
        for r in rows:
            scores = prm.step_scores([{"role": "user", "content": r["problem"]}], r["steps"])
            matches[r["label"] != -1].append(first_below(scores, 0.5) == r["label"])
        expected[split] = harmonic(*(sum(m) / len(m) for m in (matches[True], matches[False])))
    metrics, out = evaluate(tmp_path, [prm_dir], files)
    (official,) = metrics["suite"]["models"].values()
    assert metrics["suite"]["name"] == "processbench"
    assert {k: v["score"] for k, v in official["subsets"].items()} == pytest.approx(expected, abs=1e-9)
    assert official["score"] == pytest.approx(sum(expected.values()) / 4)


def test_the_hub_s_parquet_files_are_read_as_downloaded(rm_path, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is not installed")
    import pyarrow as pa

    rows = rb2_rows()
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "test-00000-of-00001.parquet")
    metrics, _ = evaluate(tmp_path, [rm_path], [tmp_path / "test-00000-of-00001.parquet"])
    assert metrics["suite"]["name"] == "rewardbench2"
    assert metrics["data"]["test-00000-of-00001"]["rows"] == len(rows)


def test_a_run_killed_before_its_first_row_resumes_again_and_again(rm_path, tmp_path):
    """A partial file that holds only its header (killed before the first row was scored) is resumed without
    a second header, so a later resume still reads it."""
    import rmkit

    rows = rb2_rows()
    data = write_jsonl(tmp_path / "rb2.jsonl", rows)
    out = tmp_path / "eval"
    partial = out / ".partial" / f"{rm_path.name}--rb2.jsonl"
    partial.parent.mkdir(parents=True)
    partial.write_text(json.dumps({"model": str(rm_path), "rows": len(rows)}) + "\n")
    options = {"model": [str(rm_path)], "data": [str(data)], "output_dir": str(out), "resume": True,
               "bootstrap": 10, "plots": False}  # fmt: skip
    first = rmkit.evaluate(**options)
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_text(json.dumps({"model": str(rm_path), "rows": len(rows)}) + "\n")
    from rmkit.evaluation.suite import SuiteEvaluation

    headers = []
    real = SuiteEvaluation.add

    def add(self, kind, model, label, name, rejects):
        real(self, kind, model, label, name, rejects)
        lines = partial.read_text().splitlines()
        headers.append(sum("rows" in json.loads(line) for line in lines))

    SuiteEvaluation.add = add
    try:
        again = rmkit.evaluate(**options)
    finally:
        SuiteEvaluation.add = real
    assert headers == [1]
    assert [m["score"] for m in again["suite"]["models"].values()] == [
        m["score"] for m in first["suite"]["models"].values()
    ]
