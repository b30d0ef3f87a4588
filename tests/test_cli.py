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


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "inspect" in capsys.readouterr().out
