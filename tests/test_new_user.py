"""What a new user meets first: paths with commas, a model path that is not there, a judge read from weights
it lacks, empty inputs, and what an interrupted or skipping run says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import judgebench_rows, write_jsonl

from rmkit.cli import main
from rmkit.options import build

JUDGEBENCH_NAME = "dataset=judgebench,response_model=gpt-4o-2024-05-13.jsonl"
PAIRS = [{"prompt": f"two plus {k}", "chosen": "four", "rejected": "five is the answer"} for k in range(6)]


def test_a_benchmark_file_named_with_a_comma_is_read_whole(rm_path, tmp_path, capsys):
    data = write_jsonl(tmp_path / JUDGEBENCH_NAME, judgebench_rows())
    out = tmp_path / "jb"
    assert main(["eval", "--model", str(rm_path), "--data", str(data), "--suite", "judgebench", "--output-dir", str(out), "--no-plots"]) == 0  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["suite"]["name"] == "judgebench"
    assert len((out / "scores.jsonl").read_text().splitlines()) == 6
    rows = write_jsonl(tmp_path / "dataset=x,model=y.jsonl", [{"prompt": "hi", "response": "hello"}] * 3)
    assert main(["score", "--model", str(rm_path), "--input", str(rows), "--output", str(tmp_path / "s.jsonl")]) == 0  # fmt: skip
    assert len((tmp_path / "s.jsonl").read_text().splitlines()) == 3


def test_a_list_of_paths_is_split_only_where_no_file_has_the_whole_name(tmp_path, caplog):
    from rmkit.cli import _parser
    from rmkit.evaluation.config import EvalConfig

    a, b = write_jsonl(tmp_path / "a.jsonl", PAIRS), write_jsonl(tmp_path / "b.jsonl", PAIRS)
    whole = write_jsonl(tmp_path / "c,d.jsonl", PAIRS)

    def data(argv: list[str]) -> list[str]:
        known, _ = _parser("eval").parse_known_args(["eval", "--model", "m", "--output-dir", "o", *argv])
        flags = {k: v for k, v in vars(known).items() if k not in ("command", "config")}
        return build(EvalConfig, flags).data

    assert data(["--data", str(whole)]) == [str(whole)]
    with caplog.at_level("INFO"):
        assert data(["--data", f"{a},{b}"]) == [str(a), str(b)]  # no file of that name: split, and said
    assert f"no file is named '{a},{b}': read as 2 paths" in caplog.text
    assert data(["--data", str(a), "--data", str(whole)]) == [str(a), str(whole)]
    assert data(["--data", str(a), str(whole)]) == [str(a), str(whole)]
    config = tmp_path / "eval.yaml"  # a quoted comma in a YAML list is never split
    config.write_text(yaml.safe_dump({"data": [str(whole), "x,y.jsonl"], "model": "m", "output_dir": "o"}))
    assert build(EvalConfig, {}, config).data == [str(whole), "x,y.jsonl"]
    config.write_text(yaml.safe_dump({"data": f"{a},{b}", "model": "m", "output_dir": "o"}))
    assert build(EvalConfig, {}, config).data == [str(a), str(b)]  # a string, as the command line writes it


def test_an_unknown_yaml_key_gets_did_you_mean(tmp_path, capsys):
    config = tmp_path / "o.yaml"
    config.write_text(
        f"input: {write_jsonl(tmp_path / 'p.jsonl', PAIRS)}\nmodel: m\noutput: o.jsonl\nbatch_tokns: 3\n"
    )
    assert main(["score", "--config", str(config)]) == 2
    assert "batch_tokns (did you mean batch_tokens?)" in capsys.readouterr().err


OFFLINE_CASES = [
    (["runs/nothere"], {"HF_HUB_OFFLINE": "1"}, "runs/nothere: no such directory"),
    (["runs/rm-v2"], {"HF_HUB_OFFLINE": "1"}, "runs/rm-v2: no such directory; did you mean runs/rm-v1?"),
    (["./runs/nothere"], {"HF_HUB_OFFLINE": "1"}, "./runs/nothere: no such directory"),
    (["org/unknown"], {"HF_HUB_OFFLINE": "1"}, "org/unknown: no such directory here, and not a model in the local hub cache (HF_HUB_OFFLINE is set)"),
    (["org/unknown"], {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}, "org/unknown: no such directory here, and not a model in the local hub cache (http://127.0.0.1:9 cannot be reached"),
]  # fmt: skip


@pytest.mark.parametrize(("model", "env", "said"), OFFLINE_CASES)
@pytest.mark.parametrize("command", ["score", "eval", "train", "serve"])
def test_a_model_path_that_is_not_there_is_one_line_at_once(tmp_path, command, model, env, said):
    """With the hub unreachable (offline, or an endpoint where nothing listens): one line, in well under 2 s,
    saying the directory is not there (with the near miss), never a minute of the hub client's retries."""
    (tmp_path / "runs" / "rm-v1").mkdir(parents=True)
    data = write_jsonl(tmp_path / "p.jsonl", PAIRS)
    rest = {
        "score": ["--input", str(data), "--output", "o.jsonl"],
        "eval": ["--data", str(data), "--output-dir", "ev"],
        "train": ["--data", str(data), "--output-dir", "tr"],
        "serve": ["--port", "0"],
    }[command]
    start = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "rmkit.cli", command, "--model", *model, *rest],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, **env}, timeout=60,
    )  # fmt: skip
    took = time.perf_counter() - start
    assert run.returncode == 2, run.stderr
    err = run.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"rmkit {command}: error: {said}"), err
    assert took < 10, (
        f"{took:.1f} s: the hub was asked"
    )  # generous for a loaded machine; the figure is in bench_startup.py
    assert not (tmp_path / "ev").exists() and not (tmp_path / "tr").exists()


