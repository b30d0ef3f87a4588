"""The one definition of pair and score statistics (rmkit.metrics) against hand-computed values and the
formulas rmkit used before it had one: sums of squares (training logs), numpy over all pairs (eval) and
Welford's running update (the score summary)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import numpy as np
import pytest
import torch

from rmkit.metrics import Moments, PairStats, pair_metrics


def test_metrics_count_ties_apart():
    m = PairStats.of(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.0, 2.0, 4.0])).training_metrics()
    assert m["pairs"] == 3
    assert m["accuracy"] == pytest.approx(1 / 3)
    assert m["ties"] == pytest.approx(1 / 3)
    assert m["margin"] == pytest.approx(0.0)
    assert m["chosen_mean"] == pytest.approx(2.0)
    assert m["chosen_std"] == pytest.approx(math.sqrt(2 / 3))
    assert m["rejected_mean"] == pytest.approx(2.0)
    assert m["rejected_std"] == pytest.approx(math.sqrt(8 / 3))
    assert m["reward_std"] == pytest.approx(torch.tensor([1.0, 2, 3, 0, 2, 4]).std(unbiased=False).item())


def test_pair_stats_add_over_batches():
    chosen, rejected = torch.randn(10), torch.randn(10)
    whole = PairStats.of(chosen, rejected)
    parts = PairStats.of(chosen[:4], rejected[:4]).merge(PairStats.of(chosen[4:], rejected[4:]))
    assert (parts.pairs, parts.correct, parts.ties) == (whole.pairs, whole.correct, whole.ties)
    for name in ("chosen", "rejected", "margin"):
        a, b = getattr(whole, name), getattr(parts, name)
        assert (a.n, a.min, a.max) == (b.n, b.min, b.max)
        assert a.mean == pytest.approx(b.mean, abs=1e-12) and a.m2 == pytest.approx(b.m2, rel=1e-12)


def old_sum_of_squares(chosen: np.ndarray, rejected: np.ndarray) -> dict[str, float]:
    """How training logs computed the figures before (sums and sums of squares, added over batches)."""
    n = len(chosen)

    def std(x: np.ndarray) -> float:
        return max((x**2).sum() / n - (x.sum() / n) ** 2, 0.0) ** 0.5

    both = np.concatenate([chosen, rejected])
    return {
        "accuracy": (chosen > rejected).sum() / n,
        "ties": (chosen == rejected).sum() / n,
        "margin": (chosen - rejected).sum() / n,
        "chosen_mean": chosen.sum() / n,
        "chosen_std": std(chosen),
        "rejected_mean": rejected.sum() / n,
        "rejected_std": std(rejected),
        "reward_mean": both.sum() / (2 * n),
        "reward_std": max((both**2).sum() / (2 * n) - (both.sum() / (2 * n)) ** 2, 0.0) ** 0.5,
    }


def old_welford(values: np.ndarray) -> dict[str, float]:
    """How the score summary computed a column's figures before (one value at a time)."""
    n, mean, m2 = 0, 0.0, 0.0
    for x in values:
        n += 1
        delta = x - mean
        mean += delta / n
        m2 += delta * (x - mean)
    return {"mean": mean, "std": math.sqrt(m2 / n), "min": float(values.min()), "max": float(values.max())}


@pytest.fixture
def scored() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """1,000 pairs with ties (rounded scores) and lengths."""
    rng = np.random.default_rng(0)
    chosen, rejected = rng.normal(0.3, 1.0, 1000).round(1), rng.normal(0.0, 1.2, 1000).round(1)
    return chosen, rejected, rng.integers(1, 500, 1000), rng.integers(1, 500, 1000)


