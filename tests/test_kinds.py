"""The registry of kinds: every command picks a model's kind in one place, refuses a model it cannot use in
one line, and a new kind is one module: a kind written here, inside the test, runs through score, rank,
eval and serve without a line of theirs changing."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import pytest
import torch
from conftest import write_jsonl
from transformers import LlamaConfig, LlamaForTokenClassification

from rmkit import RewardModel, kinds
from rmkit.cli import main
from rmkit.errors import RMKitError
from rmkit.kinds.pairwise import PairwiseKind

PAIRS = [
    {"prompt": f"Question {i}: what is {i} plus {i}?", "chosen": f"It is {2 * i}.", "rejected": "No idea."}
    for i in range(12)
]
GROUPS = [
    {"prompt": f"Name a number above {i}.", "responses": [str(i + 1), "zero", f"{i} and more"]}
    for i in range(5)
]


class Negated(PairwiseKind):
    """A toy fourth kind: an outcome RM whose score is the negation of its head's output, known by the
    rmkit settings ``{"kind": "negated"}``. Only what differs from a pairwise RM is written."""

    name = "negated"

    def owns(self, model) -> bool:
        return super().owns(model) and model.metadata.get("kind") == self.name

    def values(self, model, raw) -> list[float]:
        return [-v for v in raw]


@pytest.fixture
def negated(rm_path, tmp_path):
    """The test RM saved again with its rmkit settings naming the kind ``negated``, which is registered for
    the test and removed after it."""
    path = tmp_path / "negated"
    shutil.copytree(rm_path, path)
    config = json.loads((path / "config.json").read_text())
    config.setdefault("rmkit", {})["kind"] = "negated"
    (path / "config.json").write_text(json.dumps(config))
    kinds.register(Negated())
    yield path
    kinds.unregister("negated")


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_built_in_kinds_are_recognised_from_the_checkpoint(rm_path, tmp_path):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2)  # fmt: skip
    LlamaForTokenClassification(config).save_pretrained(tmp_path / "prm")
    assert kinds.recognise(kinds.Checkpoint.read(rm_path)).name == "pairwise"
    assert kinds.recognise(kinds.Checkpoint.read(tmp_path / "prm")).name == "process"
    given = kinds.Checkpoint.read(rm_path, steps={"good_token": "+", "bad_token": "-"})
    assert kinds.recognise(given).name == "process"  # a causal LM read by its good/bad tokens
    kind, rm = kinds.load(rm_path)
    assert (kind.name, type(rm)) == ("pairwise", RewardModel)


def test_a_kind_registered_at_runtime_runs_through_score_rank_eval_and_serve(negated, rm_path, tmp_path):
    pairs, groups = (
        write_jsonl(tmp_path / "pairs.jsonl", PAIRS),
        write_jsonl(tmp_path / "groups.jsonl", GROUPS),
    )
    scored = {}
    for name, model in (("plain", rm_path), ("negated", negated)):
        assert (
            main(
                [
                    "score",
                    "--model",
                    str(model),
                    "--input",
                    str(pairs),
                    "--output",
                    str(tmp_path / f"{name}.jsonl"),
                ]
            )
            == 0
        )
        assert (
            main(
                [
                    "rank",
                    "--model",
                    str(model),
                    "--input",
                    str(groups),
                    "--output",
                    str(tmp_path / f"{name}_rank.jsonl"),
                ]
            )
            == 0
        )
        assert (
            main(
                [
                    "eval",
                    "--model",
                    str(model),
                    "--data",
                    str(pairs),
                    "--output-dir",
                    str(tmp_path / f"{name}_eval"),
                    "--no-plots",
                    "--bootstrap",
                    "50",
                ]
            )
            == 0
        )
        scored[name] = [(r["score_chosen"], r["score_rejected"]) for r in rows(tmp_path / f"{name}.jsonl")]
    assert scored["negated"] == [(-c, -r) for c, r in scored["plain"]]

    plain, flipped = rows(tmp_path / "plain_rank.jsonl"), rows(tmp_path / "negated_rank.jsonl")
    for a, b in zip(plain, flipped, strict=True):
        assert b["scores"] == [-s for s in a["scores"]]
        assert b["best"] == max(range(3), key=lambda i: b["scores"][i])

    lines = {name: rows(tmp_path / f"{name}_eval" / "scores.jsonl") for name in ("plain", "negated")}
    for a, b in zip(lines["plain"], lines["negated"], strict=True):
        assert (b["chosen_score"], b["margin"]) == (-a["chosen_score"], -a["margin"])

    from rmkit.serving import running
    from rmkit.serving.app import ServeConfig, create_app, load

    config = ServeConfig(model=str(negated))
    model = load(config)
    with running(create_app(model, config)) as base:
        body = {"prompts": [p["prompt"] for p in PAIRS], "responses": [p["chosen"] for p in PAIRS]}
        request = urllib.request.Request(
            f"{base}/score", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request) as reply:
            served = json.loads(reply.read())["scores"]
    assert served == pytest.approx([c for c, _ in scored["negated"]], abs=1e-6)


def test_a_prm_given_to_pair_evaluation_is_refused_in_one_line_naming_it(tmp_path, capsys):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2)  # fmt: skip
    LlamaForTokenClassification(config).save_pretrained(tmp_path / "prm")
    pairs = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    code = main(
        [
            "eval",
            "--model",
            str(tmp_path / "prm"),
            "--data",
            str(pairs),
            "--output-dir",
            str(tmp_path / "out"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert str(tmp_path / "prm") in err and "process reward model" in err
    assert "LlamaForTokenClassification" in err and "preference pairs" in err
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_an_outcome_rm_given_step_data_is_refused_in_one_line(rm_path, tmp_path, capsys):
    steps = write_jsonl(
        tmp_path / "steps.jsonl", [{"prompt": "2+2?", "completions": ["2+2", "is 4"], "labels": [True, True]}]
    )
    code = main(
        ["eval", "--model", str(rm_path), "--data", str(steps), "--output-dir", str(tmp_path / "out")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert str(rm_path) in err and "pairwise reward model" in err and "step-labelled solutions" in err


def test_data_of_two_kinds_in_one_eval_is_refused_naming_both_files(rm_path, tmp_path, capsys):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    rated = write_jsonl(tmp_path / "rated.jsonl", [{"prompt": "Hi", "response": "Hello", "helpfulness": 3}])
    code = main(
        [
            "eval",
            "--model",
            str(rm_path),
            "--data",
            str(pairs),
            str(rated),
            "--output-dir",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and f"{rated} holds rated responses" in err and f"{pairs} holds preference pairs" in err


def face_args(command: str, tmp_path) -> list[str]:
    """The arguments besides ``--model`` that run ``command`` on data of its own in ``tmp_path``."""
    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    return {
        "score": ["--input", str(data), "--output", str(tmp_path / "o.jsonl")],
        "rank": [
            "--input",
            str(write_jsonl(tmp_path / "groups.jsonl", GROUPS)),
            "--output",
            str(tmp_path / "r.jsonl"),
        ],
        "eval": ["--data", str(data), "--output-dir", str(tmp_path / "o")],
        "serve": ["--port", "0"],
    }[command]


@pytest.mark.parametrize("command", ["score", "rank", "eval", "serve"])
def test_every_face_refuses_a_checkpoint_of_an_unknown_kind_in_one_line(command, rm_path, tmp_path, capsys):
    path = tmp_path / "quantile"
    shutil.copytree(rm_path, path)
    config = json.loads((path / "config.json").read_text())
    config.setdefault("rmkit", {})["kind"] = "quantile"
    (path / "config.json").write_text(json.dumps(config))
    assert main([command, "--model", str(path), *face_args(command, tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert str(path) in err and "'quantile'" in err and "LlamaForSequenceClassification" in err


def test_a_loaded_model_of_no_known_kind_is_refused_by_name(rm_path):
    class Other(torch.nn.Module):
        metadata: dict = {}

    with pytest.raises(Exception, match="no kind reads it"):
        kinds.of_model(Other())
    prm_kind = kinds.named("process")
    assert prm_kind is not None and not prm_kind.owns(RewardModel.from_pretrained(rm_path))


@pytest.mark.parametrize("command", ["score", "rank", "eval", "serve", "reward_function"])
def test_every_face_that_reads_scores_refuses_a_checkpoint_without_its_head(
    command, llama_path, tmp_path, capsys
):
    """A backbone (here a causal LM: its lm_head is no score head) would get a random head: refused in one
    line that names the weights it has and the kinds tried, before anything is scored."""
    if command == "reward_function":
        import rmkit

        with pytest.raises(RMKitError, match="no trained score head") as e:
            rmkit.reward_function(str(llama_path))
        assert "lm_head.weight" in str(e.value)
        return
    assert main([command, "--model", str(llama_path), *face_args(command, tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no trained score head" in err and "lm_head.weight" in err and "pairwise" in err
    assert len(err.splitlines()) == 1
