"""The diagram primitives draw what they are asked and refuse what cannot be drawn."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from bigmodel_utils.book import diagrams  # noqa: E402


def test_box_returns_its_centre_and_adds_a_patch():
    fig, ax = diagrams.canvas(4, 2, "A box")
    centre = diagrams.box(ax, 1, 0.5, 2, 1, "hello")
    assert centre == (2.0, 1.0)
    assert len(ax.patches) == 1 and ax.texts[0].get_text() == "hello"
    diagrams.arrow(ax, (0, 0), (1, 1), "to")
    assert len(ax.patches) == 2


def test_bad_sizes_and_missing_titles_are_refused():
    fig, ax = diagrams.canvas(4, 2, "A box")
    with pytest.raises(ValueError, match="width must be a positive number, got 0"):
        diagrams.box(ax, 0, 0, 0, 1, "x")
    with pytest.raises(ValueError, match="height must be a positive number, got -1"):
        diagrams.box(ax, 0, 0, 1, -1, "x")
    with pytest.raises(ValueError, match="title"):
        diagrams.canvas(4, 2, "")


# ---------------------------------------------------------------------------
# The concept diagrams of chapters 3, 4, 5 and 9
# ---------------------------------------------------------------------------


def _texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_cnn_comparison_labels_the_numbers_it_is_given():
    fig = diagrams.draw_cnn_comparison(44_401_226, 23_890, 0.99778, width=8)
    texts = _texts(fig)
    assert "classic: 44,401,226 parameters" in texts
    assert "improved (width 8): 23,890 parameters" in texts
    assert any("99.8% of all parameters" in t for t in texts)
    assert any("Conv2D 32, 3x3 + BatchNorm" in t for t in texts)  # 4 x width in the last stage
    assert fig.axes[0].get_title()
    with pytest.raises(ValueError, match=r"dense_share must be a finite number \(above 0 and below 1\), got 99.8"):
        diagrams.draw_cnn_comparison(1, 1, 99.8)


def test_hyperband_diagram_has_one_box_per_round_of_the_schedule():
    from bigmodel_utils import tuning

    schedule = tuning.hyperband_schedule(9, 3)
    fig = diagrams.draw_hyperband_brackets(schedule.rounds)
    boxes = [t for t in _texts(fig) if " model" in t and "\nto " in t]
    assert len(boxes) == len(schedule.rounds) == 6  # brackets of 3, 2 and 1 rounds
    assert boxes[0] == f"{schedule.rounds[0]['trials']} models\nto 1 epoch"
    assert sum(t.startswith("bracket ") for t in _texts(fig)) == 3
    assert "1 model\nto 9 epochs" in boxes  # the last round of the most aggressive bracket
    with pytest.raises(ValueError, match="at least one round"):
        diagrams.draw_hyperband_brackets([])


@pytest.mark.parametrize("draw", [diagrams.draw_computation_graph, diagrams.draw_tf_data_pipeline,
                                  diagrams.draw_dp_sgd_step, diagrams.draw_grad_cam,
                                  diagrams.draw_parallelism])
def test_every_concept_diagram_has_a_title_and_stays_on_its_canvas(draw):
    fig = draw()
    ax = fig.axes[0]
    assert ax.get_title()
    x_max, y_max = ax.get_xlim()[1], ax.get_ylim()[1]
    for patch in ax.patches:
        extent = patch.get_extents().transformed(ax.transData.inverted())
        assert -0.05 <= extent.x0 and extent.x1 <= x_max + 0.05, (draw.__name__, extent)
        assert -0.05 <= extent.y0 and extent.y1 <= y_max + 0.05, (draw.__name__, extent)


def test_language_model_diagrams_draw_labelled_boxes():
    fig = diagrams.draw_attention_shapes()
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert any("(B, H, T, T)" in t for t in texts) and any("causal mask" in t for t in texts)
    fig = diagrams.draw_gpt_block(4)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "× 4\nblocks" in texts and sum("residual" in t for t in texts) == 2


def test_serving_diagram_names_the_batch_size_and_the_validation():
    fig = diagrams.draw_serving(32)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert any("up to 32" in t for t in texts) and any("4xx" in t for t in texts)
    assert fig.axes[0].get_title() == "A request's way through the service"


def test_parallelism_diagram_shows_three_ways_on_two_devices():
    fig = diagrams.draw_parallelism()
    texts = [t.get_text() for t in fig.axes[0].texts]
    for way in ("Data parallelism (ZeRO)", "Tensor parallelism", "Pipeline parallelism"):
        assert way in texts
    assert texts.count("device 0") == 3 and texts.count("device 1") == 3
    assert any("all-reduce the gradients" in t for t in texts)
