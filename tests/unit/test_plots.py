"""bigmodel_utils.book.plots: one theme, labelled figures."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from bigmodel_utils.book import plots  # noqa: E402


def test_theme_sets_the_book_defaults():
    plots.set_theme()
    assert matplotlib.rcParams["figure.dpi"] == 110
    assert matplotlib.rcParams["axes.spines.top"] is False
    with pytest.raises(ValueError, match="context"):
        plots.set_theme("poster")


def test_label_requires_title_and_axes_and_sets_log_scales():
    fig, ax = plt.subplots()
    plots.label(ax, "Compute", "year", "FLOP", ylog=True)
    assert ax.get_title() == "Compute" and ax.get_yscale() == "log" and ax.get_xscale() == "linear"
    with pytest.raises(ValueError, match="title"):
        plots.label(ax, "", "x", "y")
    plt.close(fig)


def test_learning_curves_plot_training_and_validation():
    history = {"loss": [1.0, 0.5], "val_loss": [1.1, 0.7], "accuracy": [0.5, 0.8]}
    fig = plots.learning_curves(history)
    assert len(fig.axes) == 2
    assert [len(line.get_xdata()) for line in fig.axes[0].lines] == [2, 2]
    with pytest.raises(ValueError, match="metrics"):
        plots.learning_curves({"auc": [0.5]})
    plt.close(fig)


def test_chinese_text_renders_with_a_cjk_font_and_no_missing_glyphs(recwarn):
    """`make test` installs Debian's fonts-noto-cjk: matplotlib must find it, and drawing Chinese next to
    Latin text must not warn of a missing glyph (the warning matplotlib gives before drawing a box)."""
    plots.set_theme(language="zh")
    font = plots.cjk_font()
    assert font is not None, "no CJK font found: install fonts-noto-cjk (make system-deps)"
    assert matplotlib.rcParams["font.family"] == ["sans-serif", font]
    fig, ax = plt.subplots()
    plots.label(ax, "注意力权重 (attention)", "位置", "损失 / nat")
    fig.canvas.draw()
    plt.close(fig)
    missing = [str(w.message) for w in recwarn if "missing from font" in str(w.message)]
    assert not missing, missing
    with pytest.raises(ValueError, match="language must be one of 'en', 'zh'; got 'fr'"):
        plots.set_theme(language="fr")


def test_without_a_cjk_font_the_chinese_theme_warns(monkeypatch):
    monkeypatch.setattr(plots, "CJK_FONTS", ("No Such Font SC",))
    with pytest.warns(UserWarning, match="fonts-noto-cjk"):
        plots.set_theme(language="zh")
    plots.set_theme()  # English: no warning, and the theme stays usable
