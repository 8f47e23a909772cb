"""The diagram primitives draw what they are asked and refuse what cannot be drawn."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from bigmodel_utils import diagrams  # noqa: E402


def test_box_returns_its_centre_and_adds_a_patch():
    fig, ax = diagrams.canvas(4, 2, "A box")
    centre = diagrams.box(ax, 1, 0.5, 2, 1, "hello")
    assert centre == (2.0, 1.0)
    assert len(ax.patches) == 1 and ax.texts[0].get_text() == "hello"
    diagrams.arrow(ax, (0, 0), (1, 1), "to")
    assert len(ax.patches) == 2


def test_bad_sizes_and_missing_titles_are_refused():
    fig, ax = diagrams.canvas(4, 2, "A box")
    with pytest.raises(ValueError, match="width and height must be positive"):
        diagrams.box(ax, 0, 0, 0, 1, "x")
    with pytest.raises(ValueError, match="title"):
        diagrams.canvas(4, 2, "")
