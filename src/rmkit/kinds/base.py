"""What every kind of reward model answers, and the default answers: those of an outcome RM.

A face (``rmkit score``, ``rank``, ``eval``, ``serve``) holds a model and its :class:`Kind`, and asks the
kind everything that differs between kinds::

    checkpoint ─ recognises ─> load ─> model          (Checkpoint: config.json and the options given)
    records ─ examples ─> prepare (tokenise, may run ahead) ─> score_prepared (the inference core) ─> raw
    raw ─ values ─> the numbers written ─ row ─> the output object
    data file ─ holds ─> which evaluation ─ evaluation(...) ─> metrics.json, scores.jsonl, plots, report.md

``raw`` is what the inference core read out for one example, in the kind's own shape (an outcome RM: one
float a response; a multi-attribute RM: K floats a response; a process RM: a solution's step scores).
:class:`Kind` itself is the outcome RM's behaviour; the kinds of :mod:`rmkit.kinds` override what differs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from itertools import islice
from pathlib import Path
from typing import Any

from rmkit.data import Example, RowCounts, detect_format, iter_examples, normalise_records
from rmkit.defaults import CHUNK_ROWS, METADATA_KEY, resolve_name
from rmkit.errors import RMKitError
from rmkit.locations import snapshot
from rmkit.metrics import ranking

# The model code (torch, transformers) is imported where a model is loaded or scored, so that what reads
# data (rmkit inspect, the choice of an evaluation) does not load it.

log = logging.getLogger(__name__)
Raw = Any  # what the core read out for one example, in its kind's shape (module docstring)


@dataclass
class Reading:
    """How a command reads rows and scores them: the options the kinds use, taken from a command's config
    by :meth:`of` (a field the config lacks keeps its default)."""

    max_length: int | None = None  # longest sequence in tokens (None: the model's)
    template: str | None = None  # rendering: None, the model's own setting; auto, chat or plain
    truncation: str = "left"  # over-length rows: "left" cuts the prompt, "drop" leaves the row out
    batch_tokens: int | None = None  # token budget of a forward pass (None: rmkit.inference.token_budget)
    prefix_sharing: bool = True  # answers of one prompt after one pass over it (causal models)
    share_across_rows: bool = False  # score: the chunk's rows that repeat a prompt share it too
    batch_cost: float | None = None  # a pass's fixed cost, in tokens (None: text fills, a VLM measures)
    read_ahead: bool | None = None  # tokenise the next chunk while this one is scored (None: on a GPU)
    chunk_rows: int = CHUNK_ROWS  # examples tokenised and scored together
    format: str | None = None  # row format (None: detected)
    columns: dict[str, str] | None = None  # renamed first
    attributes: list[str] | None = None  # rated data: the rating columns
    neutral_steps: str = "good"  # PRM800K steps rated 0
    aggregate: str = "min"  # a process RM's solution score from its step scores
    normalize: bool = False  # standardise scores with the model's stored mean and std
    top_k: int | None = None  # best-of-N rows: the ranking's length
    min_score: float | None = None  # best-of-N rows: the ranking's floor
    subset_column: str | None = None  # eval: the column naming each row's subset
    objective: str = "reward"  # which labels of data that has two: "reward" (preferences) or "cost" (safety)

    @classmethod
    def of(cls, config: Any, **given: Any) -> Reading:
        """The reading of a command's ``config`` (any object with some of these fields), ``given`` winning."""
        values = {f.name: getattr(config, f.name) for f in fields(cls) if hasattr(config, f.name)}
        return cls(**{**values, **given})


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint as the kinds recognise it, before any weight loads: its ``path``, its ``config.json``
    (``{}`` when there is none to read), the loading ``options`` given (those of
    :meth:`rmkit.RewardModel.from_pretrained`: ``ModelOptions.loading()``) and the step format given
    (``StepOptions.step_format()``: separator, good/bad tokens, ...)."""

    path: str
    config: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)
    steps: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(
        cls, path: str | Path, options: dict[str, Any] | None = None, steps: dict[str, Any] | None = None
    ) -> Checkpoint:
        """The checkpoint at ``path``: a directory, or a hub name's snapshot directory (downloaded, or read from
        the cache, with the files the ``options`` allow: :func:`rmkit.locations.snapshot`, at the option
        ``revision``, which is used up here), and its ``config.json``."""
        options = dict(options or {})
        path = snapshot(
            resolve_name(path),
            allow_pickle=bool(options.get("allow_pickle")),
            trust_remote_code=bool(options.get("trust_remote_code")),
            revision=options.pop("revision", None),
        )
        local = Path(path) / "config.json"
        config: dict[str, Any] = {}
        if local.is_file():
            try:
                config = json.loads(local.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise RMKitError(f"{local}: cannot read the model config: {e}") from None
        config = config if isinstance(config, dict) else {}
        return cls(str(path), config, options, dict(steps or {}))

    @property
    def metadata(self) -> dict[str, Any]:
        """rmkit's settings in the config (``"rmkit"``)."""
        return self.config.get(METADATA_KEY) or {}

    @property
    def architectures(self) -> list[str]:
        return list(self.config.get("architectures") or [])

    @property
    def labels(self) -> int:
        """The head's outputs as the config says (``id2label``), 1 when it says nothing."""
        return max(len(self.config.get("id2label") or {}), 1)

    def describe(self) -> str:
        """What the checkpoint looks like, in a few words, for errors."""
        arch = ", ".join(self.architectures) or "no architecture named"
        looks = f"{arch}, {self.labels} label{'s' * (self.labels > 1)}"
        if self.metadata:
            looks += f", rmkit settings {sorted(self.metadata)}"
        return looks


