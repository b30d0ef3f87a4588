"""Security: code in a checkpoint never runs unless asked, and the server stays up and answers 2xx or 4xx
to any generated request (a bounded hypothesis fuzz of every scoring route)."""

from __future__ import annotations

import json
import pickle
import urllib.error
import urllib.request

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import rmkit
from rmkit import RewardModel
from rmkit.errors import RMKitError
from rmkit.serving import running


class _RunsCode:
    """Unpickling this creates ``marker``: what a malicious pickle checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_checkpoint_that_would_run_code_is_refused(tmp_path, llama_path):
    model = AutoModelForSequenceClassification.from_pretrained(llama_path, num_labels=1)
    model.config.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(llama_path).save_pretrained(tmp_path)
    marker = tmp_path / "pwned"
    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps({"weights": _RunsCode(marker)}))
    with pytest.raises(RMKitError, match="allow_pickle"):
        RewardModel.from_pretrained(tmp_path)
    assert not marker.exists(), "the pickle ran"


def test_custom_model_code_is_refused_without_trust_remote_code(tmp_path, llama_path):
    marker = tmp_path / "pwned"
    (tmp_path / "evil.py").write_text(
        f"open({str(marker)!r}, 'w')\nfrom transformers import LlamaConfig as EvilConfig\n"
    )
    config = json.loads((llama_path / "config.json").read_text())
    config.update(model_type="evil", auto_map={"AutoConfig": "evil.EvilConfig"})
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(RMKitError, match="trust_remote_code"):
        RewardModel.from_pretrained(tmp_path)
    assert not marker.exists(), "the checkpoint's code ran"


FIELDS = ["prompts", "responses", "messages", "texts", "normalize", "query", "labels", "input", "model",
          "use_activation", "activation", "task", "prompt", "response", "label", "role", "content"]  # fmt: skip
values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
bodies = st.dictionaries(st.sampled_from(FIELDS), values, max_size=5) | values
ROUTES = ["/score", "/get_reward", "/classify", "/v1/pooling", "/reward"]


@pytest.fixture(scope="module")
def server(llama_path):
    rm = RewardModel.from_pretrained(llama_path)
    with running(rmkit.serve(rm, max_items=8)) as base:
        yield base


@pytest.mark.parametrize("route", ROUTES)
def test_any_generated_request_gets_2xx_or_4xx_and_the_server_stays_up(server, route):
    answered = []

    @settings(
        max_examples=60,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(bodies)
    def send(body):
        data = json.dumps(body, allow_nan=True).encode()
        req = urllib.request.Request(server + route, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                status = resp.status
        except urllib.error.HTTPError as e:
            status = e.code
        assert status < 500, f"{route} answered {status} to {body!r}"
        answered.append(status)

    send()
    assert len(answered) >= 30
    assert urllib.request.urlopen(server + "/health", timeout=10).status == 200
