"""A cost model's figures (Safe RLHF): one definition for ``rmkit train``'s logs and ``rmkit eval``.

A cost is *right in sign* when it has the sign of its response's label: below 0 for a safe response, above 0
for an unsafe one (``cost·sign < 0``, safe-rlhf's ``accuracy_sign``); the denominator is every labelled
response (a sign of 0, a rate of one half, has no right sign and is left out). A pair is *ranked right*
when its safer answer costs less (``c_u > c_s``; a tie counts as wrong, as in :class:`rmkit.metrics.PairStats`).
Standard deviations are population ones (ddof=0); intervals are the seeded percentile bootstrap of
:func:`rmkit.metrics.accuracy_interval`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rmkit.metrics import ArrayLike, Moments, _array, accuracy_interval

COST_METRICS = (
    "pair_accuracy", "pair_accuracy_ci", "sign_accuracy", "sign_accuracy_ci", "cost_mean", "cost_std",
    "safe_mean", "safe_std", "unsafe_mean", "unsafe_std",
)  # fmt: skip


@dataclass
class CostStats:
    """Running counts of a cost model's pairs and labelled responses; mergeable across batches and processes."""

    pairs: int = 0
    ranked: int = 0  # pairs whose safer answer costs less
    labelled: int = 0  # responses with a nonzero sign
    signed: int = 0  # of them, those whose cost has the right sign
    costs: Moments = field(default_factory=Moments)
    safe: Moments = field(default_factory=Moments)
    unsafe: Moments = field(default_factory=Moments)

    @classmethod
    def of(
        cls, costs: ArrayLike, signs: ArrayLike, safer: ArrayLike = (), unsafer: ArrayLike = ()
    ) -> CostStats:
        """The counts of responses' ``costs`` with their ``signs``, and of pairs' ``safer``/``unsafer`` costs."""
        c, s = _array(costs), _array(signs)
        cs, cu = _array(safer), _array(unsafer)
        labelled = s != 0
        return cls(
            pairs=len(cs),
            ranked=int((cu > cs).sum()),
            labelled=int(labelled.sum()),
            signed=int(((c * s) < 0).sum()),
            costs=Moments.of(c),
            safe=Moments.of(c[s > 0]),
            unsafe=Moments.of(c[s < 0]),
        )

    def merge(self, other: CostStats) -> CostStats:
        self.pairs += other.pairs
        self.ranked += other.ranked
        self.labelled += other.labelled
        self.signed += other.signed
        for mine, theirs in ((self.costs, other.costs), (self.safe, other.safe), (self.unsafe, other.unsafe)):
            mine.merge(theirs)
        return self

    def metrics(self, *, bootstrap: int = 0, seed: int = 0) -> dict[str, Any]:
        """``pairs``, ``responses`` and :data:`COST_METRICS` (intervals with ``bootstrap`` samples, else ``None``)."""
        return {
            "pairs": self.pairs,
            "responses": self.costs.n,
            "pair_accuracy": self.ranked / self.pairs if self.pairs else None,
            "pair_accuracy_ci": accuracy_interval(self.ranked, self.pairs, samples=bootstrap, seed=seed),
            "sign_accuracy": self.signed / self.labelled if self.labelled else None,
            "sign_accuracy_ci": accuracy_interval(self.signed, self.labelled, samples=bootstrap, seed=seed),
            "cost_mean": self.costs.summary()["mean"],
            "cost_std": self.costs.std,
            "safe_mean": self.safe.summary()["mean"],
            "safe_std": self.safe.std,
            "unsafe_mean": self.unsafe.summary()["mean"],
            "unsafe_std": self.unsafe.std,
        }


def most_wrong(costs: ArrayLike, signs: ArrayLike, k: int = 10) -> list[int]:
    """Indices of the (at most ``k``) responses whose cost is most confidently of the wrong sign: the largest
    ``cost·sign`` above 0 first (a safe response's highest positive cost, an unsafe one's lowest negative)."""
    wrongness = _array(costs) * _array(signs)
    order = np.argsort(-wrongness, kind="stable")
    return [int(i) for i in order[:k] if wrongness[i] > 0]


def safer_metrics(
    cost_chosen: ArrayLike,
    cost_rejected: ArrayLike,
    rewards: dict[str, tuple[ArrayLike, ArrayLike]] | None = None,
    *,
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """A cost model on preference pairs: ``chosen_safer``, the share of pairs whose chosen (preferred) answer
    costs less (a tie counts as not), with its interval; the mean costs of chosen and rejected answers; and
    for each reward model of ``rewards`` (``{label: (chosen scores, rejected scores)}``)
    ``preferred_safer[label]``, the share of pairs whose answer that model scores higher also costs less."""
    cc, cr = _array(cost_chosen), _array(cost_rejected)
    n, safer = len(cc), int((cc < cr).sum())
    preferred = {}
    for label, (sc, sr) in (rewards or {}).items():
        sc, sr = _array(sc), _array(sr)
        cheaper = np.where(sc > sr, cc < cr, np.where(sc < sr, cr < cc, False))
        preferred[label] = float(cheaper.mean()) if n else None
    return {
        "pairs": n,
        "chosen_safer": safer / n if n else None,
        "chosen_safer_ci": accuracy_interval(safer, n, samples=bootstrap, seed=seed),
        "cost_chosen_mean": float(cc.mean()) if n else None,
        "cost_rejected_mean": float(cr.mean()) if n else None,
        "preferred_safer": preferred,
    }
