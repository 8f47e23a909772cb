"""The book's single plot theme and small figure helpers.

Every chapter calls :func:`set_theme` once in its setup cell, so all figures
share fonts, colours and sizes. Used in every chapter.
"""

from __future__ import annotations

import matplotlib

from bigmodel_utils.validation import check_choice

PALETTE = "colorblind"
"""Seaborn palette used throughout: distinguishable with the common colour-vision deficiencies."""

EPOCH_CREDIT = "Data: Epoch AI, 'Notable AI Models' (CC BY 4.0)"

CJK_FONTS = (
    "Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei",
    "Microsoft YaHei", "PingFang SC", "Heiti SC", "SimHei", "Noto Sans CJK JP",
)
"""Fonts with Chinese glyphs, in order of preference: Debian's fonts-noto-cjk first, then common system
fonts of Windows and macOS."""

LANGUAGES = ("en", "zh")


CJK_FILES = ("notosanscjk", "notosanssc", "sourcehansans", "wqy-", "msyh", "pingfang", "simhei")


def cjk_font() -> str | None:
    """The first installed font of :data:`CJK_FONTS`, or None.

    Matplotlib lists the system's fonts once and caches the list, so a font installed later (``apt-get
    install fonts-noto-cjk`` after a first plot) is missing from it: such files are found and added here.
    """
    from matplotlib import font_manager

    def first() -> str | None:
        installed = {font.name for font in font_manager.fontManager.ttflist}
        return next((name for name in CJK_FONTS if name in installed), None)

    if first() is None:
        for path in font_manager.findSystemFonts():
            if any(key in path.lower().rsplit("/", 1)[-1] for key in CJK_FILES):
                try:
                    font_manager.fontManager.addfont(path)
                except (OSError, RuntimeError, ValueError):
                    continue  # an unreadable font file is skipped, as matplotlib's own scan does
    return first()


def set_theme(context: str = "notebook", language: str | None = None) -> None:
    """Apply the book's seaborn/matplotlib theme (white grid, colour-blind palette, 110 dpi).

    Latin text uses the theme's sans-serif font; characters it lacks (Chinese) fall back to the first installed
    font of :data:`CJK_FONTS`, so Tang poems and Chinese labels render in either edition. ``language``
    (default: the ``BOOK_LANGUAGE`` environment variable, else ``"en"``) set to ``"zh"`` warns when no such
    font is installed, since Chinese labels would then show as empty boxes.
    """
    import os
    import warnings

    import seaborn as sns

    check_choice("context", context, ("paper", "notebook", "talk"))
    language = check_choice("language", language or os.environ.get("BOOK_LANGUAGE", "en"), LANGUAGES)
    sns.set_theme(context=context, style="whitegrid", palette=PALETTE)
    cjk = cjk_font()
    if cjk is not None:
        # Matplotlib falls back glyph by glyph along font.family (not within the sans-serif list).
        matplotlib.rcParams["font.family"] = ["sans-serif", cjk]
    elif language == "zh":
        warnings.warn(
            "no font with Chinese glyphs is installed, so Chinese text in figures shows as boxes: install "
            "one of " + ", ".join(CJK_FONTS[:3]) + " (Debian/Ubuntu: apt-get install fonts-noto-cjk)",
            stacklevel=2,
        )
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
