"""What runs only under JAX: XLA's own FLOP count of compiled programs.

The JAX twin of :mod:`bigmodel_utils.backend.tensorflow_only`. Every function here needs
``KERAS_BACKEND=jax`` and says so when it does not have it; nothing else in the package imports JAX
at module level.
"""

from __future__ import annotations


def xla_flop_count(model, layer_types=("Conv2D", "Dense")) -> dict[str, int]:
    """Count the forward FLOPs for one example of every convolution and matrix product in ``model``, as
    XLA's cost analysis reports them, independently of the formulas above.

    Each layer whose class is in ``layer_types`` has its core operation (``keras.ops.conv`` with the
    layer's kernel, strides and padding, or ``keras.ops.matmul``) compiled by ``jax.jit`` for a batch of
    one at the input shape the layer has in ``model``; the compiled program's ``cost_analysis()`` gives
    its FLOPs. Bias additions and activations are left out, as the formulas leave them out. For Dense
    layers and "valid" convolutions the count equals the formulas'; for "same" padding XLA counts only the
    kernel taps that land inside the image, so it finds fewer than the formulas, which count every tap as
    if the zero padding were multiplied too (a few percent for a 3x3 kernel on 28x28). Returns
    ``{layer_name: flops}`` in layer order. Needs the JAX backend; under TensorFlow,
    :func:`bigmodel_utils.backend.tensorflow_only.flop_count` does the same with TensorFlow's profiler.
    Used in chapter 2.
    """
    import keras

    if keras.backend.backend() != "jax":
        raise RuntimeError(f"xla_flop_count needs KERAS_BACKEND=jax, got {keras.backend.backend()!r}; "
                           "under TensorFlow use tensorflow_only.flop_count")
    import jax

    counts = {}
    for layer in model.layers:
        kind = type(layer).__name__
        if kind not in layer_types:
            continue
        shape = (1, *tuple(layer.input.shape[1:]))
        x = jax.ShapeDtypeStruct(shape, "float32")
        kernel = jax.ShapeDtypeStruct(tuple(layer.kernel.shape), "float32")
        if kind == "Conv2D":
            def core(x, k, layer=layer):
                return keras.ops.conv(x, k, strides=layer.strides, padding=layer.padding,
                                      dilation_rate=layer.dilation_rate)
        else:
            def core(x, k):
                return keras.ops.matmul(x, k)
        analysis = jax.jit(core).lower(x, kernel).compile().cost_analysis()
        if isinstance(analysis, (list, tuple)):  # older JAX: one dict per device
            analysis = analysis[0]
        counts[layer.name] = int(round(analysis["flops"]))
    return counts
