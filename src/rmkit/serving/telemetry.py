"""The server's counters, exposed at ``GET /metrics`` in the Prometheus text format (version 0.0.4).

Series (all prefixed ``rmkit_``):

- ``requests_total{route, status}``: requests answered, by route and HTTP status;
- ``request_seconds{route}``: histogram of the time from a request's arrival to its reply;
- ``items_total``, ``tokens_total``: items (texts) scored and their real tokens;
- ``batches_total``; ``batch_items`` and ``batch_requests``: histograms of the items and of the distinct
  requests in each batch (a batch holding several requests is batching across callers at work);
- ``queue_items``: items waiting for a batch now;
- ``client_disconnects_total``: requests whose client hung up before their body was read;
- ``memory_releases_total``: times the worker gave freed memory back (when idle; every 2 s under load);
- ``judge_parse_failures_total``: a generating judge's judgments whose verdict could not be read (each
  answered with the ``--on-parse-failure score=X`` value).
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
COUNT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Histogram:
    """Cumulative-bucket histogram of observed values, as Prometheus exposes them."""

    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        out, running = [], 0
        for bound, count in zip([*map(_number, self.buckets), "+Inf"], self.counts, strict=True):
            running += count
            out.append(f'{name}_bucket{{{labels}{sep}le="{bound}"}} {running}')
        braces = f"{{{labels}}}" if labels else ""
        out += [f"{name}_sum{braces} {_number(self.sum)}", f"{name}_count{braces} {self.count}"]
        return out


class Telemetry:
    """What the server has done so far; safe to update from the event loop and the batch worker."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.latency: dict[str, Histogram] = {}
        self.items = self.tokens = self.batches = self.disconnects = self.releases = self.parse_failures = 0
        self.batch_items = Histogram(COUNT_BUCKETS)
        self.batch_requests = Histogram(COUNT_BUCKETS)

    def request(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[route, status] += 1
            self.latency.setdefault(route, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def batch(self, *, items: int, requests: int, tokens: int, parse_failures: int = 0) -> None:
        with self._lock:
            self.batches += 1
            self.parse_failures += parse_failures
            self.items += items
            self.tokens += tokens
            self.batch_items.observe(items)
            self.batch_requests.observe(requests)

    def disconnect(self) -> None:
        with self._lock:
            self.disconnects += 1

    def release(self) -> None:
        with self._lock:
            self.releases += 1

    def render(self, queue_items: int) -> str:
        """The Prometheus text exposition of every series; ``queue_items`` is the queue's depth now."""
        with self._lock:
            out = [
                "# HELP rmkit_requests_total Requests answered, by route and status.",
                "# TYPE rmkit_requests_total counter",
            ]
            for (route, status), n in sorted(self.requests.items()):
                out.append(f'rmkit_requests_total{{route="{route}",status="{status}"}} {n}')
            out += [
                "# HELP rmkit_request_seconds Time from a request's arrival to its reply.",
                "# TYPE rmkit_request_seconds histogram",
            ]
            for route, hist in sorted(self.latency.items()):
                out += hist.lines("rmkit_request_seconds", f'route="{route}"')
            for name, value, help_text in (
                ("items_total", self.items, "Items (texts) scored."),
                ("tokens_total", self.tokens, "Real tokens of the items scored."),
                ("batches_total", self.batches, "Forward batches run."),
                (
                    "client_disconnects_total",
                    self.disconnects,
                    "Clients that hung up before their body was read.",
                ),
                (
                    "memory_releases_total",
                    self.releases,
                    "Times freed memory was given back (when idle; every 2 s under load).",
                ),
                (
                    "judge_parse_failures_total",
                    self.parse_failures,
                    "A generating judge's judgments whose verdict could not be read.",
                ),
            ):
                out += [f"# HELP rmkit_{name} {help_text}", f"# TYPE rmkit_{name} counter"]
                out.append(f"rmkit_{name} {value}")
            for name, hist, help_text in (
                ("batch_items", self.batch_items, "Items per batch."),
                ("batch_requests", self.batch_requests, "Distinct requests per batch."),
            ):
                out += [f"# HELP rmkit_{name} {help_text}", f"# TYPE rmkit_{name} histogram"]
                out += hist.lines(f"rmkit_{name}")
            out += [
                "# HELP rmkit_queue_items Items waiting for a batch.",
                "# TYPE rmkit_queue_items gauge",
                f"rmkit_queue_items {queue_items}",
            ]
        return "\n".join(out) + "\n"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
