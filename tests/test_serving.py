"""``rmkit serve`` for real: uvicorn on a free loopback port, a real HTTP client, a tiny real model.

Scores must equal the Python API's; each protocol's client must get the reply its framework reads; bad
requests get 4xx and the server goes on; limits, the api key and the queue bound hold.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import WORDS
from starlette.applications import Starlette
from starlette.routing import Mount
from torch._dynamo.utils import counters

import rmkit
from rmkit import RewardModel, RMKitError
from rmkit.serving import ServeConfig, running

PROMPTS = ["What is two plus two?", "Hello"]
RESPONSES = ["Two plus two is four.", "Hi, how can I help you today?"]


@pytest.fixture(scope="module")
def rm(llama_path):
    rm = RewardModel.from_pretrained(llama_path)
    rm.metadata.update(score_mean=0.25, score_std=2.0)  # as training stores them, for "normalize": true
    return rm


@pytest.fixture(scope="module")
def url(rm):
    with running(rmkit.serve(rm, max_wait_ms=50)) as base:
        yield base


def post(
    base: str,
    path: str,
    body,
    *,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
    timeout: float = 60,
):
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(
        base + path, data=data, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def metric(base: str, name: str) -> float:
    text = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
    return float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def test_binds_loopback_by_default(url):
    assert ServeConfig(model="m").host == "127.0.0.1"
    assert url.startswith("http://127.0.0.1:")


def test_score_matches_the_python_api_for_each_input_shape(rm, url):
    status, body = post(url, "/score", {"prompts": PROMPTS, "responses": RESPONSES})
    assert status == 200
    assert body["scores"] == pytest.approx(rm.score(prompts=PROMPTS, responses=RESPONSES), abs=1e-5)
    conversations = [
        [{"role": "user", "content": p}, {"role": "assistant", "content": r}]
        for p, r in zip(PROMPTS, RESPONSES, strict=True)
    ]
    status, body = post(url, "/score", {"messages": conversations})
    assert body["scores"] == pytest.approx(rm.score(messages=conversations), abs=1e-5)
    texts = ["User: Hi\n\nAssistant: Hello!", "User: Hi\n\nAssistant: Go away."]
    status, body = post(url, "/score", {"texts": texts, "normalize": True})
    assert body["scores"] == pytest.approx([(s - 0.25) / 2.0 for s in rm.score(texts=texts)], abs=1e-5)


def test_normalize_on_a_model_without_statistics_is_refused_not_ignored(llama_path):
    rm = RewardModel.from_pretrained(llama_path)
    with pytest.raises(RMKitError, match="--normalize"):
        rmkit.serve(rm, normalize=True)
    with running(rmkit.serve(rm)) as base:
        status, body = post(base, "/score", {"texts": ["Hi"], "normalize": True})
    assert status == 422 and body["error"]["param"] == "normalize"


def test_64_concurrent_clients_get_their_own_scores_from_shared_batches(rm, url):
    rng = random.Random(0)
    requests = [[sentence(rng, rng.randint(1, 60)) for _ in range(rng.randint(1, 4))] for _ in range(128)]
    expected = [rm.score(texts=texts) for texts in requests]
    batches, merged = metric(url, "rmkit_batches_total"), metric(url, "rmkit_batch_requests_sum")

    def call(i: int) -> list[float]:
        status, body = post(url, "/score", {"texts": requests[i]})
        assert status == 200
        return body["scores"]

    with ThreadPoolExecutor(64) as pool:
        got = list(pool.map(call, range(len(requests))))
    for i, (scores, want) in enumerate(zip(got, expected, strict=True)):
        assert scores == pytest.approx(want, abs=1e-5), f"request {i} got another request's scores"
    batches = metric(url, "rmkit_batches_total") - batches
    requests_per_batch = (metric(url, "rmkit_batch_requests_sum") - merged) / batches
    assert batches < len(requests) and requests_per_batch > 1.5, "batches did not merge requests"


def test_openrlhf_one_sample_per_request(rm, url):
    text = "User: What is two plus two?\n\nAssistant: Four.</s>"
    body = {"query": [text], "prompts": ["What is two plus two?"], "labels": [""]}
    status, reply = post(url, "/get_reward", body)
    want = rm.score(texts=[text])
    assert status == 200
    assert reply["rewards"] == pytest.approx(want, abs=1e-5) and reply["scores"] == reply["rewards"]
    assert reply["extra_logs"] == {}
    # Clients before 0.8.3 sent padded sequences, pads left of the text (and only ``query`` before 0.6).
    status, padded = post(url, "/get_reward", {"query": ["<pad><pad>" + text + "<pad>"]})
    assert padded["rewards"] == pytest.approx(want, abs=1e-5)
    # With several servers, OpenRLHF sends empty lists to all but the first.
    assert post(url, "/get_reward", {"query": [], "prompts": [], "labels": []}) == (
        200,
        {"rewards": [], "scores": [], "extra_logs": {}},
    )


def test_a_text_that_has_its_bos_already_gets_no_second_one(rm, url):
    # OpenRLHF sends text decoded with its special tokens; verl strips the BOS; both score alike.
    with_bos, without = (
        post(url, "/score", {"texts": ["<s>User: Hi"]}),
        post(url, "/score", {"texts": ["User: Hi"]}),
    )
    assert with_bos[1]["scores"] == pytest.approx(without[1]["scores"], abs=1e-6)


def test_vllm_classify_and_pooling(rm, url):
    texts = ["User: Hi\n\nAssistant: Hello!", "User: Hi\n\nAssistant: Go away."]
    raw = rm.score(texts=texts)
    status, reply = post(url, "/classify", {"model": "rm", "input": texts})
    assert status == 200 and reply["object"] == "list" and reply["id"].startswith("classify-")
    assert [d["index"] for d in reply["data"]] == [0, 1]
    assert all(d["num_classes"] == 1 and d["label"] == "LABEL_0" for d in reply["data"])
    sigmoid = [1 / (1 + 2.718281828459045**-s) for s in raw]
    assert [d["probs"][0] for d in reply["data"]] == pytest.approx(sigmoid, abs=1e-5)
    assert reply["usage"]["prompt_tokens"] == reply["usage"]["total_tokens"] > 0
    for flag in ("use_activation", "activation"):
        _, reply = post(url, "/v1/classify", {"input": texts[0], flag: False})
        assert reply["data"][0]["probs"] == pytest.approx(raw[:1], abs=1e-5)
    status, reply = post(url, "/pooling", {"model": "rm", "input": texts})
    assert status == 200 and all(d["object"] == "pooling" for d in reply["data"])
    assert [d["data"][0] for d in reply["data"]] == pytest.approx(raw, abs=1e-5)
    ids = rm.tokenizer(texts[0])["input_ids"]
    _, reply = post(url, "/v1/pooling", {"input": ids})
    assert reply["data"][0]["data"] == pytest.approx(raw[:1], abs=1e-5)
    conversation = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    _, reply = post(url, "/pooling", {"messages": conversation})
    assert reply["data"][0]["data"] == pytest.approx(rm.score(messages=[conversation]), abs=1e-5)
    assert post(url, "/pooling", {"input": "x", "task": "token_classify"})[0] == 422


def test_verl_reward_loop_request(rm, url):
    # verl (0.8 on) posts one chat-templated text per request and reads data[-1]["probs"][-1] as the reward.
    text = "User: What is two plus two?\n\nAssistant: Four."
    status, reply = post(url, "/classify", {"model": "/models/rm", "input": text, "use_activation": False})
    assert status == 200 and reply["model"] == "/models/rm"
    assert reply["data"][-1]["probs"][-1] == pytest.approx(rm.score(texts=[text])[0], abs=1e-5)


def test_slime_remote_rm_request(rm):
    sample = {"prompt": "What is two plus two?", "response": "Four.", "label": "4"}
    want = rm.score(prompts=[sample["prompt"]], responses=[sample["response"]])[0]
    with running(rmkit.serve(rm)) as base:  # slime --reward-key reward reads body["reward"]
        status, reply = post(base, "/reward", sample)
        assert status == 200 and reply == {"reward": pytest.approx(want, abs=1e-5)}
        templated = {**sample, "prompt": "<s>User: What is two plus two?\n\nAssistant: "}
        _, reply = post(base, "/reward", templated)
        assert reply["reward"] == pytest.approx(rm.score(texts=[templated["prompt"] + "Four."])[0], abs=1e-5)
    with running(rmkit.serve(rm, reward_key="")) as base:  # slime without --reward-key reads the body
        status, reply = post(base, "/reward", sample)
        assert status == 200 and reply == pytest.approx(want, abs=1e-5)


@pytest.mark.parametrize("through", ["process", "server"])
def test_reward_function_for_trl_grpo(rm, url, through):
    reward = rmkit.reward_function(rm if through == "process" else url)
    assert reward.__name__ == "rmkit_reward"
    # GRPOTrainer's call: keyword arguments, the data set's other columns and trainer state included.
    plain = reward(
        prompts=PROMPTS,
        completions=RESPONSES,
        completion_ids=[[1, 2], [3]],
        answer=["4", ""],
        trainer_state=None,
        log_extra=lambda *a: None,
        log_metric=lambda *a: None,
    )
    assert plain == pytest.approx(rm.score(prompts=PROMPTS, responses=RESPONSES), abs=1e-5)
    prompts = [[{"role": "user", "content": p}] for p in PROMPTS]
    completions = [[{"role": "assistant", "content": r}] for r in RESPONSES]
    chat = reward(prompts=prompts, completions=completions, completion_ids=[[1], [2]])
    assert chat == pytest.approx(plain, abs=1e-5)


@pytest.mark.parametrize(
    "path, raw, status, field",
    [
        ("/score", b"{not json", 400, None),
        ("/score", b"[1, 2]", 400, None),
        ("/score", b'{"texts": "one text"}', 422, "texts"),
        ("/score", b'{"texts": ["a", 3]}', 422, "texts[1]"),
        ("/score", b'{"prompts": ["a"], "responses": ["b", "c"]}', 422, "responses"),
        ("/score", b'{"texts": ["a"], "normalise": true}', 422, "normalise"),
        ("/score", b'{"messages": [[{"role": "user"}]]}', 422, "messages[0][0]"),
        ("/get_reward", b'{"prompts": ["a"]}', 422, "query"),
        ("/classify", b'{"input": {"text": "a"}}', 422, "input"),
        ("/pooling", b'{"input": [1, 99999999]}', 422, "input"),
        ("/reward", b'{"prompt": "a"}', 422, "response"),
    ],
)
def test_malformed_requests_get_4xx_naming_the_field_and_the_server_goes_on(url, path, raw, status, field):
    got, body = post(url, path, None, raw=raw)
    assert got == status and body["error"]["code"] == status and body["error"]["param"] == field
    assert body["error"]["message"]
    assert post(url, "/score", {"texts": ["still serving"]})[0] == 200


def test_unknown_route_and_health(url):
    assert post(url, "/nope", {})[0] == 404
    health = json.loads(urllib.request.urlopen(url + "/health", timeout=10).read())
    assert health["status"] == "ok"


def test_limits_items_tokens_and_body(rm):
    app = rmkit.serve(rm, max_items=3, max_tokens=8, truncation="refuse", max_body_mb=0.001)
    with running(app) as base:
        assert post(base, "/score", {"texts": ["a"] * 4})[0] == 422
        status, body = post(base, "/score", {"texts": ["short", " ".join(WORDS)]})
        assert status == 422 and "item 1" in body["error"]["message"]
        assert post(base, "/score", {"texts": ["x" * 2000]})[0] == 413
        assert post(base, "/score", {"texts": ["short"]})[0] == 200
    long = " ".join(WORDS)
    cut = rm.tokenizer(long)["input_ids"]
    with running(rmkit.serve(rm, max_tokens=8)) as base:  # truncation="left": keep the BOS and the end
        status, body = post(base, "/score", {"texts": [long]})
        assert status == 200
        assert body["scores"] == pytest.approx(rm.score_ids([cut[:1] + cut[-7:]]), abs=1e-5)


def test_api_key_is_required_on_scoring_routes(rm):
    with running(rmkit.serve(rm, api_key="s3cret")) as base:
        for path, body in (
            ("/score", {"texts": ["a"]}),
            ("/get_reward", {"query": ["a"]}),
            ("/classify", {"input": "a"}),
        ):
            assert post(base, path, body)[0] == 401
            assert post(base, path, body, headers={"Authorization": "Bearer wrong"})[0] == 401
            assert post(base, path, body, headers={"Authorization": "Bearer s3cret"})[0] == 200
        assert urllib.request.urlopen(base + "/health", timeout=10).status == 200


def test_a_full_queue_answers_503_with_retry_after(rm):
    # One pass per item (a 16-token budget) keeps the first request's items queued while the second comes.
    app = rmkit.serve(rm, batch_tokens=16, max_queue=300, max_wait_ms=0)
    first = {"texts": [" ".join(WORDS)] * 299}
    with running(app) as base, ThreadPoolExecutor(1) as pool:
        pending = pool.submit(post, base, "/score", first)
        while metric(base, "rmkit_queue_items") == 0 and not pending.done():
            time.sleep(0.001)
        req = urllib.request.Request(base + "/score", data=json.dumps({"texts": ["a"] * 100}).encode())
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=60)
        assert refused.value.code == 503 and refused.value.headers["Retry-After"] == "1"
        assert pending.result()[0] == 200


def test_a_request_past_its_timeout_gets_503_and_the_server_goes_on(rm):
    with running(rmkit.serve(rm, request_timeout=0.001, batch_tokens=16)) as base:
        status, body = post(base, "/score", {"texts": [" ".join(WORDS)] * 200})
        assert status == 503 and "--request-timeout" in body["error"]["message"]
    with running(rmkit.serve(rm)) as base:
        assert post(base, "/score", {"texts": ["a"]})[0] == 200


def test_an_idle_open_connection_does_not_delay_others(url):
    host, port = url.removeprefix("http://").split(":")
    idle = socket.create_connection((host, int(port)))
    try:  # headers promising a body that never comes
        idle.sendall(
            b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        for _ in range(3):
            assert post(url, "/score", {"texts": ["still here"]})[0] == 200
    finally:
        idle.close()


def test_the_app_mounts_in_an_app_of_your_own(rm):
    outer = Starlette(routes=[Mount("/rm", app=rmkit.serve(rm))])
    with running(outer) as base:
        status, body = post(base, "/rm/score", {"texts": ["mounted"]})
        assert status == 200 and body["scores"] == pytest.approx(rm.score(texts=["mounted"]), abs=1e-5)


@pytest.mark.slow
def test_compiled_server_compiles_before_it_listens(rm):
    compiled = RewardModel(rm.model, rm.tokenizer, dict(rm.metadata))
    with running(rmkit.serve(compiled.compile(), compile=True)) as base:
        graphs = counters["stats"]["unique_graphs"]
        for n in (1, 2, 5):
            prompts, responses = (PROMPTS * 3)[:n], (RESPONSES * 3)[:n]
            status, body = post(base, "/score", {"prompts": prompts, "responses": responses})
            assert status == 200
        assert counters["stats"]["unique_graphs"] == graphs, "a request waited for a compilation"


@pytest.mark.slow
def test_sigterm_finishes_the_requests_in_flight(llama_path, tmp_path):
    RewardModel.from_pretrained(llama_path).save_pretrained(tmp_path / "rm")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "rmkit.cli", "serve", "--model", str(tmp_path / "rm"), "--port", str(port)]
    proc = subprocess.Popen(cmd + ["--batch-tokens", "16"], env={**os.environ, "PYTHONUNBUFFERED": "1"})
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(base + "/health", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        result = {}
        thread = threading.Thread(
            # a loaded machine may take minutes for 300 batches of 16 tokens: the reply is what is tested
            target=lambda: result.update(
                reply=post(base, "/score", {"texts": [" ".join(WORDS)] * 300}, timeout=600)
            )
        )
        thread.start()
        while metric(base, "rmkit_queue_items") == 0 and thread.is_alive():
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)
        thread.join(600)
        assert proc.wait(60) == 0
        status, body = result["reply"]
        assert status == 200 and len(body["scores"]) == 300
    finally:
        proc.kill()


def test_the_verl_custom_reward_function_example(rm, url, monkeypatch):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "verl_reward.py"
    spec = importlib.util.spec_from_file_location("verl_reward", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setenv("RMKIT_URL", url)
    got = module.compute_score("gsm8k", "Four.", "4", extra_info={"question": "What is two plus two?"})
    assert got == pytest.approx(rm.score(prompts=["What is two plus two?"], responses=["Four."])[0], abs=1e-5)


def test_a_request_with_one_prompt_and_several_answers_shares_its_pass(rm, url):
    prompt = " ".join(WORDS * 3)
    answers = ["Four.", "Paris is the capital of France.", "I cannot help with that."]
    status, body = post(url, "/score", {"prompts": [prompt] * 3, "responses": answers})
    tokenizer = rm.example_tokenizer()
    rows = tokenizer.tokenize(rmkit.data.examples_from([prompt] * 3, answers))
    full = rmkit.inference.score_sequences(rm, [r[0].ids for r in rows])  # no groups: full sequences
    assert status == 200 and body["scores"] == pytest.approx(full, abs=1e-4)
    shared = rmkit.data.RowCounts()
    rmkit.inference.score_sequences(rm, [r[0].ids for r in rows], groups=[[0, 1, 2]], stats=shared)
    assert shared.shared == 3, "the fixture's answers should share their prompt"


# --- hours of RL load: quiet logs, memory given back ---------------------------------------------------


def test_a_client_that_hangs_up_mid_body_is_counted_not_logged_as_an_error(rm, caplog):
    import logging
    import socket
    import time

    with caplog.at_level(logging.INFO), running(rmkit.serve(rm)) as base:
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as sock:
            head = "POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n"
            sock.sendall(head.encode() + b'{"texts": ["half')  # then hang up
        deadline = time.monotonic() + 10
        while metric(base, "rmkit_client_disconnects_total") < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert metric(base, "rmkit_client_disconnects_total") == 1
        assert post(base, "/score", {"texts": ["still serving"]})[0] == 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert (
        "Traceback" not in caplog.text
        and "a client hung up before its /score request was read" in caplog.text
    )


def test_the_worker_gives_freed_memory_back_when_idle_not_per_batch(rm, monkeypatch):
    import time

    from rmkit.serving import batcher

    released = []
    monkeypatch.setattr(batcher, "release_memory", lambda device: released.append(time.monotonic()))
    monkeypatch.setattr(batcher, "RELEASE_EVERY", 0.5)
    monkeypatch.setattr(batcher, "BUSY_RELEASE_EVERY", 0.5)  # a client waiting counts as busy here
    with running(rmkit.serve(rm)) as base:
        for i in range(6):  # back to back: within RELEASE_EVERY of each other
            assert post(base, "/score", {"texts": [f"request {i}"]})[0] == 200
        time.sleep(0.6)
        assert post(base, "/score", {"texts": ["after a pause"]})[0] == 200
        deadline = time.monotonic() + 5
        while len(released) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert metric(base, "rmkit_memory_releases_total") == len(released)
    assert 2 <= len(released) < 7  # after the first batch and after the pause, not after each batch
    assert all(b - a >= 0.5 for a, b in zip(released, released[1:], strict=False))


def test_large_buffers_are_mapped_and_given_back_once_the_threshold_is_fixed():
    """glibc raises its mmap threshold each time a mapped block is freed, so a batch's next activations of
    that size come from the heap, which keeps them. With ``mapped_from`` fixed (what ``rmkit serve`` sets at
    start-up) every such buffer is its own mapping, each time."""
    import subprocess
    import sys

    if sys.platform != "linux":
        pytest.skip("glibc's allocator only")
    probe = """
import ctypes, sys
from rmkit import runtime
libc = ctypes.CDLL("libc.so.6")
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "fixed":
    assert runtime.bound_arenas(mapped_from=runtime.MAPPED_FROM)
mapped = []
for _ in range(3):
    p = libc.malloc(16 << 20)
    mapped.append(libc.mallinfo2().hblkhd >= 16 << 20)
    libc.free(p)
print(mapped)
"""
    runs = {
        how: subprocess.run(
            [sys.executable, "-c", probe, how], capture_output=True, text=True, check=True
        ).stdout
        for how in ("fixed", "default")
    }
    assert runs["fixed"].strip() == "[True, True, True]"
    assert runs["default"].strip() == "[True, False, False]"  # the control: glibc's sliding threshold