def test_one_definition_gives_the_figures_of_the_old_four(scored):
    chosen, rejected, lc, lr = scored
    # Chunked and merged, as training (micro-batches, processes) and scoring (chunks, resumed runs) do.
    stats = PairStats()
    for s in range(0, 1000, 37):
        stats.merge(PairStats.of(chosen[s : s + 37], rejected[s : s + 37]))
    assert stats.ties > 0
    train = stats.training_metrics()
    for key, value in old_sum_of_squares(chosen, rejected).items():
        assert train[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key

    # rmkit eval: numpy over all pairs at once; the same numbers whether the stats come whole or merged.
    m = pair_metrics(chosen, rejected, lc, lr)
    margin = chosen - rejected
    assert m["accuracy"] == (margin > 0).mean() and m["ties"] == int((margin == 0).sum())
    assert m["accuracy_ties_half"] == pytest.approx(((margin > 0) + 0.5 * (margin == 0)).mean())
    for key, x in (("margin", margin), ("chosen", chosen), ("rejected", rejected)):
        assert m[f"{key}_mean"] == float(x.mean()) and m[f"{key}_std"] == float(x.std())
        assert m[f"{key}_mean"] == pytest.approx(getattr(stats, key).mean, abs=1e-12)
        assert m[f"{key}_std"] == pytest.approx(getattr(stats, key).std, rel=1e-12)
    assert m["accuracy"] == train["accuracy"] and m["ties"] / 1000 == train["ties"]

    # The score summary: a column's mean, std, min and max, as the running update gave them.
    for column, values in (("chosen", chosen), ("rejected", rejected)):
        assert getattr(stats, column).summary() == pytest.approx(old_welford(values), rel=1e-12)


def test_moments_survive_a_state_file_and_stay_exact_where_cancellation_breaks_sums():
    rng = np.random.default_rng(1)
    values = 1e8 + rng.normal(0.0, 1e-3, 10_000)  # a large offset: sum-of-squares loses every digit here
    merged = Moments()
    for s in range(0, len(values), 999):
        part = Moments.of(values[s : s + 999])
        merged.merge(Moments(**json.loads(json.dumps(asdict(part)))))  # through JSON, as resume does
    assert merged.std == pytest.approx(values.std(), rel=1e-6)
    assert merged.n == 10_000 and merged.min == values.min() and merged.max == values.max()
    stats = PairStats.of(values[:10], values[10:20])
    assert PairStats.from_dict(json.loads(json.dumps(asdict(stats)))) == stats


def test_no_pairs_give_undefined_figures_not_errors():
    empty = PairStats()
    assert empty.accuracy is None and empty.chosen.summary()["std"] is None
    assert PairStats.of([], []).training_metrics()["pairs"] == 0
    assert pair_metrics([], [], [], [])["accuracy"] is None


def test_step_metrics_and_the_processbench_measure_match_hand_values():
    from rmkit.metrics.graded import step_metrics

    scores = [
        [0.9, 0.8, 0.2],  # wrong at 2; predicted first error 2: found
        [0.9, 0.3, 0.1],  # wrong at 2; predicted 1: missed
        [0.7, 0.6],  # no wrong step; passed whole
        [0.4, 0.9],  # no wrong step; predicted 0: not passed
        [0.8, 0.9, 0.7],  # labels None after the first wrong step (ProcessBench style)
    ]
    labels = [[True, True, False], [True, True, False], [True, True], [True, True], [True, False, None]]
    m = step_metrics(scores, labels, threshold=0.5)
    # labelled steps: 12; predicted wrong (<0.5): 0.2, 0.3, 0.1, 0.4 -> 4; actually wrong: 3 (rows 1, 2, 5)
    # hits (predicted and actually wrong): 0.2 and 0.1 -> 2; correct calls: 12 - (0.3, 0.4 false alarms) - (row 5 missed) = 9
    assert m["steps"] == 12 and m["step_accuracy"] == pytest.approx(9 / 12)
    assert m["wrong_precision"] == pytest.approx(2 / 4) and m["wrong_recall"] == pytest.approx(2 / 3)
    assert m["wrong_f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    # ProcessBench: with an error: rows 1, 2, 5 -> found only in row 1 (row 5 predicted -1, truth 1)
    assert m["with_error"] == 3 and m["error_accuracy"] == pytest.approx(1 / 3)
    assert m["correct_accuracy"] == pytest.approx(1 / 2)
    assert m["processbench_f1"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    empty = step_metrics([[0.9]], [[True]])
    assert (
        empty["error_accuracy"] is None
        and empty["processbench_f1"] is None
        and empty["correct_accuracy"] == 1.0
    )


def test_rating_metrics_match_numpy_and_scipy_on_a_fixture():
    from scipy import stats

    from rmkit.metrics.graded import rating_metrics

    predicted = [0.1, 0.9, 0.4, 0.35, 2.0, 1.5]
    ratings = [0, 3, 1, 2, 4, 4]
    groups = [0, 0, 0, 1, 1, 1]
    m = rating_metrics(predicted, ratings, groups, regression=True, bootstrap=200)
    assert m["pearson"] == pytest.approx(stats.pearsonr(predicted, ratings)[0])
    assert m["spearman"] == pytest.approx(stats.spearmanr(predicted, ratings)[0])
    assert m["mae"] == pytest.approx(sum(abs(p - r) for p, r in zip(predicted, ratings, strict=True)) / 6)
    # group 0: (0,3) right, (0,1) right, (3,1) right; group 1: (2,4) right, (2,4) right, (4,4) a tie: no pair
    assert m["pairs"] == 5 and m["pair_accuracy"] == 1.0
    lo, hi = m["spearman_ci"]
    assert lo <= m["spearman"] <= hi
    assert rating_metrics(predicted, ratings, groups, regression=False)["mae"] is None
