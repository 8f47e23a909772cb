"""Everything in the book that needs TensorFlow itself, in one module.

The rest of the package is backend-agnostic Keras 3 and imports no TensorFlow (an
import-linter contract in ``make lint`` enforces it; see ``.importlinter``). What lives
here has no equivalent in ``keras.ops``:

- ``tf.data`` input pipelines (:func:`make_tf_dataset`; they work under any Keras backend
  when TensorFlow is installed, which is why :func:`bigmodel_utils.cnn.training.make_pipeline`
  uses them whenever it can);
- splitting the CPU into logical devices for ``tf.distribute`` (:func:`split_cpu`);
- TensorFlow's own FLOP statistics (:func:`flop_count`, through the public profiler API);
- ``tf.GradientTape`` and ``tf.function`` helpers that the backend seam (:mod:`~bigmodel_utils.backend.autodiff`,
  :mod:`~bigmodel_utils.backend.compile`) calls when ``KERAS_BACKEND=tensorflow``;
- SavedModel loading and tf2onnx's missing ``Erfc`` conversion (chapter 7).

Importing this module imports TensorFlow; the other modules import it only inside a branch
taken when the backend is TensorFlow (or, for ``tf.data``, when TensorFlow is installed).
The JAX equivalents are named in each function's docstring.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from bigmodel_utils.validation import check_int


@contextmanager
def quiet() -> Iterator[None]:
    """Silence TensorFlow's Python log (deprecation notices, ``vectorized_map``'s loop notes) for a moment."""
    logger = logging.getLogger("tensorflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def version() -> str:
    """TensorFlow's version string."""
    return tf.__version__


# ---------------------------------------------------------------------------
# Devices
# ---------------------------------------------------------------------------


def accelerators() -> list[tuple[str, int, str, Any]]:
    """``(kind, index, name, compute_capability)`` of each GPU and TPU TensorFlow sees, GPUs first.

    The capability is as TensorFlow reports it (a pair for NVIDIA GPUs, else None);
    :func:`bigmodel_utils.backend.devices.accelerators` turns these into its ``Accelerator``.
    """
    found = []
    for index, gpu in enumerate(tf.config.list_physical_devices("GPU")):
        details = tf.config.experimental.get_device_details(gpu)
        found.append(("GPU", index, details.get("device_name", gpu.name), details.get("compute_capability")))
    found += [("TPU", index, "TPU", None) for index, _ in enumerate(tf.config.list_physical_devices("TPU"))]
    return found


def split_cpu(num_devices: int = 2) -> list[str]:
    """Split the physical CPU into ``num_devices`` logical TensorFlow devices and return their names.

    This lets ``tf.distribute.MirroredStrategy`` run with several replicas on a
    laptop. TensorFlow fixes its devices at its first operation, so call this
    before anything runs (in a notebook: in the setup cell). Calling it again
    with the same number is harmless. Used in chapter 4. The JAX equivalent is the
    ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` environment variable, set
    before JAX starts (:mod:`bigmodel_utils.techniques.parallel` does this in a subprocess).
    """
    num_devices = check_int("num_devices", num_devices, minimum=1, maximum=64)
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)
    except RuntimeError as error:
        names = [d.name for d in tf.config.list_logical_devices("CPU")]
        if len(names) == num_devices:
            return names
        raise RuntimeError(
            f"split_cpu({num_devices}) came too late: TensorFlow already runs with {len(names)} CPU device(s). "
            "Call it before the first TensorFlow operation (restart the kernel) or in a fresh process."
        ) from error
    return [d.name for d in tf.config.list_logical_devices("CPU")]


# ---------------------------------------------------------------------------
# tf.data
# ---------------------------------------------------------------------------