def test_a_misspelt_data_file_is_named_with_the_nearest_one(rm_path, tmp_path, capsys):
    write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    assert main(["score", "--model", str(rm_path), "--input", str(tmp_path / "pair.jsonl"), "--output", "o.jsonl"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert err == f"rmkit score: error: {tmp_path / 'pair.jsonl'}: no such file or directory; did you mean {tmp_path / 'pairs.jsonl'}?"  # fmt: skip


def test_the_python_api_says_the_same_of_a_missing_directory(tmp_path, monkeypatch):
    from rmkit import RewardModel
    from rmkit.errors import RMKitError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(RMKitError, match="^runs/nothere: no such directory$"):
        RewardModel.from_pretrained("runs/nothere")


def test_an_encoder_is_refused_as_a_judge_and_the_advice_never_suggests_it(minilm_path, llama_path, tmp_path, capsys):  # fmt: skip
    rows = write_jsonl(tmp_path / "r.jsonl", [{"prompt": "hi", "response": "hello"}] * 5)
    out = tmp_path / "j.jsonl"
    assert main(["score", "--judge", "verifier", "--model", str(minilm_path), "--input", str(rows), "--output", str(out)]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a causal LM with its LM head in its weights" in err, err
    assert "cls.predictions" in err and not out.exists()
    assert main(["score", "--model", str(minilm_path), "--input", str(rows), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no trained score head" in err and "--judge" not in err and "cannot be read as a judge" in err
    assert main(["score", "--model", str(llama_path), "--input", str(rows), "--output", str(out)]) == 2
    assert "read it as a judge (--judge)" in capsys.readouterr().err  # a causal LM can be
    # a causal LM with its head is still a judge
    assert main(["score", "--judge", "verifier", "--judge-tokens", "I", "you", "--model", str(llama_path), "--input", str(rows), "--output", str(out)]) == 0  # fmt: skip
    assert len(out.read_text().splitlines()) == 5


@pytest.mark.parametrize("command", ["score", "rank", "eval", "train", "inspect"])
def test_an_empty_input_is_a_named_fault_of_the_file(command, rm_path, tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    args = {
        "score": ["--model", str(rm_path), "--input", str(empty), "--output", str(tmp_path / "o.jsonl")],
        "rank": ["--model", str(rm_path), "--input", str(empty), "--output", str(tmp_path / "o.jsonl")],
        "eval": ["--model", str(rm_path), "--data", str(empty), "--output-dir", str(tmp_path / "ev")],
        "train": ["--model", str(rm_path), "--data", str(empty), "--output-dir", str(tmp_path / "tr")],
        "inspect": ["--data", str(empty)],
    }[command]
    assert main([command, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"rmkit {command}: error: {empty}: holds no records (an empty input)"
    assert not (tmp_path / "o.jsonl").exists()


def test_rank_speaks_in_its_own_name_and_a_skipping_run_names_its_rejects(rm_path, tmp_path, capsys):
    groups = [{"prompt": "p", "responses": ["a", "b", "c"]}, {"prompt": "q", "responses": [1]}]
    data = write_jsonl(tmp_path / "g.jsonl", groups)
    out = tmp_path / "r.jsonl"
    assert main(["rank", "--model", str(rm_path), "--input", str(data), "--output", str(out), "--on-error", "skip"]) == 0  # fmt: skip
    said = capsys.readouterr()
    assert said.out.startswith("rank: ranked 1 rows") and "score:" not in said.out + said.err
    rejects = tmp_path / "r.rejects.jsonl"
    assert f"the 1 skipped rows, each with its reason: {rejects}" in said.out
    assert json.loads(rejects.read_text())["row"] == 2


def test_an_interrupt_before_the_first_chunk_leaves_no_part_file(rm_path, tmp_path, capsys, monkeypatch):
    from rmkit.jobs import score

    def interrupted(*_):
        raise KeyboardInterrupt
        yield

    monkeypatch.setattr(score, "_chunks", interrupted)
    data = write_jsonl(tmp_path / "p.jsonl", PAIRS)
    out = tmp_path / "o.jsonl"
    assert main(["score", "--model", str(rm_path), "--input", str(data), "--output", str(out)]) == 130
    assert capsys.readouterr().err.strip() == "rmkit score: interrupted; nothing was scored, no file is left"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl"]


@pytest.mark.slow
def test_ctrl_c_says_what_is_kept_and_the_command_that_goes_on(rm_path, tmp_path):
    """SIGINT to a real ``rmkit score`` after its first chunks: it names the records kept and the exact
    command to go on; that command finishes the file, each row once, as an uninterrupted run writes it."""
    import signal

    rows = [{"prompt": f"what is {k} plus two", "response": "four " * (k % 7 + 1)} for k in range(300)]
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    argv = [
        "score",
        "--model",
        str(rm_path),
        "--input",
        str(data),
        "--output",
        "out.jsonl",
        "--chunk-rows",
        "8",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "rmkit.cli", *argv], cwd=tmp_path, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )  # fmt: skip
    state = tmp_path / "out.jsonl.rank0-of-1.part.state.json"
    deadline = time.time() + 120
    while (not state.exists() or json.loads(state.read_text())["records"] < 16) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    line = err.strip().splitlines()[-1]
    assert (
        line.startswith("rmkit score: interrupted; ")
        and " records done are kept in out.jsonl.rank0-of-1.part" in line
    )
    command = line.split("; to go on: ")[1]
    assert command == "rmkit " + " ".join(argv) + " --resume"
    subprocess.run([sys.executable, "-m", "rmkit.cli", *command.split()[1:]], cwd=tmp_path, check=True, capture_output=True)  # fmt: skip
    written = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in written] == [r["prompt"] for r in rows]


def test_reward_function_and_convert_read_a_checkpoint_as_its_kind(llama_path, tmp_path, capsys):
    """A judge checkpoint (a verifier written as a classifier) given to reward_function scores as rmkit
    score does; convert refuses, in one line, a kind with no standard layout to write."""
    import rmkit
    from rmkit import kinds
    from rmkit.kinds.pairwise import PairwiseKind

    class Unwritable(PairwiseKind):
        name = "unwritable"

        def recognises(self, checkpoint) -> bool:
            return checkpoint.metadata.get("unwritable", False)

        def owns(self, model) -> bool:
            return bool(getattr(model, "metadata", {}).get("unwritable"))

        def convertible(self, model):
            return "an unwritable reward model has no standard checkpoint layout to write"

    verifier = tmp_path / "verifier"
    assert main(["convert", str(llama_path), str(verifier), "--verifier", "--judge-tokens", "I", "you"]) == 0
    rows = write_jsonl(tmp_path / "r.jsonl", [{"prompt": "hi", "response": "hello you"}, {"prompt": "a", "response": "b"}])  # fmt: skip
    assert main(["score", "--model", str(verifier), "--input", str(rows), "--output", str(tmp_path / "s.jsonl")]) == 0  # fmt: skip
    offline = [json.loads(x)["score"] for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    reward = rmkit.reward_function(str(verifier))
    assert reward(["hi", "a"], ["hello you", "b"]) == pytest.approx(offline, abs=1e-5)

    config = json.loads((verifier / "config.json").read_text())
    config["rmkit"] = {**config.get("rmkit", {}), "unwritable": True, "kind": "unwritable"}
    (verifier / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    kinds.register(Unwritable())
    try:
        assert main(["convert", str(verifier), str(tmp_path / "w")]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"rmkit convert: error: {verifier}: an unwritable reward model has no standard checkpoint layout to write"  # fmt: skip
    finally:
        kinds.unregister("unwritable")
    assert Path(tmp_path / "w").exists() is False or not any((tmp_path / "w").iterdir())
