"""Gradients on whichever backend Keras runs: the one thing ``keras.ops`` leaves to the backends.

:func:`value_and_grad` takes a function of arrays and returns its value and gradient, using
``tf.GradientTape`` (through :mod:`bigmodel_utils.backend.tensorflow_only`) or ``jax.value_and_grad``, as
the backend dictates; :func:`per_example_gradients` takes one gradient per example (DP-SGD, chapter 9).
:func:`enable_float64` switches JAX to 64-bit arrays, which it leaves off by default, so float64
comparisons mean the same on every backend.
Used in chapter 3 and in the tests that check the from-scratch code against Keras.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np

from bigmodel_utils import backend as backend_seam


def value_and_grad(function: Callable, arguments):
    """``(value, gradient)`` of the scalar ``function(arguments)`` with respect to ``arguments``.

    ``arguments`` is an array or a nested list/tuple/dict of arrays (NumPy, or the backend's
    tensors); ``function`` takes the same structure of backend tensors. The value comes back as a
    float and the gradient as NumPy arrays in the structure of ``arguments``.

    >>> value_and_grad(lambda w: keras.ops.sum(w ** 2), np.array([1.0, -2.0]))
    (5.0, array([ 2., -4.]))
    """
    if backend_seam.name() == "tensorflow":
        from bigmodel_utils.backend import tensorflow_only  # a dispatch point to TensorFlow (see .importlinter)

        value, grads = tensorflow_only.value_and_grad(function, arguments)
    else:
        import jax

        value, grads = jax.value_and_grad(function)(keras.tree.map_structure(np.asarray, arguments))
    return float(keras.ops.convert_to_numpy(value)), keras.tree.map_structure(keras.ops.convert_to_numpy, grads)


def enable_float64() -> bool:
    """Let float64 arrays stay float64: JAX turns them into float32 unless ``jax_enable_x64`` is on.

    Call it before the first JAX array is made (in a notebook: the setup cell). A no-op on TensorFlow
    which keeps float64 anyway. Returns True when the backend now computes in float64.
    """
    if keras.backend.backend() == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
        return bool(jax.config.jax_enable_x64)
    return True


def per_example_gradients(model: keras.Model, x, y, loss_fn) -> list:
    """Gradients of each example's loss ``loss_fn(y, model(x))`` with respect to ``model.trainable_variables``:
    one tensor per variable, of shape (batch, *variable.shape). TensorFlow vectorises the loop over examples
    with ``tf.vectorized_map``, JAX with ``jax.vmap``. The model must not mix examples inside a batch (no
    batch normalisation in training mode). Used by DP-SGD (chapter 9)."""
    if backend_seam.name() == "tensorflow":
        from bigmodel_utils.backend import tensorflow_only  # a dispatch point to TensorFlow (see .importlinter)

        return tensorflow_only.per_example_gradients(model, x, y, loss_fn)
    import jax

    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]

    def example_loss(weights, xi, yi):
        predictions, _ = model.stateless_call(weights, non_trainable, xi[None], training=True)
        return keras.ops.sum(loss_fn(yi[None], predictions))

    return list(jax.vmap(jax.grad(example_loss), in_axes=(None, 0, 0))(trainable, x, y))
