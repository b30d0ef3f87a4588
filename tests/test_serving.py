"""The HTTP server, for real on loopback: scores equal the Python API's, bad requests get a 400."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import pytest
from torch._dynamo.utils import counters

from rmkit import RewardModel
from rmkit.serving import ScoreServer, ServeConfig, make_server

PROMPTS = ["What is two plus two?", "Hello"]
RESPONSES = ["Two plus two is four.", "Hi, how can I help you today?"]


@pytest.fixture(scope="module")
def server(llama_path):
    rm = RewardModel.from_pretrained(llama_path)
    srv = ScoreServer(rm, ServeConfig(model=str(llama_path), port=0))
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def post(server, path, body):
    req = urllib.request.Request(
        server.url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_binds_loopback_by_default(server):
    assert ServeConfig(model="m").host == "127.0.0.1"
    assert server.server_address[0] == "127.0.0.1"


def test_score_matches_the_python_api(server):
    status, body = post(server, "/score", {"prompts": PROMPTS, "responses": RESPONSES})
    assert status == 200
    assert body["scores"] == pytest.approx(server.rm.score(prompts=PROMPTS, responses=RESPONSES), abs=1e-6)


def test_openrlhf_style_get_reward_scores_rendered_text(server):
    texts = ["User: Hi\n\nAssistant: Hello!", "User: Hi\n\nAssistant: Go away."]
    status, body = post(server, "/get_reward", {"query": texts})
    assert status == 200 and body["rewards"] == pytest.approx(server.rm.score(texts=texts), abs=1e-6)


def test_concurrent_requests_each_get_their_own_scores(server):
    expected = server.rm.score(prompts=PROMPTS, responses=RESPONSES)
    results = [None] * 8

    def call(i):
        results[i] = post(
            server, "/score", {"prompts": PROMPTS[i % 2 :][:1], "responses": RESPONSES[i % 2 :][:1]}
        )

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, (status, body) in enumerate(results):
        assert status == 200 and body["scores"] == pytest.approx([expected[i % 2]], abs=1e-6)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"prompts": "Hi", "responses": ["x"]}, "field 'prompts' must be a list"),
        ({"texts": [1, 2]}, "item 0"),
        ({"nothing": []}, "exactly one of"),
        ({"prompts": ["a", "b"], "responses": ["x"]}, "2 prompts but 1 responses"),
    ],
)
def test_bad_requests_get_400_with_a_reason(server, body, message):
    status, reply = post(server, "/score", body)
    assert status == 400 and message in reply["error"]


def test_health_and_unknown_path(server):
    with urllib.request.urlopen(server.url + "/health", timeout=10) as resp:
        assert json.loads(resp.read())["status"] == "ok"
    status, reply = post(server, "/nope", {})
    assert status == 404 and "POST /score" in reply["error"]


def test_compiled_server_compiles_before_it_listens(llama_path, tmp_path):
    eager = RewardModel.from_pretrained(llama_path)
    eager.save_pretrained(tmp_path / "rm")
    srv = make_server(ServeConfig(model=str(tmp_path / "rm"), port=0, compile=True))
    graphs = counters["stats"]["unique_graphs"]
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        for n in (1, 2, 5):
            prompts, responses = (PROMPTS * 3)[:n], (RESPONSES * 3)[:n]
            status, body = post(srv, "/score", {"prompts": prompts, "responses": responses})
            assert status == 200
            assert body["scores"] == pytest.approx(
                eager.score(prompts=prompts, responses=responses), abs=1e-4
            )
        assert counters["stats"]["unique_graphs"] == graphs, "a request waited for a compilation"
    finally:
        srv.shutdown()
        srv.server_close()
