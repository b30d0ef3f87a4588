"""Other trainers' checkpoint layouts: each built here with that trainer's key names, shapes and config keys
(random weights), read by rmkit, scored exactly as by hand, and converted to the standard layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import make_llama, write_jsonl
from safetensors.torch import save_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer, LlamaForCausalLM

import rmkit
from rmkit import RewardModel, RMKitError
from rmkit.cli import main
from rmkit.heads import ARMO_OBJECTIVES
from rmkit.inference import score_sequences

TEXTS = ["What is two plus two? Two plus two is four.", "The capital of France is Paris."]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@pytest.fixture(scope="module")
def causal_lm(tmp_path_factory) -> Path:
    return make_llama(tmp_path_factory.mktemp("causal"), seed=3)


def _parts(causal_lm: Path) -> tuple[dict, dict, dict]:
    """``(config dict, causal LM state, backbone state without the 'model.' prefix)`` of the tiny Llama."""
    lm = LlamaForCausalLM.from_pretrained(causal_lm)
    config = json.loads((causal_lm / "config.json").read_text())
    state = {k: v.clone() for k, v in lm.state_dict().items()}
    backbone = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    return config, state, backbone


def assert_either_padding(rm: RewardModel, ids: list[list[int]], expected: list[float]) -> None:
    """``rm``'s end scores of ``ids`` padded on the left, then on the right, in one batch, are ``expected``."""
    width = max(map(len, ids))
    for side in ("left", "right"):
        pads = [[0] * (width - len(s)) for s in ids]
        rows = [p + s if side == "left" else s + p for p, s in zip(pads, ids, strict=True)]
        mask = [[0] * len(p) + [1] * len(s) if side == "left" else [1] * len(s) + [0] * len(p)
                for p, s in zip(pads, ids, strict=True)]  # fmt: skip
        with torch.no_grad():
            got = rm(torch.tensor(rows), torch.tensor(mask)).end_scores.tolist()
        assert got == pytest.approx(expected, abs=1e-5), side


def _write(path: Path, causal_lm: Path, config: dict, weights: dict | None, *, pickle: bool = False) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    if weights is not None:
        if pickle:
            torch.save(weights, path / "pytorch_model.bin")
        else:
            save_file({k: v.contiguous() for k, v in weights.items()}, path / "model.safetensors")
    for name in TOKENIZER_FILES:
        if (causal_lm / name).exists():
            shutil.copy(causal_lm / name, path / name)
    return path


