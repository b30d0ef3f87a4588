"""The figures of graded labels: a process RM's steps against their labels (and ProcessBench's measure),
and an RM's outputs against attribute ratings. Part of :mod:`rmkit.metrics`, the one definition of rmkit's
statistics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rmkit.metrics import ArrayLike, _array, accuracy_interval, pearson, spearman


def _share(hits: int, n: int) -> float | None:
    return hits / n if n else None


def _harmonic(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return 2 * a * b / (a + b) if a + b else 0.0


def first_below(scores: Sequence[float], threshold: float) -> int:
    """Index of the first step scored below ``threshold`` (the PRM's predicted first error), or -1."""
    return next((i for i, s in enumerate(scores) if s < threshold), -1)


def step_metrics(
    step_scores: Sequence[Sequence[float]], labels: Sequence[Sequence[bool | None]], *, threshold: float = 0.5
) -> dict[str, Any]:
    """A process reward model on labelled solutions (a step is predicted right when its score ≥ ``threshold``).

    Step level, over the labelled steps that were scored: ``step_accuracy``, and ``wrong_precision``,
    ``wrong_recall``, ``wrong_f1`` with the wrong steps as the positive class. ProcessBench's measure, over
    solutions: the label is the first wrong step (-1: none), the prediction the first step scored below the
    threshold (-1: none); ``error_accuracy`` is the share of solutions with a wrong step whose first wrong
    step is found exactly, ``correct_accuracy`` the share of solutions without one that the PRM passes
    whole, and ``processbench_f1`` their harmonic mean.
    """
    right = wrong_hit = predicted_wrong = actual_wrong = steps = 0
    found = with_error = passed = without_error = 0
    for scores, truth in zip(step_scores, labels, strict=True):
        for score, label in zip(scores, truth, strict=False):
            if label is None:
                continue
            steps += 1
            says_wrong = score < threshold
            right += says_wrong == (not label)
            predicted_wrong += says_wrong
            actual_wrong += not label
            wrong_hit += says_wrong and not label
        error = next((i for i, label in enumerate(truth) if label is False), -1)
        predicted = first_below(scores, threshold)
        if error >= 0:
            with_error += 1
            found += predicted == error
        else:
            without_error += 1
            passed += predicted == -1
    precision, recall = _share(wrong_hit, predicted_wrong), _share(wrong_hit, actual_wrong)
    error_accuracy, correct_accuracy = _share(found, with_error), _share(passed, without_error)
    return {
        "solutions": len(labels),
        "steps": steps,
        "threshold": threshold,
        "step_accuracy": _share(right, steps),
        "wrong_precision": precision,
        "wrong_recall": recall,
        "wrong_f1": _harmonic(precision, recall),
        "with_error": with_error,
        "error_accuracy": error_accuracy,
        "correct_accuracy": correct_accuracy,
        "processbench_f1": _harmonic(error_accuracy, correct_accuracy),
    }


def rating_metrics(
    predicted: ArrayLike,
    ratings: ArrayLike,
    groups: Sequence[int],
    *,
    regression: bool,
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """An RM's outputs against one attribute's ratings of N responses (``groups``: the prompt of each).

    ``pearson``/``spearman`` with 95% percentile bootstrap intervals (responses resampled), ``mae`` when the
    output is a regression of this attribute (else ``None``), and ``pair_accuracy``: over every two
    responses to one prompt whose ratings differ, the share the RM orders the same way (a tie in its
    outputs counts as wrong, as for pairs), with its interval.
    """
    p, r = _array(predicted), _array(ratings)
    n = len(p)
    rng = np.random.default_rng(seed)
    cis: dict[str, list[float] | None] = {"pearson": None, "spearman": None}
    if bootstrap > 0 and n >= 3:
        draws = rng.integers(0, n, size=(bootstrap, n))
        for name, fn in (("pearson", pearson), ("spearman", spearman)):
            values = [v for d in draws if (v := fn(p[d], r[d])) is not None]
            cis[name] = [float(q) for q in np.quantile(values, [0.025, 0.975])] if values else None
    correct = total = 0
    by_group: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(g, []).append(i)
    for members in by_group.values():
        for a_pos, a in enumerate(members):
            for b in members[a_pos + 1 :]:
                if r[a] != r[b]:
                    total += 1
                    correct += bool((p[a] - p[b]) * (r[a] - r[b]) > 0)
    return {
        "responses": n,
        "pearson": pearson(p, r),
        "pearson_ci": cis["pearson"],
        "spearman": spearman(p, r),
        "spearman_ci": cis["spearman"],
        "mae": float(np.abs(p - r).mean()) if regression and n else None,
        "pairs": total,
        "pair_accuracy": correct / total if total else None,
        "pair_accuracy_ci": accuracy_interval(correct, total, samples=bootstrap, seed=seed),
    }


def bradley_terry(n: int, comparisons: Sequence[tuple[int, int, float]], iterations: int = 50) -> list[float]:
    """One score per candidate from pairwise judgements: the Bradley-Terry strengths ``s`` (centred on 0)
    that best explain ``comparisons`` ``(i, j, p)``, each the judged probability that ``i`` beats ``j``:
    the maximum of ``sum p log sigmoid(s_i - s_j) + (1 - p) log sigmoid(s_j - s_i)``, found by Newton's
    method. Two candidates get ``±logit(p)/2``; a candidate in no comparison gets 0."""
    s = np.zeros(n)
    if n < 2 or not comparisons:
        return s.tolist()
    i = np.array([c[0] for c in comparisons])
    j = np.array([c[1] for c in comparisons])
    p = np.clip(np.array([c[2] for c in comparisons], dtype=float), 1e-12, 1 - 1e-12)
    for _ in range(iterations):
        q = 1 / (1 + np.exp(-(s[i] - s[j])))
        grad = np.bincount(i, p - q, n) - np.bincount(j, p - q, n)
        w = q * (1 - q)
        hess = np.zeros((n, n))
        np.add.at(hess, (i, i), w)
        np.add.at(hess, (j, j), w)
        np.add.at(hess, (i, j), -w)
        np.add.at(hess, (j, i), -w)
        step = np.linalg.lstsq(hess + 1e-12 * np.eye(n), grad, rcond=None)[0]
        s = s + step
        s -= s.mean()
        if np.abs(step).max() < 1e-12:
            break
    return s.tolist()
