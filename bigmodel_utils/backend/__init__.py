"""The backend seam: every branch on the Keras backend lives here.

The book's helpers run under TensorFlow and JAX (:data:`SUPPORTED_BACKENDS`); :func:`name` says which one
this process runs and refuses any other. :mod:`.tensorflow_only` is the one module that imports TensorFlow and
:mod:`.jax_only` its JAX twin; :mod:`.autodiff` takes gradients (whole-batch and per-example), :mod:`.compile`
compiles forward passes, :mod:`.devices` lists accelerators and :mod:`.speed` measures the machine. Code above
this layer calls these functions instead of asking which backend runs.
"""

from __future__ import annotations

SUPPORTED_BACKENDS = ("tensorflow", "jax")
"""The Keras backends the helpers are written and tested for (PyTorch runs only in benchmarks/)."""


def name() -> str:
    """The Keras backend of this process; a one-line ValueError if it is not one of :data:`SUPPORTED_BACKENDS`."""
    import keras

    backend = keras.backend.backend()
    if backend not in SUPPORTED_BACKENDS:
        raise ValueError(f"KERAS_BACKEND must be one of {', '.join(SUPPORTED_BACKENDS)} for the book's helpers, "
                         f"got {backend!r}")
    return backend
