"""The pairwise losses of reward-model training (their metrics are in :mod:`rmkit.metrics`).

Every loss returns one value per pair (shape ``(B,)``), regularisers included, so that a caller can sum
over micro-batches and processes and divide by the number of pairs in the global batch: the mean over the
global batch is then the same whatever the gradient accumulation or the number of processes.

With ``r_c`` and ``r_r`` the scores of the chosen and rejected answers and ``m`` the pair's margin:

- Bradley-Terry: ``-log σ(r_c - r_r - m)``
- score regularisation (align-anything, safe-rlhf): ``λ·mean(r²)`` over all 2B scores, carried per pair as
  ``λ·(r_c² + r_r²)/2``
- reward centering (TRL): ``c·mean((r_c + r_r)²)``
- token-wise (safe-rlhf's ``token-wise`` loss): the Bradley-Terry loss averaged over the positions where the
  two answers differ, comparing the per-token scores of the two sequences position by position.

The cost model's loss (Safe RLHF, safe-rlhf's ``values/cost`` trainer), with ``c_s`` and ``c_u`` the costs of
the safer and the less safe answer and ``s`` each answer's safety sign (+1 safe, -1 unsafe; a real number
in [-1, 1] where the label is a rate, as align-anything's BeaverTails-V trainer takes it):

- ``-log σ(c_u - c_s) - k·log σ(-s_s·c_s) - k·log σ(-s_u·c_u)`` plus ``λ·(c_s² + c_u²)/2``: a safe answer is
  pushed to a negative cost, an unsafe one to a positive cost, the safer below the other; ``k`` is
  align-anything's ``scale_coeff`` (1 in safe-rlhf), ``λ`` safe-rlhf's ``regularization``;
- a lone labelled response (BeaverTails): the sign term alone, ``-k·log σ(-s·c) + λ·c²``;
- token-wise: each term averaged over the positions from where the two answers differ to the later end.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    margin: torch.Tensor | None = None,
    *,
    score_reg: float = 0.0,
    center: float = 0.0,
) -> torch.Tensor:
    """Per-pair loss ``-log σ(r_c - r_r - m) + λ·(r_c² + r_r²)/2 + c·(r_c + r_r)²``.

    ``chosen``, ``rejected`` and ``margin`` are (B,); returns (B,). Its mean over pairs is the Bradley-Terry
    loss plus ``score_reg·mean(r²)`` plus ``center·mean((r_c + r_r)²)``.
    """
    diff = chosen - rejected
    if margin is not None:
        diff = diff - margin
    return -F.logsigmoid(diff) + regularisers(chosen, rejected, score_reg=score_reg, center=center)


def regularisers(
    chosen: torch.Tensor, rejected: torch.Tensor, *, score_reg: float = 0.0, center: float = 0.0
) -> torch.Tensor:
    """Per-pair ``λ·(r_c² + r_r²)/2 + c·(r_c + r_r)²`` (zeros when both coefficients are 0); (B,)."""
    out = torch.zeros_like(chosen)
    if score_reg:
        out = out + score_reg * (chosen.square() + rejected.square()) / 2
    if center:
        out = out + center * (chosen + rejected).square()
    return out


def divergence_index(chosen_ids: torch.Tensor, rejected_ids: torch.Tensor) -> torch.Tensor:
    """First position where two right-padded id rows differ; (B, L) each -> (B,).

    Rows that never differ (identical answers) give their last position.
    """
    differs = chosen_ids.ne(rejected_ids)
    first = differs.int().argmax(-1)
    return torch.where(differs.any(-1), first, torch.full_like(first, chosen_ids.shape[1] - 1))


def token_wise(
    chosen_scores: torch.Tensor,
    rejected_scores: torch.Tensor,
    chosen_end: torch.Tensor,
    rejected_end: torch.Tensor,
    start: torch.Tensor,
    margin: torch.Tensor | None = None,
    *,
    score_reg: float = 0.0,
    center: float = 0.0,
) -> torch.Tensor:
    """Per-pair token-wise loss: mean of ``-log σ(s_c[t] - s_r[t] - m)`` over ``t`` in ``start..end``.

    ``chosen_scores``/``rejected_scores`` are per-token scores (B, L) of right-padded rows aligned by position;
    ``chosen_end``/``rejected_end`` are each row's last real position and ``start`` the first position where
    the two answers differ (:func:`divergence_index`), all (B,). ``end`` is the later of the two ends; past its
    own end a sequence keeps its final score, so pad positions are never read. The regularisers apply to the
    end scores as in :func:`bradley_terry`. Returns (B,).
    """
    chosen_at, rejected_at, window = aligned(chosen_scores, rejected_scores, chosen_end, rejected_end, start)
    diff = chosen_at - rejected_at
    if margin is not None:
        diff = diff - margin[:, None]
    loss = _window_mean(-F.logsigmoid(diff), window)
    end_c = chosen_scores.gather(1, chosen_end[:, None]).squeeze(1)
    end_r = rejected_scores.gather(1, rejected_end[:, None]).squeeze(1)
    return loss + regularisers(end_c, end_r, score_reg=score_reg, center=center)


def aligned(
    first: torch.Tensor,
    second: torch.Tensor,
    first_end: torch.Tensor,
    second_end: torch.Tensor,
    start: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The per-token scores of two answers (B, L) read position by position, and the window compared:
    ``(first_at, second_at, window)``, each (B, L). The window runs from ``start`` to the later of the two
    ends; past its own end a sequence keeps its final score, so pad positions are never read."""
    positions = torch.arange(first.shape[1], device=first.device)[None, :]
    window = (positions >= start[:, None]) & (positions <= torch.maximum(first_end, second_end)[:, None])
    first_at = first.gather(1, torch.minimum(positions, first_end[:, None]).expand_as(first))
    second_at = second.gather(1, torch.minimum(positions, second_end[:, None]).expand_as(second))
    return first_at, second_at, window


