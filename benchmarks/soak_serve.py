"""``rmkit serve`` under hours of RL load, shortened: does its memory stay flat and its latency steady?

The load of an RL run: ``--clients`` (64) rollout workers, one sample per request, mixed ``POST /score``
(rmkit's shape) and ``POST /get_reward`` (OpenRLHF's), prompts and answers of every length up to the model's
limit; and a trickle of bad requests: malformed JSON, a body over the limit, a body sent in half before the
client hangs up, a connection opened and abandoned, a field of the wrong type. Every minute 32 probe samples
are scored and compared with the offline ``RewardModel.score`` of the same samples. At the end the server gets
SIGTERM while requests are in flight.

The server is a real ``rmkit serve`` process (its RSS read from ``/proc``) on loopback, with the shipped
MiniLM and a fresh score head saved by rmkit (``--model`` names another). Printed: requests done and failed,
the bad requests and their statuses, RSS per minute (median of 5-second samples), p50/p99 latency of the first,
second and last minute, the probes' largest difference, and the time from SIGTERM to the server's exit with
what became of the requests in flight.

    python benchmarks/soak_serve.py [--minutes 5] [--clients 64] [--model PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

WORDS = [
    "the",
    "a",
    "reward",
    "model",
    "scores",
    "each",
    "answer",
    "to",
    "every",
    "prompt",
    "with",
    "care",
    "and",
    "speed",
    "while",
    "rollouts",
    "wait",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def post(base: str, path: str, body: dict, timeout: float = 120) -> tuple[int, dict]:
    req = urllib.request.Request(base + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as e:
        return e.code, {}


def sample(rng: random.Random, limit: int) -> tuple[str, str]:
    """A prompt and an answer of a length anywhere from a few words to about the model's limit."""
    n = int(rng.triangular(2, limit, 12))
    cut = rng.randint(1, n)
    words = [rng.choice(WORDS) for _ in range(n)]
    return " ".join(words[:cut]), " ".join(words[cut:]) or "ok"


