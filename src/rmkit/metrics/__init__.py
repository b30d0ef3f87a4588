"""The one definition of rmkit's pair and score statistics: training logs, ``rmkit eval`` and the
``rmkit score`` summary all compute them here.

- :class:`Moments`: count, mean, spread, min and max of a column of numbers. Batches are summarised exactly
  (two-pass, as numpy does) and merged with Chan's formula, so statistics add up across micro-batches,
  chunks, processes and resumed runs without the cancellation of sum-of-squares formulas.
- :class:`PairStats`: scored preference pairs. A pair is *correct* when ``r_c > r_r`` and a *tie* when
  ``r_c == r_r``; accuracy counts a tie as wrong (RewardBench's rule). Standard deviations are population
  ones (ddof=0).
- Correlations, bootstrap intervals and the comparison of two RMs on the same pairs, for ``rmkit eval``.
- Graded labels (:mod:`rmkit.metrics.graded`): a process RM's step and ProcessBench figures, and an RM
  against attribute ratings.

A value that is undefined (no data, constant input) is ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

ArrayLike = Any  # a sequence of numbers, a NumPy array or a torch tensor (metrics load no torch)


def _array(values: ArrayLike) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor, on any device
        return values.detach().double().cpu().numpy()
    return np.asarray(values, dtype=float)


@dataclass
class Moments:
    """Count, mean, sum of squared deviations (``m2``), min and max of some numbers; mergeable."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    min: float = math.inf
    max: float = -math.inf

    @classmethod
    def of(cls, values: ArrayLike) -> Moments:
        x = _array(values).ravel()
        if not len(x):
            return cls()
        mean = x.mean()
        return cls(len(x), float(mean), float(((x - mean) ** 2).sum()), float(x.min()), float(x.max()))

    def merge(self, other: Moments) -> Moments:
        """Add ``other``'s numbers to these (in place); returns ``self``."""
        if not other.n:
            return self
        if not self.n:
            self.n, self.mean, self.m2, self.min, self.max = (
                other.n,
                other.mean,
                other.m2,
                other.min,
                other.max,
            )
            return self
        n = self.n + other.n
        delta = other.mean - self.mean
        self.mean += delta * other.n / n
        self.m2 += other.m2 + delta * delta * self.n * other.n / n
        self.n = n
        self.min, self.max = min(self.min, other.min), max(self.max, other.max)
        return self

    @property
    def std(self) -> float | None:
        return math.sqrt(self.m2 / self.n) if self.n else None

    def summary(self) -> dict[str, float | None]:
        """``{mean, std, min, max}`` (all ``None`` for no numbers)."""
        if not self.n:
            return {"mean": None, "std": None, "min": None, "max": None}
        return {"mean": self.mean, "std": self.std, "min": self.min, "max": self.max}


def ranking(
    scores: Sequence[float], *, top_k: int | None = None, min_score: float | None = None
) -> list[int]:
    """Indices of ``scores``, best first (equal scores keep their input order), keeping those at or above
    ``min_score`` and at most ``top_k`` of them; a missing score (``None``) is never ranked."""
    order = sorted((i for i in range(len(scores)) if scores[i] is not None), key=lambda i: -scores[i])
    if min_score is not None:
        order = [i for i in order if scores[i] >= min_score]
    return order[:top_k] if top_k is not None else order


@dataclass
class BestOfN:
    """Statistics of best-of-N rows: the best score's moments, the spread (best - worst) and how often
    the first response is the best (a tie with it counts as first), over ``rows`` rows."""

    rows: int = 0
    first_best: int = 0
    best: Moments = field(default_factory=Moments)
    spread: Moments = field(default_factory=Moments)

    @classmethod
    def of(cls, rows: Sequence[Sequence[float]]) -> BestOfN:
        best = [max(r) for r in rows]
        return cls(
            len(rows),
            sum(r[0] == b for r, b in zip(rows, best, strict=True)),
            Moments.of(best),
            Moments.of([max(r) - min(r) for r in rows]),
        )

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> BestOfN:
        return cls(raw["rows"], raw["first_best"], Moments(**raw["best"]), Moments(**raw["spread"]))

    def merge(self, other: BestOfN) -> BestOfN:
        self.rows += other.rows
        self.first_best += other.first_best
        self.best.merge(other.best)
        self.spread.merge(other.spread)
        return self

    def summary(self) -> dict[str, Any]:
        """``{rows, mean_best, mean_spread, first_is_best}`` (``None`` where there are no rows)."""
        return {
            "rows": self.rows,
            "mean_best": self.best.mean if self.rows else None,
            "mean_spread": self.spread.mean if self.rows else None,
            "first_is_best": self.first_best / self.rows if self.rows else None,
        }


