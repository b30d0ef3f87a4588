"""Real data accepted, bad input named or skipped, failed runs tidy, flags unambiguous (issue #15)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import write_jsonl
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

import rmkit
from rmkit import RewardModel
from rmkit.cli import _parser, main
from rmkit.data import Rejects, iter_examples
from rmkit.errors import DataError

HISTORY = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: What is 2+2?"
HH_ROWS = [
    {"chosen": HISTORY + "\n\nAssistant: It is 4.", "rejected": HISTORY + "\n\nAssistant: It is 5."},
    # an empty final reply (4 such rows in harmless-base/test.jsonl)
    {"chosen": HISTORY + "\n\nAssistant: It is 4.", "rejected": HISTORY + "\n\nAssistant: "},
    # one side has an extra turn before its last reply (5 such rows there)
    {
        "chosen": HISTORY + "\n\nAssistant: Four.",
        "rejected": HISTORY + "\n\nAssistant: Five?\n\nHuman: Sure?\n\nAssistant: Yes, five.",
    },
]


def test_hh_rows_with_an_empty_reply_or_differing_histories_are_accepted(tmp_path):
    examples = list(iter_examples(write_jsonl(tmp_path / "hh.jsonl", HH_ROWS)))
    assert [sorted(e.notes) for e in examples] == [[], ["empty_reply"], ["split_history"]]
    assert examples[1].responses == ["It is 4.", ""]
    split = examples[2]
    assert split.prompt_of(0)[-1]["content"] == "What is 2+2?"
    assert [m["content"] for m in split.prompt_of(1)][-3:] == ["What is 2+2?", "Five?", "Sure?"]


def test_each_answer_is_scored_after_its_own_history_and_counted(rm_path, tmp_path):
    rm = RewardModel.from_pretrained(rm_path)
    data = write_jsonl(tmp_path / "hh.jsonl", HH_ROWS)
    summary = rmkit.score(model=str(rm_path), input=str(data), output=str(tmp_path / "out.jsonl"))
    assert summary["empty_replies"] == 1 and summary["split_histories"] == 1
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    split = list(iter_examples(data))[2]
    want = rm.score(
        messages=[[*split.prompt_of(i), {"role": "assistant", "content": split.responses[i]}] for i in (0, 1)]
    )
    assert [rows[2]["score_chosen"], rows[2]["score_rejected"]] == pytest.approx(want, abs=1e-5)
    assert rows[2]["prompt_rejected"][-1] == {"role": "user", "content": "Sure?"}
    assert "prompt_rejected" not in rows[0]


def test_training_counts_the_accepted_hh_rows(llama_path, tmp_path):
    data = write_jsonl(tmp_path / "hh.jsonl", HH_ROWS * 4)
    config = rmkit.TrainConfig(
        model=str(llama_path), data=str(data), output_dir=str(tmp_path / "run"), max_steps=1, batch_size=4
    )
    metrics = rmkit.train(config)
    assert metrics["train"]["empty_replies"] == 4 and metrics["train"]["split_histories"] == 4
    assert metrics["train"]["pairs"] == 12 and metrics["train"]["skipped"] == 0


def test_a_jsonl_line_that_is_not_json_is_a_skippable_bad_row(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"text": "a"}\n{"text": "unterminated\n[1, 2]\n{"text": "b"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"broken\.jsonl, row 2: not valid JSON"):
        list(iter_examples(path))
    with Rejects(tmp_path / "rejects.jsonl") as rejects:
        examples = list(iter_examples(path, rejects=rejects))
    assert [e.responses[0] for e in examples] == ["a", "b"] and rejects.count == 2
    lines = [json.loads(x) for x in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [(x["row"], x["record"]) for x in lines] == [(2, '{"text": "unterminated'), (3, [1, 2])]
    assert "expected a JSON object" in lines[1]["reason"]


def test_a_ragged_csv_row_is_named_or_skipped_and_a_bom_is_read(tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text(
        "\ufeffprompt,response\nHi,Hello\nHi,Hello,extra\nonly one cell\nHey,Yo\n", encoding="utf-8"
    )
    with pytest.raises(DataError, match=r"ragged\.csv, row 2: has 3 cells but the header has 2"):
        list(iter_examples(path))
    with Rejects(None) as rejects:
        examples = list(iter_examples(path, rejects=rejects))
    assert [(e.row, e.responses[0]) for e in examples] == [(1, "Hello"), (4, "Yo")] and rejects.count == 2


def test_a_failed_run_leaves_no_empty_part_files(rm_path, tmp_path, capsys):
    data = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "Hi", "response": ""}])
    assert (
        main(["score", "--model", str(rm_path), "--input", str(data), "--output", str(tmp_path / "o.json")])
        == 2
    )
    assert "empty response" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_a_failed_run_says_where_its_finished_work_is(rm_path, tmp_path, capsys):
    rows = [{"prompt": "Hi", "response": f"Hello {i}"} for i in range(6)] + [{"prompt": "Hi", "response": ""}]
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    args = [
        "score",
        "--model",
        str(rm_path),
        "--input",
        str(data),
        "--output",
        str(tmp_path / "o.json"),
        "--chunk-rows",
        "2",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "6 records done are kept in" in err and "o.json.rank0-of-1.part" in err and "--resume" in err
    rows[-1]["response"] = "fixed"
    write_jsonl(data, rows)
    assert main([*args, "--resume"]) == 0
    assert len(json.loads((tmp_path / "o.json").read_text())) == 7


def test_flags_are_never_taken_by_prefix_and_trainer_spellings_work():
    parser = _parser("train")
    for spelling in ("--lr", "--learning_rate", "--learning-rate"):
        args = vars(parser.parse_args(["train", "--model", "m", spelling, "5e-5"]))
        assert args["learning_rate"] == 5e-5
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--model", "m", "--lr-sched", "cosine"])  # not --lr-scheduler


@pytest.mark.parametrize("margin", ["NaN", "inf", "big", [1]])
def test_a_margin_that_is_not_a_finite_number_is_a_bad_row(tmp_path, margin):
    path = write_jsonl(
        tmp_path / "m.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b", "margin": margin}]
    )
    with pytest.raises(DataError, match=r"m\.jsonl, row 1, field 'margin': expected a (finite )?number"):
        list(iter_examples(path))


def test_a_non_finite_step_stops_training_naming_it_and_the_good_checkpoint(llama_path, tmp_path):
    rows = [{"prompt": "What is two plus two?", "chosen": "Four.", "rejected": "Five."}] * 16
    data = write_jsonl(tmp_path / "p.jsonl", rows)
    out = tmp_path / "run"
    config = rmkit.TrainConfig(
        model=str(llama_path), data=str(data), output_dir=str(out), batch_size=4, learning_rate=1e30,
        warmup_ratio=0.0, max_grad_norm=0.0, save_steps=1, epochs=4,
    )  # fmt: skip
    with pytest.raises(
        rmkit.RMKitError, match=r"step \d+: the gradient norm is (nan|inf).*checkpoint-\d+, is good"
    ) as err:
        rmkit.train(config)
    bad_step = int(str(err.value).split(":")[0].split()[1])
    assert bad_step > 1 and not (out / "model.safetensors").exists()
    saved = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    assert saved[-1] == bad_step - 1, "no checkpoint may be written at or after the step that failed"
    weights = load_file(str(out / f"checkpoint-{saved[-1]}" / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_non_finite_scores_are_written_as_null_counted_and_reported(rm_path, tmp_path, caplog):
    rm = RewardModel.from_pretrained(rm_path)
    with torch.no_grad():
        rm.model.score.weight.fill_(float("nan"))
    data = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "Hi", "response": f"Hello {i}"} for i in range(3)])
    out = tmp_path / "out.json"
    summary = rmkit.score(rm=rm, input=str(data), output=str(out))
    rows = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"{c} written to the output"))
    assert [r["score"] for r in rows] == [None, None, None]
    assert summary["non_finite"] == 3 and summary["rows"] == 3
    assert "row 1: the model gave a non-finite score" in caplog.text


_cells = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
_messages = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "gpt", "x"]), "content": _cells}),
    max_size=3,
)
_records = st.dictionaries(
    st.sampled_from(
        [
            "prompt",
            "chosen",
            "rejected",
            "response",
            "responses",
            "messages",
            "text",
            "margin",
            "response_0",
            "response_1",
            "better_response_id",
            "conversations",
            "subset",
        ]
    ),  # fmt: skip
    _cells | _messages | st.lists(_cells, max_size=3),
    max_size=5,
)


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(st.lists(_records, min_size=1, max_size=4))
def test_the_normaliser_names_every_bad_generated_row_or_accepts_it(records):
    from rmkit.data import normalise_records

    source = list(enumerate(records, start=1))
    for row, record in source:
        try:
            list(normalise_records([(row, record)], source="gen.jsonl"))
        except DataError as e:  # never another exception, and always the file and the row
            assert e.file == "gen.jsonl" and e.row == row
    with Rejects(None) as rejects:
        kept = list(normalise_records(source, source="gen.jsonl", rejects=rejects))
    assert len(kept) + rejects.count == len(records), "a row was lost silently"


PAIR = {"prompt": "p", "chosen": "a", "rejected": "b"}
# file name, contents, then: rows kept and skipped under --on-error skip, or the error every mode names
CORPUS = [
    ("truncated.json", f'[{json.dumps(PAIR)}, {{"prompt": "p", "ch', "row 2: invalid JSON"),
    ("number.json", "42", "expected a JSON list of objects"),
    ("empty.json", "", "expected a JSON list of objects"),
    ("bom.json", "\ufeff[" + json.dumps(PAIR) + "]", (1, 0)),
    ("bom.jsonl", "\ufeff" + json.dumps(PAIR) + "\n", (1, 0)),
    ("empty.jsonl", "", "holds no records"),
    ("blank_lines.jsonl", "\n\n  \n", "holds no records"),
    ("empty_list.json", "[]", "holds no records"),
    ("list_row.jsonl", json.dumps(PAIR) + "\n[1, 2]\n", (1, 1)),
    ("nulls.jsonl", json.dumps({**PAIR, "prompt": None}) + "\n" + json.dumps(PAIR) + "\n", (1, 1)),
    ("number_text.jsonl", json.dumps({**PAIR, "chosen": 3}) + "\n", (0, 1)),
    ("big_field.jsonl", json.dumps({**PAIR, "chosen": "a " * 5_000_000}) + "\n", (1, 0)),
    ("undecodable.jsonl", json.dumps(PAIR).encode() + b"\n" + b'{"prompt": "\xff"}\n', (1, 1)),
    ("ragged.csv", "prompt,chosen,rejected\np,a\np,a,b\n", (1, 1)),
    ("latin1.csv", "prompt,chosen,rejected\nné,a,b\n".encode("latin-1"), "file is not UTF-8"),
    ("header_only.csv", "prompt,chosen,rejected\n", "holds no records"),
    ("not.parquet", "not parquet at all", "cannot read the Parquet file"),
]


@pytest.mark.parametrize(("name", "content", "outcome"), CORPUS, ids=[c[0] for c in CORPUS])
def test_bad_input_corpus_ends_in_a_named_error_or_a_counted_skip(tmp_path, name, content, outcome):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    if isinstance(outcome, str):  # a fault of the whole file: named, whatever --on-error says
        for rejects in (None, Rejects(None)):
            with pytest.raises(DataError, match=outcome) as err:
                list(iter_examples(path, rejects=rejects))
            assert err.value.file == str(path)
        return
    kept, skipped = outcome
    with Rejects(tmp_path / "rejects.jsonl") as rejects:
        assert len(list(iter_examples(path, rejects=rejects))) == kept
    assert rejects.count == skipped
    if skipped:
        with pytest.raises(DataError) as err:
            list(iter_examples(path))
        assert err.value.file == str(path) and err.value.row is not None


def test_a_parquet_file_of_another_schema_names_its_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"foo": [1], "bar": ["x"]}), tmp_path / "other.parquet")
    with pytest.raises(
        DataError, match=r"other\.parquet, row 1: cannot tell the format from columns \['bar', 'foo'\]"
    ):
        list(iter_examples(tmp_path / "other.parquet"))


KILL_IN_MERGE = """
import os, signal, sys
import rmkit
import rmkit.jobs.scorefiles as files

