"""verl's own reward-loop client code against ``rmkit serve`` on loopback, unchanged on verl's side.

verl's ``RewardLoopWorker`` (``verl.experimental.reward_loop``; 0.9.1, the newest release, whose request is
0.8's) is driven as verl's trainer drives it, with its own config keys: its reward-model request (a
chat-templated text to ``/classify``, the reward read from ``data[-1]["probs"][-1]``) and its custom reward
function path (``examples/verl_reward.py``, which sends a vision-language RM the images as ``image_url``
parts). .ci/run installs verl's client code without its dependencies (.ci/verl-client.txt: verl's own pins
bring its whole training stack); without it these tests skip."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_llama
from vision_models import picture, saved_rm

import rmkit
from rmkit.data.images import Picture
from rmkit.data.vision import VisionExample
from rmkit.serving import running

reward_loop = pytest.importorskip(
    "verl.experimental.reward_loop.reward_loop",
    reason="verl's client code is not installed (.ci/run installs it from .ci/verl-client.txt)",
)
from omegaconf import OmegaConf  # noqa: E402 (verl's own config library, there once verl is)
from verl.protocol import DataProto  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "verl_reward.py"
TEMPLATE = (  # Qwen-shaped, its text beginning with the BOS as Llama's and Gemma's templates write it
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for p in m['content'] %}{% if p['type'] == 'text' %}{{ p['text'] }}{% else %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
)


def worker(base: str, model: Path, *, rm: bool, function: Path | None = None):
    """A ``RewardLoopWorker`` as verl's trainer makes one: the policy's tokenizer at ``model``, the reward
    model's requests to ``base`` (verl's reward router address) when ``rm``, else the custom function."""
    config = OmegaConf.create(
        {
            "actor_rollout_ref": {"model": {"path": str(model), "tokenizer_path": None}},
            "reward": {
                "reward_model": {"enable": rm, "model_path": str(model), "rollout": {"name": "vllm"}},
                "custom_reward_function": {
                    "path": str(function) if function else None,
                    "name": "compute_score",
                },
                "reward_manager": {"name": "naive", "source": "register"},
            },
        }
    )
    return reward_loop.RewardLoopWorker(config, base.split("//", 1)[1].rstrip("/"))


def sample(tokenizer, prompt, response: str, extra_info: dict | None = None) -> DataProto:
    """One rollout as verl's agent loop leaves it: the prompt's messages (``raw_prompt``), the response's ids."""
    ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    return DataProto.from_dict(
        tensors={
            "responses": torch.tensor([ids]),
            "attention_mask": torch.ones(1, len(ids) + 4, dtype=torch.long),
        },
        non_tensors={
            "raw_prompt": np.array([prompt], dtype=object),
            "data_source": np.array(["geo3k"], dtype=object),
            "reward_model": np.array([{"ground_truth": ""}], dtype=object),
            "extra_info": np.array([extra_info or {}], dtype=object),
        },
    )


def reward(loop, data: DataProto) -> float:
    """The worker's reward of ``data``, on the worker's own event loop (as its Ray actor runs it)."""
    return loop.loop.run_until_complete(loop.compute_score(data))["reward_score"]


def test_verl_reward_model_request_scores_equal_offline(tmp_path):
    """verl's reward-model path (a text RM): its /classify request (the conversation rendered by the chat
    template, the BOS stripped) gets rmkit's offline score of the same conversation: the text ends as the
    template ends a turn, so rmkit completes it as it completes a conversation (the EOS its score is read at)."""
    from rmkit import RewardModel

    path = make_llama(tmp_path / "rm", chat_template=TEMPLATE)
    torch.manual_seed(3)
    RewardModel.from_pretrained(path).save_pretrained(tmp_path / "saved")
    rm = RewardModel.from_pretrained(tmp_path / "saved")
    prompt = [{"role": "user", "content": "What is two plus two?"}]
    with running(rmkit.serve(rm, max_wait_ms=5)) as base:
        loop = worker(base, tmp_path / "saved", rm=True)
        for answer in ("Four.", "It is five, I think"):
            got = reward(loop, sample(loop.input_tokenizer, prompt, answer))
            chat = [*prompt, {"role": "assistant", "content": answer}]
            assert got == pytest.approx(rm.score(messages=[chat])[0], abs=1e-5)  # read at the same end