@dataclass
class PairStats:
    """Statistics of scored pairs: counts, and the moments of the chosen and rejected scores and margins."""

    pairs: int = 0
    correct: int = 0
    ties: int = 0
    chosen: Moments = field(default_factory=Moments)
    rejected: Moments = field(default_factory=Moments)
    margin: Moments = field(default_factory=Moments)

    @classmethod
    def of(cls, chosen: ArrayLike, rejected: ArrayLike) -> PairStats:
        """The statistics of pairs whose chosen and rejected answers scored ``chosen`` and ``rejected`` (N each)."""
        c, r = _array(chosen), _array(rejected)
        margin = c - r
        return cls(
            len(c),
            int((margin > 0).sum()),
            int((margin == 0).sum()),
            Moments.of(c),
            Moments.of(r),
            Moments.of(margin),
        )

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PairStats:
        """Inverse of ``dataclasses.asdict`` (for state files)."""
        moments = {k: Moments(**raw[k]) for k in ("chosen", "rejected", "margin")}
        return cls(raw["pairs"], raw["correct"], raw["ties"], **moments)

    def merge(self, other: PairStats) -> PairStats:
        """Add ``other``'s pairs to these (in place); returns ``self``."""
        self.pairs += other.pairs
        self.correct += other.correct
        self.ties += other.ties
        for name in ("chosen", "rejected", "margin"):
            getattr(self, name).merge(getattr(other, name))
        return self

    @property
    def accuracy(self) -> float | None:
        """Share of pairs with chosen > rejected; a tie counts as wrong."""
        return self.correct / self.pairs if self.pairs else None

    @property
    def accuracy_ties_half(self) -> float | None:
        """Accuracy with a tie counting one half."""
        return (self.correct + 0.5 * self.ties) / self.pairs if self.pairs else None

    @property
    def rewards(self) -> Moments:
        """Moments of all 2N scores, chosen and rejected together."""
        return Moments(**asdict(self.chosen)).merge(self.rejected)

    def training_metrics(self) -> dict[str, Any]:
        """The figures of training logs and ``metrics.json``: ``accuracy``, ``ties`` (the share of tied
        pairs), ``margin`` (mean r_c - r_r), mean and std of the chosen, rejected and all rewards."""
        n = max(self.pairs, 1)
        rewards = self.rewards
        return {
            "pairs": self.pairs,
            "accuracy": self.correct / n,
            "ties": self.ties / n,
            "margin": self.margin.mean,
            "chosen_mean": self.chosen.mean,
            "chosen_std": self.chosen.std or 0.0,
            "rejected_mean": self.rejected.mean,
            "rejected_std": self.rejected.std or 0.0,
            "reward_mean": rewards.mean,
            "reward_std": rewards.std or 0.0,
        }


def pearson(x: ArrayLike, y: ArrayLike) -> float | None:
    """Pearson correlation; ``None`` when it is undefined (fewer than two points, or a constant input)."""
    x, y = _array(x), _array(y)
    if len(x) < 2:
        return None
    dx, dy = x - x.mean(), y - y.mean()
    denom = math.sqrt(float((dx * dx).sum()) * float((dy * dy).sum()))
    return float((dx * dy).sum() / denom) if denom > 0 else None


def ranks(x: ArrayLike) -> np.ndarray:
    """1-based ranks, ties sharing their average rank (``[10, 20, 20, 30] -> [1, 2.5, 2.5, 4]``)."""
    x = _array(x)
    order = np.argsort(x, kind="stable")
    positions = np.empty(len(x))
    positions[order] = np.arange(1, len(x) + 1)
    _, group = np.unique(x, return_inverse=True)
    return (np.bincount(group, weights=positions) / np.bincount(group))[group]


def spearman(x: ArrayLike, y: ArrayLike) -> float | None:
    """Spearman rank correlation: Pearson of the average ranks; ``None`` when undefined."""
    return pearson(ranks(x), ranks(y)) if len(x) >= 2 else None


def accuracy_interval(
    correct: int, n: int, *, samples: int = 1000, seed: int = 0, level: float = 0.95
) -> list[float] | None:
    """Percentile bootstrap interval of an accuracy of ``correct`` out of ``n`` pairs.

    Resampling ``n`` pairs with replacement and counting the correct ones draws from
    ``Binomial(n, correct / n)`` exactly, so the resamples are drawn from that distribution directly.
    """
    if n == 0 or samples <= 0:
        return None
    draws = np.random.default_rng(seed).binomial(n, correct / n, size=samples) / n
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


