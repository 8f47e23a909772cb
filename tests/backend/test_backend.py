"""Tests for bigmodel_utils.backend: the seam answers the same on every supported backend and refuses others."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from bigmodel_utils import backend
from bigmodel_utils.backend import autodiff, compile


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5,))
    hidden = keras.layers.Dense(4, activation="tanh")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(hidden))


def test_the_seam_names_this_backend_and_refuses_one_it_does_not_support(monkeypatch):
    assert backend.name() == keras.backend.backend() in backend.SUPPORTED_BACKENDS
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    with pytest.raises(ValueError, match=r"^KERAS_BACKEND must be one of tensorflow, jax .*got 'torch'$"):
        backend.name()
    with pytest.raises(ValueError, match="got 'torch'"):
        autodiff.value_and_grad(lambda w: keras.ops.sum(w), np.ones(2))
    # the benchmark's Keras-on-PyTorch row trains without XLA, which torch does not have
    assert compile.default_jit_compile() is False


def test_predictor_and_graph_function_give_the_models_own_answers(model):
    x = np.random.default_rng(0).normal(size=(7, 5)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_allclose(compile.predictor(model)(x), expected, rtol=1e-5, atol=1e-6)
    doubled = compile.graph_function(lambda t: model(t, training=False) * 2.0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(doubled(x)), 2 * expected, rtol=1e-5, atol=1e-6)


def test_per_example_gradients_equal_one_gradient_per_example(model):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(4, 5)).astype("float32"), np.array([0, 2, 1, 2])
    loss = keras.losses.sparse_categorical_crossentropy
    per_example = [keras.ops.convert_to_numpy(g) for g in autodiff.per_example_gradients(model, x, y, loss)]
    assert [g.shape for g in per_example] == [(4, *v.shape) for v in model.trainable_variables]
    weights = [v.value for v in model.trainable_variables]
    for i in range(4):
        def example_loss(values, i=i):
            predictions = model.stateless_call(values, [], x[i:i + 1])[0]
            return keras.ops.sum(loss(y[i:i + 1], predictions))

        _, grads = autodiff.value_and_grad(example_loss, weights)
        for got, want in zip(per_example, grads):
            np.testing.assert_allclose(got[i], want, rtol=1e-4, atol=1e-6)
