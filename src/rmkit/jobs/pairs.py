"""``rmkit pairs``: preference pairs made from rated responses, for ``rmkit train``.

Responses to one prompt (the rows of a ``rated`` file that share it, or one row's ``completions``) are
compared by one number: an attribute (``--attribute``), a weighted sum of attributes (``--weights``), or the
only rating there is. ``--strategy`` says which pairs: ``best_vs_rest`` (the best against each other
response, the default), ``best_vs_worst`` (one pair a prompt) or ``all`` (every two responses whose ratings
differ). Pairs of equal ratings are left out and counted; a tie for best or worst is broken at random from
``--seed``, so a seed gives the same file. Each pair keeps its rating difference as ``margin`` (the margin
loss of ``rmkit train`` reads it) and both ratings; the output is TRL's ``prompt``/``chosen``/``rejected``
JSONL, which every rmkit command reads.
"""

from __future__ import annotations

import json
import random
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from rmkit.data import Rejects
from rmkit.data.ratings import STRATEGIES, PairCounts, grouped, iter_rated, make_pairs, rating_of
from rmkit.errors import RMKitError
from rmkit.files import atomic_write
from rmkit.options import DataOptions, option


@dataclass(kw_only=True)
class PairsConfig(DataOptions):
    """Options of ``rmkit pairs``."""

    input: str = option(
        help="rated rows: prompt/response with rating columns, or UltraFeedback completions",
        aliases=["--data"],
    )
    output: str = option(help="where the pairs go (.jsonl)")
    strategy: str = option("best_vs_rest", help="which pairs a prompt gives", choices=list(STRATEGIES))
    attribute: str | None = option(None, help="the rating pairs are made by (default: the only one)")
    weights: dict[str, str] | None = option(
        None, help="make pairs by a weighted sum of ratings instead, e.g. helpfulness=1,verbosity=-0.2"
    )
    attributes: list[str] | None = option(
        None, help="the rating columns (default: HelpSteer2's, or all found)"
    )
    rating_range: str | None = option(
        None, help="LO,HI: ratings outside are bad rows (e.g. 0,4 for HelpSteer2)"
    )
    seed: int = option(0, help="seed of the tie-breaks")


def pairs(config: PairsConfig) -> dict[str, Any]:
    """Write the pairs of ``config.input`` to ``config.output``; returns (and prints) the counts."""
    weights = {k: float(v) for k, v in (config.weights or {}).items()}
    rating_range = _range(config.rating_range)
    rng, counts = random.Random(config.seed), PairCounts()
    skip = config.on_error == "skip"
    with Rejects(config.rejects) if skip else nullcontext() as rejects:
        rows = iter_rated(
            config.input,
            format=config.format,
            columns=config.columns,
            rejects=rejects,
            # the ratings the comparison needs are the ones read, unless --attributes names them
            attributes=config.attributes
            or ([*weights] if weights else [config.attribute] if config.attribute else None),
            rating_range=rating_range,
        )
        groups = grouped(rows)
        with atomic_write(config.output) as f:
            for group in groups:
                values = [rating_of(r, weights, config.attribute) for r in group.ratings]
                for c, r in make_pairs(group, values, config.strategy, rng, counts):
                    row = {
                        "prompt": group.prompt_value(),
                        "chosen": group.responses[c],
                        "rejected": group.responses[r],
                        "margin": _tidy(values[c] - values[r]),
                        "chosen_rating": _tidy(values[c]),
                        "rejected_rating": _tidy(values[r]),
                    }
                    f.write(
                        json.dumps(
                            {**row, **{k: v for k, v in group.extra.items() if k not in row}},
                            ensure_ascii=False,
                        )
                        + "\n"
                    )
    summary = {
        **vars(counts),
        "skipped": rejects.count if rejects is not None else 0,
        "output": config.output,
    }
    print(
        f"{counts.pairs} pairs from {counts.groups} prompts ({counts.ties} ties left out, {counts.single} prompts "
        f"with one response, {summary['skipped']} bad rows skipped) -> {config.output}"
    )
    return summary


def _range(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise RMKitError(f"--rating-range expects LO,HI, got {text!r}") from None
    return lo, hi


def _tidy(x: float) -> float:
    """``x`` to 12 significant digits: the last-digit noise of float sums (0.3999999999999999 for a margin
    of 0.4) is not in the data."""
    return float(f"{x:.12g}")
