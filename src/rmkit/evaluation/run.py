"""``rmkit eval``: does the RM judge answers the way people do? One runner for every kind of RM.

The data files say what is judged (:func:`rmkit.kinds.for_data`: preference pairs, step-labelled solutions or
rated responses) and that kind's evaluation says how; each model is loaded by its own kind
(:func:`rmkit.kinds.load`), which must score what the data holds. The runner scores every data set with every
model through the inference core, then writes what the evaluation makes of the scores::

    metrics.json   the figures, per model, data set and subset (or attribute)
    scores.jsonl   one line per scored row, in input order
    plots/*.png    the evaluation's plots (--no-plots skips them)
    report.md      the tables and the plots, readable on GitHub
    report.html    one self-contained page: the figures, the rows to filter and sort, length bias, flipped
                   pairs (:mod:`rmkit.evaluation.page`; ``rmkit report DIR`` builds it again)

What each kind writes: :mod:`rmkit.kinds.pairwise` (accuracy with intervals, length bias, model against
model), :mod:`rmkit.kinds.process` (step and ProcessBench figures), :mod:`rmkit.kinds.rated` (correlations,
MAE and implied-pair accuracy per attribute). With ``--suite`` (or files that are unmistakably a public
benchmark's) the evaluation is the benchmark's: :mod:`rmkit.evaluation.suite`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

from rmkit import kinds, runtime, suites
from rmkit.data import Rejects
from rmkit.errors import RMKitError
from rmkit.evaluation.config import EvalConfig
from rmkit.evaluation.page import write_page
from rmkit.evaluation.suite import SuiteEvaluation, cleanup
from rmkit.files import atomic_write, write_json, write_text
from rmkit.kinds import Reading
from rmkit.kinds.pairwise import PairEvaluation

log = logging.getLogger(__name__)


def _labels(paths: Sequence[str]) -> list[str]:
    """Short unique names for paths: the last path component, made file-name safe, numbered on a clash."""
    labels: list[str] = []
    for p in paths:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(p).rstrip("/")).name)
        base = Path(base).stem if Path(base).suffix in (".json", ".jsonl", ".csv", ".parquet") else base
        label, k = base or "model", 2
        while label in labels:
            label, k = f"{base}-{k}", k + 1
        labels.append(label)
    return labels


def evaluate(config: EvalConfig | None = None, **options: Any) -> dict[str, Any]:
    """Evaluate one or more RMs on one or more data files; write the files above and return the metrics.

    Call with an :class:`EvalConfig` or its fields: ``evaluate(model="rm", data="pairs.json",
    output_dir="out")``. The returned dict is what ``metrics.json`` holds. On pairs, the numbers of a model on
    a data set are ``metrics["results"][model][data]["all"]`` and, per subset, ``...["subsets"][subset]``
    (keys are listed at :func:`rmkit.metrics.pair_metrics`); with several models,
    ``metrics["comparisons"]["B vs A"][data]`` compares each later model B with the first, A
    (:func:`rmkit.metrics.compare_pairs`).
    """
    config = config if config is not None else EvalConfig(**options)
    config.validate()
    if config.cost_model:  # judged as one more model; its kind says it is a cost model
        config = replace(config, model=[*config.model, config.cost_model], cost_model=None)
    labels, names = _labels(config.model), _labels(config.data)
    suite = suites.choose(config.suite, config.data)
    if config.resume and suite is None:
        raise RMKitError("--resume continues a benchmark suite's run (--suite); these files are no suite's")
    judge = suite if suite is not None else kinds.for_data(config.data, kinds.Reading.of(config))
    checkpoints = [
        kinds.Checkpoint.read(path, config.loading(), config.step_format()) for path in config.model
    ]
    for checkpoint in checkpoints:  # before any weight loads: a model that cannot be judged is named now
        kinds.check(judge, checkpoint, kinds.recognise(checkpoint), ", ".join(config.data))
    evaluation = (
        SuiteEvaluation(suite, config, labels, names) if suite else judge.evaluation(config, labels, names)
    )
    if suite is not None:
        log.info("eval: %s, scored as %s", suite.title, suite.source)
    out = Path(config.output_dir)
    with runtime.start(config.device, config.threads) as rt, _backend(config, evaluation) as load:
        for k, (label, checkpoint) in enumerate(zip(labels, checkpoints, strict=True)):
            kind, model = load(checkpoint, dtype=config.dtype, device=rt.device)
            kinds.check(judge, checkpoint, kind, ", ".join(config.data))
            for name, path in zip(names, config.data, strict=True):
                log.info("eval: scoring %s with %s", path, label)
                # Bad rows are reported once, on the first model's pass; later passes skip them quietly.
                skip = config.on_error == "skip"
                with Rejects(_rejects(config) if k == 0 else None) if skip else nullcontext() as rejects:
                    evaluation.add(kind, model, label, name, rejects)
            del model
    metrics = evaluation.metrics()
    _write(config, evaluation, metrics, out)
    if suite is not None:
        cleanup(out)
    return metrics


def _write(config: EvalConfig, evaluation: Any, metrics: dict[str, Any], out: Path) -> None:
    """Write what the evaluation makes of the scores (module docstring) to ``out``, and say so."""
    out.mkdir(
        parents=True, exist_ok=True
    )  # only now (a suite's partial scores aside): a failed run leaves none
    with atomic_write(out / "scores.jsonl") as f:
        f.writelines(json.dumps(line, ensure_ascii=False) + "\n" for line in evaluation.lines())
    for name, content in evaluation.files(metrics).items():
        _write_result(out / name, content)
    drawn = evaluation.plots(out, metrics) if config.plots else {}
    write_json(out / "metrics.json", metrics)
    write_text(out / "report.md", evaluation.report(metrics, drawn))
    if config.page:
        write_page(out, Reading.of(config))  # from the files just written, as rmkit report DIR does
    print("\n".join(evaluation.tables(metrics)))
    written = ["metrics.json", "scores.jsonl", "report.md"] + ["report.html"] * config.page
    written += ["plots/"] if drawn else []
    print(f"wrote {', '.join(written[:-1])} and {written[-1]} to {out}{_skipped(config)}")


@contextmanager
def _backend(config: EvalConfig, evaluation: Any) -> Iterator[Callable[..., tuple[Any, Any]]]:
    """Inside: how a model is loaded, :func:`rmkit.kinds.load` here or, with ``--backend ray``, on a pool of
    actors of a Ray cluster (:func:`rmkit.ray.remote_model`; preference pairs' evaluation only, for now)."""
    if config.backend != "ray":
        yield kinds.load
        return
    if not isinstance(evaluation, PairEvaluation):
        raise RMKitError(
            "rmkit eval --backend ray evaluates preference pairs (not a --suite, step labels or ratings) for "
            "now; score other data with rmkit score --backend ray"
        )
    from rmkit.ray import cluster, remote_model  # Ray loads only when asked for

    with cluster(config.ray_address):
        yield lambda checkpoint, **_: remote_model(checkpoint, config)


def _rejects(config: EvalConfig) -> str:
    """Where skipped rows go: ``--rejects``, else ``rejects.jsonl`` in the output directory."""
    return config.rejects or str(Path(config.output_dir) / "rejects.jsonl")


def _skipped(config: EvalConfig) -> str:
    """Where the rows that ``--on-error skip`` skipped went, when it skipped any."""
    path = Path(_rejects(config))
    if config.on_error != "skip" or not path.is_file() or not path.stat().st_size:
        return ""
    return f"; the skipped rows, each with its reason, to {path}"


def _write_result(path: Path, content: Any) -> None:
    """A benchmark runner's results file: JSON (indented, keys sorted, as reward-bench writes it) or JSON lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        with atomic_write(path) as f:
            f.writelines(json.dumps(line, ensure_ascii=False) + "\n" for line in content)
    else:
        write_text(path, json.dumps(content, indent=4, sort_keys=True, ensure_ascii=False) + "\n")