def make_tf_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    image_size: int | None = None,
    channels: int | None = None,
    shuffle: bool = False,
    seed: int = 0,
    cache: bool = True,
    augment=None,
    prefetch: bool = True,
):
    """Build a ``tf.data`` pipeline: cache raw uint8, shuffle, batch, scale/resize per batch, prefetch.

    The raw uint8 images are cached, not the resized floats: 60,000 images at
    224x224x3 in float32 would need 36 GB, while resizing a batch on the fly
    is cheap. ``augment`` (a Keras layer, or a ``keras.Sequential`` of them) runs in
    the pipeline's ``map``, outside the model, so it cannot switch XLA off for the
    model; it runs one batch at a time, so a seeded run draws the same flips and
    shifts every time. The layers are applied one by one: Keras's preprocessing
    layers run on TensorFlow inside ``tf.data`` whatever the Keras backend, but a
    ``Sequential`` around them would use the backend's own ops (JAX) on graph tensors.
    Returns a dataset of (float32 images (B, S, S, C), int labels (B,)). The arguments
    are those :func:`bigmodel_utils.cnn.training.make_pipeline` checked. Used in
    chapters 4, 5 and 9; under JAX and PyTorch without TensorFlow,
    :class:`bigmodel_utils.cnn.training.NumpyBatches` does the same in NumPy.
    """

    def preprocess(x, y):
        x = tf.cast(x, tf.float32) / 255.0
        if x.shape.rank == 3:
            x = x[..., None]
        if image_size is not None and tuple(x.shape[1:3]) != (image_size, image_size):
            x = tf.image.resize(x, (image_size, image_size))
        if channels is not None and x.shape[-1] != channels:
            x = tf.repeat(x, channels, axis=-1) if x.shape[-1] == 1 else tf.reduce_mean(x, -1, keepdims=True)
        return x, y

    stages = list(getattr(augment, "layers", [augment])) if augment is not None else []

    def augment_batch(x, y):
        for stage in stages:
            x = stage(x, training=True)
        return x, y

    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    if cache:
        ds = ds.cache()  # raw uint8: 60,000 Fashion-MNIST images take 47 MB
    if shuffle:
        ds = ds.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    if stages:
        # One batch at a time: the augmentation layers draw from a stateful seed generator, and
        # parallel calls would take its numbers in a different order on every run.
        ds = ds.map(augment_batch)
    return ds.prefetch(tf.data.AUTOTUNE) if prefetch else ds


# ---------------------------------------------------------------------------
# FLOPs
# ---------------------------------------------------------------------------


def flop_count(model, input_shape=None, op_types=("Conv2D", "MatMul")) -> dict[str, int]:
    """Count a model's forward FLOPs for one example with TensorFlow, independently of the formulas.

    Traces ``model`` into a TensorFlow graph for a batch of one and asks TensorFlow's
    profiler (the public ``tf.compat.v1.profiler`` API) for the FLOPs of every op whose
    type is in ``op_types``. Returns ``{op_name: flops}`` in graph order. Needs the
    TensorFlow backend. Used in chapter 2; under JAX, :func:`bigmodel_utils.backend.jax_only.xla_flop_count`
    asks XLA's cost analysis instead.
    """
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(f"flop_count needs KERAS_BACKEND=tensorflow, got {keras.backend.backend()!r}; "
                           "under JAX use jax_only.xla_flop_count")
    shape = tuple(model.inputs[0].shape[1:]) if input_shape is None else tuple(input_shape)
    traced = tf.function(lambda x: model(x, training=False), autograph=False)
    graph = traced.get_concrete_function(tf.TensorSpec((1, *shape), tf.float32)).graph
    builder = tf.compat.v1.profiler.ProfileOptionBuilder
    options = builder(builder.float_operation()).with_empty_output().build()
    with quiet():  # the v1 profiler announces its deprecation on every call
        profile = tf.compat.v1.profiler.profile(graph, cmd="scope", options=options)
    flops: dict[str, int] = {}

    def walk(node):
        for child in node.children:
            flops[child.name] = int(child.float_ops)
            walk(child)

    walk(profile)
    return {op.name: flops.get(op.name, 0) for op in graph.get_operations() if op.type in op_types}


# ---------------------------------------------------------------------------
# Compiled functions and gradients
# ---------------------------------------------------------------------------


def compile_function(function: Callable, jit_compile: bool = False, reduce_retracing: bool = True) -> Callable:
    """``tf.function(function)``, with XLA when ``jit_compile``. The JAX equivalent is ``jax.jit``."""
    return tf.function(function, jit_compile=bool(jit_compile), reduce_retracing=reduce_retracing)