def _window_mean(values: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` (B, L) over each row's ``window``; (B,)."""
    return (values * window).sum(-1) / window.sum(-1).clamp(min=1)


def safety_cost(
    safer: torch.Tensor,
    unsafer: torch.Tensor,
    safer_sign: torch.Tensor,
    unsafer_sign: torch.Tensor,
    *,
    scale: float = 1.0,
    regularization: float = 0.0,
) -> torch.Tensor:
    """Per-pair cost-model loss ``-log σ(c_u - c_s) - k·log σ(-s_s·c_s) - k·log σ(-s_u·c_u) + λ·(c_s² + c_u²)/2``
    (module docstring; ``k`` is ``scale``, ``λ`` is ``regularization``).

    ``safer``/``unsafer`` are the end costs (B,), the signs (B,) are +1 safe, -1 unsafe (or a rate between).
    Its mean over pairs is safe-rlhf's sequence-wise loss, ``λ·mean(c²)`` over the 2B costs included."""
    loss = -F.logsigmoid(unsafer - safer)
    loss = loss + scale * (-F.logsigmoid(-safer_sign * safer) - F.logsigmoid(-unsafer_sign * unsafer))
    return loss + regularization * (safer.square() + unsafer.square()) / 2


def sign_cost(
    cost: torch.Tensor, sign: torch.Tensor, *, scale: float = 1.0, regularization: float = 0.0
) -> torch.Tensor:
    """Per-response loss of a lone labelled response (BeaverTails): ``-k·log σ(-s·c) + λ·c²``; (B,) each."""
    return -scale * F.logsigmoid(-sign * cost) + regularization * cost.square()


def safety_cost_token_wise(
    safer_scores: torch.Tensor,
    unsafer_scores: torch.Tensor,
    safer_end: torch.Tensor,
    unsafer_end: torch.Tensor,
    start: torch.Tensor,
    safer_sign: torch.Tensor,
    unsafer_sign: torch.Tensor,
    *,
    scale: float = 1.0,
    regularization: float = 0.0,
) -> torch.Tensor:
    """Per-pair token-wise cost-model loss (safe-rlhf's ``token-wise``): each term of :func:`safety_cost`
    averaged over the window of :func:`aligned` (from ``start``, where the answers differ, to the later end),
    and ``λ`` times the mean square of the window's costs of both answers. Scores (B, L), the rest (B,)."""
    s, u, window = aligned(safer_scores, unsafer_scores, safer_end, unsafer_end, start)
    loss = _window_mean(-F.logsigmoid(u - s), window)
    signs = _window_mean(-F.logsigmoid(-safer_sign[:, None] * s), window)
    signs = signs + _window_mean(-F.logsigmoid(-unsafer_sign[:, None] * u), window)
    squares = (_window_mean(s.square(), window) + _window_mean(u.square(), window)) / 2
    return loss + scale * signs + regularization * squares
