"""The plots of ``rmkit eval``, drawn as PNG files (each kind of RM picks its own: :mod:`rmkit.kinds`).

Figures are built with :class:`matplotlib.figure.Figure` and saved through the Agg canvas: no display,
no pyplot state shared with the caller. Each model's figure has one panel per data set, two panels a row
so the text stays legible when GitHub scales the image to the page width. A few extreme values must not
squash the rest into one bar: when the full range is much wider than the central 98% of the values, the
axes show the central range, histograms count the outliers in their edge bins, and the axis label says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from rmkit.files import atomic_path
from rmkit.metrics import pearson

CHOSEN, REJECTED = (
    "#1f77b4",
    "#ff7f0e",
)  # matplotlib's tab:blue and tab:orange, distinct for colour-blind eyes
AGREE, DISAGREE = "#1f77b4", "#d62728"
DPI = 110
PANEL = (5.6, 4.0)  # inches per panel
COLUMNS = 2


@dataclass
class Panel:
    """The scored pairs of one data set: ``scores`` and ``lengths`` are (N, 2), chosen then rejected."""

    name: str
    scores: np.ndarray
    lengths: np.ndarray
    metrics: dict[str, Any]


def _save(fig: Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")


def save_in(fig: Figure, out: Path, name: str) -> str:
    """Save ``fig`` as ``out/plots/{name}.png`` (names are the eval's file-safe labels); returns the path
    relative to ``out``, for the report."""
    path = out / "plots" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    _save(fig, path)
    return str(path.relative_to(out))


def _view(values: np.ndarray) -> tuple[float, float, int]:
    """``(low, high, values outside)``: the full range, or the central 98% when outliers stretch it 3x."""
    lo, hi = float(values.min()), float(values.max())
    q_lo, q_hi = (float(q) for q in np.quantile(values, [0.01, 0.99]))
    if q_hi > q_lo and hi - lo > 3 * (q_hi - q_lo):
        pad = 0.05 * (q_hi - q_lo)
        lo, hi = q_lo - pad, q_hi + pad
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    return lo, hi, int(((values < lo) | (values > hi)).sum())


def _outside(label: str, n: int, where: str) -> str:
    return label if not n else f"{label}\n({n} outlier{'s' * (n > 1)} {where})"


def _edges(lo: float, hi: float, n: int, anchor: float | None = None) -> np.ndarray:
    """Equal-width bin edges over [lo, hi], about 2·n^(1/3) of them (Rice's rule) kept within 10..50;
    with ``anchor`` one edge falls exactly on it (zero, for margins)."""
    bins = int(np.clip(np.ceil(2 * max(n, 1) ** (1 / 3)), 10, 50))
    width = (hi - lo) / bins
    if anchor is None:
        return lo + width * np.arange(bins + 1)
    return anchor + width * np.arange(np.floor((lo - anchor) / width), np.ceil((hi - anchor) / width) + 1)


def _figure(n_panels: int, suptitle: str) -> tuple[Figure, list[Any]]:
    cols = min(n_panels, COLUMNS)
    rows = -(-n_panels // cols)
    fig = Figure(figsize=(PANEL[0] * cols, PANEL[1] * rows + 0.4), layout="constrained")
    axes = list(fig.subplots(rows, cols, squeeze=False).flat)
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    fig.suptitle(suptitle, fontsize=13)
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6))
        ax.grid(alpha=0.25)
    return fig, axes[:n_panels]


def _title(ax: Any, name: str, detail: str) -> None:
    ax.set_title(f"{name}\n{detail}", fontsize=11)


def _empty(ax: Any, panel: Panel) -> bool:
    if len(panel.scores):
        return False
    _title(ax, panel.name, "no scored pairs")
    ax.set_xticks([])
    ax.set_yticks([])
    return True


def _alpha(n: int) -> float:
    return 0.6 if n < 300 else 0.35


def _legend(ax: Any, headroom: bool = False) -> None:
    """A legend with opaque markers; with ``headroom`` the y axis grows so it sits above the bars."""
    if headroom:
        ax.set_ylim(top=ax.get_ylim()[1] * 1.3)
    for handle in ax.legend(fontsize=9, loc="upper right" if headroom else "best").legend_handles:
        handle.set_alpha(1)


def _limit(set_lim: Any, values: np.ndarray) -> int:
    """Limit a scatter axis to the central range when outliers stretch it; returns the points left out."""
    lo, hi, outside = _view(values)
    if outside:
        set_lim(lo, hi)
    return outside


def score_histograms(panels: Sequence[Panel], model: str, path: Path) -> None:
    """Overlaid histograms of the chosen and the rejected answers' scores, dashed lines at their means."""
    fig, axes = _figure(len(panels), f"{model}: scores of chosen vs rejected answers")
    for ax, p in zip(axes, panels, strict=True):
        if _empty(ax, p):
            continue
        lo, hi, outside = _view(p.scores.ravel())
        edges = _edges(lo, hi, p.scores.size)
        for column, name, color in ((0, "chosen", CHOSEN), (1, "rejected", REJECTED)):
            values = p.scores[:, column]
            label = f"{name} (mean {values.mean():+.3g})"
            ax.hist(np.clip(values, lo, hi), bins=edges, color=color, alpha=0.45, label=label)
            ax.hist(np.clip(values, lo, hi), bins=edges, color=color, histtype="step", linewidth=1.4)
            ax.axvline(values.mean(), color=color, linestyle="--", linewidth=1.5)
        _title(ax, p.name, f"{len(p.scores)} pairs, dashed lines at the means")
        ax.set_xlabel(_outside("reward score", outside, "counted in the edge bins"))
        ax.set_ylabel("answers")
        _legend(ax, headroom=True)
    _save(fig, path)


def margin_histograms(panels: Sequence[Panel], model: str, path: Path) -> None:
    """Histograms of the margins (chosen - rejected): right of zero the RM agrees with the label."""
    fig, axes = _figure(len(panels), f"{model}: margins, score(chosen) − score(rejected)")
    for ax, p in zip(axes, panels, strict=True):
        if _empty(ax, p):
            continue
        margins = p.scores[:, 0] - p.scores[:, 1]
        lo, hi, outside = _view(margins)
        edges = _edges(lo, hi, len(margins), anchor=0.0)
        shown = np.clip(margins, edges[0], edges[-1])
        right = margins > 0
        ax.hist(
            shown[right], bins=edges, color=AGREE, alpha=0.75, label=f"> 0: RM agrees ({right.mean():.1%})"
        )
        ax.hist(
            shown[~right],
            bins=edges,
            color=DISAGREE,
            alpha=0.75,
            label=f"≤ 0: RM disagrees ({(~right).mean():.1%})",
        )
        if edges[0] <= 0 <= edges[-1]:
            ax.axvline(0, color="black", linewidth=1)
        _title(ax, p.name, f"{len(margins)} pairs, mean margin {margins.mean():+.3g}")
        ax.set_xlabel(_outside("margin", outside, "counted in the edge bins"))
        ax.set_ylabel("pairs")
        _legend(ax, headroom=True)
    _save(fig, path)


def length_scatter(panels: Sequence[Panel], model: str, path: Path, *, unit: str = "characters") -> None:
    """Score against response length for every chosen and rejected answer (log length axis for wide ranges)."""
    fig, axes = _figure(len(panels), f"{model}: score vs response length")
    for ax, p in zip(axes, panels, strict=True):
        if _empty(ax, p):
            continue
        alpha = _alpha(len(p.scores))
        for column, name, color, marker in ((0, "chosen", CHOSEN, "o"), (1, "rejected", REJECTED, "^")):
            x, y = p.lengths[:, column], p.scores[:, column]
            ax.scatter(x, y, s=14, alpha=alpha, color=color, marker=marker, label=name)
        lengths = p.lengths.ravel()
        if lengths.min() > 0 and lengths.max() / lengths.min() > 20:
            ax.set_xscale("log")
            # plain numbers at powers of ten (and 2x, 5x over a short range); unlabelled minor ticks
            decades = np.log10(lengths.max() / lengths.min())
            ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5) if decades <= 2.5 else (1,)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        outside = _limit(ax.set_ylim, p.scores.ravel())
        r, rho = p.metrics["length_pearson"], p.metrics["length_spearman"]
        corr = "correlation undefined" if r is None else f"Pearson r = {r:+.2f}, Spearman ρ = {rho:+.2f}"
        _title(ax, p.name, corr)
        ax.set_xlabel(f"response length ({unit})")
        ax.set_ylabel(_outside("reward score", outside, "off the axis"))
        _legend(ax)
    _save(fig, path)


def margin_scatter(
    groups: Sequence[tuple[str, np.ndarray, np.ndarray]], model_a: str, model_b: str, path: Path
) -> None:
    """One point per pair: model A's margin against model B's, coloured by data set.

    Top right: both RMs agree with the label; bottom left: both disagree; the other quadrants: they differ.
    """
    fig = Figure(figsize=(6.8, 6.0), layout="constrained")
    ax = fig.subplots()
    ax.grid(alpha=0.25)
    a_all = np.concatenate([a for _, a, _ in groups]) if groups else np.zeros(0)
    b_all = np.concatenate([b for _, _, b in groups]) if groups else np.zeros(0)
    xlabel, ylabel = (f"margin of {m}  (> 0: agrees with the label)" for m in (model_a, model_b))
    title = f"Margins: {model_a} vs {model_b}"
    if len(a_all):
        alpha = _alpha(len(a_all))
        for i, (name, a, b) in enumerate(groups):
            ax.scatter(a, b, s=16, alpha=alpha, color=f"C{i}", label=f"{name} ({len(a)} pairs)")
        x_out, y_out = _limit(ax.set_xlim, a_all), _limit(ax.set_ylim, b_all)
        xlabel, ylabel = _outside(xlabel, x_out, "off the axis"), _outside(ylabel, y_out, "off the axis")
        same = float((np.sign(a_all) == np.sign(b_all)).mean())
        both = float(((a_all > 0) & (b_all > 0)).mean())
        r = pearson(a_all, b_all)
        title += f"\nsame sign on {same:.1%} of pairs, both right on {both:.1%}"
        title += "" if r is None else f", Pearson r = {r:+.2f}"
        _legend(ax)
    else:
        title += "\nno scored pairs"
    ax.axhline(0, color="black", linewidth=1)
    ax.axvline(0, color="black", linewidth=1)
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _save(fig, path)


def subset_bars(models: dict[str, dict[str, Any]], title: str, out: Path) -> str:
    """A benchmark's subset scores with their 95% intervals, a bar per model in each subset."""
    names = list(dict.fromkeys(n for m in models.values() for n in m["subsets"]))
    fig = Figure(figsize=(max(PANEL[0], 0.9 * len(names) * max(1, len(models)) + 1.5), PANEL[1]))
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(models))
    for k, (label, m) in enumerate(models.items()):
        x = np.arange(len(names)) + k * width
        score = [100 * (m["subsets"].get(n, {}).get("score") or 0.0) for n in names]
        low = [100 * ((m["subsets"].get(n, {}).get("score_ci") or [0, 0])[0]) for n in names]
        high = [100 * ((m["subsets"].get(n, {}).get("score_ci") or [0, 0])[1]) for n in names]
        err = np.clip([np.subtract(score, low), np.subtract(high, score)], 0, None)
        ax.bar(x, score, width, yerr=err, capsize=3, label=label)
    ax.set_xticks(np.arange(len(names)) + width * (len(models) - 1) / 2, names, rotation=30, ha="right")
    ax.set_ylabel("score (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{title}: subsets with 95% intervals")
    if len(models) > 1:
        ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return save_in(fig, out, "suite_subsets")