@pytest.fixture(scope="module")
def vlm(tmp_path_factory):
    return saved_rm(tmp_path_factory, "qwen2_vl", seed=4)


def offline(rm, question: str, image, answer: str) -> float:
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    ex = VisionExample(0, prompt, [answer], False, images=[Picture(image, "")])
    return rm.score_rows(rm.example_tokenizer().tokenize([ex])[0])[0]


def test_verl_custom_function_sends_the_images_and_rewards_equal_offline(vlm, monkeypatch):
    """verl's custom-function path with a vision-language RM: the question's ``<image>`` and the images in
    ``extra_info`` (as verl's geo3k preprocessing stores them, one line added), in every form they come in."""
    import io

    rm, path = vlm
    red, blue = picture("red"), picture("blue", seed=1)
    buffer = io.BytesIO()
    blue.save(buffer, format="PNG")
    cases = [
        ("<image>What colour is the square?", red, "It is red.", red),
        ("Name the colour<image>", {"bytes": buffer.getvalue(), "path": None}, "Blue, I think", blue),
    ]
    with running(rmkit.serve(rm, max_wait_ms=5)) as base:
        monkeypatch.setenv("RMKIT_URL", base)
        loop = worker(base, path, rm=False, function=EXAMPLE)
        for question, given, answer, image in cases:
            prompt = [
                {
                    "role": "user",
                    "content": [{"type": "image", "image": image}, {"type": "text", "text": "?"}],
                }
            ]
            data = sample(loop.input_tokenizer, prompt, answer, {"question": question, "images": [given]})
            got = reward(loop, data)
            text = question.replace("<image>", "")
            if question.startswith("<image>"):
                want = offline(rm, text, image, answer)
            else:  # the image after the text: the example's own order
                turn = [{"type": "text", "text": text}, {"type": "image"}]
                ex = VisionExample(
                    0, [{"role": "user", "content": turn}], [answer], False, images=[Picture(image, "")]
                )
                want = rm.score_rows(rm.example_tokenizer().tokenize([ex])[0])[0]
            assert got == pytest.approx(want, abs=1e-5)
        # verl's raw_prompt messages with their own image parts, no extra_info images
        prompt = [
            {
                "role": "user",
                "content": [{"type": "image", "image": red}, {"type": "text", "text": "Colour?"}],
            }
        ]
        data = sample(loop.input_tokenizer, prompt, "red", {"question": prompt})
        got = reward(loop, data)
        assert got == pytest.approx(offline(rm, "Colour?", red, "red"), abs=1e-5)


def test_verl_reward_model_request_with_an_image_is_refused_with_its_reason(vlm, caplog):
    """verl's own reward-model request drops the images (it sends the templated text, placeholders and all):
    refused (422, which verl does not retry), the reason logged once, since verl shows only the status."""
    import aiohttp

    rm, path = vlm
    prompt = [
        {
            "role": "user",
            "content": [{"type": "image", "image": picture("red")}, {"type": "text", "text": "?"}],
        }
    ]
    with running(rmkit.serve(rm, max_wait_ms=5)) as base, caplog.at_level(logging.WARNING, "rmkit"):
        loop = worker(base, path, rm=True)
        with pytest.raises(aiohttp.ClientResponseError) as refused:
            reward(loop, sample(loop.input_tokenizer, prompt, "red"))
    assert refused.value.status == 422
    said = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert said and "no image came with it" in said[0] and "image_url" in said[0]
