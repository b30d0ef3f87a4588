"""``rmkit score``: plain-transformers scores, input order, pass-through columns, resume after kill -9,
torchrun sharding, rejects and truncation counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import WORDS, kill_when_done, write_jsonl
from torch._dynamo.utils import counters
from transformers import AutoModelForSequenceClassification

import rmkit
from rmkit import RewardModel
from rmkit.cli import main
from rmkit.data import iter_examples
from rmkit.errors import DataError
from rmkit.jobs.score import ScoreConfig, score_file


def sentence(i: int, n: int) -> str:
    return " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(n)).capitalize() + "."


def prompt_rows(n: int) -> list[dict]:
    """Rows of very different lengths, each with pass-through columns."""
    return [
        {
            "id": f"r{i}",
            "prompt": sentence(i, 3 + (i * 5) % 40),
            "response": sentence(i + 1, 1 + (i * 11) % 70),
            "meta": {"n": i},
        }
        for i in range(n)
    ]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def llama_rm(llama_path, tmp_path_factory):
    torch.manual_seed(0)
    rm = RewardModel.from_pretrained(llama_path)
    out = tmp_path_factory.mktemp("rm_llama_small")
    rm.save_pretrained(out, {"max_length": 64})
    return RewardModel.from_pretrained(out), out


def hf_score(model, ids: list[int]) -> float:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0, 0].item()


def test_scores_equal_plain_transformers_row_by_row_in_input_order(saved_rm, tmp_path):
    rm, path = saved_rm
    rows = prompt_rows(23)
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    summary = score_file(ScoreConfig(model=str(path), input=str(data), output=str(out), batch_tokens=256))

    got = read_jsonl(out)
    assert [r["id"] for r in got] == [r["id"] for r in rows]
    assert [(r["prompt"], r["response"], r["meta"]) for r in got] == [
        (r["prompt"], r["response"], r["meta"]) for r in rows
    ]
    hf = AutoModelForSequenceClassification.from_pretrained(path).eval()
    assert hf.config.pad_token_id != rm.tokenizer.eos_token_id or not rm.is_decoder
    encoded = rm.example_tokenizer().tokenize(list(iter_examples(data)))
    for row, encs in zip(got, encoded, strict=True):
        assert row["score"] == pytest.approx(hf_score(hf, encs[0].ids), abs=1e-4)
    assert summary["rows"] == 23 and summary["skipped"] == 0 and summary["dropped"] == 0
    assert summary["scores"]["score"]["max"] == max(r["score"] for r in got)
    on_disk = json.loads((tmp_path / "out.summary.json").read_text())
    assert on_disk["rows"] == 23 and on_disk["tokens"] == sum(len(e[0].ids) for e in encoded)
    assert not list(tmp_path.glob("*.part*"))


def test_text_rows_are_scored_as_the_tokenizer_encodes_them(saved_rm, tmp_path):
    rm, path = saved_rm
    texts = [sentence(i, 2 + i * 9) for i in range(5)]
    data = write_jsonl(tmp_path / "in.jsonl", [{"text": t, "k": i} for i, t in enumerate(texts)])
    out = tmp_path / "out.json"
    rmkit.score(model=str(path), input=str(data), output=str(out))
    got = json.loads(out.read_text())
    hf = AutoModelForSequenceClassification.from_pretrained(path).eval()
    assert [r["text"] for r in got] == texts and [r["k"] for r in got] == list(range(5))
    for r in got:
        assert set(r) == {"text", "score", "k"}
        assert r["score"] == pytest.approx(hf_score(hf, rm.tokenizer(r["text"])["input_ids"]), abs=1e-4)


def test_pairs_and_messages_get_scores_of_their_own_rows(llama_rm, tmp_path):
    rm, path = llama_rm
    pairs = [
        {"prompt": sentence(i, 5), "chosen": sentence(i, 4 + i), "rejected": sentence(i + 3, 2), "pid": i}
        for i in range(5)
    ]
    out = tmp_path / "pairs.json"
    summary = rmkit.score(
        model=str(path), input=str(write_jsonl(tmp_path / "p.jsonl", pairs)), output=str(out)
    )
    got = json.loads(out.read_text())
    assert [r["pid"] for r in got] == list(range(5))
    prompts = [p["prompt"] for p in pairs]
    assert [r["score_chosen"] for r in got] == pytest.approx(
        rm.score(prompts=prompts, responses=[p["chosen"] for p in pairs]), abs=1e-5
    )
    assert [r["score_rejected"] for r in got] == pytest.approx(
        rm.score(prompts=prompts, responses=[p["rejected"] for p in pairs]), abs=1e-5
    )
    assert summary["chosen_wins"] == sum(r["score_chosen"] > r["score_rejected"] for r in got) / 5

    conv = [
        {
            "messages": [
                {"role": "user", "content": p["prompt"]},
                {"role": "assistant", "content": p["chosen"]},
            ]
        }
        for p in pairs
    ]
    out = tmp_path / "conv.jsonl"
    rmkit.score(model=str(path), input=str(write_jsonl(tmp_path / "m.jsonl", conv)), output=str(out))
    assert [r["score"] for r in read_jsonl(out)] == pytest.approx([r["score_chosen"] for r in got], abs=1e-5)
    assert read_jsonl(out)[0]["prompt"] == pairs[0]["prompt"]


def test_bad_rows_stop_with_the_row_or_go_to_the_rejects_file(llama_rm, tmp_path, capsys):
    _, path = llama_rm
    rows = prompt_rows(6)
    rows[2]["response"] = ""
    rows[4]["prompt"] = 7
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    with pytest.raises(DataError, match="row 3, field 'response': empty response"):
        rmkit.score(model=str(path), input=str(data), output=str(out))
    assert main(["score", "--model", str(path), "--input", str(data), "--output", str(out)]) == 2
    assert "row 3, field 'response'" in capsys.readouterr().err

    summary = rmkit.score(model=str(path), input=str(data), output=str(out), on_error="skip")
    assert [r["id"] for r in read_jsonl(out)] == ["r0", "r1", "r3", "r5"]
    rejects = read_jsonl(tmp_path / "out.rejects.jsonl")
    assert [(r["row"], r["field"]) for r in rejects] == [(3, "response"), (5, "prompt")]
    assert "empty response" in rejects[0]["reason"] and "expected a string" in rejects[1]["reason"]
    assert rejects[1]["record"]["id"] == "r4"
    assert summary["skipped"] == 2 and summary["rows"] == 4


def test_over_length_rows_are_truncated_or_dropped_and_counted(llama_rm, tmp_path):
    rm, path = llama_rm
    rows = prompt_rows(12)
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    lengths = [
        len(e[0].ids) for e in rm.example_tokenizer(max_length=10**6).tokenize(list(iter_examples(data)))
    ]
    limit = sorted(lengths)[6]
    over = [i for i, n in enumerate(lengths) if n > limit]
    out = tmp_path / "cut.jsonl"
    summary = rmkit.score(model=str(path), input=str(data), output=str(out), max_length=limit)
    assert summary["truncated"] == len(over) > 0 and summary["rows"] == 12
    cut = rm.example_tokenizer(max_length=limit).tokenize(list(iter_examples(data)))
    assert all(len(e[0].ids) <= limit for e in cut)
    assert [r["score"] for r in read_jsonl(out)] == pytest.approx(
        rm.score_ids([e[0].ids for e in cut]), abs=1e-5
    )

    summary = rmkit.score(
        model=str(path), input=str(data), output=str(out), max_length=limit, truncation="drop"
    )
    assert summary["dropped"] == len(over) and summary["rows"] == 12 - len(over)
    assert [r["id"] for r in read_jsonl(out)] == [r["id"] for i, r in enumerate(rows) if i not in over]


@pytest.mark.slow
@pytest.mark.parametrize("read_ahead", ["--no-read-ahead", "--read-ahead"])
def test_kill_9_then_resume_gives_the_uninterrupted_file(llama_rm, tmp_path, read_ahead):
    _, path = llama_rm
    rows = prompt_rows(240)
    rows[100]["response"] = ""  # a rejected row on the way
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    args = ["--model", str(path), "--input", str(data), "--chunk-rows", "4", "--on-error", "skip", read_ahead]

    whole = tmp_path / "whole.json"
    assert main(["score", *args, "--output", str(whole)]) == 0

    out = tmp_path / "out.json"
    state = tmp_path / "out.json.rank0-of-1.part.state.json"
    done = kill_when_done(["score", *args, "--output", str(out)], state, 40)
    assert not out.exists()
    part = tmp_path / "out.json.rank0-of-1.part"
    assert 0 < done < 240
    with open(part, "a") as f:  # what a kill in the middle of a write leaves behind
        f.write('239\t{"prompt": "half a li')

    summary = rmkit.score(
        model=str(path), input=str(data), output=str(out), chunk_rows=4, on_error="skip", resume=True
    )
    assert out.read_bytes() == whole.read_bytes()
    assert (tmp_path / "out.rejects.jsonl").read_text() == (tmp_path / "whole.rejects.jsonl").read_text()
    assert summary["rows"] == 239 and summary["skipped"] == 1
    assert json.loads(whole.read_text())[100]["id"] == "r101"


@pytest.mark.slow
def test_torchrun_two_processes_write_the_one_process_file(llama_rm, tmp_path):
    _, path = llama_rm
    rows = prompt_rows(13)
    rows[6]["response"] = 3
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    # one row a batch, so both runs do the very same arithmetic and the files can be compared byte for byte
    args = ["--model", str(path), "--input", str(data), "--on-error", "skip", "--chunk-rows", "3"]
    args += ["--batch-tokens", "1"]
    assert main(["score", *args, "--output", str(tmp_path / "one.jsonl")]) == 0

    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(
        [*torchrun, "-m", "rmkit.cli", "score", *args, "--output", str(tmp_path / "two.jsonl")],
        env={**env, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["id"] for r in read_jsonl(tmp_path / "two.jsonl")] == [r["id"] for r in rows if r["id"] != "r6"]
    assert (tmp_path / "two.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    assert read_jsonl(tmp_path / "two.rejects.jsonl") == read_jsonl(tmp_path / "one.rejects.jsonl")
    summary = json.loads((tmp_path / "two.summary.json").read_text())
    assert summary["processes"] == 2 and summary["rows"] == 12 and summary["skipped"] == 1
    assert not list(tmp_path.glob("*.part*"))


def test_output_must_be_json_or_jsonl(llama_rm, tmp_path):
    _, path = llama_rm
    data = write_jsonl(tmp_path / "in.jsonl", prompt_rows(2))
    with pytest.raises(rmkit.RMKitError, match="must end in .json or .jsonl"):
        score_file(ScoreConfig(model=str(path), input=str(data), output=str(tmp_path / "out.csv")))


@pytest.mark.slow
def test_compiled_scoring_gives_the_eager_scores_for_every_batch_shape(llama_rm, tmp_path):
    _, path = llama_rm
    rows = prompt_rows(31)
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    eager, compiled = tmp_path / "eager.jsonl", tmp_path / "compiled.jsonl"
    # A small budget gives batches of many shapes, single rows among them: dynamic shapes compile one
    # graph for them all, and one more for batches of one row (which torch.compile specialises).
    score_file(ScoreConfig(model=str(path), input=str(data), output=str(eager), batch_tokens=200))
    graphs = counters["stats"]["unique_graphs"]
    assert (
        main(
            ["score", "--model", str(path), "--input", str(data), "--output", str(compiled)]
            + ["--batch-tokens", "200", "--compile"]
        )
        == 0
    )

    assert 1 <= counters["stats"]["unique_graphs"] - graphs <= 2
    want, got = read_jsonl(eager), read_jsonl(compiled)
    assert [r["id"] for r in got] == [r["id"] for r in rows]
    assert [r["score"] for r in got] == pytest.approx([r["score"] for r in want], abs=1e-4)


def test_a_compiled_model_saves_the_checkpoint_it_loaded(llama_rm, tmp_path):
    rm, path = llama_rm
    before = {k: v.clone() for k, v in rm.model.state_dict().items()}
    compiled = RewardModel.from_pretrained(path).compile()
    assert compiled.score(texts=["two plus two is four", "hello"]) == pytest.approx(
        rm.score(texts=["two plus two is four", "hello"]), abs=1e-4
    )
    compiled.save_pretrained(tmp_path / "again")
    after = RewardModel.from_pretrained(tmp_path / "again").model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)
