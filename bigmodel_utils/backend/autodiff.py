"""Gradients on whichever backend Keras runs: the one thing ``keras.ops`` leaves to the backends.

:func:`value_and_grad` takes a function of arrays and returns its value and gradient, using
``tf.GradientTape`` (through :mod:`bigmodel_utils.backend.tensorflow_only`), ``jax.value_and_grad`` or
``torch.autograd`` as the backend dictates. :func:`enable_float64` switches JAX to 64-bit arrays,
which it leaves off by default, so float64 comparisons mean the same on every backend.
Used in chapter 3 and in the tests that check the from-scratch code against Keras.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np

SUPPORTED_BACKENDS = ("tensorflow", "jax", "torch")


def value_and_grad(function: Callable, arguments):
    """``(value, gradient)`` of the scalar ``function(arguments)`` with respect to ``arguments``.

    ``arguments`` is an array or a nested list/tuple/dict of arrays (NumPy, or the backend's
    tensors); ``function`` takes the same structure of backend tensors. The value comes back as a
    float and the gradient as NumPy arrays in the structure of ``arguments``.

    >>> value_and_grad(lambda w: keras.ops.sum(w ** 2), np.array([1.0, -2.0]))
    (5.0, array([ 2., -4.]))
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        from bigmodel_utils.backend import tensorflow_only  # a dispatch point to TensorFlow (see .importlinter)

        value, grads = tensorflow_only.value_and_grad(function, arguments)
    elif backend == "jax":
        import jax

        value, grads = jax.value_and_grad(function)(keras.tree.map_structure(np.asarray, arguments))
    elif backend == "torch":
        import torch

        tensors = keras.tree.map_structure(lambda a: torch.tensor(np.asarray(a), requires_grad=True), arguments)
        value = function(tensors)
        flat = torch.autograd.grad(value, keras.tree.flatten(tensors))
        grads = keras.tree.pack_sequence_as(tensors, list(flat))
    else:
        raise NotImplementedError(f"value_and_grad supports KERAS_BACKEND in {SUPPORTED_BACKENDS}, got {backend!r}")
    return float(keras.ops.convert_to_numpy(value)), keras.tree.map_structure(keras.ops.convert_to_numpy, grads)


def enable_float64() -> bool:
    """Let float64 arrays stay float64: JAX turns them into float32 unless ``jax_enable_x64`` is on.

    Call it before the first JAX array is made (in a notebook: the setup cell). A no-op on TensorFlow
    and PyTorch, which keep float64 anyway. Returns True when the backend now computes in float64.
    """
    if keras.backend.backend() == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
        return bool(jax.config.jax_enable_x64)
    return True
