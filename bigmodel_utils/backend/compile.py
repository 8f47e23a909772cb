"""A model's forward pass compiled by the backend's own compiler, for code that calls it many times.

* :func:`jit_function`: TensorFlow's ``tf.function`` with XLA (through
  :func:`bigmodel_utils.backend.tensorflow_only.compile_function`) or ``jax.jit``. Calling it costs a few
  times less per call than ``predict_on_batch``, which matters for the one-token steps of generation.
* :func:`compiled`: :func:`jit_function` of a wrapper around a model, made once and kept on the model.
* :func:`predictor`: a model's forward pass from a NumPy batch to NumPy, compiled (chapter 7 times it and
  serves the CNN with it).
* :func:`graph_function`: a Python function of tensors traced into a graph under TensorFlow (DP-SGD's step).
* :func:`default_jit_compile`: the backend's default for ``Model.compile(jit_compile=...)``.

Used by chapter 6's generation (:mod:`bigmodel_utils.gpt`), chapter 7's export and server, chapter 9's DP-SGD.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import numpy as np

from bigmodel_utils import backend as backend_seam


def jit_function(wrapper: keras.Model) -> Callable[[Sequence], list]:
    """``wrapper``'s inference-mode forward pass, compiled: a function from a list of arrays (the
    wrapper's inputs) to a list of the backend's tensors (its outputs), so that a KV cache stays on
    the device between calls.

    ``wrapper`` is a built ``keras.Model`` that takes a list of arrays and adds no variables of its
    own (it calls a model it holds). Under JAX the current weights are passed at every call, so a
    model trained further is never stale.
    """
    if backend_seam.name() == "tensorflow":
        from bigmodel_utils.backend import tensorflow_only  # a dispatch point to TensorFlow (see .importlinter)

        function = tensorflow_only.compile_function(lambda x: wrapper(x, training=False), jit_compile=True)
    else:
        import jax

        # the wrapper adds no variables of its own and its model is built, so it is
        # built too; stateless_call refuses an unbuilt model
        wrapper.built = True

        def stateless(trainable, non_trainable, inputs):
            return wrapper.stateless_call(trainable, non_trainable, inputs)[0]

        compiled_call = jax.jit(stateless)

        def function(inputs):
            trainable = [v.value for v in wrapper.trainable_variables]
            non_trainable = [v.value for v in wrapper.non_trainable_variables]
            return compiled_call(trainable, non_trainable, inputs)

    def run(inputs):
        outputs = function(list(inputs))
        return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]

    return run


def compiled(model: keras.Model, wrapper_class: type[keras.Model]) -> Callable[[Sequence], list]:
    """:func:`jit_function` of ``wrapper_class(model)``, made on the first call and kept on ``model``
    (as the attribute ``jit_<wrapper class name in lower case>``) for the next ones."""
    attribute = f"jit_{wrapper_class.__name__.lower()}"
    function = getattr(model, attribute, None)
    if function is None:
        function = jit_function(wrapper_class(model))
        setattr(model, attribute, function)  # a plain function: Keras tracks it neither as a layer nor a weight
    return function


def predictor(model: keras.Model, jit_compile: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    """``model``'s inference-mode forward pass from a NumPy batch to NumPy, compiled by the backend's compiler.

    TensorFlow: ``tf.function``, with XLA when ``jit_compile`` (off by default: for chapter 4's CNN on two CPU
    cores XLA was slightly faster at batch 1 but twice as slow at batch 256); JAX: ``jax.jit`` of the stateless
    call (always XLA), with the current weights passed at every call. Each new batch shape compiles once.
    """
    if backend_seam.name() == "tensorflow":
        from bigmodel_utils.backend import tensorflow_only  # a dispatch point to TensorFlow (see .importlinter)

        return tensorflow_only.compile_numpy_function(lambda x: model(x, training=False), jit_compile)
    import jax

    compiled_call = jax.jit(lambda trainable, non_trainable, x: model.stateless_call(
        trainable, non_trainable, x, training=False)[0])

    def predict(x: np.ndarray) -> np.ndarray:
        outputs = compiled_call([v.value for v in model.trainable_variables],
                                [v.value for v in model.non_trainable_variables], np.asarray(x, dtype="float32"))
        return np.asarray(outputs)

    return predict


def graph_function(function: Callable) -> Callable:
    """Under TensorFlow, ``function`` (of tensors) traced once into a graph by ``tf.function`` without XLA, which
    runs a loop of small tensor operations many times faster than eager; under JAX, ``function`` unchanged."""
    if backend_seam.name() == "tensorflow":
        from bigmodel_utils.backend import tensorflow_only  # a dispatch point to TensorFlow (see .importlinter)

        return tensorflow_only.compile_function(function)
    return function


def default_jit_compile() -> bool:
    """The backend's default for XLA in ``Model.compile``: on under TensorFlow and JAX; off under PyTorch, which
    only ``benchmarks/lm_throughput.py`` runs and where ``torch.compile`` breaks Keras's graph into dozens of
    pieces and runs slower than eager (``benchmarks/README.md``)."""
    return keras.backend.backend() != "torch"