def dying(output, parts):  # the merge has written part of its temporary file when the kill comes
    output.with_name(output.name + ".tmp").write_text('[\\n{"prompt": "half')
    os.kill(os.getpid(), signal.SIGKILL)

files.merge_parts = dying
rmkit.score(model=sys.argv[1], input=sys.argv[2], output=sys.argv[3], chunk_rows=2)
"""


@pytest.mark.slow
def test_a_kill_while_merging_then_resume_gives_the_uninterrupted_file(rm_path, tmp_path):
    import subprocess
    import sys

    data = write_jsonl(
        tmp_path / "in.jsonl", [{"id": i, "prompt": "Hi", "response": f"Hello {i}"} for i in range(9)]
    )
    whole, out = tmp_path / "whole.json", tmp_path / "out.json"
    rmkit.score(model=str(rm_path), input=str(data), output=str(whole), chunk_rows=2)
    proc = subprocess.run(
        [sys.executable, "-c", KILL_IN_MERGE, str(rm_path), str(data), str(out)], capture_output=True
    )
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert not out.exists(), "a half-merged file appeared under the final name"
    rmkit.score(model=str(rm_path), input=str(data), output=str(out), chunk_rows=2, resume=True)
    assert out.read_bytes() == whole.read_bytes()
    assert not list(tmp_path.glob("out.json.*")), "parts, states or the temporary file were left behind"


def test_a_save_that_fails_half_way_leaves_no_weights_under_their_final_name(rm_path, tmp_path, monkeypatch):
    rm = RewardModel.from_pretrained(rm_path)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(rm.tokenizer, "save_pretrained", broken)  # after the weights were written
    with pytest.raises(OSError, match="disk full"):
        rm.save_pretrained(tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []
    monkeypatch.undo()
    rm.save_pretrained(tmp_path / "out")
    assert (tmp_path / "out" / "model.safetensors").exists() and not list((tmp_path / "out").glob(".tmp-*"))
    assert RewardModel.from_pretrained(tmp_path / "out").score(texts=["hi"]) == pytest.approx(
        rm.score(texts=["hi"])
    )
