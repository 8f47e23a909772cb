"""The book's single plot theme and small figure helpers.

Every chapter calls :func:`set_theme` once in its setup cell, so all figures
share fonts, colours and sizes. Used in every chapter.
"""

from __future__ import annotations

import matplotlib

PALETTE = "colorblind"
"""Seaborn palette used throughout: distinguishable with the common colour-vision deficiencies."""

EPOCH_CREDIT = "Data: Epoch AI, 'Notable AI Models' (CC BY 4.0)"


def set_theme(context: str = "notebook") -> None:
    """Apply the book's seaborn/matplotlib theme (white grid, colour-blind palette, 110 dpi)."""
    import seaborn as sns

    if context not in ("paper", "notebook", "talk"):
        raise ValueError(f"context must be paper, notebook or talk, got {context!r}")
    sns.set_theme(context=context, style="whitegrid", palette=PALETTE)
    matplotlib.rcParams.update(
        {
            "figure.figsize": (7.0, 4.2),
            "figure.dpi": 110,
            "savefig.dpi": 150,
            "savefig.bbox": "tight",
            "axes.titleweight": "bold",
            "axes.titlesize": "medium",
            "axes.spines.top": False,
            "axes.spines.right": False,
            "legend.frameon": False,
        }
    )


def label(ax, title: str, xlabel: str, ylabel: str, xlog: bool = False, ylog: bool = False):
    """Give an axis its title, axis labels (with units) and optional log scales; returns the axis."""
    if not title or not xlabel or not ylabel:
        raise ValueError("every figure needs a title and both axis labels")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if xlog:
        ax.set_xscale("log")
    if ylog:
        ax.set_yscale("log")
    return ax


def credit(fig, text: str = EPOCH_CREDIT) -> None:
    """Print a data credit line in small type under a figure (for example 'Data: Epoch AI')."""
    fig.text(0.99, -0.02, text, ha="right", va="top", fontsize=8, color="0.35")


def learning_curves(history: dict, metrics: tuple[str, ...] = ("loss", "accuracy"), title: str = ""):
    """Plot training and validation curves from a Keras ``History.history`` dict; returns the figure."""
    import matplotlib.pyplot as plt

    present = [m for m in metrics if m in history]
    if not present:
        raise ValueError(f"history has none of the metrics {metrics}; it has {sorted(history)}")
    fig, axes = plt.subplots(1, len(present), figsize=(5.0 * len(present), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], present):
        epochs = range(1, len(history[metric]) + 1)
        ax.plot(epochs, history[metric], marker="o", label="training")
        if f"val_{metric}" in history:
            ax.plot(epochs, history[f"val_{metric}"], marker="s", label="validation")
        label(ax, f"{title} {metric}".strip(), "epoch", metric)
        ax.legend()
    fig.tight_layout()
    return fig
