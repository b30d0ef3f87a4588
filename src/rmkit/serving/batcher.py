"""Batching across requests: handlers queue their token ids, one model worker scores them together.

::

    request handlers (event loop) ──submit(ids)──> queue ──> worker thread: take what waits (≤ token budget),
         ^                                                     score_sequences (length-sorted batches),
         └─────────── each request's own scores, in its order ─┘ hand every request its slice

The worker is a thread, never the event loop, so the server keeps reading requests while a batch runs;
requests that arrive meanwhile go into the next batch. A request's items may be split over batches (a big
request does not hold the queue), and a batch may hold the items of many requests. Items are taken in
arrival order.

The wait. Before it takes a batch, the worker lets the event loop run a few rounds, so requests that came
in while the last batch ran are read (the worker holds the GIL for much of a forward pass). Then it runs
what is queued at once, except while requests are still being handled (``arriving``: body read, being
parsed or tokenised, not yet queued): it waits for them, at most ``max_wait`` seconds after the oldest
queued item arrived. A lone caller so never waits, and under load a batch fills with the requests already
at the door.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rmkit.data import RowCounts
from rmkit.inference import BatchModel, score_sequences
from rmkit.runtime import release_memory
from rmkit.serving.telemetry import Telemetry

RELEASE_EVERY = 1.0  # seconds between two releases of freed memory, when the queue is empty
BUSY_RELEASE_EVERY = 2.0  # and when it never is


class QueueFull(Exception):
    """The queue holds ``max_queue`` items already; the caller should retry later (HTTP 503)."""


@dataclass(eq=False)
class _Job:
    """One request's items on their way through the queue."""

    ids: Sequence[Sequence[int]]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    positions: Sequence[Sequence[int]] | None = None  # a process RM's step positions: step scores come back
    arrived: float = field(default_factory=time.monotonic)
    scores: list[float] = field(default_factory=list)
    taken: int = 0  # items handed to a batch so far
    done: int = 0  # items scored so far
    cancelled: bool = False

    def __post_init__(self) -> None:
        self.scores = [0.0] * len(self.ids)


