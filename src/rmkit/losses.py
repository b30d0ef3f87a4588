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
    length = chosen_scores.shape[1]
    positions = torch.arange(length, device=chosen_scores.device)[None, :]
    last = torch.maximum(chosen_end, rejected_end)[:, None]
    window = (positions >= start[:, None]) & (positions <= last)
    chosen_at = chosen_scores.gather(
        1, torch.minimum(positions, chosen_end[:, None]).expand_as(chosen_scores)
    )
    rejected_at = rejected_scores.gather(
        1, torch.minimum(positions, rejected_end[:, None]).expand_as(rejected_scores)
    )
    diff = chosen_at - rejected_at
    if margin is not None:
        diff = diff - margin[:, None]
    per_token = -F.logsigmoid(diff) * window
    loss = per_token.sum(-1) / window.sum(-1).clamp(min=1)
    end_c = chosen_scores.gather(1, chosen_end[:, None]).squeeze(1)
    end_r = rejected_scores.gather(1, rejected_end[:, None]).squeeze(1)
    return loss + regularisers(end_c, end_r, score_reg=score_reg, center=center)
