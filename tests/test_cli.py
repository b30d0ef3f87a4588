"""The command line: one-line errors with exit code 2, options from YAML with unknown keys refused."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rmkit.cli import main


def test_bad_row_prints_one_line_and_exits_2(tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text(
        json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"})
        + "\n"
        + json.dumps({"prompt": "p", "chosen": "a", "rejected": 5})
        + "\n"
    )
    assert main(["inspect", "--data", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert "bad.jsonl, row 2, field 'rejected': expected a string" in err


@pytest.mark.slow
def test_console_script_runs_without_traceback(tmp_path):
    path = tmp_path / "missing.json"
    proc = subprocess.run(
        [sys.executable, "-m", "rmkit.cli", "inspect", "--data", str(path)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("missing.json: no such file or directory")


def test_yaml_options_with_flag_override_and_unknown_key(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"question": "p", "response": "r"}) + "\n")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"data: {data}\ncolumns: {{question: prompt}}\n")
    assert main(["inspect", "--config", str(cfg)]) == 0
    assert "format=prompt_response responses=1" in capsys.readouterr().out
    cfg.write_text(f"data: {data}\nbatch_tokns: 3\n")
    assert main(["inspect", "--config", str(cfg)]) == 2
    assert "unknown option(s) batch_tokns" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["score", "eval"])
def test_a_pass_cost_that_is_not_positive_is_refused_in_one_line(rm_path, tmp_path, command, capsys):
    """``--batch-cost`` (score, rank, eval) is tokens' worth of work a pass: 0 or less is refused before any
    model loads, naming the option."""
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n")
    where = (
        ["--output", str(tmp_path / "s.jsonl")]
        if command == "score"
        else ["--output-dir", str(tmp_path / "e")]
    )
    args = [command, "--model", str(rm_path), "--data", str(data), *where, "--batch-cost", "0"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.endswith(
        "--batch-cost is tokens' worth of work a pass and must be positive, got 0.0"
    )


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "inspect" in capsys.readouterr().out


def test_help_version_and_a_wrong_option_load_no_torch(tmp_path):
    """``rmkit --version``, ``rmkit <command> --help``, a misspelt option and an input that cannot be read answer
    without loading torch or transformers (they load with a model): the wait is Python's start-up alone."""
    from rmkit.cli import COMMANDS

    code = (
        "import sys\nfrom rmkit.cli import main\n"
        "model = sys.argv[1].rsplit('/', 1)[0]  # a directory that exists: the input is what is wrong\n"
        "bad = [['score', '--modle', 'x'], ['score', '--model', model, '--input', 'missing.jsonl', '--output', 'o.jsonl']]\n"
        "bad += [['inspect', '--data', sys.argv[1]]]  # a data tool reads data without the model code\n"
        "for argv in [['--version'], *[[c, '--help'] for c in sys.argv[2:]], *bad]:\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "print(sorted(m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules))"
    )
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    run = subprocess.run(
        [sys.executable, "-c", code, str(data), *COMMANDS], capture_output=True, text=True, timeout=120
    )
    assert run.stdout.strip().splitlines()[-1] == "[]", run.stdout[-500:] + run.stderr[-500:]
    assert "unknown option --modle; did you mean --model?" in run.stderr
    assert "rmkit score: error: missing.jsonl: no such file or directory" in run.stderr
    assert "kind=pairwise format=trl pairs=1" in run.stdout