class Batcher:
    """Scores the token ids that requests submit, many requests per forward batch (module docstring).

    ``batch_tokens`` bounds the real tokens one batch takes from the queue (and, through
    :func:`rmkit.inference.score_sequences`, the padded size of each forward pass); ``max_rows`` its rows.
    ``batch_cost`` (:func:`rmkit.inference.batch_cost`) lets a batch of mixed lengths run as several
    forward passes of similar lengths where that is cheaper. ``cross_request=False`` runs each request
    alone, as servers without batching do (for comparison).
    """

    def __init__(
        self,
        model: BatchModel,
        *,
        batch_tokens: int,
        max_rows: int | None,
        max_wait: float,
        max_queue: int,
        cross_request: bool = True,
        batch_cost: float | None = None,
        prepare: Callable[[], None] | None = None,
        telemetry: Telemetry | None = None,
    ):
        self.model = model
        self.batch_tokens, self.max_rows, self.max_wait = batch_tokens, max_rows, max_wait
        self.max_queue, self.cross_request, self.batch_cost = max_queue, cross_request, batch_cost
        self.prepare = prepare
        self.telemetry = telemetry or Telemetry()
        self.arriving = 0  # requests being handled that will submit soon (see the module docstring)
        self._jobs: deque[_Job] = deque()
        self._queued = 0  # items queued and not yet taken
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._released = 0.0  # when memory was last given back (time.monotonic())

    @property
    def queued(self) -> int:
        return self._queued

    def start(self) -> None:
        """Start the worker and wait until it has run ``prepare`` (done by the first :meth:`submit` too,
        for apps mounted without lifespan); re-raises what ``prepare`` raised."""
        with self._cond:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping = False
            ready: list[BaseException | None] = []
            self._thread = threading.Thread(
                target=self._run, args=(ready,), name="rmkit-batcher", daemon=True
            )
            self._thread.start()
            while not ready:
                self._cond.wait()
            if ready[0] is not None:
                self._thread = None
                raise ready[0]

    def stop(self) -> None:
        """Finish what is queued, then stop the worker."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def arrive(self) -> None:
        """A request is being read; it will :meth:`submit` or :meth:`leave`."""
        with self._cond:
            self.arriving += 1

    def leave(self) -> None:
        """A request that called :meth:`arrive` will not submit (bad input, refused)."""
        with self._cond:
            self.arriving -= 1
            self._cond.notify_all()

    def submit(
        self,
        ids: Sequence[Sequence[int]],
        *,
        arrived: bool = False,
        positions: Sequence[Sequence[int]] | None = None,
    ) -> asyncio.Future:
        """Queue one request's token id sequences; the future's result is their scores, in order (with
        ``positions``, a process RM's: each item's list of scores at those positions).

        Call from the event loop. ``arrived``: this request called :meth:`arrive` first. Raises
        :class:`QueueFull` when the queue cannot take ``len(ids)`` more items.
        """
        loop = asyncio.get_running_loop()
        job = _Job(ids, loop.create_future(), loop, positions)
        if self._thread is None:
            self.start()
        with self._cond:
            if arrived:
                self.arriving -= 1
            if self._queued and self._queued + len(ids) > self.max_queue:
                self._cond.notify_all()
                raise QueueFull(f"the queue holds {self._queued} items; the limit is {self.max_queue}")
            if not ids:
                job.future.set_result([])
                return job.future
            self._jobs.append(job)
            self._queued += len(ids)
            self._cond.notify_all()
        return job.future

    def cancel(self, future: asyncio.Future) -> None:
        """Drop the items of a request that no longer waits (timed out) that no batch has taken yet."""
        with self._cond:
            for job in self._jobs:
                if job.future is future:
                    job.cancelled = True
                    self._queued -= len(job.ids) - job.taken
                    self._jobs.remove(job)
                    break

    def _run(self, ready: list[BaseException | None]) -> None:
        # One thread runs every forward pass, warm-up included: on CPU, OpenMP runs a thread's passes
        # at full speed only if no other thread ran passes before it (measured: 2x slower otherwise).
        try:
            if self.prepare is not None:
                self.prepare()
        except BaseException as e:  # noqa: BLE001 (handed to start(), which raises it)
            with self._cond:
                ready.append(e)
                self._cond.notify_all()
            return
        with self._cond:
            ready.append(None)
            self._cond.notify_all()
        while True:
            with self._cond:
                parts = self._take()
            if parts is None:
                return
            self._score(parts)
            self._release_when_idle()

    def _release_when_idle(self) -> None:
        """Give freed memory back (:func:`rmkit.runtime.release_memory`) when nothing waits, at most every
        ``RELEASE_EVERY`` seconds, and under a load that never leaves the queue empty every
        ``BUSY_RELEASE_EVERY`` seconds: the server's memory stays flat instead of growing with each new mix of
        batch shapes, and at most one batch in that many seconds waits the few milliseconds it takes."""
        now = time.monotonic()
        since = now - self._released
        if since < RELEASE_EVERY or (self._jobs and since < BUSY_RELEASE_EVERY):
            return
        release_memory(self.model.device)
        self._released = now
        self.telemetry.release()

    def _take(self) -> list[tuple[_Job, int, int]] | None:
        """Wait for work (see the module docstring) and take one batch's items: ``(job, start, end)``
        slices, in arrival order; ``None`` when stopping with nothing left. Called holding the lock."""
        while not self._jobs:
            if self._stopping:
                return None
            self._cond.wait()
        deadline = self._jobs[0].arrived + self.max_wait
        if self.cross_request and self.max_wait > 0:
            self._cond.release()
            try:
                self._let_loop_read(self._jobs[0].loop, deadline)
            finally:
                self._cond.acquire()
        while (
            self.cross_request
            and self.arriving > 0
            and not self._stopping
            and (not self.max_rows or self._queued < self.max_rows)
            and (left := deadline - time.monotonic()) > 0
        ):
            self._cond.wait(left)
        parts: list[tuple[_Job, int, int]] = []
        tokens = rows = 0
        while self._jobs:
            job = self._jobs[0]
            end = job.taken
            while end < len(job.ids) and (rows == 0 or self._fits(tokens + len(job.ids[end]), rows + 1)):
                tokens += len(job.ids[end])
                rows += 1
                end += 1
            if end > job.taken:
                parts.append((job, job.taken, end))
                self._queued -= end - job.taken
                job.taken = end
            if job.taken < len(job.ids) or not self.cross_request:
                break
            self._jobs.popleft()
        if self._jobs and self._jobs[0].taken == len(self._jobs[0].ids):
            self._jobs.popleft()
        return parts

    @staticmethod
    def _let_loop_read(loop: asyncio.AbstractEventLoop, deadline: float, ticks: int = 3) -> None:
        """Let the event loop run ``ticks`` rounds (or until ``deadline``) before a batch is taken.

        While a batch runs, this thread holds the GIL for much of the time (a model's forward is many small
        Python calls), so requests that arrived meanwhile may still sit unread in their sockets; a few
        rounds of the loop read them, and their handlers queue their items or count as ``arriving``.
        """
        done = threading.Event()

        def tick(left: int) -> None:
            if left:
                loop.call_soon(tick, left - 1)
            else:
                done.set()

        try:
            loop.call_soon_threadsafe(tick, ticks)
        except RuntimeError:  # the loop is closed: nothing more will arrive
            return
        done.wait(max(0.0, deadline - time.monotonic()))

    def _fits(self, tokens: int, rows: int) -> bool:
        return tokens <= self.batch_tokens and (self.max_rows is None or rows <= self.max_rows)

    def _score(self, parts: list[tuple[_Job, int, int]]) -> None:
        """Score the taken slices in one call of the inference core and hand each request its scores."""
        sequences = [seq for job, start, end in parts for seq in job.ids[start:end]]
        steps = (
            [p for job, start, end in parts for p in job.positions[start:end]]
            if parts[0][0].positions
            else None
        )
        groups, pos = [], 0  # a request's items may answer one prompt: they may share its pass
        for _, start, end in parts:
            if end - start > 1:
                groups.append(list(range(pos, pos + end - start)))
            pos += end - start
        counts = RowCounts()
        try:
            scores = score_sequences(
                self.model,
                sequences,
                batch_tokens=self.batch_tokens,
                max_rows=self.max_rows,
                batch_cost=self.batch_cost,
                groups=groups,
                positions=steps,
                stats=counts,
            )
        except Exception as e:  # a failed batch fails its requests, not the server
            for job, _, _ in parts:
                job.loop.call_soon_threadsafe(_fail, job.future, e)
            return
        self.telemetry.batch(
            items=len(sequences),
            requests=len(parts),
            tokens=sum(len(s) for s in sequences),
            parse_failures=counts.parse_failures,
        )
        pos = 0
        for job, start, end in parts:
            job.scores[start:end] = scores[pos : pos + end - start]
            pos += end - start
            job.done += end - start
            if job.done == len(job.ids) and not job.cancelled:
                job.loop.call_soon_threadsafe(_resolve, job.future, job.scores)


def _resolve(future: asyncio.Future, scores: list[float]) -> None:
    if not future.done():
        future.set_result(scores)


def _fail(future: asyncio.Future, error: Exception) -> None:
    if not future.done():
        future.set_exception(error)
