"""A model's forward pass compiled by the backend's own compiler, for code that calls it many times.

* :func:`jit_function`: TensorFlow's ``tf.function`` with XLA (through
  :func:`bigmodel_utils.backend.tensorflow_only.compile_function`), ``jax.jit`` under JAX, eager without
  gradients under PyTorch. Calling it costs a few times less per call than ``predict_on_batch``, which
  matters for the one-token steps of generation.
* :func:`compiled`: :func:`jit_function` of a wrapper around a model, made once and kept on the model.
* :func:`default_jit_compile`: the backend's default for ``Model.compile(jit_compile=...)``.

Used by chapter 6's generation (:mod:`bigmodel_utils.gpt`) and by chapter 7's server.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras


def jit_function(wrapper: keras.Model) -> Callable[[Sequence], list]:
    """``wrapper``'s inference-mode forward pass, compiled: a function from a list of arrays (the
    wrapper's inputs) to a list of the backend's tensors (its outputs), so that a KV cache stays on
    the device between calls.

    ``wrapper`` is a built ``keras.Model`` that takes a list of arrays and adds no variables of its
    own (it calls a model it holds). Under JAX the current weights are passed at every call, so a
    model trained further is never stale.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        from bigmodel_utils.backend import tensorflow_only  # a dispatch point to TensorFlow (see .importlinter)

        function = tensorflow_only.compile_function(lambda x: wrapper(x, training=False), jit_compile=True)
    elif backend == "jax":
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
    else:
        import torch

        def function(inputs):
            with torch.no_grad():
                return wrapper([keras.ops.convert_to_tensor(x) for x in inputs])

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


def default_jit_compile() -> bool:
    """The backend's default for XLA in ``Model.compile``: on under TensorFlow and JAX, off under PyTorch,
    where ``torch.compile`` breaks Keras's graph into dozens of pieces and runs slower than eager
    (``benchmarks/README.md``)."""
    return keras.backend.backend() != "torch"
