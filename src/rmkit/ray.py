"""rmkit on a Ray cluster: ``rmkit score|rank ... --backend ray`` and Ray Datasets scored by rmkit's models.

``pip install rmkit[ray]``; this module is imported only when it is asked for. A file is scored so
(:func:`score_file`)::

    driver: plan spans of the input ─> Ray Data (one span a block) ─> map_batches(pool of actors)
    actor:  one model (a Scorer), reads its span, normalises, tokenises, scores it length-sorted
    driver: (span, part lines, rejects, counts) back, in any order ─> put in input order ─> part file,
            rejects, state file (as one process writes them) ─> merged output and summary

The driver is the only writer and holds no data set: spans wait only until the spans before them are in.
A killed driver's run goes on with ``--resume`` from its state file, as a single process's does; a crashed
actor is restarted by Ray and its span scored again (nothing is written until a span is whole). A bad row
(``--on-error raise``) stops the run when the spans before it are written, as in one process. The file is
byte-identical to ``rmkit score`` in one process when every batch does the same arithmetic: the same rows
batched together (spans of ``--chunk-rows`` records are one process's chunks while no row is rejected;
``--batch-tokens 1`` makes every batch one row) on as many threads; otherwise scores may differ in the last
bits of a float, as between any two batch sizes.

:func:`score_dataset` scores a Ray Dataset a user already holds, adding ``scores`` (and ``score``) columns.
"""

from __future__ import annotations

import gc
import json
import time
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, fields, replace
from itertools import islice
from pathlib import Path
from typing import Any

from rmkit import kinds, runtime
from rmkit.data import Example, RowCounts
from rmkit.errors import RMKitError
from rmkit.options import ScaleOptions

try:
    import ray  # the Ray package (absolute import: this module is rmkit.ray)
except ImportError:
    raise RMKitError("--backend ray needs Ray: pip install 'rmkit[ray]'") from None

from rmkit.jobs.config import ScoreConfig
from rmkit.jobs.scorefiles import Paths, finish, keeping_work, resume_state
from rmkit.jobs.scorer import Scorer, Shard
from rmkit.jobs.shards import ShareState, Span, append_lines, plan_spans, read_span

__all__ = ["cluster", "remote_model", "score_dataset", "score_file"]


def _replica(config: ScoreConfig) -> ScoreConfig:
    """A replica's options: as many torch threads as the CPUs Ray gives it, unless ``threads`` says."""
    return replace(config, threads=config.threads or max(1, round(config.cpus_per_replica)))


def _pool(config: ScoreConfig) -> dict[str, Any]:
    """``map_batches``' arguments for a pool of ``config``'s replicas."""
    return {
        "concurrency": config.replica_range(),
        "num_cpus": config.cpus_per_replica,
        "num_gpus": config.gpus_per_replica,
        "fn_constructor_kwargs": {"config": _replica(config)},
    }


class SpanScorer:
    """A Ray actor of ``--backend ray``: one model, a span of the input file scored a call."""

    def __init__(self, config: ScoreConfig):
        self.scorer = Scorer(config=config)
        self.source = str(config.input)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        """Spans (column ``span``: a :class:`Span` as JSON) -> their part lines, rejects lines and counts
        (``state``: a :class:`ShareState` as JSON), one row a span."""
        out: dict[str, list] = {k: [] for k in ("start", "lines", "rejects", "state", "dtype", "error")}
        for text in batch["span"]:
            fields_ = json.loads(text)
            span = Span(**{**fields_, "at": tuple(fields_["at"]) if fields_["at"] else None})
            try:
                shard, error = self.scorer.shard(list(read_span(self.source, span)), self.source), ""
            except RMKitError as e:  # bad input: the driver says so when the spans before it are written
                shard, error = Shard("", "", {}), str(e)
            out["start"].append(span.start)
            out["lines"].append(shard.lines)
            out["rejects"].append(shard.rejects)
            out["state"].append(json.dumps(shard.state))
            out["dtype"].append(self.scorer.config.dtype)
            out["error"].append(error)
        return out


def score_file(config: ScoreConfig, *, rm: Any = None) -> dict[str, Any]:
    """``rmkit score|rank --backend ray``: score ``config.input`` into ``config.output`` on a pool of Ray
    actors (module docstring); returns (and prints) the summary, as :func:`rmkit.jobs.score.score_file`."""
    if rm is not None:
        raise RMKitError("--backend ray loads the model in every replica: give its path (model=...)")
    start = time.perf_counter()
    output = Path(config.output)
    config.validate()
    paths = Paths.of(config, output, 0, 1)
    output.parent.mkdir(parents=True, exist_ok=True)
    state = resume_state(config, paths, 0, 1)
    with cluster(config.ray_address), keeping_work(paths):
        config = _drive(config, paths, state)
    elapsed = time.perf_counter() - start
    return finish(config, output, 1, elapsed, backend="ray", replicas=config.replicas)


