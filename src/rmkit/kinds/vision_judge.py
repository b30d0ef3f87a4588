"""Vision-language judges (:mod:`rmkit.vision_judges`): a Qwen2-VL or Qwen2.5-VL checkpoint given
``--judge pairwise|rating|verifier`` (templates: :mod:`rmkit.data.vision_templates`, or the text judges'), or
``--judge generate``: the judge writes its judgments and a parser reads each verdict.

It reads the data a vision RM reads (image rows, the vision suites) and answers as a readout judge does: its
raw outputs are one readout a judge prompt, and :meth:`values` turns a pairwise judge's two orders of each
pair into one score an answer (:func:`rmkit.kinds.judge.pairwise_scores`).

A generating judge writes ``votes`` judgments of each pair, each showing the pair in its order (VL-RewardBench's
protocol: a seeded coin a judgment; Multimodal RewardBench's: as given; a text template's: both orders, two
judgments a vote), and the majority decides as
VL-RewardBench's ``cal.py`` does: the answer picked by more than half the votes scores 1 and the other 0; with
no majority (unreadable verdicts counting for neither) both score 0.5, a tie, which VL-RewardBench leaves out of
its denominators and Multimodal RewardBench decides by its seeded coin. An unreadable verdict stops the run under
``--on-parse-failure error`` (the default); under ``mask`` or ``score=X`` it counts for neither answer, and a
pair of which none could be read has no score (``mask``) or X for both. A pointwise generating judge's answers
each get the mean of their parsed verdicts, as a text judge's do.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rmkit.data import RowCounts
from rmkit.data.judging import Judge
from rmkit.data.verdicts import PARSERS
from rmkit.errors import RMKitError
from rmkit.kinds.base import Checkpoint, Raw, Reading
from rmkit.kinds.judge import JudgeKind, Judgment, judge_of, judge_of_model
from rmkit.kinds.vision import MODEL_TYPES, VisionKind


class VisionJudgeKind(VisionKind):
    name = "vision-judge"

    def recognises(self, checkpoint: Checkpoint) -> bool:
        return checkpoint.config.get("model_type") in MODEL_TYPES and judge_of(checkpoint) is not None

    def load(self, checkpoint: Checkpoint, dtype: Any, device: Any) -> Any:
        from rmkit.vision_judges import load_vision_judge

        options = checkpoint.options
        return load_vision_judge(
            checkpoint.path,
            Judge.of(judge_of(checkpoint) or {}),
            dtype=dtype,
            device=device,
            allow_pickle=options.get("allow_pickle", False),
            **(options.get("images") or {}),
        )

    def owns(self, model: Any) -> bool:
        return type(model).__name__ in ("VisionJudge", "VisionGeneratingJudge")

    def holds(self, path: str | Path, reading: Reading) -> bool:
        return False  # image data is the vision kind's; this kind scores it too

    def score_prepared(
        self, model: Any, chunk: Sequence[Any], prepared: list[Any], reading: Reading, stats: RowCounts
    ) -> Iterator[tuple[Any, Raw | None]]:
        """A readout judge as a vision RM is scored; a generating one's judgments (one a prompt row) read into
        one :class:`rmkit.kinds.judge.Judgment` a vote of a pair (its verdict for the pair's first answer as
        given: 1, 0, or ``nan`` unread; ``order`` how it was shown), or a pointwise judge's one an answer."""
        if not getattr(model, "generates", False):
            yield from super().score_prepared(model, chunk, prepared, reading, stats)
            return
        judge = model.judge
        rows = [t for row in prepared if row is not None for t in row]
        written = iter(model.judgments(rows, reading.batch_tokens))
        for example, row in zip(chunk, prepared, strict=True):
            stats.add(row, example.notes)
            if row is None:
                yield example, None
                continue
            texts = [next(written) for _ in row]
            raw = votes(judge, example.row, texts) if judge.pairwise else rated(judge, texts)
            stats.parse_failures += sum(len(j.texts) - j.read for j in raw)
            if judge.on_parse_failure == "error" and any(not j.read for j in raw):
                raise RMKitError(
                    f"row {example.row}: the judge's verdict could not be read by the '{judge.parser}' parser "
                    f"(it wrote {texts[-1][-200:]!r}); --on-parse-failure mask or score=X to go on"
                )
            yield example, raw

    def values(self, model: Any, raw: Raw) -> list[float]:
        """A generating pairwise judge's votes decided by the majority (module docstring); anything else as a
        text judge's."""
        judge = judge_of_model(model)
        if judge.readout != "generate" or not judge.pairwise:
            return JudgeKind.values(self, model, raw)
        return majority(judge, raw)

    def row(self, model: Any, example: Any, raw: Raw, values: list[Any], reading: Reading) -> dict[str, Any]:
        """The vision RM's row; a generating judge's also keeps what it wrote (``judgments``) and, for a pair,
        which answer each judgment showed first (``shown_first``: 0 the first as given)."""
        out = super().row(model, example, raw, values, reading)
        if raw and isinstance(raw[0], Judgment):
            out["judgments"] = [j.texts if len(j.texts) > 1 else j.texts[0] for j in raw]
            if raw[0].order is not None:
                out["shown_first"] = [j.order[0] for j in raw]
        return out

    def servable(self, model: Any) -> str | None:
        """A one-pass image judge as a text judge is served; a generating one is not (it is scored offline)."""
        if getattr(model, "generates", False):
            return "rmkit serve reads an image judge in one pass; a generating image judge is scored offline"
        return JudgeKind.servable(self, model)

    recorded = JudgeKind.recorded


@dataclass
class Read(Judgment):
    """A generating judge's reading (:class:`rmkit.kinds.judge.Judgment`) and how many of its texts had a
    verdict the parser could read (``read``)."""

    read: int = 0


def votes(judge: Judge, row: int, texts: list[str]) -> list[Read]:
    """One vote a judgment of a pair: its verdict turned to the pair's order as given (1: the first answer is
    better, 0: the second, ``nan``: unread), with the order it was shown in."""
    out = []
    for text, order in zip(texts, judge.orders(row), strict=True):
        shown = PARSERS[judge.parser](text)
        value = math.nan if shown is None else shown if order == (0, 1) else 1.0 - shown
        out.append(Read(value, [text], list(order), read=int(shown is not None)))
    return out


def rated(judge: Judge, texts: list[str]) -> list[Read]:
    """A pointwise judge's answers, each the verdict of its ``votes`` judgments (the prompts come an answer's
    votes together)."""
    out = []
    for at in range(0, len(texts), judge.votes):
        some = texts[at : at + judge.votes]
        value, failed = judge.verdict(some)
        out.append(Read(value, some, read=len(some) - failed))
    return out


def majority(judge: Judge, raw: Sequence[Any]) -> list[float]:
    """A pair's two scores from its votes, as VL-RewardBench's ``cal.py`` decides (module docstring): a vote is
    for the first answer above 0.5 (a graded verdict, NeMo's ``scores-json``, counts by its side), for the
    second below, for neither at 0.5 (a tie) or unread."""
    first, second = sum(v.value > 0.5 for v in raw), sum(v.value < 0.5 for v in raw)  # nan: neither
    if first > len(raw) / 2 or second > len(raw) / 2:
        return [1.0, 0.0] if first > second else [0.0, 1.0]
    if first or second:
        return [0.5, 0.5]
    policy = judge.on_parse_failure
    value = float(policy.split("=", 1)[1]) if policy.startswith("score=") else math.nan
    return [value, value]
