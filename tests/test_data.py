"""The data layer: readers, format detection and normalisation, errors that name the row."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import write_jsonl

from rmkit.data import Rejects, iter_examples, read_records
from rmkit.errors import DataError

HH_CHOSEN = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: What is 2+2?\n\nAssistant: It is 4."
HH_REJECTED = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: What is 2+2?\n\nAssistant: It is 5."


def test_pku_sample_picks_the_better_response(shared_data):
    path = shared_data / "pku_saferlhf_sample.json"
    raw = json.loads(path.read_text(encoding="utf-8"))
    examples = list(iter_examples(path))
    assert len(examples) == 32
    for ex, row in zip(examples, raw, strict=True):
        better = row["better_response_id"]
        assert ex.is_pair
        assert ex.responses == [row[f"response_{better}"], row[f"response_{1 - better}"]]
        assert ex.prompt == [{"role": "user", "content": row["prompt"]}]
        assert ex.extra["safer_response_id"] == row["safer_response_id"]


@pytest.mark.parametrize("name", ["sharegpt_pref_en.json", "sharegpt_pref_zh.json"])
def test_sharegpt_files_normalise_with_text_unchanged(shared_data, name):
    raw = json.loads((shared_data / name).read_text(encoding="utf-8"))
    examples = list(iter_examples(shared_data / name))
    assert len(examples) == 300
    for ex, row in zip(examples, raw, strict=True):
        assert ex.responses == [row["chosen"]["value"], row["rejected"]["value"]]
        assert [m["content"] for m in ex.prompt] == [m["value"] for m in row["conversations"]]
        assert ex.prompt[0]["role"] in ("user", "system")
    if name.endswith("zh.json"):
        assert any("\u4e00" <= ch <= "\u9fff" for ch in examples[0].responses[0])


def test_trl_explicit_strings_and_messages(tmp_path):
    path = write_jsonl(
        tmp_path / "trl.jsonl",
        [
            {"prompt": "Sky colour?", "chosen": "Blue.", "rejected": "Green.", "id": 7},
            {
                "prompt": [{"role": "user", "content": "Sky colour?"}],
                "chosen": [{"role": "assistant", "content": "Blue."}],
                "rejected": [{"role": "assistant", "content": "Green."}],
            },
        ],
    )
    first, second = iter_examples(path)
    assert first.responses == second.responses == ["Blue.", "Green."]
    assert first.prompt == second.prompt == [{"role": "user", "content": "Sky colour?"}]
    assert first.extra == {"id": 7}


def test_trl_implicit_messages_share_the_prompt_and_strings_stay_verbatim(tmp_path):
    conv = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
    path = write_jsonl(
        tmp_path / "implicit.jsonl",
        [
            {
                "chosen": conv + [{"role": "assistant", "content": "4"}],
                "rejected": conv + [{"role": "assistant", "content": "5"}],
            },
            {"chosen": "The sky is blue.", "rejected": "The sky is green."},
        ],
    )
    msgs, text = iter_examples(path, format="trl_implicit")
    assert msgs.prompt == conv and msgs.responses == ["4", "5"] and not msgs.rendered
    assert text.rendered and text.prompt == [] and text.responses == ["The sky is blue.", "The sky is green."]


def test_hh_transcripts_split_into_shared_prompt_and_last_replies(tmp_path):
    path = write_jsonl(tmp_path / "hh.jsonl", [{"chosen": HH_CHOSEN, "rejected": HH_REJECTED}])
    (ex,) = iter_examples(path)
    assert ex.prompt == [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "What is 2+2?"},
    ]
    assert ex.responses == ["It is 4.", "It is 5."]


def test_scoring_formats(tmp_path):
    path = write_jsonl(tmp_path / "score.jsonl", [{"prompt": "Hi", "response": "Hello", "uid": "a"}])
    (ex,) = iter_examples(path)
    assert not ex.is_pair and ex.responses == ["Hello"] and ex.extra == {"uid": "a"}
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    (ex,) = iter_examples(write_jsonl(tmp_path / "m.jsonl", [{"messages": msgs}]))
    assert ex.prompt == msgs[:1] and ex.responses == ["Hello"]
    (ex,) = iter_examples(write_jsonl(tmp_path / "t.jsonl", [{"text": "raw text"}]))
    assert ex.rendered and ex.responses == ["raw text"]


def test_every_file_type_reads_the_same_records(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": f"p{i} 你好", "response": f"r{i}", "n": str(i)} for i in range(2500)]
    (tmp_path / "a.json").write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    write_jsonl(tmp_path / "a.jsonl", rows)
    with open(tmp_path / "a.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["prompt", "response", "n"])
        writer.writeheader()
        writer.writerows(rows)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet", row_group_size=300)
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "arrow"))
    for name in ("a.json", "a.jsonl", "a.csv", "a.parquet", "arrow"):
        got = list(read_records(tmp_path / name))
        assert [r for _, r in got] == rows, name
        assert [i for i, _ in got] == list(range(1, 2501)), name


def test_json_reader_streams_large_arrays_across_chunk_boundaries(tmp_path, monkeypatch):
    from rmkit.data import readers

    monkeypatch.setattr(readers, "_CHUNK", 7)
    rows = [{"text": "x" * (i % 13), "i": i} for i in range(200)]
    (tmp_path / "a.json").write_text(json.dumps(rows), encoding="utf-8")
    assert [r for _, r in read_records(tmp_path / "a.json")] == rows


def test_column_mapping_and_format_override(tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", [{"question": "Hi", "good": "Hello", "bad": "Go away"}])
    (ex,) = iter_examples(path, columns={"question": "prompt", "good": "chosen", "bad": "rejected"})
    assert ex.responses == ["Hello", "Go away"]
    with pytest.raises(DataError, match="unknown format"):
        list(iter_examples(path, format="nope"))


def test_pairs_required_rejects_scoring_rows(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [{"prompt": "Hi", "response": "Hello"}])
    with pytest.raises(DataError, match="expected preference pairs"):
        list(iter_examples(path, kind="pairs"))


BAD_ROWS = [
    (
        "missing field",
        {"prompt": "p", "response_0": "a", "better_response_id": 0},
        "response_1",
        "missing field",
    ),
    ("wrong type", {"prompt": "p", "chosen": 3, "rejected": "b"}, "chosen", "expected a string"),
    ("empty response", {"prompt": "p", "chosen": "  ", "rejected": "b"}, "chosen", "empty response"),
    (
        "bad better id",
        {"prompt": "p", "response_0": "a", "response_1": "b", "better_response_id": 2},
        "better_response_id",
        "expected 0 or 1",
    ),
]


@pytest.mark.parametrize(("case", "bad", "field", "reason"), BAD_ROWS, ids=[c[0] for c in BAD_ROWS])
def test_bad_rows_name_file_row_and_field(tmp_path, case, bad, field, reason):
    good = {k: ("ok" if isinstance(v, str) else v) for k, v in bad.items()}
    good.update({"response_1": "b", "better_response_id": 0} if "response_0" in bad else {"chosen": "a"})
    path = write_jsonl(tmp_path / "bad.jsonl", [good, good, bad])
    with pytest.raises(DataError) as err:
        list(iter_examples(path))
    message = str(err.value)
    assert (
        "bad.jsonl" in message and "row 3" in message and f"field '{field}'" in message and reason in message
    )


def test_undecodable_json_line_names_the_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"text": "ok"}\n{"text": "unterminated\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"broken\.jsonl, row 2: not valid JSON"):
        list(iter_examples(path))


def test_skipped_rows_are_counted_and_written_with_reasons(tmp_path):
    path = write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            {"prompt": "p", "chosen": "a", "rejected": "b"},
            {"prompt": "p", "chosen": "", "rejected": "b"},
            {"prompt": "p", "chosen": "a", "rejected": "b"},
        ],
    )
    rejects = Rejects(tmp_path / "rejects.jsonl")
    examples = list(iter_examples(path, rejects=rejects))
    rejects.close()
    assert [e.row for e in examples] == [1, 3]
    assert rejects.count == 1
    (line,) = [json.loads(x) for x in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert line["row"] == 2 and line["field"] == "chosen" and line["reason"] == "empty response"
    assert line["record"]["rejected"] == "b"
