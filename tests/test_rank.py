"""``rmkit rank`` (best-of-N): scores in the order of the responses, the ranking best first, every input
column kept, the summary's best-of-N figures, and a resumed run equal to an uninterrupted one."""

from __future__ import annotations

import json

import pytest
from conftest import WORDS, kill_when_done, write_jsonl

import rmkit
from rmkit import RewardModel
from rmkit.cli import main
from rmkit.metrics import ranking


def sentence(i: int, n: int) -> str:
    return " ".join(WORDS[(i * 5 + j) % len(WORDS)] for j in range(n)).capitalize() + "."


def rows(n: int) -> list[dict]:
    out = []
    for i in range(n):
        prompt = sentence(i, 20 + i % 30)
        if i % 3 == 0:  # a conversation as the prompt
            prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}]
        out.append(
            {
                "id": i,
                "prompt": prompt,
                "responses": [sentence(i + k, 2 + 7 * k % 13) for k in range(1 + i % 5)],
            }
        )
    return out


def test_ranking_is_best_first_with_ties_in_input_order():
    scores = [0.5, 2.0, 0.5, -1.0, 2.0]
    assert ranking(scores) == [1, 4, 0, 2, 3]
    assert ranking(scores, top_k=2) == [1, 4]
    assert ranking(scores, min_score=0.5) == [1, 4, 0, 2]
    assert ranking(scores, min_score=3.0) == []


def test_rank_writes_scores_best_and_ranking_and_keeps_columns(rm_path, tmp_path):
    rm = RewardModel.from_pretrained(rm_path)
    data = write_jsonl(tmp_path / "in.jsonl", rows(12))
    summary = rmkit.rank(model=str(rm_path), input=str(data), output=str(tmp_path / "out.json"), top_k=3)
    out = json.loads((tmp_path / "out.json").read_text())
    assert [r["id"] for r in out] == list(range(12))
    firsts = 0
    for row, src in zip(out, rows(12), strict=True):
        assert row["prompt"] == src["prompt"] and row["responses"] == src["responses"]
        n = len(src["responses"])
        want = rm.score(prompts=[src["prompt"]] * n, responses=src["responses"])
        assert row["scores"] == pytest.approx(want, abs=1e-4)
        assert row["ranking"] == ranking(row["scores"])[:3] and row["best"] == row["ranking"][0]
        assert row["scores"][row["best"]] == max(row["scores"])
        firsts += row["best"] == 0
    best = summary["best_of_n"]
    assert best["rows"] == 12 and best["first_is_best"] == pytest.approx(firsts / 12)
    assert best["mean_best"] == pytest.approx(sum(max(r["scores"]) for r in out) / 12)
    assert summary["prefix_shared"] > 0


def test_rank_on_and_off_prefix_sharing_agree(rm_path, tmp_path):
    data = write_jsonl(tmp_path / "in.jsonl", rows(10))
    main(["rank", "--model", str(rm_path), "--input", str(data), "--output", str(tmp_path / "on.jsonl")])
    main(
        [
            "rank",
            "--model",
            str(rm_path),
            "--input",
            str(data),
            "--output",
            str(tmp_path / "off.jsonl"),
            "--no-prefix-sharing",
        ]
    )
    on = [json.loads(x) for x in (tmp_path / "on.jsonl").read_text().splitlines()]
    off = [json.loads(x) for x in (tmp_path / "off.jsonl").read_text().splitlines()]
    for a, b in zip(on, off, strict=True):
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-4) and a["ranking"] == b["ranking"]
    assert json.loads((tmp_path / "off.summary.json").read_text())["prefix_shared"] == 0


def test_min_score_can_leave_no_best(rm_path, tmp_path):
    data = write_jsonl(tmp_path / "in.jsonl", rows(3))
    rmkit.rank(model=str(rm_path), input=str(data), output=str(tmp_path / "out.jsonl"), min_score=1e9)
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert all(r["best"] is None and r["ranking"] == [] for r in out)


def test_reward_model_rank(rm_path):
    rm = RewardModel.from_pretrained(rm_path)
    responses = ["Paris.", "The capital of France is Paris.", "I cannot help with that."]
    ranked = rm.rank("What is the capital of France?", responses, top_k=2)
    assert ranked.scores == pytest.approx(
        rm.score(prompts=["What is the capital of France?"] * 3, responses=responses), abs=1e-5
    )
    assert ranked.ranking == ranking(ranked.scores)[:2] and ranked.best == ranked.ranking[0]


@pytest.mark.slow
def test_kill_9_then_resume_gives_the_uninterrupted_file(rm_path, tmp_path):
    data = write_jsonl(tmp_path / "in.jsonl", rows(160))
    args = ["--model", str(rm_path), "--input", str(data), "--chunk-rows", "4"]
    whole = tmp_path / "whole.json"
    assert main(["rank", *args, "--output", str(whole)]) == 0
    out = tmp_path / "out.json"
    state = tmp_path / "out.json.rank0-of-1.part.state.json"
    assert 0 < kill_when_done(["rank", *args, "--output", str(out)], state, 20) < 160
    assert main(["rank", *args, "--output", str(out), "--resume"]) == 0
    assert out.read_bytes() == whole.read_bytes()
