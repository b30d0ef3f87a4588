"""The pairwise losses and metrics against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from rmkit.losses import (
    bradley_terry,
    divergence_index,
    regularisers,
    token_wise,
)


def nls(x: float) -> float:
    """-log σ(x)"""
    return math.log1p(math.exp(-x))


def test_bradley_terry_per_pair_values():
    loss = bradley_terry(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 0.0]))
    assert loss.tolist() == pytest.approx([nls(2.0), math.log(2.0)], abs=1e-6)


def test_bradley_terry_margin_is_subtracted():
    loss = bradley_terry(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 0.0]), torch.tensor([1.0, -1.0]))
    assert loss.tolist() == pytest.approx([nls(1.0), nls(1.0)], abs=1e-6)


def test_score_regularisation_is_lambda_mean_square_over_all_scores():
    chosen, rejected = torch.tensor([2.0, 1.0]), torch.tensor([0.0, -3.0])
    base = bradley_terry(chosen, rejected).mean()
    total = bradley_terry(chosen, rejected, score_reg=0.1).mean()
    # mean(r²) over the four scores: (4 + 1 + 0 + 9) / 4 = 3.5
    assert (total - base).item() == pytest.approx(0.1 * 3.5, abs=1e-6)


def test_reward_centering_is_c_mean_square_of_sums():
    chosen, rejected = torch.tensor([2.0, 1.0]), torch.tensor([0.0, -3.0])
    extra = bradley_terry(chosen, rejected, center=0.5).mean() - bradley_terry(chosen, rejected).mean()
    # (r_c + r_r)² = 4 and 4 -> mean 4
    assert extra.item() == pytest.approx(0.5 * 4.0, abs=1e-6)
    assert regularisers(chosen, rejected).tolist() == [0.0, 0.0]


def test_bradley_terry_gradient_pushes_chosen_up():
    chosen = torch.tensor([0.0], requires_grad=True)
    rejected = torch.tensor([0.0], requires_grad=True)
    bradley_terry(chosen, rejected).sum().backward()
    assert chosen.grad.item() == pytest.approx(-0.5)
    assert rejected.grad.item() == pytest.approx(0.5)


def test_divergence_index():
    chosen = torch.tensor([[5, 6, 7, 0], [1, 2, 3, 4], [1, 2, 0, 0]])
    rejected = torch.tensor([[5, 6, 8, 9], [1, 2, 3, 4], [1, 2, 3, 0]])
    assert divergence_index(chosen, rejected).tolist() == [2, 3, 2]


def test_token_wise_compares_positions_from_divergence_to_the_later_end():
    scores_c = torch.tensor([[1.0, 2.0, 3.0, 0.0]])  # ends at 2; position 3 is padding
    scores_r = torch.tensor([[1.0, 0.0, 1.0, 5.0]])  # ends at 3
    loss = token_wise(scores_c, scores_r, torch.tensor([2]), torch.tensor([3]), torch.tensor([1]))
    # positions 1..3: chosen 2, 3, 3 (holds its end score past its end), rejected 0, 1, 5
    expected = (nls(2.0) + nls(2.0) + nls(-2.0)) / 3
    assert loss.tolist() == pytest.approx([expected], abs=1e-6)


def test_token_wise_margin_and_regularisers_use_end_scores():
    scores_c = torch.tensor([[0.0, 2.0]])
    scores_r = torch.tensor([[0.0, 1.0]])
    end = torch.tensor([1])
    loss = token_wise(scores_c, scores_r, end, end, torch.tensor([1]), torch.tensor([0.5]), score_reg=0.2)
    assert loss.item() == pytest.approx(nls(0.5) + 0.2 * (4.0 + 1.0) / 2, abs=1e-6)