class Load:
    """The clients, the bad-request thread and what they saw."""

    def __init__(self, base: str, clients: int, limit: int):
        self.base, self.clients, self.limit = base, clients, limit
        self.done: list[tuple[float, float]] = []  # (finished at, latency) of good requests
        self.failed: list[str] = []
        self.bad: dict[str, dict[int | str, int]] = {}
        self.stop = threading.Event()
        self.stopping = threading.Event()  # SIGTERM sent: a refused connection is expected from now on
        self.refused_after_sigterm = 0
        self.lock = threading.Lock()

    def client(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stop.is_set():
            prompt, answer = sample(rng, self.limit)
            start = time.monotonic()
            try:
                if rng.random() < 0.5:
                    status, reply = post(self.base, "/score", {"prompts": [prompt], "responses": [answer]})
                    ok = status == 200 and len(reply.get("scores", [])) == 1
                else:
                    status, reply = post(
                        self.base, "/get_reward", {"query": [f"{prompt} {answer}"], "prompts": [prompt]}
                    )
                    ok = status == 200 and len(reply.get("rewards", [])) == 1
            except OSError as e:
                status, ok = f"{type(e).__name__}", False
            with self.lock:
                if ok:
                    self.done.append((time.monotonic(), time.monotonic() - start))
                elif self.stopping.is_set():
                    self.refused_after_sigterm += 1
                else:
                    self.failed.append(str(status))

    def bad_requests(self) -> None:
        rng = random.Random(1)
        host, port = self.base.removeprefix("http://").split(":")
        kinds = ["malformed", "oversized", "half-sent", "abandoned", "wrong-type"]
        while not self.stopping.wait(0.5):
            kind = rng.choice(kinds)
            status: int | str
            try:
                if kind == "malformed":
                    req = urllib.request.Request(
                        self.base + "/score", b'{"texts": [', {"Content-Type": "application/json"}
                    )
                    status = _status(req)
                elif kind == "oversized":
                    big = json.dumps({"texts": ["x" * (2 << 20)]}).encode()
                    status = _status(
                        urllib.request.Request(
                            self.base + "/score", big, {"Content-Type": "application/json"}
                        )
                    )
                elif kind == "wrong-type":
                    status = post(self.base, "/score", {"texts": [5]})[0]
                else:
                    with socket.create_connection((host, int(port)), timeout=10) as s:
                        if kind == "half-sent":
                            s.sendall(
                                b'POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: 400\r\n\r\n{"texts": ["ha'
                            )
                    status = "hung up"
            except OSError as e:
                status = type(e).__name__
            with self.lock:
                counts = self.bad.setdefault(kind, {})
                counts[status] = counts.get(status, 0) + 1


def _status(req: urllib.request.Request) -> int:
    try:
        with urllib.request.urlopen(req, timeout=60) as reply:
            return reply.status
    except urllib.error.HTTPError as e:
        return e.code


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--model", default=None, help="an RM checkpoint (default: MiniLM with a fresh head)")
    args = parser.parse_args()

    from rmkit import RewardModel

    model = args.model
    if model is None:
        model = str(Path(tempfile.mkdtemp(prefix="soak_")) / "rm")
        RewardModel.from_pretrained("minilm").save_pretrained(model)
    offline = RewardModel.from_pretrained(model)
    limit = max(8, (offline.max_length or 512) // 2)  # words; a word is one or two tokens
    rng = random.Random(7)
    probes = [sample(rng, limit) for _ in range(32)]
    expected = offline.score(prompts=[p for p, _ in probes], responses=[a for _, a in probes])

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "rmkit.cli", "serve", "--model", model, "--port", str(port), "--max-body-mb", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    while True:
        try:
            urllib.request.urlopen(base + "/health", timeout=1)
            break
        except OSError:
            if server.poll() is not None:
                print(server.stderr.read())
                return 1
            time.sleep(0.2)

    load = Load(base, args.clients, limit)
    threads = [threading.Thread(target=load.client, args=(i,), daemon=True) for i in range(args.clients)]
    threads.append(threading.Thread(target=load.bad_requests, daemon=True))
    start = time.monotonic()
    for t in threads:
        t.start()
    rss: list[tuple[float, float]] = []
    probe_diff = 0.0
    next_probe = start
    while (now := time.monotonic()) - start < args.minutes * 60:
        rss.append((now - start, rss_mb(server.pid)))
        if now >= next_probe:
            status, reply = post(
                base, "/score", {"prompts": [p for p, _ in probes], "responses": [a for _, a in probes]}
            )
            if status == 200:
                probe_diff = max(
                    probe_diff, *(abs(a - b) for a, b in zip(reply["scores"], expected, strict=True))
                )
            else:
                load.failed.append(f"probe {status}")
            next_probe += 60
        time.sleep(5)

    # SIGTERM while the clients are still sending: the requests in flight must be answered
    with load.lock:
        before = len(load.done)
    sigterm = time.monotonic()
    load.stopping.set()
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
    shutdown = time.monotonic() - sigterm
    load.stop.set()
    for t in threads:
        t.join(timeout=30)
    answered_after = len([d for d in load.done if d[0] >= sigterm])
    errors = [line for line in server.stderr.read().splitlines() if "ERROR" in line or "Traceback" in line]
    report(args, load, rss, start, probe_diff, shutdown, before, answered_after, errors)
    return 0


def report(args, load: Load, rss, start, probe_diff, shutdown, before, answered_after, errors) -> None:
    minutes = int(args.minutes)
    print(f"\nrmkit serve soak: {args.minutes:g} min, {args.clients} clients, one sample a request")
    print(f"good requests done {before} ({before / (args.minutes * 60):.1f}/s), failed {len(load.failed)}")
    if load.failed:
        print(f"  failures: {sorted(set(load.failed))[:10]}")
    print(f"bad requests: {load.bad}")
    print("RSS per minute (median, MB): " + ", ".join(
        f"{statistics.median([m for t, m in rss if k * 60 <= t < (k + 1) * 60]):.0f}"
        for k in range(max(minutes, 1)) if any(k * 60 <= t < (k + 1) * 60 for t, _ in rss)
    ))  # fmt: skip
    for label, k in (("first", 0), ("second", 1), ("last", max(minutes - 1, 0))):
        lat = [lat for t, lat in load.done if k * 60 <= t - start < (k + 1) * 60]
        print(
            f"latency {label:6} minute: p50 {percentile(lat, 0.5) * 1000:.0f} ms, p99 {percentile(lat, 0.99) * 1000:.0f} ms ({len(lat)} requests)"
        )
    print(f"probes: largest |served - offline| {probe_diff:.2e}")
    print(
        f"SIGTERM to exit: {shutdown:.1f} s; requests answered after SIGTERM: {answered_after}, refused after "
        f"it (the server closed): {load.refused_after_sigterm}"
    )
    print(f"server log lines with ERROR or Traceback: {len(errors)}")


if __name__ == "__main__":
    sys.exit(main())
