"""Prefix sharing for vision-language RMs: the tokens the rows of one example have in common, its images
among them, run once through the language model with a cache, then each row's remaining tokens after it.

The rows of a pair (or best-of-N's N answers) start alike: the prompt with its image tokens. :func:`plan`
finds each group's shared prefix as the text scorer does (:func:`rmkit.inference.plan_sharing`: the longest
run of leading tokens in common, where it is worth a pass of its own) among the rows whose images are the
same, and keeps it only where every image token of every member lies inside it: the cut never falls inside
an image (Gemma3's image tokens attend to each other both ways) and no continuation carries an image.

:func:`scores` runs the prefixes in token-budget batches (their images through the vision encoder once),
keeping the language model's keys and values, then the members' remaining tokens, each row reading a copy of
its prefix's cache, in passes of at most the budget counting ``rows × (prefix width + longest rest)``; both
cut by length where the padding saved pays for another pass: ``pass_cost``, the fixed cost of a pass in
tokens' worth of work, which scoring measures on the model and its device
(:meth:`rmkit.vlm.VisionRewardModel.pass_cost`: a tiny model on a CPU pays about a hundred tokens' worth a
pass, a 7B model a few).
Positions go on exactly: a member's positions are those of its whole row as the family's forward computes them
(Qwen2-VL's 3-D M-RoPE positions from the model's own ``get_rope_index``; LLaVA's and Gemma3's among the real
tokens), split at the cut. The prefixes are padded on the left, so that each continuation follows its prefix's
last token directly and a sliding attention window (Gemma3's) sees the distances the whole row has. The
scores equal those of the whole rows; gradients flow through the cache, so training shares the same way
(:mod:`rmkit.training.vision`), except under gradient checkpointing, which runs no cache.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from rmkit.data import RowCounts, padded_on, token_budget_batches
from rmkit.data.processing import VisionRow
from rmkit.inference import MIN_SHARED, SUFFIX_PASS_COST, plan_sharing
from rmkit.lean import read_only_at

Share = tuple[int, list[int]]  # (the prefix's length in tokens, the rows that run after it)
# Unlike text, a VLM's whole rows already attend through a mask (their padding, images), so an answer's pass
# after a cache costs no more a token than its whole row's: any prefix of MIN_SHARED tokens pays (measured
# with benchmarks/bench_vision.py: sharing every pair beat the text rule's quarter of a pair's tokens).
MIN_SAVING_VLM = 0.0


def plan(
    rows: Sequence[VisionRow],
    groups: Sequence[Sequence[int]],
    image_id: int,
    min_shared: int = MIN_SHARED,
    min_saving: float = MIN_SAVING_VLM,
) -> tuple[list[Share], list[int]]:
    """``(shares, the rest)``: the shared prefixes of ``groups`` (indices of rows answering one prompt) and
    their members, split first by images (rows whose images differ share nothing, whatever their tokens),
    kept where every member's image tokens lie inside the prefix; the other rows, sorted. ``min_shared`` and
    ``min_saving`` as :func:`rmkit.inference.plan_sharing` takes them (by default a prefix of ``MIN_SHARED``
    tokens, whatever it saves: ``MIN_SAVING_VLM``; 1: every prefix)."""
    same = [sub for group in groups for sub in _by_images(rows, group)]
    found, alone = plan_sharing([r.ids for r in rows], same, min_shared, min_saving)
    shares = []
    for prefix, members in found:
        if all(image_id not in rows[i].ids[len(prefix) :] for i in members):
            shares.append((len(prefix), members))
        else:
            alone += members
    return shares, sorted(alone)


def unique(
    rows: Sequence[VisionRow], groups: Sequence[Sequence[int]]
) -> tuple[list[list[int]], dict[int, int]]:
    """``groups`` without the rows that repeat an earlier row of their group (the same tokens and images),
    and those repeats, each mapped to the row whose score it takes: a benchmark's tie (the same answer
    twice) then scores exactly alike, never a rounding apart in two rows of a pass."""
    kept, copies = [], {}
    for group in groups:
        seen: dict[tuple[int, ...], list[int]] = {}
        out = []
        for i in group:
            first = next(
                (j for j in seen.get(tuple(rows[i].ids), []) if _same_images(rows[j], rows[i])), None
            )
            if first is None:
                seen.setdefault(tuple(rows[i].ids), []).append(i)
                out.append(i)
            else:
                copies[i] = first
        kept.append(out)
    return kept, copies


def count(shares: list[Share], groups: Sequence[Sequence[int]], stats: RowCounts | None) -> None:
    """Count the rows that ran after a shared prefix, those of groups that fell back, the tokens saved."""
    if stats is None:
        return
    shared = sum(len(members) for _, members in shares)
    stats.shared += shared
    stats.unshared += sum(len(g) for g in groups if len(g) > 1) - shared
    stats.prefix_tokens += sum((len(members) - 1) * n for n, members in shares)


def scores(
    rm: Any,
    rows: Sequence[VisionRow],
    shares: list[Share],
    budget: int,
    max_rows: int | None,
    pass_cost: float = SUFFIX_PASS_COST,
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """``(row indices, their end scores)`` of every member of ``shares``, pass by pass (module docstring);
    ``rm`` a :class:`rmkit.vlm.VisionRewardModel`. Gradients flow where the caller enables them."""
    for batch in token_budget_batches([n for n, _ in shares], budget, max_rows, pass_cost):
        part = [shares[g] for g in batch]
        members = [i for _, m in part for i in m]
        whole = _positions(rm, [rows[i] for i in members])
        column = {i: c for c, i in enumerate(members)}
        cache, mask = _prefixes(rm, rows, part, whole, column, budget)
        rest = [(p, i) for p, (_, m) in enumerate(part) for i in m]
        lengths = [mask.shape[1] + len(rows[i].ids) - part[p][0] for p, i in rest]
        for cut in token_budget_batches(lengths, budget, max_rows, pass_cost):
            chosen = [rest[k] for k in cut]
            conts = [(p, rows[i].ids[part[p][0] :], whole[..., column[i], part[p][0] :]) for p, i in chosen]
            yield [i for _, i in chosen], _after(rm, cache, mask, conts)


def _by_images(rows: Sequence[VisionRow], group: Sequence[int]) -> list[list[int]]:
    """``group`` split into the rows with the same images (the same patches, or equal ones, and grids)."""
    out: list[list[int]] = []
    for i in group:
        for sub in out:
            if _same_images(rows[sub[0]], rows[i]):
                sub.append(i)
                break
        else:
            out.append([i])
    return out


def _same_images(a: VisionRow, b: VisionRow) -> bool:
    if a.patches is b.patches:
        return True
    if a.patches is None or b.patches is None or a.patches.shape != b.patches.shape:
        return False
    grids = [tuple(g) for g in a.grids] == [tuple(g) for g in b.grids]
    return grids and bool(np.array_equal(a.patches, b.patches))


def _positions(rm: Any, rows: list[VisionRow]) -> torch.Tensor:
    """The positions of ``rows`` as whole sequences, right-padded: (B, L), or Qwen's (3, B, L)."""
    ids, mask = padded_on([r.ids for r in rows], rm.pad_token_id, rm.device)
    grids = [tuple(g) for r in rows if r.patches is not None for g in r.grids]
    thw = torch.tensor(grids, dtype=torch.long, device=rm.device) if grids else None
    return rm.family.positions(rm.model.model, ids, mask, rm.tokens.image_id, thw)


