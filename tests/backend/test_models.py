"""Tests for bigmodel_utils.cnn.models: parameter counts from first principles, shapes, dtypes, validation."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from bigmodel_utils.cnn import models, training


def conv_params(kernel: int, channels_in: int, filters: int) -> int:
    return (kernel * kernel * channels_in + 1) * filters


def classic_params_by_hand(size: int, channels: int, classes: int = 10) -> int:
    """The classic CNN's parameter count from the layer arithmetic, independently of Keras."""
    total, c_in = 0, channels
    for filters in (32, 64, 128):
        total += conv_params(3, c_in, filters)
        size = (size - 2) // 2  # 3x3 'valid' conv, then 2x2 pooling
        c_in = filters
    flat = size * size * c_in
    return total + (flat + 1) * 512 + (512 + 1) * classes


@pytest.mark.parametrize("shape", [(224, 224, 3), (28, 28, 1), (56, 56, 3)])
def test_classic_parameter_count_matches_layer_arithmetic(shape):
    model = models.build_classic_cnn(shape)
    assert model.count_params() == classic_params_by_hand(shape[0], shape[2])


def test_classic_224_has_44_million_parameters_mostly_in_one_layer():
    model = models.build_classic_cnn((224, 224, 3))
    assert model.count_params() == 44_401_226
    table = models.parameter_table(model)
    biggest = max(table, key=lambda row: row["parameters"])
    assert biggest["kind"] == "Dense" and biggest["output_shape"] == (512,)
    assert 0.997 < biggest["share"] < 0.999
    assert sum(row["share"] for row in table) == pytest.approx(1.0)


@pytest.mark.parametrize(("size", "filters", "head"), [(64, (16, 32), "flatten"), (96, (32, 64, 128), "gap"),
                                                      (224, (8,), "gap")])
def test_classic_layout_variants_match_the_formula_of_scaling(size, filters, head):
    from bigmodel_utils.calculators import footprint

    model = models.build_classic_cnn((size, size, 3), filters=filters, head=head)
    assert model.count_params() == footprint.cnn_costs(size, 3, filters=filters, head=head)["params"]


def test_classic_layout_refuses_bad_filters_and_heads():
    with pytest.raises(ValueError, match="filters must be a non-empty sequence of positive integers, got ()"):
        models.build_classic_cnn(filters=())
    with pytest.raises(ValueError, match="head must be one of 'flatten', 'gap'; got 'max'"):
        models.build_classic_cnn(head="max")


def test_classic_rejects_images_too_small_for_three_blocks():
    assert models.classic_min_image_size() == 22
    models.build_classic_cnn((22, 22, 1))
    with pytest.raises(ValueError, match="21x21 is too small.*22x22"):
        models.build_classic_cnn((21, 21, 1))


def test_improved_outputs_probabilities_for_a_batch():
    model = models.build_improved_cnn(width=8)
    x = np.random.default_rng(0).random((4, 28, 28, 1)).astype("float32")
    probabilities = keras.ops.convert_to_numpy(model(x, training=False))
    assert probabilities.shape == (4, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_improved_parameters_grow_about_quadratically_with_width():
    small, large = (models.build_improved_cnn(width=w, dense_units=0).count_params() for w in (8, 16))
    assert 3.5 < large / small < 4.1  # conv weights scale with width squared, biases and BN linearly


def test_improved_uses_batch_norm_global_pooling_and_dropout():
    kinds = {type(layer).__name__ for layer in models.build_improved_cnn(width=8).layers}
    assert {"BatchNormalization", "GlobalAveragePooling2D", "Dropout"} <= kinds
    assert "Flatten" not in kinds


def test_output_layer_stays_float32_under_mixed_precision():
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        for model in (models.build_improved_cnn(width=8), models.build_classic_cnn((28, 28, 1))):
            assert model.layers[1].compute_dtype == "float16"
            assert model.layers[1].variable_dtype == "float32"
            assert model.layers[-1].compute_dtype == "float32"
            assert model(np.zeros((1, 28, 28, 1), "float32")).dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy(previous)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width": 0}, "width must be a positive integer, got 0"),
        ({"dropout": 1.0}, r"dropout must be a finite number \(at least 0 and below 1\), got 1.0"),
        ({"dense_units": -1}, "dense_units must be a non-negative integer"),
        ({"num_classes": 1}, "num_classes must be an integer of at least 2, got 1"),
        ({"input_shape": (28, 28)}, "input_shape must be three positive integers"),
        ({"input_shape": (4, 4, 1)}, "4x4 is too small"),
    ],
)
def test_improved_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        models.build_improved_cnn(**kwargs)


def test_memory_estimate_counts_weights_optimizer_and_activations():
    model = models.build_classic_cnn((28, 28, 1))
    estimate = models.memory_estimate(model, batch_size=10)
    weights = model.count_params() * 4 / 2**20
    assert estimate["weights_mib"] == pytest.approx(weights)
    assert estimate["optimizer_mib"] == pytest.approx(2 * weights)
    outputs = sum(int(np.prod(layer.output.shape[1:])) for layer in model.layers)
    assert estimate["activations_mib"] == pytest.approx(outputs * 10 * 4 / 2**20)
    assert estimate["total_mib"] == pytest.approx(sum(v for k, v in estimate.items() if k != "total_mib"))
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        models.memory_estimate(model, 0)


def test_builders_and_training_helper_run_on_this_backend():
    """On whichever backend this leg of `make test` runs (TensorFlow, then JAX): build, feed, train one epoch."""
    x = np.random.default_rng(0).integers(0, 256, (64, 28, 28), dtype=np.uint8)
    y = np.arange(64) % 10
    model = training.compile_classifier(models.build_improved_cnn(width=4), 1e-3)
    run = training.train(model, training.make_pipeline(x, y, 16, shuffle=True), epochs=1, verbose=0)
    assert run.epochs_completed == 1 and np.isfinite(run.history["loss"][0])
    assert models.build_classic_cnn((224, 224, 3)).count_params() == 44_401_226