def _half_credit(sign: np.ndarray) -> float:
    """Share of positive signs, a zero counting one half."""
    return float(((sign > 0) + 0.5 * (sign == 0)).mean())


PAIR_METRICS = (
    "accuracy", "accuracy_ties_half", "accuracy_ci", "margin_mean", "margin_std", "chosen_mean", "chosen_std",
    "rejected_mean", "rejected_std", "length_pearson", "length_spearman", "longer_wins_accuracy",
    "rm_prefers_longer",
)  # fmt: skip


def pair_metrics(
    chosen: ArrayLike,
    rejected: ArrayLike,
    chosen_length: ArrayLike,
    rejected_length: ArrayLike,
    *,
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """The figures ``rmkit eval`` reports for N scored pairs (scores and lengths of chosen and rejected).

    - From :class:`PairStats`: ``accuracy`` (a tie counts as wrong), ``accuracy_ties_half``, ``ties`` (a
      count), ``margin_mean``/``margin_std`` of chosen - rejected, ``chosen_mean``, ``chosen_std``,
      ``rejected_mean``, ``rejected_std``; the same numbers ``rmkit train`` logs for its eval.
    - ``accuracy_ci``: 95% bootstrap interval of ``accuracy`` (seeded, so reproducible).
    - Length bias: ``length_pearson``/``length_spearman`` correlate score with response length over all
      2N responses; ``longer_wins_accuracy`` is the accuracy of always picking the longer answer (a
      baseline an RM should beat); ``rm_prefers_longer`` is how often the RM scores the longer answer
      higher. In both, an equal length (or an equal score) counts one half.
    """
    c, r = _array(chosen), _array(rejected)
    lc, lr = _array(chosen_length), _array(rejected_length)
    if not len(c):
        return {"pairs": 0, "ties": 0, **dict.fromkeys(PAIR_METRICS)}
    stats = PairStats.of(c, r)
    longer = np.sign(lc - lr)
    return {
        "pairs": stats.pairs,
        "accuracy": stats.accuracy,
        "accuracy_ties_half": stats.accuracy_ties_half,
        "accuracy_ci": accuracy_interval(stats.correct, stats.pairs, samples=bootstrap, seed=seed),
        "ties": stats.ties,
        "margin_mean": stats.margin.mean,
        "margin_std": stats.margin.std,
        "chosen_mean": stats.chosen.mean,
        "chosen_std": stats.chosen.std,
        "rejected_mean": stats.rejected.mean,
        "rejected_std": stats.rejected.std,
        "length_pearson": pearson(np.concatenate([c, r]), np.concatenate([lc, lr])),
        "length_spearman": spearman(np.concatenate([c, r]), np.concatenate([lc, lr])),
        "longer_wins_accuracy": _half_credit(longer),
        "rm_prefers_longer": _half_credit(np.sign(c - r) * longer),
    }


def compare_pairs(
    margin_a: ArrayLike, margin_b: ArrayLike, *, bootstrap: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Two RMs on the same N pairs (their margins, chosen - rejected).

    ``accuracy_difference`` is B's accuracy minus A's (ties wrong) and ``difference_ci`` its 95% paired
    bootstrap interval: the same resampled pairs for both models, so an interval that excludes zero means
    B really ranks these pairs differently. ``same_sign``: share of pairs where both margins have the same
    sign; ``margin_pearson``/``margin_spearman``: how alike the two margins are.
    """
    a, b = _array(margin_a), _array(margin_b)
    n = len(a)
    if not n:
        keys = ("accuracy_difference", "difference_ci", "same_sign", "margin_pearson", "margin_spearman")
        return {"pairs": 0, **dict.fromkeys(keys)}
    delta = (b > 0).astype(float) - (a > 0).astype(float)
    ci = None
    if bootstrap > 0:
        rng = np.random.default_rng(seed)
        block = max(1, 4_000_000 // n)  # resamples per block, to bound memory on large data sets
        means = np.concatenate(
            [
                delta[rng.integers(0, n, size=(min(block, bootstrap - done), n))].mean(axis=1)
                for done in range(0, bootstrap, block)
            ]
        )
        ci = [float(q) for q in np.quantile(means, [0.025, 0.975])]
    return {
        "pairs": n,
        "accuracy_difference": float(delta.mean()),
        "difference_ci": ci,
        "same_sign": float((np.sign(a) == np.sign(b)).mean()),
        "margin_pearson": pearson(a, b),
        "margin_spearman": spearman(a, b),
    }