def _head(hidden: int, outputs: int = 1, seed: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(outputs, hidden, generator=g), torch.randn(outputs, generator=g)


# Each builder writes one layout and returns (directory, head weight (1, H), head bias, expected metadata).
def safe_rlhf(root: Path, causal_lm: Path):
    config, _, backbone = _parts(causal_lm)
    weight, bias = _head(config["hidden_size"], outputs=2)
    mean, var = torch.tensor([0.5, -1.0]), torch.tensor([4.0, 9.0])
    config.update(
        architectures=["LlamaForScore"],
        score_dim=2,
        bias=True,
        score_type="reward",
        do_normalize=True,
        normalizer_type="RunningMeanStd",
        mean=mean.tolist(),
        var=var.tolist(),
    )
    state = {f"model.{k}": v for k, v in backbone.items()}
    state.update({"score_head.weight": weight, "score_head.bias": bias})
    state.update({"normalizer.mean": mean, "normalizer.var": var, "normalizer.count": torch.tensor([100])})
    d = 1  # the test reads the second output
    path = _write(root / "safe-rlhf", causal_lm, config, state, pickle=True)
    return path, weight[d], float(bias[d]), {"score_mean": -1.0, "score_std": 3.0 + 1e-8}


def _unbiased(root: Path, causal_lm: Path, name: str, head_key: str, **config_keys):
    """A ``model.*`` backbone with a bias-free one-output head under ``head_key``, config keys updated."""
    config, _, backbone = _parts(causal_lm)
    weight, _ = _head(config["hidden_size"])
    config.update(config_keys)
    state = {f"model.{k}": v for k, v in backbone.items()} | {head_key: weight}
    return _write(root / name, causal_lm, config, state), weight[0], 0.0, {}


def align_anything(root: Path, causal_lm: Path):
    return _unbiased(
        root, causal_lm, "align-anything", "score_head.weight", architectures=["AccustomedLlamaRewardModel"]
    )


def trl(root: Path, causal_lm: Path):
    config, state, _ = _parts(causal_lm)
    weight, bias = _head(config["hidden_size"])
    state.update({"v_head.summary.weight": weight, "v_head.summary.bias": bias})
    return _write(root / "trl", causal_lm, config, state), weight[0], float(bias[0]), {}


def trl_sharded(root: Path, causal_lm: Path):
    """As TRL saves a big model: the pretrained model's save_pretrained given the state with v_head, in shards."""
    _, state, _ = _parts(causal_lm)
    weight, bias = _head(32)
    state.update({"v_head.summary.weight": weight, "v_head.summary.bias": bias})
    path = root / "trl-sharded"
    LlamaForCausalLM.from_pretrained(causal_lm).save_pretrained(path, state_dict=state, max_shard_size="40KB")
    AutoTokenizer.from_pretrained(causal_lm).save_pretrained(path)
    assert (path / "model.safetensors.index.json").exists()
    return path, weight[0], float(bias[0]), {}


def llama_factory(root: Path, causal_lm: Path):
    config, _, _ = _parts(causal_lm)
    weight, bias = _head(config["hidden_size"])
    path = root / "llama-factory"
    shutil.copytree(causal_lm, path)
    save_file({"v_head.summary.weight": weight, "v_head.summary.bias": bias}, path / "value_head.safetensors")
    return path, weight[0], float(bias[0]), {}


def deepspeed_chat(root: Path, causal_lm: Path):
    config, _, backbone = _parts(causal_lm)
    weight, _ = _head(config["hidden_size"])
    config.update(end_token_id=config["eos_token_id"], pad_token_id=config["eos_token_id"])
    state = {f"rwtransformer.{k}": v for k, v in backbone.items()} | {"v_head.weight": weight}
    path = _write(root / "deepspeed-chat", causal_lm, config, state, pickle=True)
    for name in TOKENIZER_FILES:  # DeepSpeed-Chat saves only the vocabulary; these tests pass --tokenizer
        (path / name).unlink(missing_ok=True)
    return path, weight[0], 0.0, {}


def openrlhf(root: Path, causal_lm: Path):
    path, weight, bias, _ = _unbiased(
        root,
        causal_lm,
        "openrlhf",
        "score.weight",
        architectures=["RewardModel"],
        value_head_prefix="score",
        normalize_reward=True,
        mean=0.25,
        std=2.5,
    )
    return path, weight, bias, {"score_mean": 0.25, "score_std": 2.5}


def openrlhf_old(root: Path, causal_lm: Path):
    """OpenRLHF before v0.5.4: the head is ``value_head`` and the config names no prefix."""
    return _unbiased(
        root, causal_lm, "openrlhf-old", "value_head.weight", architectures=["LLMForSequenceRegression"]
    )


BUILDERS = {
    "safe-rlhf": safe_rlhf,
    "align-anything": align_anything,
    "trl": trl,
    "trl-sharded": trl_sharded,
    "llama-factory": llama_factory,
    "deepspeed-chat": deepspeed_chat,
    "openrlhf": openrlhf,
    "openrlhf-old": openrlhf_old,
}
# What each layout's load needs beyond the path.
OPTIONS = {
    "safe-rlhf": {"allow_pickle": True, "dimension": 1},
    "deepspeed-chat": {"allow_pickle": True},
}


def by_hand(causal_lm: Path, weight: torch.Tensor, bias: float) -> list[float]:
    """The head applied to the backbone's last hidden state at each text's last token."""
    lm = LlamaForCausalLM.from_pretrained(causal_lm).eval()
    tok = AutoTokenizer.from_pretrained(causal_lm)
    out = []
    with torch.no_grad():
        for text in TEXTS:
            ids = tok(text, return_tensors="pt").input_ids
            hidden = lm.model(ids).last_hidden_state[0, -1]
            out.append(float(hidden @ weight) + bias)
    return out


@pytest.fixture(scope="module", params=list(BUILDERS))
def layout(request, causal_lm, tmp_path_factory):
    path, weight, bias, meta = BUILDERS[request.param](tmp_path_factory.mktemp("layouts"), causal_lm)
    options = dict(OPTIONS.get(request.param, {}))
    if request.param == "deepspeed-chat":
        options["tokenizer"] = str(causal_lm)
    return request.param, path, by_hand(causal_lm, weight, bias), bias, meta, options


def test_each_layout_scores_as_its_head_does_by_hand(layout):
    name, path, expected, _, meta, options = layout
    rm = RewardModel.from_pretrained(path, **options)
    assert rm.score(texts=TEXTS) == pytest.approx(expected, abs=1e-5)
    assert rm.metadata["converted_from"]["layout"] == name.split("-sharded")[0].removesuffix("-old")
    for key, value in meta.items():
        assert rm.metadata[key] == pytest.approx(value)


def test_converted_checkpoints_load_in_plain_transformers_with_every_key_and_the_same_scores(
    layout, tmp_path
):
    name, path, expected, bias, meta, options = layout
    flags = [f"--{k.replace('_', '-')}" + ("" if v is True else f"={v}") for k, v in options.items()]
    assert main(["convert", str(path), str(tmp_path / "out"), *flags]) == 0
    out = tmp_path / "out"
    assert (out / "model.safetensors").exists() and not list(out.glob("*.bin"))
    plain, info = AutoModelForSequenceClassification.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    tok = AutoTokenizer.from_pretrained(out)
    with torch.no_grad():
        logits = [float(plain(**tok(t, return_tensors="pt")).logits) for t in TEXTS]
    assert [v + bias for v in logits] == pytest.approx(expected, abs=1e-5)  # the bias is rmkit's metadata
    again = RewardModel.from_pretrained(out)
    assert again.score(texts=TEXTS) == pytest.approx(expected, abs=1e-5)
    for key, value in meta.items():  # normalisation stats survive the conversion
        assert again.metadata[key] == pytest.approx(value)
    assert again.metadata["converted_from"]["layout"] == name.split("-sharded")[0].removesuffix("-old")


def test_normalize_uses_the_source_trainers_statistics(causal_lm, tmp_path):
    path, weight, _, meta = openrlhf(tmp_path, causal_lm)
    rm = RewardModel.from_pretrained(path)
    raw = by_hand(causal_lm, weight, 0.0)
    assert rm.score(texts=TEXTS, normalize=True) == pytest.approx([(v - 0.25) / 2.5 for v in raw], abs=1e-5)


def test_a_multi_output_head_needs_a_chosen_dimension(causal_lm, tmp_path):
    path = safe_rlhf(tmp_path, causal_lm)[0]
    with pytest.raises(RMKitError, match=r"score_dim=2.*--dimension 0\.\.1"):
        RewardModel.from_pretrained(path, allow_pickle=True)
    with pytest.raises(RMKitError, match="--dimension 5"):
        RewardModel.from_pretrained(path, allow_pickle=True, dimension=5)


@pytest.mark.parametrize("builder", [safe_rlhf, deepspeed_chat])
def test_pickle_weights_load_only_when_allowed(builder, causal_lm, tmp_path):
    path = builder(tmp_path, causal_lm)[0]
    with pytest.raises(RMKitError, match=r"pytorch_model\.bin' is a pickle file.*--allow-pickle"):
        RewardModel.from_pretrained(path, tokenizer=causal_lm)


def test_a_pickled_value_head_is_refused_without_the_flag(causal_lm, tmp_path):
    path = llama_factory(tmp_path, causal_lm)[0]
    head = {
        k: torch.zeros(1, 32) if k.endswith("weight") else torch.zeros(1)
        for k in ("v_head.summary.weight", "v_head.summary.bias")
    }
    (path / "value_head.safetensors").unlink()
    torch.save(head, path / "value_head.bin")
    with pytest.raises(RMKitError, match=r"value_head\.bin' is a pickle file"):
        RewardModel.from_pretrained(path)
    assert (
        RewardModel.from_pretrained(path, allow_pickle=True).metadata["converted_from"]["layout"]
        == "llama-factory"
    )


def test_a_checkpoint_without_a_tokenizer_says_to_name_one(causal_lm, tmp_path):
    path = deepspeed_chat(tmp_path, causal_lm)[0]
    with pytest.raises(RMKitError, match="--tokenizer DIR"):
        RewardModel.from_pretrained(path, allow_pickle=True)


def test_an_unknown_key_is_an_error_naming_it_never_a_silent_fresh_weight(causal_lm, tmp_path):
    config, state, _ = _parts(causal_lm)
    state.update({"v_head.summary.weight": torch.zeros(1, 32), "v_head.summary.bias": torch.zeros(1)})
    state["extra_adapter.weight"] = torch.zeros(2, 2)
    path = _write(tmp_path / "odd", causal_lm, config, state)
    with pytest.raises(RMKitError, match="extra_adapter.weight") as err:
        RewardModel.from_pretrained(path)
    assert "\n" not in str(err.value)


def test_a_missing_backbone_weight_is_an_error_naming_it(causal_lm, tmp_path):
    path, *_ = trl(tmp_path, causal_lm)
    from safetensors.torch import load_file

    state = load_file(path / "model.safetensors")
    del state["model.norm.weight"]
    save_file(state, path / "model.safetensors")
    with pytest.raises(RMKitError, match=r"missing_keys.*model\.norm\.weight"):
        RewardModel.from_pretrained(path)


def test_a_lora_adapter_directory_is_named_as_one(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    save_file({"v_head.summary.weight": torch.zeros(1, 8)}, tmp_path / "value_head.safetensors")
    with pytest.raises(RMKitError, match="LoRA adapter") as err:
        RewardModel.from_pretrained(tmp_path)
    assert "value_head.safetensors" in str(err.value) and "Repo id" not in str(err.value)


def test_convert_refuses_to_write_over_files(causal_lm, tmp_path, capsys):
    path = trl(tmp_path, causal_lm)[0]
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert main(["convert", str(path), str(tmp_path / "busy")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_every_command_takes_another_layout_directly(causal_lm, tmp_path):
    """score, rank and eval on a TRL value-head checkpoint, converted in memory: the scores are the head's."""
    path, weight, bias, _ = trl(tmp_path, causal_lm)
    expected = by_hand(causal_lm, weight, bias)
    rows = write_jsonl(tmp_path / "rows.jsonl", [{"text": t} for t in TEXTS])
    assert (
        main(["score", "--model", str(path), "--input", str(rows), "--output", str(tmp_path / "s.jsonl")])
        == 0
    )
    scores = [json.loads(line)["score"] for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert scores == pytest.approx(expected, abs=1e-5)

    candidates = write_jsonl(
        tmp_path / "bon.jsonl",
        [{"prompt": "What is two plus two?", "responses": ["Four.", "Two plus two is four."]}],
    )
    assert (
        main(
            ["rank", "--model", str(path), "--input", str(candidates), "--output", str(tmp_path / "r.jsonl")]
        )
        == 0
    )
    ranked = json.loads((tmp_path / "r.jsonl").read_text())
    rm = RewardModel.from_pretrained(path)
    assert ranked["scores"] == pytest.approx(
        rm.score(["What is two plus two?"] * 2, ["Four.", "Two plus two is four."]), abs=1e-5
    )

    pairs = write_jsonl(
        tmp_path / "pairs.jsonl", [{"prompt": "Hi", "chosen": TEXTS[0], "rejected": TEXTS[1]}]
    )
    assert (
        main(
            [
                "eval",
                "--model",
                str(path),
                "--data",
                str(pairs),
                "--output-dir",
                str(tmp_path / "ev"),
                "--no-plots",
                "--bootstrap",
                "0",
            ]
        )
        == 0
    )
    line = json.loads((tmp_path / "ev" / "scores.jsonl").read_text())
    chosen, rejected = rm.score(["Hi", "Hi"], [TEXTS[0], TEXTS[1]])
    assert (line["chosen_score"], line["rejected_score"]) == pytest.approx((chosen, rejected), abs=1e-5)


def test_the_server_takes_another_layout_directly(causal_lm, tmp_path):
    import urllib.request

    from rmkit.serving import ServeConfig, running
    from rmkit.serving.app import create_app, load

    path, weight, bias, _ = trl(tmp_path, causal_lm)
    config = ServeConfig(model=str(path))
    with running(create_app(load(config), config)) as base:
        request = urllib.request.Request(
            f"{base}/score",
            data=json.dumps({"texts": TEXTS}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request) as reply:
            scores = json.loads(reply.read())["scores"]
    assert scores == pytest.approx(by_hand(causal_lm, weight, bias), abs=1e-5)


def _lora(model, task_type: str, seed: int = 11):
    """``model`` with a LoRA adapter whose B matrices are random (a fresh adapter is the identity)."""
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type=task_type)
    )
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return peft_model.eval()


def test_a_llama_factory_lora_run_is_merged_into_its_base_and_scored_with_its_value_head(causal_lm, tmp_path):
    peft_model = _lora(LlamaForCausalLM.from_pretrained(causal_lm), "CAUSAL_LM")
    out = tmp_path / "lf-lora"
    peft_model.save_pretrained(out)
    weight, bias = _head(32)
    save_file({"v_head.summary.weight": weight, "v_head.summary.bias": bias}, out / "value_head.safetensors")
    AutoTokenizer.from_pretrained(causal_lm).save_pretrained(out)
    assert not (out / "config.json").exists()

    merged = peft_model.merge_and_unload()
    tok = AutoTokenizer.from_pretrained(causal_lm)
    with torch.no_grad():
        expected = [
            float(merged.model(tok(t, return_tensors="pt").input_ids).last_hidden_state[0, -1] @ weight[0])
            + float(bias[0])
            for t in TEXTS
        ]
    assert expected != pytest.approx(
        by_hand(causal_lm, weight[0], float(bias[0])), abs=1e-3
    )  # the adapter matters
    rm = RewardModel.from_pretrained(out)
    assert rm.score(texts=TEXTS) == pytest.approx(expected, abs=1e-5)
    assert rm.metadata["converted_from"]["base_model"] == str(causal_lm)
    assert main(["convert", str(out), str(tmp_path / "std")]) == 0
    assert RewardModel.from_pretrained(tmp_path / "std").score(texts=TEXTS) == pytest.approx(
        expected, abs=1e-5
    )


def test_a_trl_reward_trainer_peft_adapter_loads_with_its_trained_score_head(causal_lm, tmp_path):
    base = AutoModelForSequenceClassification.from_pretrained(causal_lm, num_labels=1)
    peft_model = _lora(base, "SEQ_CLS")
    with torch.no_grad():  # the head PEFT keeps trainable beside the adapter (modules_to_save)
        head = next(p for n, p in peft_model.named_parameters() if "score" in n and "modules_to_save" in n)
        head.copy_(torch.randn(head.shape, generator=torch.Generator().manual_seed(5)))
    out = tmp_path / "trl-peft"
    peft_model.save_pretrained(out)
    tok = AutoTokenizer.from_pretrained(causal_lm)
    with torch.no_grad():
        expected = [float(peft_model(**tok(t, return_tensors="pt")).logits) for t in TEXTS]
    rm = RewardModel.from_pretrained(out)  # no tokenizer beside the adapter: the base's
    assert rm.score(texts=TEXTS) == pytest.approx(expected, abs=1e-5)


def test_a_lora_adapter_whose_base_is_elsewhere_takes_base_model(causal_lm, tmp_path):
    peft_model = _lora(LlamaForCausalLM.from_pretrained(causal_lm), "CAUSAL_LM")
    out = tmp_path / "moved"
    peft_model.save_pretrained(out)
    save_file(
        {"v_head.summary.weight": torch.ones(1, 32), "v_head.summary.bias": torch.zeros(1)},
        out / "value_head.safetensors",
    )
    config = json.loads((out / "adapter_config.json").read_text())
    (out / "adapter_config.json").write_text(
        json.dumps({**config, "base_model_name_or_path": str(tmp_path / "gone")})
    )
    with pytest.raises(RMKitError, match="--base-model"):
        RewardModel.from_pretrained(out)
    rm = RewardModel.from_pretrained(out, base_model=causal_lm)
    assert rm.metadata["converted_from"]["base_model"] == str(causal_lm)


def inf_orm(root: Path, causal_lm: Path) -> tuple[Path, dict]:
    """INF-ORM's layout: a LlamaModel under ``model.*`` and a ``Linear → ReLU → Linear`` head as
    ``score.0``/``score.2``, its class named in the config (remote code rmkit never runs)."""
    config, _, backbone = _parts(causal_lm)
    h = config["hidden_size"]
    g = torch.Generator().manual_seed(11)
    head = {
        "score.0.weight": torch.randn(h, h, generator=g) / h**0.5,
        "score.0.bias": torch.randn(h, generator=g),
        "score.2.weight": torch.randn(1, h, generator=g),
        "score.2.bias": torch.randn(1, generator=g),
    }
    config = {**config, "architectures": ["INFORMForSequenceClassification"]}
    return _write(
        root / "inf-orm", causal_lm, config, {f"model.{k}": v for k, v in backbone.items()} | head
    ), head


def test_a_two_layer_score_head_reads_as_its_authors_class_does(causal_lm, tmp_path, capsys):
    path, head = inf_orm(tmp_path, causal_lm)
    lm = LlamaForCausalLM.from_pretrained(causal_lm).eval()
    tok = AutoTokenizer.from_pretrained(causal_lm)
    expected, ids = [], []
    with torch.no_grad():
        for text in TEXTS:
            ids.append(tok(text)["input_ids"])
            hidden = lm.model(torch.tensor([ids[-1]])).last_hidden_state[0, -1]
            inner = torch.relu(head["score.0.weight"] @ hidden + head["score.0.bias"])
            expected.append(float(head["score.2.weight"] @ inner + head["score.2.bias"]))
    rm = RewardModel.from_pretrained(path)
    assert rm.metadata["converted_from"]["layout"] == "mlp-head"
    assert rm.score(texts=TEXTS) == pytest.approx(expected, abs=1e-5)
    assert_either_padding(rm, ids, expected)
    out = tmp_path / "converted"
    assert main(["convert", str(path), str(out)]) == 0
    assert "not linear" in capsys.readouterr().out  # said, not silently written as a plain classifier
    assert RewardModel.from_pretrained(out).score(texts=TEXTS) == pytest.approx(expected, abs=1e-5)


def test_athene_s_head_is_read_at_the_cls_token_appended_to_the_conversation(causal_lm, tmp_path):
    """Athene-RM: a bias-free ``v_head`` on a LlamaModel, read at its CLS token, which follows the rendered
    conversation (instead of EOS); the CLS id comes from the config, else Athene's 128003."""
    from rmkit.data import render_plain
    from rmkit.layouts import ATHENE_CLS

    config, _, backbone = _parts(causal_lm)
    weight, _ = _head(config["hidden_size"], seed=5)
    cls_id = 7
    athene = {**config, "architectures": ["AtheneForSequenceClassification"], "cls_token_id": cls_id}
    path = _write(
        tmp_path / "athene",
        causal_lm,
        athene,
        {f"model.{k}": v for k, v in backbone.items()} | {"v_head.weight": weight},
    )
    lm = LlamaForCausalLM.from_pretrained(causal_lm).eval()
    tok = AutoTokenizer.from_pretrained(causal_lm)
    prompts, answers = ["What is two plus two?", "Name a colour."], ["Four.", "Blue, like the sky."]
    hand = []
    with torch.no_grad():
        for p, a in zip(prompts, answers, strict=True):
            text = render_plain([{"role": "user", "content": p}, {"role": "assistant", "content": a}])
            ids = tok(text)["input_ids"] + [cls_id]
            hand.append(float(lm.model(torch.tensor([ids])).last_hidden_state[0, -1] @ weight[0]))
    rm = RewardModel.from_pretrained(path)
    assert rm.metadata["converted_from"]["layout"] == "athene" and rm.metadata["end_token_id"] == cls_id
    assert rm.score(prompts, answers) == pytest.approx(hand, abs=1e-5)
    out = tmp_path / "converted"
    assert main(["convert", str(path), str(out)]) == 0
    assert RewardModel.from_pretrained(out).score(prompts, answers) == pytest.approx(hand, abs=1e-5)
    del athene["cls_token_id"]
    (path / "config.json").write_text(json.dumps(athene))
    assert RewardModel.from_pretrained(path).metadata["end_token_id"] == ATHENE_CLS == 128003


def test_qwen2_math_rm_s_two_layer_head_on_a_qwen2_backbone(tmp_path):
    """Qwen2.5-Math-RM (``Qwen2ForRewardModel``): the same ``Linear → ReLU → Linear`` head on a Qwen2Model,
    read without its remote code."""
    from conftest import TINY, make_tokenizer
    from transformers import Qwen2Config, Qwen2ForCausalLM

    src = tmp_path / "qwen2"
    tok = make_tokenizer(src)
    torch.manual_seed(2)
    config = Qwen2Config(
        vocab_size=len(tok), **TINY, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id
    )
    lm = Qwen2ForCausalLM(config).eval()
    h = config.hidden_size
    g = torch.Generator().manual_seed(3)
    head = {"score.0.weight": torch.randn(h, h, generator=g) / h**0.5, "score.0.bias": torch.randn(h, generator=g),
            "score.2.weight": torch.randn(1, h, generator=g), "score.2.bias": torch.randn(1, generator=g)}  # fmt: skip
    state = {k: v for k, v in lm.state_dict().items() if k.startswith("model.")} | head
    raw = {**config.to_dict(), "architectures": ["Qwen2ForRewardModel"]}
    path = tmp_path / "qwen2-rm"
    path.mkdir()
    (path / "config.json").write_text(json.dumps(raw))
    save_file({k: v.contiguous() for k, v in state.items()}, path / "model.safetensors")
    tok.save_pretrained(str(path))
    expected = []
    with torch.no_grad():
        for text in TEXTS:
            hidden = lm.model(torch.tensor([tok(text)["input_ids"]])).last_hidden_state[0, -1]
            inner = torch.relu(head["score.0.weight"] @ hidden + head["score.0.bias"])
            expected.append(float(head["score.2.weight"] @ inner + head["score.2.bias"]))
    assert RewardModel.from_pretrained(path).score(texts=TEXTS) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("quantiles", [1, 3])  # ArmoRM; QRM (each objective's reward its quantiles' mean)
def test_armo_rm_s_gated_head_mixes_its_objectives_by_the_prompt_s_gate(tmp_path, quantiles):
    """ArmoRM (``LlamaForRewardModelWithGating``): 19 bias-free objective rewards at the last token, mixed by
    ``reward_transform_matrix`` and weighted by a gating network read at the last opening of the assistant's
    turn; read from its weights and config, without its remote code, equal to the formula by hand."""
    from conftest import TINY, make_tokenizer
    from transformers import LlamaConfig

    from rmkit.data import examples_from

    src = tmp_path / "src"
    tok = make_tokenizer(src, chat_template=(
        "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}"
        "<|eot_id|>{% endfor %}"))  # fmt: skip
    tok.add_special_tokens(
        {"additional_special_tokens": ["<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"]}
    )
    tok.add_tokens(["\n\n"])
    tok.eos_token = "<|eot_id|>"
    torch.manual_seed(4)
    config = LlamaConfig(
        vocab_size=len(tok), **TINY, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id
    )
    lm = LlamaForCausalLM(config).eval()
    h, k, g = config.hidden_size, 19, torch.Generator().manual_seed(9)
    head = {"regression_layer.weight": torch.randn(k * quantiles, h, generator=g), "gating.logit_scale": torch.tensor([1.7]),
            "reward_transform_matrix": torch.eye(k) + 0.1 * torch.randn(k, k, generator=g)}  # fmt: skip
    sizes = [h, 16, 16, 16, k]
    for i, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False)):
        head[f"gating.layers.{i}.weight"] = torch.randn(b, a, generator=g) / a**0.5
        head[f"gating.layers.{i}.bias"] = torch.randn(b, generator=g)
    raw = {**config.to_dict(), "architectures": ["LlamaForRewardModelWithGating"], "num_objectives": k,
           "gating_temperature": 10, "gating_hidden_dim": 16, "gating_n_hidden": 3,
           **({"num_quantiles": quantiles} if quantiles > 1 else {})}  # fmt: skip
    path = tmp_path / "armo"
    path.mkdir()
    (path / "config.json").write_text(json.dumps(raw))
    state = {k2: v for k2, v in lm.state_dict().items() if k2.startswith("model.")} | head
    save_file({k2: v.contiguous() for k2, v in state.items()}, path / "model.safetensors")
    tok.save_pretrained(str(path))

    rm = RewardModel.from_pretrained(path)
    prompts = ["What is two plus two?", "Name a colour."]
    answers = ["Four, since two and two make four.", "Blue."]
    pattern = tok("<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", add_special_tokens=False)[
        "input_ids"
    ]
    rows = [r[0].ids for r in rm.example_tokenizer().tokenize(examples_from(prompts, answers))]
    hand, objectives = [], []
    with torch.no_grad():
        for ids in rows:
            gate_at = max(j for j in range(len(ids)) if ids[j : j + len(pattern)] == pattern)
            hidden = lm.model(torch.tensor([ids])).last_hidden_state[0]
            rewards = (head["regression_layer.weight"] @ hidden[-1]).reshape(k, quantiles).mean(-1)
            x = hidden[gate_at]
            for i in range(4):
                x = head[f"gating.layers.{i}.weight"] @ x + head[f"gating.layers.{i}.bias"]
                x = torch.relu(x) if i < 3 else x
            gate = torch.softmax(x / 10, -1) * 1.7
            hand.append(float((gate * (rewards @ head["reward_transform_matrix"])).sum()))
            objectives.append(rewards.tolist())
    assert rm.metadata["converted_from"]["layout"] == "armo" and not rm.shares_prefixes
    assert rm.score(prompts, answers) == pytest.approx(hand, abs=1e-5)
    assert rm.score(prompts[::-1], answers[::-1]) == pytest.approx(
        hand[::-1], abs=1e-5
    )  # batched, other order
    # its score beside each objective's reward, by ArmoRM's objective names; --weights mixes them instead
    data = write_jsonl(
        tmp_path / "rows.jsonl", [{"prompt": p, "response": a} for p, a in zip(prompts, answers, strict=True)]
    )
    for weights, expected in (
        (None, hand),
        ({"helpsteer-helpfulness": 1.0, "code-style": -0.5}, [o[0] - 0.5 * o[15] for o in objectives]),
    ):
        out = tmp_path / f"scored-{bool(weights)}.jsonl"
        rmkit.score(model=str(path), input=str(data), output=str(out), weights=weights, progress=False)
        rows_out = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["score"] for r in rows_out] == pytest.approx(expected, abs=1e-5)
        assert [list(r["attribute_scores"]) for r in rows_out] == [list(ARMO_OBJECTIVES)] * 2
        assert [list(r["attribute_scores"].values()) for r in rows_out] == [
            pytest.approx(o, abs=1e-5) for o in objectives
        ]


def test_ldl_reward_s_bin_distributions_mixed_by_its_gate_read_from_its_two_tensor_files(tmp_path):
    """LDL-Reward: a Gemma2Model, and beside it ``regression_layer.pt`` (each of K objectives a softmax over 10
    bins) and ``gating_layer.pt`` (their weights), LeakyReLU networks read at the last token; the score is
    the mixed distribution's expectation over ``linspace(0, 1, 10)``. The ``.pt`` files are read as tensors
    only (no --allow-pickle); one holding anything else is refused."""
    from conftest import TINY, make_tokenizer
    from transformers import Gemma2Config, Gemma2ForCausalLM

    src = tmp_path / "src"
    tok = make_tokenizer(src)
    torch.manual_seed(5)
    config = Gemma2Config(vocab_size=len(tok), **{**TINY, "head_dim": 8}, pad_token_id=tok.pad_token_id,
                          eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)  # fmt: skip
    lm = Gemma2ForCausalLM(config).eval()
    h, k, g = config.hidden_size, 4, torch.Generator().manual_seed(12)

    def layer(i: int, a: int, b: int) -> dict:
        return {
            f"network.{i}.weight": torch.randn(b, a, generator=g) / a**0.5,
            f"network.{i}.bias": torch.randn(b, generator=g),
        }

    regression = (
        layer(0, h, 16) | layer(2, 16, 16) | layer(4, 16, k * 10)
    )  # Linear, LeakyReLU, ... as its class
    gating = layer(0, h, 16) | layer(3, 16, 16) | layer(6, 16, k)  # with a Dropout after each LeakyReLU
    path = tmp_path / "ldl"
    path.mkdir()
    raw = {**config.to_dict(), "architectures": ["LDLRewardModel27B"], "num_objectives": k * 10, "temperature": 2.0,
           "softmax": True}  # fmt: skip
    (path / "config.json").write_text(json.dumps(raw))
    save_file(
        {n: v.contiguous() for n, v in lm.state_dict().items() if n.startswith("model.")},
        path / "model.safetensors",
    )
    torch.save(regression, path / "regression_layer.pt")
    torch.save(gating, path / "gating_layer.pt")
    tok.save_pretrained(str(path))

    def run(net: dict, x: torch.Tensor) -> torch.Tensor:
        keys = sorted({int(n.split(".")[1]) for n in net})
        for j, i in enumerate(keys):
            x = net[f"network.{i}.weight"] @ x + net[f"network.{i}.bias"]
            x = torch.nn.functional.leaky_relu(x) if j < len(keys) - 1 else x
        return x

    expected, objectives = [], []
    with torch.no_grad():
        for text in TEXTS:
            hidden = lm.model(torch.tensor([tok(text)["input_ids"]])).last_hidden_state[0, -1]
            dist = run(regression, hidden).reshape(k, 10).softmax(-1)
            weights = (run(gating, hidden) / 2.0).softmax(-1)
            expected.append(float((weights @ dist) @ torch.linspace(0, 1, 10)))
            objectives.append((dist @ torch.linspace(0, 1, 10)).tolist())
    rm = RewardModel.from_pretrained(path)
    assert rm.metadata["converted_from"]["layout"] == "ldl"
    assert rm.score(texts=TEXTS) == pytest.approx(expected, abs=1e-5)
    assert rm.attributes == [f"objective_{i}" for i in range(k)]  # each objective's expected value beside it
    scored = score_sequences(rm, [tok(t)["input_ids"] for t in TEXTS], attributes=True)
    assert scored == [pytest.approx([e, *o], abs=1e-5) for e, o in zip(expected, objectives, strict=True)]
    with pytest.raises(RMKitError, match="no standard layout"):
        rm.save_pretrained(tmp_path / "rewritten")
    torch.save({"network.0.weight": torch.zeros(1), "note": object()}, path / "gating_layer.pt")
    with pytest.raises(RMKitError, match="not a plain state dict of tensors"):
        RewardModel.from_pretrained(path)


def test_urm_s_uncertainty_aware_head_weighs_each_attribute_s_mean(causal_lm, tmp_path):
    """URM (``LlamaForSequenceClassificationWithNormal_Weights``): ``score`` gives 5 attributes a (mean,
    uncertainty) pair each, ``weights.fc`` (Linear, SELU, Linear, SELU, Linear) weighs the means, read at the
    last real token; without its remote code, equal to the formula by hand under either padding, batched."""
    config, _, backbone = _parts(causal_lm)
    h, k, g = config["hidden_size"], 5, torch.Generator().manual_seed(21)
    head = {"score.weight": torch.randn(2 * k, h, generator=g)}
    for i, (a, b) in enumerate(((h, h), (h, h), (h, k))):
        head[f"weights.fc.{2 * i}.weight"] = torch.randn(b, a, generator=g) / a**0.5
        head[f"weights.fc.{2 * i}.bias"] = torch.randn(b, generator=g)
    raw = {
        **config,
        "architectures": ["LlamaForSequenceClassificationWithNormal_Weights"],
        "num_labels": 2 * k,
    }
    path = _write(tmp_path / "urm", causal_lm, raw, {f"model.{n}": v for n, v in backbone.items()} | head)
    lm = LlamaForCausalLM.from_pretrained(causal_lm).eval()
    tok = AutoTokenizer.from_pretrained(causal_lm)
    expected, means = [], []
    with torch.no_grad():
        for text in TEXTS:
            x = lm.model(torch.tensor([tok(text)["input_ids"]])).last_hidden_state[0, -1]
            mean = (head["score.weight"] @ x).reshape(k, 2)[:, 0]
            w = x
            for i in range(3):
                w = head[f"weights.fc.{2 * i}.weight"] @ w + head[f"weights.fc.{2 * i}.bias"]
                w = torch.nn.functional.selu(w) if i < 2 else w
            expected.append(float(mean @ w))
            means.append(mean.tolist())
    rm = RewardModel.from_pretrained(path)
    assert rm.metadata["converted_from"]["layout"] == "urm"
    assert rm.score(texts=TEXTS) == pytest.approx(expected, abs=1e-5)
    assert rm.score(texts=TEXTS[::-1]) == pytest.approx(expected[::-1], abs=1e-5)
    assert_either_padding(rm, [tok(t)["input_ids"] for t in TEXTS], expected)
    assert rm.attributes == list(
        ARMO_OBJECTIVES[:5]
    )  # HelpSteer2's five, each attribute's mean beside the score
    scored = score_sequences(rm, [tok(t)["input_ids"] for t in TEXTS], attributes=True)
    assert scored == [pytest.approx([e, *m], abs=1e-5) for e, m in zip(expected, means, strict=True)]
    with pytest.raises(RMKitError, match="no standard layout"):
        rm.save_pretrained(tmp_path / "rewritten")


def test_grm_s_relu_value_head_reads_as_its_class_does(causal_lm, tmp_path):
    """GRM (``GRewardModel``, its sftreg variant): the causal LM's ``model`` and a value head
    ``v_head.summary`` = Linear(hidden, 12) → ReLU → Linear(12, 1), read at the last real token."""
    config, _, backbone = _parts(causal_lm)
    h, g = config["hidden_size"], torch.Generator().manual_seed(13)
    head = {"v_head.summary.0.weight": torch.randn(12, h, generator=g), "v_head.summary.0.bias": torch.randn(12, generator=g),
            "v_head.summary.2.weight": torch.randn(1, 12, generator=g), "v_head.summary.2.bias": torch.randn(1, generator=g)}  # fmt: skip
    raw = {**config, "architectures": ["GRewardModel"], "vhead_layer_type": "mlp", "vhead_num_neurons": 12}
    path = _write(tmp_path / "grm", causal_lm, raw, {f"model.{k}": v for k, v in backbone.items()} | head)
    lm = LlamaForCausalLM.from_pretrained(causal_lm).eval()
    tok = AutoTokenizer.from_pretrained(causal_lm)
    expected = []
    with torch.no_grad():
        for text in TEXTS:
            x = lm.model(torch.tensor([tok(text)["input_ids"]])).last_hidden_state[0, -1]
            x = torch.relu(head["v_head.summary.0.weight"] @ x + head["v_head.summary.0.bias"])
            expected.append(float(head["v_head.summary.2.weight"] @ x + head["v_head.summary.2.bias"]))
    rm = RewardModel.from_pretrained(path)
    assert rm.metadata["converted_from"]["layout"] == "grm"
    assert rm.score(texts=TEXTS) == pytest.approx(expected, abs=1e-5)
    out = tmp_path / "converted"
    assert main(["convert", str(path), str(out)]) == 0  # its own layout, as score.0 and score.2
    assert RewardModel.from_pretrained(out).score(texts=TEXTS) == pytest.approx(expected, abs=1e-5)


def test_head_names_the_layout_to_read_instead_of_the_recognised_one(causal_lm, tmp_path):
    """``--head`` (``head=``) reads a checkpoint in the layout named: the same scores where it is the one
    recognised; a layout whose weights the checkpoint lacks, or an unknown name, is refused in one line."""
    import dataclasses

    from rmkit import layouts
    from rmkit.options import ModelOptions

    path, _ = inf_orm(tmp_path, causal_lm)
    assert RewardModel.from_pretrained(path, head="mlp-head").score(texts=TEXTS) == pytest.approx(
        RewardModel.from_pretrained(path).score(texts=TEXTS)
    )
    with pytest.raises(RMKitError, match="safe-rlhf score model"):
        RewardModel.from_pretrained(path, head="safe-rlhf")
    with pytest.raises(RMKitError, match="--head bogus: rmkit reads transformers, safe-rlhf"):
        RewardModel.from_pretrained(path, head="bogus")
    (field,) = [f for f in dataclasses.fields(ModelOptions) if f.name == "head"]
    assert all(name in field.metadata["help"] for name in layouts.LAYOUTS)  # the help lists every layout
