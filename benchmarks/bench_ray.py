"""``rmkit score --backend ray`` against ``rmkit score`` in one process (issue 34): throughput and peak memory.

``--rows`` synthetic prompt/response rows (default 20,000; :func:`bench_score_memory.write_rows`) are scored
by a tiny random BERT (:func:`bench_score_memory.make_model`), in one run:

1. ``rmkit score`` in one process (a subprocess; all the machine's cores);
2. ``rmkit score --backend ray --replicas 2`` on a local Ray cluster this benchmark starts (loopback,
   ``--ray-cpus`` CPUs, a 200 MB object store, no dashboard), the driver in a subprocess. While it runs, the
   driver samples the peak resident set (``VmHWM``) of each actor process (``ray::MapWorker...``).

Printed: rows/s of both (the wall time of the command, the model loads included; the cluster's start is
timed apart), Ray's over one process's, the peak memory of the one process, of the Ray driver (it never holds
the data set: it grows with the spans in flight, not the rows) and of each actor, and whether the two output
files are byte-identical (with the default batch budget the batches differ, so the scores may differ in
the last bits of a float: the largest difference is printed).

    python benchmarks/bench_ray.py [--rows 20000] [--ray-cpus 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench_score_memory import make_model, write_rows


def _peak_mib(pid: int) -> float | None:
    """The peak resident set of process ``pid`` so far (``VmHWM``), in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _watch_actors(peaks: dict[int, float], stop: threading.Event) -> None:
    """Record each Ray actor process's peak memory until ``stop``."""
    import psutil

    while not stop.is_set():
        for proc in psutil.process_iter(["pid", "cmdline"]):
            if "MapWorker" in " ".join(proc.info["cmdline"] or []):
                peak = _peak_mib(proc.info["pid"])
                if peak is not None:
                    peaks[proc.info["pid"]] = max(peak, peaks.get(proc.info["pid"], 0.0))
        stop.wait(0.2)


def child(backend: str, model: str, data: str, out: str, cpus: int) -> None:
    """One run of ``rmkit score``; prints its figures as JSON."""
    import rmkit

    options = dict(model=model, input=data, output=out, progress=False)
    peaks: dict[int, float] = {}
    started = 0.0
    if backend == "ray":
        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=cpus, object_store_memory=200 * 2**20, include_dashboard=False,
                 _node_ip_address="127.0.0.1", log_to_driver=False)  # fmt: skip
        started = time.perf_counter() - t0
        options.update(backend="ray", replicas="2")
        stop = threading.Event()
        watcher = threading.Thread(target=_watch_actors, args=(peaks, stop), daemon=True)
        watcher.start()
    start = time.perf_counter()
    summary = rmkit.score(**options)
    seconds = time.perf_counter() - start
    if backend == "ray":
        stop.set()
        watcher.join()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"rows": summary["rows"], "seconds": seconds, "peak_mib": peak, "cluster_start_s": started}
    print(json.dumps({**result, "actor_peaks_mib": sorted(peaks.values())}))


def run(backend: str, model: Path, data: Path, out: Path, cpus: int) -> dict:
    cmd = [sys.executable, __file__, "--child", backend, str(model), str(data), str(out), str(cpus)]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare(a: Path, b: Path) -> tuple[bool, float]:
    """Whether two score files are byte-identical, and their largest score difference."""
    sa = [json.loads(line)["score"] for line in a.read_text().splitlines()]
    sb = [json.loads(line)["score"] for line in b.read_text().splitlines()]
    assert len(sa) == len(sb)
    return a.read_bytes() == b.read_bytes(), max(abs(x - y) for x, y in zip(sa, sb, strict=True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--ray-cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child[:4], int(args.child[4]))
        return 0
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        make_model(tmp / "rm")
        data = tmp / "rows.jsonl"
        write_rows(data, args.rows)
        one = run("local", tmp / "rm", data, tmp / "one.jsonl", args.ray_cpus)
        two = run("ray", tmp / "rm", data, tmp / "ray.jsonl", args.ray_cpus)
        same, delta = compare(tmp / "one.jsonl", tmp / "ray.jsonl")
    rate_one, rate_ray = one["rows"] / one["seconds"], two["rows"] / two["seconds"]
    print(f"{args.rows} rows, {os.cpu_count()} cores here, Ray cluster of {args.ray_cpus} CPUs, 2 actors")
    print(f"one process:   {rate_one:8.0f} rows/s ({one['seconds']:.1f} s), peak {one['peak_mib']:.0f} MiB")
    print(
        f"ray, 2 actors: {rate_ray:8.0f} rows/s ({two['seconds']:.1f} s; cluster start {two['cluster_start_s']:.1f} s "
        f"apart), driver peak {two['peak_mib']:.0f} MiB, actor peaks "
        + ", ".join(f"{p:.0f}" for p in two["actor_peaks_mib"])
        + " MiB"
    )
    print(f"ray / one process: {rate_ray / rate_one:.2f}x rows/s")
    print(f"output byte-identical: {same}; max |score difference| {delta:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