def _prefixes(
    rm: Any,
    rows: Sequence[VisionRow],
    part: list[Share],
    whole: torch.Tensor,
    column: dict[int, int],
    budget: int,
) -> tuple[Any, torch.Tensor]:
    """The cache and mask (P, W) of the prefixes of ``part``, left-padded, in one pass with their images."""
    firsts = [rows[m[0]] for _, m in part]
    width = max(n for n, _ in part)
    ids = torch.full((len(part), width), rm.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(part), width), dtype=torch.long)
    positions = whole.new_zeros((*whole.shape[:-2], len(part), width))
    for p, (n, members) in enumerate(part):
        ids[p, width - n :] = torch.tensor(rows[members[0]].ids[:n])
        mask[p, width - n :] = 1
        positions[..., p, width - n :] = whole[..., column[members[0]], :n]
    ids, mask = ids.to(rm.device), mask.to(rm.device)
    with_images = [r for r in firsts if r.patches is not None]
    images: dict[str, Any] = {}
    if with_images:
        features = rm.encode(with_images, budget)
        images["image_features"] = [f for r in with_images for f in features[id(r.patches)]]
        grids = [g for r in with_images for g in r.grids]
        images["image_grid_thw"] = torch.tensor(grids, dtype=torch.long, device=rm.device)
    with read_only_at(rm.model, torch.zeros(0, dtype=torch.long)):  # its last states are not read
        out = rm.run(ids, mask, position_ids=positions, use_cache=True, **images)
    return out.past_key_values, mask


def _after(
    rm: Any, cache: Any, prefix_mask: torch.Tensor, conts: list[tuple[int, list[int], torch.Tensor]]
) -> torch.Tensor:
    """End scores (R,) of continuations ``(prefix row, ids, their positions)``, each after its prefix's cache."""
    ids, mask = padded_on([tokens for _, tokens, _ in conts], rm.pad_token_id, rm.device)
    at = torch.tensor([p for p, _, _ in conts], dtype=torch.long, device=rm.device)
    positions = torch.zeros((*conts[0][2].shape[:-1], *ids.shape), dtype=torch.long, device=rm.device)
    for k, (_, tokens, where) in enumerate(conts):
        positions[..., k, : len(tokens)] = where[..., : len(tokens)]
    end = mask.sum(-1) - 1
    with read_only_at(rm.model, end):
        out = rm.run(
            ids,
            torch.cat([prefix_mask[at], mask], dim=1),
            position_ids=positions,
            past_key_values=_rows_of(cache, at),
            use_cache=True,
        )
    at_end = out.last_hidden_state[torch.arange(len(conts), device=rm.device), end]
    return rm.head(at_end.float()).squeeze(-1)


def _rows_of(cache: Any, rows: torch.Tensor) -> Any:
    """A copy of ``cache`` holding the keys and values of its batch rows ``rows`` (repeats allowed); the
    layers' other state (a sliding window's count of tokens seen) as it is."""
    out = copy.copy(cache)
    out.layers = [copy.copy(layer) for layer in cache.layers]
    for layer in out.layers:
        layer.keys, layer.values = layer.keys[rows], layer.values[rows]
    return out