@contextmanager
def cluster(address: str) -> Iterator[None]:
    """Inside: this process is a driver of the Ray cluster at ``address`` (``auto``, ``local`` or
    ``HOST:PORT``); a connection this call made is closed after (one the process had is left open)."""
    if ray.is_initialized():
        yield
        return
    try:
        ray.init(address=address, include_dashboard=False if address == "local" else None)
    except ConnectionError as e:
        raise RMKitError(
            f"--ray-address {address}: no Ray cluster found ({e}); start one (ray start --head) or run on "
            "this machine alone with --ray-address local"
        ) from None
    try:
        yield
    finally:
        gc.collect()  # object references left in cycles are freed while connected (after, they end the process)
        ray.shutdown()


def _drive(config: ScoreConfig, paths: Paths, state: ShareState) -> ScoreConfig:
    """Score the spans after ``state.records`` on the actor pool and write what comes back in input order,
    checkpointing ``state`` after every span; returns ``config`` with the dtype the replicas use."""
    spans = [
        {"span": json.dumps(asdict(s))}
        for s in plan_spans(str(config.input), state.records, config.chunk_rows)
    ]
    if not spans:
        state.save(paths.state)
        return config
    ray.data.DataContext.get_current().enable_progress_bars = config.progress
    data = ray.data.from_items(spans, override_num_blocks=len(spans))
    results = data.map_batches(SpanScorer, batch_size=1, **_pool(config))
    rows = iter(results.iter_rows())
    try:
        dtype = _write_in_order(rows, paths, state)
    finally:
        # However the loop ended (a bad row ends it early), the iteration is closed and what it leaves in
        # reference cycles (object references) freed now, while this process is connected: freed after a
        # ray.shutdown() by a later collection, an object reference ends the whole process.
        rows.close()
        gc.collect()
    return replace(config, dtype=dtype) if dtype else config


def _write_in_order(rows: Iterator[dict[str, Any]], paths: Paths, state: ShareState) -> str | None:
    """Append the spans of ``rows`` to the part file in input order, checkpointing ``state`` after each;
    returns the dtype the replicas scored in."""
    dtype: str | None = None
    waiting: dict[int, dict[str, Any]] = {}  # spans come back in any order; each waits for those before it
    t0 = time.perf_counter()
    with open(paths.part, "a", encoding="utf-8") as part:
        try:
            for row in rows:
                waiting[int(row["start"])] = row
                while state.records in waiting:
                    done = waiting.pop(state.records)
                    if done["error"]:
                        raise RMKitError(done["error"])
                    append_lines(part, [done["lines"]])
                    if done["rejects"]:
                        with open(paths.rejects, "a", encoding="utf-8") as rejects:
                            append_lines(rejects, [done["rejects"]])
                            state.rejects_bytes = rejects.tell()
                    shard = ShareState.from_dict(json.loads(done["state"]))
                    state.merge(shard)
                    state.records += shard.records
                    state.part_bytes, state.run_seconds = part.tell(), time.perf_counter() - t0
                    state.save(paths.state)
                    dtype = done["dtype"]
        except ray.exceptions.RayError as e:  # an actor's error, wrapped by Ray: rmkit's own in one line
            raise _user_error(e) or e from None
    return dtype