def compile_numpy_function(function: Callable, jit_compile: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    """:func:`compile_function` of ``function``, taking and returning NumPy arrays."""
    compiled = compile_function(function, jit_compile)
    return lambda batch: compiled(tf.constant(batch)).numpy()


def value_and_grad(function: Callable, arguments):
    """``(function(arguments), gradient of it with respect to arguments)`` with ``tf.GradientTape``.

    ``arguments`` is an array or a nested list/tuple/dict of arrays; ``function`` returns a scalar.
    The gradient has the structure of ``arguments``. The JAX equivalent is ``jax.value_and_grad``;
    :func:`bigmodel_utils.backend.autodiff.value_and_grad` picks the one of the running backend.
    """
    tensors = keras.tree.map_structure(tf.convert_to_tensor, arguments)
    with tf.GradientTape() as tape:
        for tensor in keras.tree.flatten(tensors):
            tape.watch(tensor)
        value = function(tensors)
    return value, tape.gradient(value, tensors)


def per_example_gradients(model, x, y, loss_fn) -> list:
    """One gradient per example and trainable variable, vectorised with ``tf.vectorized_map``.

    The JAX equivalent is ``jax.vmap(jax.grad(...))`` (see
    :func:`bigmodel_utils.techniques.privacy.per_example_gradients`).
    """
    variables = model.trainable_variables

    def one_example(example):
        xi, yi = example
        with tf.GradientTape() as tape:
            loss = keras.ops.sum(loss_fn(yi[None], model(xi[None], training=True)))
        return tape.gradient(loss, variables)

    with quiet():  # "Conv2DBackpropFilter uses a while_loop": correct, and not for the page
        return list(tf.vectorized_map(one_example, (tf.convert_to_tensor(x), tf.convert_to_tensor(y))))


# ---------------------------------------------------------------------------
# SavedModel and tf2onnx (chapter 7)
# ---------------------------------------------------------------------------


def load_saved_model(directory: str):
    """``tf.saved_model.load(directory)``."""
    return tf.saved_model.load(str(directory))


def run_saved_model(loaded, x) -> np.ndarray:
    """Call a reloaded SavedModel's ``serve`` endpoint on the float32 batch ``x``; returns NumPy."""
    return loaded.serve(tf.constant(np.asarray(x, dtype=np.float32))).numpy()


def teach_tf2onnx_erfc() -> None:
    """Give tf2onnx 1.17 a conversion for TensorFlow's ``Erfc`` op, which it lacks, as ``1 - Erf(x)``.

    Keras's exact GELU (``activation="gelu"``, as in the GPT's MLP) is ``0.5 * x * erfc(-x / sqrt(2))`` in
    TensorFlow; without this, tf2onnx leaves the op in the graph and ONNX Runtime refuses to load the file
    ("No Op registered for Erfc"). ONNX has ``Erf`` since opset 9. In float32 ``1 - erf(x)`` differs from
    ``erfc(x)`` by at most about 1e-7 (one unit in the last place of 1), far below the 1e-5 to which the
    exported GPT's logits agree with Keras.
    """
    from tf2onnx import constants, utils
    from tf2onnx.handler import tf_op

    registered = tf_op.get_opsets().get(constants.ONNX_DOMAIN, [])
    if any("Erfc" in handlers for handlers in registered):
        return

    class Erfc:
        @classmethod
        def version_9(cls, ctx, node, **kwargs):
            node.type = "Erf"
            dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
            one = ctx.make_const(utils.make_name(f"{node.name}_one"), np.array(1, dtype=dtype))
            difference = ctx.insert_new_node_on_output("Sub", node.output[0], name=utils.make_name(node.name))
            ctx.replace_inputs(difference, [one.output[0], node.output[0]])
            ctx.copy_shape(node.output[0], difference.output[0])
            ctx.set_dtype(difference.output[0], ctx.get_dtype(node.input[0]))

    tf_op("Erfc")(Erfc)
