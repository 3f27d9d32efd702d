"""Evaluation plots as PNG files (matplotlib, Agg backend: no display needed). Arrays in, one file out.

What to use when:
- `training_curves(histories, path)`: training and validation loss per epoch of every network, one panel per
  ensemble (method, head, variation), one colour per member.
- `calibration_curves(curves, path)`: reliability curves (mean predicted P(y=1|x) against observed fraction).
- `roc_curves(curves, path)`: ROC curves with their AUC in the legend.
- `closure_scatter(panels, path)`: learned against exact log r, one panel per theta, the diagonal and the RMS.

Every function takes plain arrays and dicts (see each docstring), writes one PNG and closes its figure, so a
report over hundreds of networks does not accumulate memory. Panels are laid out on a grid of at most
`MAX_PANELS`; more groups than that are merged into the last panel's title as "+N more" (the numbers are in
metrics.json).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MAX_PANELS = 24
_SCATTER_POINTS = 4000  # points drawn per panel (a random subset; RMS uses all)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _grid(n: int, width: float = 3.6, height: float = 3.0) -> tuple[Any, list[Any]]:
    plt = _pyplot()
    n = max(1, min(n, MAX_PANELS))
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _save(fig: Any, path: Path | str) -> None:
    """Fixed margins in inches (tight_layout costs seconds per figure), then PNG."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=0.75 / width, right=1 - 0.2 / width, bottom=0.55 / height, top=1 - 0.75 / height,
                        wspace=0.35, hspace=0.6)
    fig.savefig(path, dpi=80, format="png")
    _pyplot().close(fig)


def _empty(path: Path | str, message: str) -> None:
    fig, (ax,) = _grid(1)
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    ax.set_axis_off()
    _save(fig, path)


def training_curves(histories: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]], path: Path | str) -> None:
    """histories: {panel title (an ensemble): {network id: [{"epoch", "train_loss", "val_loss"}, ...]}}."""
    if not histories:
        _empty(path, "no training history found")
        return
    plt = _pyplot()
    titles = list(histories)
    fig, axes = _grid(len(titles))
    for i, (ax, title) in enumerate(zip(axes, titles, strict=False)):
        colours = plt.cm.tab10.colors
        for j, (network, rows) in enumerate(sorted(histories[title].items())):
            epochs = [r.get("epoch", k) for k, r in enumerate(rows)]
            colour = colours[j % len(colours)]
            for key, style in (("train_loss", "--"), ("val_loss", "-")):
                values = [r.get(key, np.nan) for r in rows]
                ax.plot(epochs, values, style, color=colour, lw=1.2,
                        label=f"{network.rsplit('-', 1)[-1]} {key.split('_')[0]}")
        more = len(titles) - len(axes)
        ax.set_title(title + (f" (+{more} more)" if i == len(axes) - 1 and more > 0 else ""), fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.legend(fontsize=6, ncol=2)
    _save(fig, path)


@dataclass(frozen=True)
class Curve:
    """One labelled curve: x, y (and a number shown in the legend, e.g. an AUC or a calibration error)."""

    label: str
    x: np.ndarray
    y: np.ndarray
    figure: float = float("nan")


def _curves(groups: Mapping[str, Sequence[Curve]], path: Path | str, *, xlabel: str, ylabel: str, number: str,
            diagonal: bool = True, marker: str = "") -> None:
    if not groups:
        _empty(path, "nothing to show")
        return
    titles = list(groups)
    fig, axes = _grid(len(titles))
    for ax, title in zip(axes, titles, strict=False):
        if diagonal:
            ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls=":")
        for c in groups[title]:
            ax.plot(c.x, c.y, marker=marker, ms=3, lw=1.2, label=f"{c.label} ({number} {c.figure:.3f})")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=6)
    _save(fig, path)


def calibration_curves(groups: Mapping[str, Sequence[Curve]], path: Path | str) -> None:
    """groups: {panel title (a method): [Curve(label, mean predicted, observed fraction, calibration error)]}."""
    _curves(groups, path, xlabel="predicted P(y=1|x) = 1/(1+r)", ylabel="observed fraction y=1", number="ECE",
            marker="o")


def roc_curves(groups: Mapping[str, Sequence[Curve]], path: Path | str) -> None:
    """groups: {panel title (a method): [Curve(label, false positive rate, true positive rate, AUC)]}."""
    _curves(groups, path, xlabel="false positive rate (theta1 sample)", ylabel="true positive rate (theta0 sample)",
            number="AUC")


@dataclass(frozen=True)
class ScatterPanel:
    """Learned against exact log r at one theta: `title` names the theta, `rms` is over all points."""

    title: str
    exact: np.ndarray
    learned: np.ndarray
    rms: float


def closure_scatter(panels: Sequence[ScatterPanel], path: Path | str, *, suptitle: str = "",
                    seed: int = 0) -> None:
    """Scatter of learned against exact log r per panel, the diagonal, and the RMS (a random subset of
    `_SCATTER_POINTS` points is drawn per panel, reproducible by seed)."""
    if not panels:
        _empty(path, "no exact likelihood: closure not available")
        return
    fig, axes = _grid(len(panels), width=3.2, height=3.2)
    rng = np.random.default_rng(seed)
    for ax, p in zip(axes, panels, strict=False):
        ok = np.flatnonzero(np.isfinite(p.exact) & np.isfinite(p.learned))
        if ok.size > _SCATTER_POINTS:
            ok = np.sort(rng.choice(ok, _SCATTER_POINTS, replace=False))
        e, lr = p.exact[ok], p.learned[ok]
        if ok.size:
            lo, hi = float(min(e.min(), lr.min())), float(max(e.max(), lr.max()))
            ax.plot([lo, hi], [lo, hi], color="0.4", lw=0.8, ls="--")
        ax.scatter(e, lr, s=2, alpha=0.4, lw=0)
        ax.set_title(f"{p.title}\nRMS {p.rms:.4f}", fontsize=8)
        ax.set_xlabel("exact log r")
        ax.set_ylabel("learned log r")
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    _save(fig, path)
