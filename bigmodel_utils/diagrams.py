"""Concept diagrams drawn in code (matplotlib patches), so they render in the book and in Colab alike.

Each public ``draw_*`` function returns a matplotlib figure with a title; the chapter gives it alt
text and a caption. The two primitives below keep the diagrams in one visual language: rounded boxes
in the book's palette, joined by arrows.

Used in chapters 3 to 8.
"""

from __future__ import annotations

from matplotlib.patches import FancyArrowPatch, FancyBboxPatch


def box(ax, x: float, y: float, width: float, height: float, text: str, color: str = "#dbe9f6",
        fontsize: float = 9, **text_kwargs):
    """Draw a rounded box with centred ``text``; ``(x, y)`` is its lower-left corner, in axis units."""
    if width <= 0 or height <= 0:
        raise ValueError(f"width and height must be positive, got {width} and {height}")
    ax.add_patch(FancyBboxPatch((x, y), width, height, boxstyle="round,pad=0.02,rounding_size=0.08",
                                facecolor=color, edgecolor="0.3", linewidth=1.0))
    ax.text(x + width / 2, y + height / 2, text, ha="center", va="center", fontsize=fontsize, **text_kwargs)
    return x + width / 2, y + height / 2


def arrow(ax, start: tuple[float, float], end: tuple[float, float], text: str = "", color: str = "0.25",
          fontsize: float = 8):
    """Draw an arrow from ``start`` to ``end`` (axis units), with an optional label at its middle."""
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, color=color, linewidth=1.2))
    if text:
        ax.text((start[0] + end[0]) / 2, (start[1] + end[1]) / 2, text, ha="left", va="center",
                fontsize=fontsize, color=color)


def canvas(width: float, height: float, title: str, figsize: tuple[float, float] | None = None):
    """Return ``(fig, ax)``: an axis spanning ``[0, width] x [0, height]`` with no ticks, and a title."""
    import matplotlib.pyplot as plt

    if not title:
        raise ValueError("every diagram needs a title")
    fig, ax = plt.subplots(figsize=figsize or (width, height))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.axis("off")
    ax.set_title(title)
    return fig, ax
