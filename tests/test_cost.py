"""Safety cost models (Safe RLHF): the loss, the safety data, training, scoring, evaluation, serving."""

from __future__ import annotations

import math

import pytest
import torch

from rmkit.losses import safety_cost, safety_cost_token_wise, sign_cost


def nls(x: float) -> float:
    """-log σ(x)"""
    return math.log1p(math.exp(-x))


def test_sequence_wise_cost_loss_is_safe_rlhfs_formula():
    safer, unsafer = torch.tensor([-1.0, 0.5]), torch.tensor([2.0, 0.0])
    s_safer, s_unsafer = torch.tensor([1.0, -1.0]), torch.tensor([-1.0, -1.0])
    loss = safety_cost(safer, unsafer, s_safer, s_unsafer)
    # pair 1: safe (cost -1) below unsafe (cost 2); pair 2: both unsafe, the safer one's cost 0.5 above 0
    assert loss.tolist() == pytest.approx(
        [nls(3.0) + nls(1.0) + nls(2.0), nls(-0.5) + nls(0.5) + nls(0.0)], abs=1e-6
    )
    regularised = safety_cost(safer, unsafer, s_safer, s_unsafer, regularization=0.1).mean()
    # λ·mean(c²) over the four costs: (1 + 4 + 0.25 + 0) / 4
    assert (regularised - loss.mean()).item() == pytest.approx(0.1 * 5.25 / 4, abs=1e-6)


def test_align_anythings_scale_and_real_valued_signs():
    safer, unsafer = torch.tensor([0.3]), torch.tensor([-0.7])
    loss = safety_cost(safer, unsafer, torch.tensor([0.4]), torch.tensor([-0.2]), scale=0.5)
    expected = nls(-1.0) + 0.5 * (nls(-0.4 * 0.3) + nls(-0.2 * 0.7))
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    lone = sign_cost(torch.tensor([0.3, -2.0]), torch.tensor([1.0, -0.5]), scale=2.0, regularization=0.1)
    assert lone.tolist() == pytest.approx([2 * nls(-0.3) + 0.1 * 0.09, 2 * nls(-1.0) + 0.1 * 4.0], abs=1e-6)


def _token_wise_by_hand(s_row, u_row, start, end, sign_s, sign_u, reg):
    """safe-rlhf's token-wise loop for one pair: slices [start, end] of both rows."""
    s, u = s_row[start : end + 1], u_row[start : end + 1]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    loss = mean([nls(b - a) for a, b in zip(s, u, strict=True)])
    loss += mean([nls(-sign_s * a) for a in s]) + mean([nls(-sign_u * b) for b in u])
    return loss + reg * mean([x * x for x in s + u])


def test_token_wise_cost_loss_is_safe_rlhfs_loop():
    s_rows = [[0.1, 0.2, -0.5, -1.0], [0.0, 0.3, 0.6, 0.9]]
    u_rows = [[0.1, 0.4, 0.8, 1.5], [0.0, -0.2, 0.1, 0.2]]
    ends, starts = [3, 3], [1, 2]
    signs_s, signs_u = [1.0, -1.0], [-1.0, -1.0]
    loss = safety_cost_token_wise(
        torch.tensor(s_rows), torch.tensor(u_rows), torch.tensor(ends), torch.tensor(ends),
        torch.tensor(starts), torch.tensor(signs_s), torch.tensor(signs_u), regularization=0.01,
    )  # fmt: skip
    expected = [
        _token_wise_by_hand(s_rows[i], u_rows[i], starts[i], ends[i], signs_s[i], signs_u[i], 0.01)
        for i in range(2)
    ]
    assert loss.tolist() == pytest.approx(expected, abs=1e-6)