def _user_error(error: BaseException) -> RMKitError | None:
    """The :class:`RMKitError` (bad input, a bad option) that an actor raised inside Ray's ``error``."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, RMKitError) and not isinstance(error, ray.exceptions.RayError):
            return error
        error = getattr(error, "cause", None) or error.__cause__
    return None


class RowScorer:
    """A Ray actor of :func:`score_dataset`: one model, a batch of rows (an Arrow table) scored a call."""

    def __init__(self, config: ScoreConfig):
        self.scorer = Scorer(config=config)

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        scores = self.scorer(batch.to_pylist())
        single = [s[0] if s is not None and len(s) == 1 else None for s in scores]
        batch = batch.append_column("scores", pa.array(scores, type=pa.list_(pa.float64())))
        return batch.append_column("score", pa.array(single, type=pa.float64()))


def score_dataset(ds: ray.data.Dataset, model: str, **options: Any) -> ray.data.Dataset:
    """``ds`` with two columns added by the reward model ``model`` on a pool of actors: ``scores`` (a row's
    scores: one a response; a pair's chosen and rejected; a best-of-N row's, one a response) and ``score``
    (the score of a row of one response, else null). A batch's rows keep their order, and blocks theirs
    as Ray keeps them (``execution_options.preserve_order`` of the context it was made in; or sort by an id
    column). A row left out (a bad row with ``on_error="skip"``, an over-length one with
    ``truncation="drop"``) gets nulls.

    ``options`` are ``rmkit score``'s (:class:`ScoreConfig`): ``batch_tokens``, ``replicas``,
    ``gpus_per_replica``, ``cpus_per_replica``, ``chunk_rows`` (rows a call), ``format``, ``columns``, ...
    """
    config = ScoreConfig(model=str(model), input="", output="", **options)
    return ds.map_batches(RowScorer, batch_size=config.chunk_rows, batch_format="pyarrow", **_pool(config))


class ExampleScorer:
    """A Ray actor of ``rmkit eval --backend ray``: one model of any kind, scoring chunks of examples."""

    def __init__(self, checkpoint: kinds.Checkpoint, dtype: str, device: str, threads: int):
        import torch

        torch.set_num_threads(threads)
        self.kind, self.model = kinds.load(checkpoint, dtype=dtype, device=runtime.resolve_device(device))

    def score(self, chunk: list[Example], reading: kinds.Reading) -> tuple[list[tuple[Any, Any]], dict]:
        """``(raw, values)`` of each example of ``chunk`` in order (``None, None``: dropped), and the counts."""
        stats = RowCounts()
        out = [
            (raw, None if raw is None else self.kind.values(self.model, raw))
            for _, raw in self.kind.score(self.model, chunk, reading, stats)
        ]
        return out, asdict(stats)


class Scored(list):
    """What a model of a :class:`RemoteKind` read out for one example (``raw``, a list), with its ``values``
    already made by the actor that holds the model."""

    def __init__(self, raw: list, values: list[float]):
        super().__init__(raw)
        self.values = values


class RemoteKind:
    """A kind whose models run on a pool of :class:`ExampleScorer` actors: it answers as ``kind`` does, but
    scores examples on the actors (chunks in flight on all of them, results in input order)."""

    def __init__(self, kind: kinds.Kind, actors: list[Any]):
        self._kind, self._actors = kind, actors

    def __getattr__(self, name: str) -> Any:
        return getattr(self._kind, name)

    def score(
        self, model: Any, examples: Iterable[Example], reading: kinds.Reading, stats: RowCounts | None = None,
        memo: Any = None,
    ) -> Iterator[tuple[Example, Scored | None]]:  # fmt: skip
        """``(example, raw)`` of every example in order, as :meth:`rmkit.kinds.Kind.score` gives them."""
        it, flight = iter(examples), deque()
        chunks = iter(lambda: list(islice(it, reading.chunk_rows)), [])
        for i, chunk in enumerate(chunks):
            flight.append((chunk, self._actors[i % len(self._actors)].score.remote(chunk, reading)))
            if len(flight) > 2 * len(self._actors):
                yield from self._collect(*flight.popleft(), stats)
        while flight:
            yield from self._collect(*flight.popleft(), stats)

    def _collect(self, chunk: list[Example], ref: Any, stats: RowCounts | None) -> Iterator:
        try:
            results, counts = ray.get(ref)
        except ray.exceptions.RayError as e:  # an actor's error, wrapped by Ray: rmkit's own in one line
            raise _user_error(e) or e from None
        if stats is not None:
            stats.merge(RowCounts(**counts))
        for ex, (raw, values) in zip(chunk, results, strict=True):
            yield ex, None if raw is None else Scored(raw, values)

    def values(self, model: Any, raw: Scored) -> list[float]:
        return raw.values


def remote_model(checkpoint: kinds.Checkpoint, config: Any) -> tuple[RemoteKind, list[Any]]:
    """``(kind, model)`` of ``checkpoint`` for an evaluation, the model a pool of ``config.replicas`` actors
    (the largest of MIN,MAX) on the cluster this process drives (:func:`cluster`): :func:`rmkit.kinds.load`'s
    answer, run remotely. The actors go when the model is dropped."""
    scale = ScaleOptions(**{f.name: getattr(config, f.name) for f in fields(ScaleOptions)})
    count = scale.replica_range()
    actor = ray.remote(ExampleScorer).options(
        num_cpus=scale.cpus_per_replica, num_gpus=scale.gpus_per_replica, max_restarts=-1, max_task_retries=-1
    )
    threads = config.threads or max(1, round(scale.cpus_per_replica))
    n = count if isinstance(count, int) else count[1]
    actors = [actor.remote(checkpoint, config.dtype, config.device, threads) for _ in range(n)]
    return RemoteKind(kinds.recognise(checkpoint), actors), actors
