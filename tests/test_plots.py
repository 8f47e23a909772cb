"""bigmodel_utils.plots: one theme, labelled figures."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from bigmodel_utils import plots  # noqa: E402


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
