"""Saliency, Grad-CAM and integrated gradients on a model trained to find a planted bright square."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from bigmodel_utils.cnn import models
from bigmodel_utils.techniques import explain

SIZE, SQUARE = 24, 5


def planted_squares(n, seed):
    """Dim noise images; label 1 images carry a bright SQUARE x SQUARE patch at a random place."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 0.3, size=(n, SIZE, SIZE, 1)).astype("float32")
    y = rng.integers(0, 2, size=n)
    corners = rng.integers(0, SIZE - SQUARE + 1, size=(n, 2))
    for image, label, (row, col) in zip(x, y, corners):
        if label == 1:
            image[row:row + SQUARE, col:col + SQUARE] = 1.0
    return x, y, corners


@pytest.fixture(scope="module")
def square_detector():
    """A tiny CNN trained for a few seconds to say whether an image contains the square."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((SIZE, SIZE, 1)),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="last_conv"),
        keras.layers.GlobalMaxPooling2D(),
        keras.layers.Dense(2, activation="softmax"),
    ])
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y, _ = planted_squares(600, seed=0)
    model.fit(x, y, epochs=5, batch_size=32, verbose=0)
    return model


def test_the_detector_learned_the_task(square_detector):
    x, y, _ = planted_squares(200, seed=1)
    accuracy = np.mean(np.argmax(square_detector.predict(x, verbose=0), axis=1) == y)
    assert accuracy > 0.95


def test_grad_cam_peaks_on_the_planted_square(square_detector):
    x, y, corners = planted_squares(60, seed=2)
    with_square = y == 1
    cams = explain.grad_cam(square_detector, x[with_square], class_index=1)
    assert cams.shape == (with_square.sum(), SIZE, SIZE)
    assert cams.min() >= 0.0 and np.allclose(cams.max(axis=(1, 2)), 1.0)
    for cam, (row, col) in zip(cams, corners[with_square]):
        peak_row, peak_col = np.unravel_index(np.argmax(cam), cam.shape)
        # within the square, give or take one pixel (the map is upsampled from 12x12)
        assert row - 1 <= peak_row <= row + SQUARE and col - 1 <= peak_col <= col + SQUARE
    assert explain.last_conv_layer(square_detector).name == "last_conv"


def test_scores_are_logits_that_reproduce_the_softmax(square_detector):
    x, _, _ = planted_squares(8, seed=3)
    logits = np.stack([explain.class_scores(square_detector, x, c) for c in (0, 1)], axis=1)
    probabilities = square_detector.predict(x, verbose=0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.ops.softmax(logits)), probabilities, atol=1e-5)


def test_saliency_is_the_gradient_magnitude(square_detector):
    x, _, _ = planted_squares(1, seed=4)
    # Break ties: a planted square is flat, and at a max-pooling tie a central difference sees half the
    # slope whichever pixel the backend's gradient picks (TensorFlow and JAX pick differently).
    x = x + np.random.default_rng(0).uniform(0, 1e-2, x.shape).astype(x.dtype)
    saliency = explain.saliency_map(square_detector, x, class_index=1)
    assert saliency.shape == (1, SIZE, SIZE)
    row, col = np.unravel_index(np.argmax(saliency[0]), saliency[0].shape)
    step = 1e-3
    plus, minus = x.copy(), x.copy()
    plus[0, row, col, 0] += step
    minus[0, row, col, 0] -= step
    finite_difference = (explain.class_scores(square_detector, plus, 1) - explain.class_scores(square_detector,
                                                                                               minus, 1)) / (2 * step)
    assert abs(finite_difference[0]) == pytest.approx(saliency[0, row, col], rel=0.05)


def test_integrated_gradients_are_complete(square_detector):
    x, _, _ = planted_squares(3, seed=5)
    attributions = explain.integrated_gradients(square_detector, x, class_index=1, steps=64)
    assert attributions.shape == x.shape
    difference = explain.class_scores(square_detector, x, 1) - explain.class_scores(square_detector, 0 * x, 1)
    np.testing.assert_allclose(attributions.reshape(3, -1).sum(axis=1), difference, rtol=0.02, atol=0.02)


def test_grad_cam_works_on_the_books_cnn():
    keras.utils.set_random_seed(0)
    model = models.build_improved_cnn(width=4, dense_units=16)
    images = np.random.default_rng(0).uniform(size=(2, 28, 28, 1)).astype("float32")
    cams = explain.grad_cam(model, images, class_index=[3, 7])
    assert cams.shape == (2, 28, 28) and 0.0 <= cams.min() and cams.max() <= 1.0
    assert explain.saliency_map(model, images, 3).shape == (2, 28, 28)


def test_a_model_without_softmax_is_explained_through_its_outputs():
    keras.utils.set_random_seed(1)
    linear_head = keras.Sequential([
        keras.Input((SIZE, SIZE, 1)),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3),
    ])
    x, _, _ = planted_squares(2, seed=6)
    np.testing.assert_allclose(explain.class_scores(linear_head, x, 2),
                               keras.ops.convert_to_numpy(linear_head(x))[:, 2], rtol=1e-5)
    assert explain.grad_cam(linear_head, x, 2).shape == (2, SIZE, SIZE)


def test_errors_name_the_problem(square_detector):
    dense_only = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    with pytest.raises(ValueError, match="has no convolutional layer"):
        explain.last_conv_layer(dense_only)
    with pytest.raises(ValueError, match="images must have shape"):
        explain.saliency_map(square_detector, np.zeros((SIZE, SIZE)), 1)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        explain.integrated_gradients(square_detector, np.zeros((1, SIZE, SIZE, 1)), 1, steps=0)
    with pytest.raises(ValueError, match="baseline must have the shape"):
        explain.integrated_gradients(square_detector, np.zeros((1, SIZE, SIZE, 1)), 1, baseline=np.zeros((3, 3)))
