"""Best-of-N (``rmkit rank``): score every candidate response of every prompt and rank them.

Each row holds a prompt (``prompt``, or ``messages`` before the answers) and a list ``responses``; the
output row adds ``scores`` (in the order of ``responses``), ``best`` and ``ranking`` (indices, best
first), and keeps every input column. It is the RMScore job (:mod:`rmkit.jobs.score`: shards, resume,
rejects, merge, summary) on best-of-N rows; the responses of a prompt share the prompt's pass on causal
models (:func:`rmkit.inference.plan_sharing`). The summary adds the mean best score, the mean spread
(best - worst) and how often the first response is the best.
"""

from __future__ import annotations

from typing import Any

from rmkit.jobs.config import RankConfig
from rmkit.jobs.score import score_file
from rmkit.modeling import RewardModel
from rmkit.options import configured


def rank_file(config: RankConfig, *, rm: RewardModel | None = None) -> dict[str, Any]:
    """Rank the responses of every row of ``config.input`` into ``config.output``; returns the summary."""
    return score_file(config, rm=rm)


def rank(config: RankConfig | None = None, /, *, rm: RewardModel | None = None, **options: Any) -> dict:
    """``rmkit.rank``: :func:`rank_file` from a config, keyword options, or a config overridden by them
    (``rm``: an already loaded model, as for :func:`rmkit.score`)."""
    return rank_file(configured(RankConfig, config, options, loaded=rm is not None), rm=rm)