@dataclass
class Sequences:
    """A request's items for the inference core: token ids (one sequence an item), the positions scores are
    read at for a kind that reads several an item (else ``None``), and each item's cut: ``True`` when the
    length limit cut it, ``None`` when nothing of it is left to score."""

    ids: list[list[int]]
    positions: list[list[int]] | None
    cut: list[bool | None]


class Kind:
    """A kind of reward model: how it is recognised, loaded, read, scored, written and evaluated (module
    docstring). This class is the outcome RM's behaviour, one score a response; kinds override what differs."""

    name = "outcome"
    unit = "responses"  # what its models score: responses (one score each) or "steps"
    data = "preference pairs"  # what its evaluation and training read, for messages
    attributes = False  # the core reads K attribute outputs a response (a rated RM), not one score
    meaning: str | None = None  # what its numbers mean where not "higher is better" (summaries say it)
    ranks_by: float = 1.0  # times its numbers, they rank answers higher-is-better (a cost model: -1)
    modality = "text"  # what its models read: text, or image+text (rmkit inspect names it)

    # --- the checkpoint ------------------------------------------------------------------------------------

    def recognises(self, checkpoint: Checkpoint) -> bool:
        """Whether ``checkpoint`` is of this kind (read from its config and the options given); a checkpoint
        no kind recognises is the registry's last kind's, pairwise (:mod:`rmkit.kinds`)."""
        return False

    def load(self, checkpoint: Checkpoint, dtype: Any, device: Any) -> Any:
        """The model of ``checkpoint`` (its ``options`` are the loading options) in ``dtype`` on ``device``."""
        from rmkit.modeling import RewardModel

        options = {k: v for k, v in checkpoint.options.items() if k not in ("images", "critique")}  # VLMs'
        return RewardModel.from_pretrained(checkpoint.path, dtype=dtype, device=device, **options)

    def owns(self, model: Any) -> bool:
        """Whether the loaded ``model`` is of this kind."""
        from rmkit.modeling import RewardModel

        return isinstance(model, RewardModel)

    def compile(self, model: Any) -> Any:
        """``model`` compiled with ``torch.compile`` (:meth:`rmkit.RewardModel.compile`)."""
        return model.compile()

    # --- rows through the inference core -------------------------------------------------------------------

    def holds(self, path: str | Path, reading: Reading) -> bool:
        """Whether the data file ``path`` holds what this kind's evaluation and training read; data no kind
        holds is the registry's last kind's, preference pairs."""
        return False

    def rows(self, path: str | Path, reading: Reading, rejects: Any = None) -> Iterator[Any]:
        """The rows of the data file ``path`` as this kind's data reads them (what ``rmkit inspect`` counts)."""
        return iter_examples(path, format=reading.format, columns=reading.columns, rejects=rejects)

    def pairs(self, path: str | Path, reading: Reading, rejects: Any = None) -> Iterator[Any]:
        """The preference pairs of the data file ``path`` as this kind's models read them (``rmkit eval``)."""
        return iter_examples(
            path, kind="pairs", format=reading.format, columns=reading.columns, rejects=rejects
        )

    def detect(self, record: dict[str, Any], reading: Reading) -> str | None:
        """The format this kind's data reader sees in ``record`` (columns renamed), ``None`` when none."""
        try:
            return detect_format(record)
        except ValueError:
            return None

    def tally(self, row: Any) -> str:
        """What one row of :meth:`rows` counts as (``rmkit inspect``'s counts)."""
        return "pairs" if row.is_pair else "responses"

    def tallies(self, row: Any) -> dict[str, int]:
        """What one row of :meth:`rows` adds to ``rmkit inspect``'s counts: one :meth:`tally`."""
        return {self.tally(row): 1}

    def evaluates(self, kind: Kind) -> bool:
        """Whether this kind's evaluation can judge models of ``kind``: those that score what it reads."""
        return kind.unit == self.unit

    def examples(
        self, records: Iterable[tuple[int, dict[str, Any]]], source: str, reading: Reading, rejects: Any
    ) -> Iterator[Any]:
        """The examples of ``records`` (``(row, record)``) that this kind scores; bad rows raise or go to
        ``rejects``."""
        return normalise_records(
            records, source=source, format=reading.format, columns=reading.columns, rejects=rejects
        )

    def tokenizer(self, model: Any, reading: Reading) -> Any:
        """What turns examples into the model's input: ``tokenize(chunk)`` gives each example's prepared
        row (``None``: dropped), ``truncate(ids)`` one row of given token ids cut to ``max_length``. It must
        be thread-safe: it runs ahead of the scoring, and in the server's tokenizer thread."""
        return model.example_tokenizer(
            max_length=reading.max_length, template=reading.template, truncation=reading.truncation
        )

    def score_prepared(
        self, model: Any, chunk: Sequence[Any], prepared: list[Any], reading: Reading, stats: RowCounts
    ) -> Iterator[tuple[Any, Raw | None]]:
        """``(example, raw)`` of a prepared chunk, in order, from the inference core (``None``: dropped)."""
        from rmkit.inference import score_tokenized

        return score_tokenized(
            model,
            chunk,
            prepared,
            batch_tokens=reading.batch_tokens,
            stats=stats,
            share_prefixes=reading.prefix_sharing,
            across_rows=reading.share_across_rows,
            batch_cost=reading.batch_cost,
            attributes=self.attributes,
        )

    def score(
        self,
        model: Any,
        examples: Iterable[Any],
        reading: Reading,
        stats: RowCounts | None = None,
        memo: dict[Any, dict[int, Any]] | None = None,
    ) -> Iterator[tuple[Any, Raw | None]]:
        """``(example, raw)`` of every example in order: chunks prepared (ahead, on a GPU) and scored.

        With ``memo`` (a dict the caller keeps while its examples live) an example prepared once is not
        prepared again for a later model whose tokenizer and reading prepare it alike."""
        from rmkit.inference import ahead
        from rmkit.runtime import reads_ahead

        stats = stats if stats is not None else RowCounts()
        preparer, it = self.tokenizer(model, reading), iter(examples)
        tokenize = preparer.tokenize
        if memo is not None:
            tokenize = _memoised(tokenize, memo.setdefault(_preparation(model, preparer), {}))
        chunks = ((c, tokenize(c)) for c in iter(lambda: list(islice(it, reading.chunk_rows)), []))
        for chunk, prepared in ahead(chunks, reads_ahead(model.device, reading.read_ahead)):
            yield from self.score_prepared(model, chunk, prepared, reading, stats)

    # --- what is written -----------------------------------------------------------------------------------

    def values(self, model: Any, raw: Raw) -> list[float]:
        """The numbers written for one example's ``raw``: one score a response."""
        return list(raw)

    def summarised(self, example: Any, values: list[float], reading: Reading) -> list[float]:
        """What a run's statistics count of one example's finite ``values``: one score a response."""
        return values

    def row(
        self, model: Any, example: Example, raw: Raw, values: list[Any], reading: Reading
    ) -> dict[str, Any]:
        """The object written for one scored example: its text, its score(s), then its pass-through columns.

        ``{prompt, response, score}`` for a response; ``{prompt, chosen, rejected, score_chosen,
        score_rejected}`` for a pair; ``{text, score}`` for pre-rendered text (and no ``prompt`` for rendered
        pairs); ``{prompt, responses, scores, best, ranking}`` for a best-of-N row, where ``ranking`` lists the
        responses' indices best first (ties in input order; ``top_k`` and ``min_score`` cut it) and ``best``
        is its first (``None`` when ``min_score`` leaves none). Score columns win over input columns.
        """
        ex = example
        out: dict[str, Any] = {} if ex.rendered else {"prompt": ex.prompt_value()}
        if ex.rejected_prompt is not None:
            out["prompt_rejected"] = ex.rejected_prompt
        if ex.is_pair:
            out.update(chosen=ex.responses[0], rejected=ex.responses[1])
            out.update(score_chosen=values[0], score_rejected=values[1])
            if ex.margin is not None:
                out["margin"] = ex.margin
        elif ex.best_of_n:
            order = ranking(values, top_k=reading.top_k, min_score=reading.min_score)
            out.update(responses=ex.responses, scores=values, best=order[0] if order else None, ranking=order)
        else:
            out["text" if ex.rendered else "response"] = ex.responses[0]
            out["score"] = values[0]
        for k, v in ex.extra.items():
            out.setdefault(k, v)
        return out

    # --- serving -------------------------------------------------------------------------------------------

    def sequences(self, prepared: list[Any]) -> Sequences:
        """What the core reads for a request's prepared items, one sequence an item."""
        rows = [t for row in prepared if row is not None for t in row]
        return Sequences([t.ids for t in rows], None, [t.truncated for t in rows])

    def answer(self, model: Any, raw: list[Any], reading: Reading) -> tuple[list[float], dict[str, Any]]:
        """A request's scores, one an item, from what the core read (:meth:`sequences`), and any fields the
        reply adds."""
        return self.values(model, raw), {}

    def servable(self, model: Any) -> str | None:
        """Why ``rmkit serve`` cannot serve ``model`` (``None``: it can)."""
        return None

    def recorded(self, model: Any) -> dict[str, Any]:
        """What an evaluation records of ``model`` beside its numbers, to rerun it alike (a generating judge's
        settings: its template, votes and seed)."""
        return {}

    def convertible(self, model: Any) -> str | None:
        """Why ``rmkit convert`` cannot write ``model`` as a standard checkpoint (``None``: it can)."""
        if callable(getattr(model, "save_pretrained", None)):
            return None
        return f"a {self.name} reward model has no standard checkpoint layout to write"

    def convert(self, model: Any, out: Path, layout: str = "auto") -> dict[str, str]:
        """Write ``model`` (:meth:`convertible`) to ``out`` in ``layout`` (``auto``: the kind's standard one):
        ``{"layout": the layout it was read from, "architecture": what was written}``. A layout the kind cannot
        write exactly is an error saying why, raised before anything is written."""
        if layout not in ("auto", "sequence-classification"):
            raise RMKitError(
                f"--layout {layout}: a {self.name} reward model is written as a one-label sequence classifier only"
            )
        model.save_pretrained(out)
        source = model.metadata.get("converted_from", {}).get("layout", "transformers")
        return {"layout": source, "architecture": model.model.config.architectures[0]}

    # --- evaluation ----------------------------------------------------------------------------------------

    def evaluation(self, config: Any, labels: list[str], names: list[str]) -> Any:
        r"""The evaluation of this kind's data: an object that ``add``\ s each model's scores of each data set
        and writes the figures (:class:`rmkit.kinds.pairwise.PairEvaluation` is the model to follow)."""
        raise RMKitError(f"rmkit eval has no evaluation of {self.data} for {self.name} reward models")


def _preparation(model: Any, tokenizer: Any) -> tuple[Any, ...]:
    """What decides how ``tokenizer`` prepares an example: its tokenizer's definition and its settings (a
    judge's prompt among them)."""
    from rmkit.data.rendering import tokenizer_digest

    settings = sorted(
        (k, v) for k, v in vars(tokenizer).items() if isinstance(v, (bool, int, float, str, type(None)))
    )
    judge = repr(getattr(tokenizer, "judge", None))
    return (type(tokenizer).__name__, tokenizer_digest(model.tokenizer), tuple(settings), judge)


def _memoised(tokenize: Any, prepared: dict[int, Any]) -> Any:
    """``tokenize`` that prepares only the examples of a chunk that ``prepared`` (by ``id``) lacks."""

    def run(chunk: list[Any]) -> list[Any]:
        missing = [ex for ex in chunk if id(ex) not in prepared]
        if missing:
            prepared.update(zip(map(id, missing), tokenize(missing), strict=True))
        return [prepared[id(ex)] for ex in chunk]

    return run
