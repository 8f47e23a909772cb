"""Exporting a trained Keras model to production formats, shrinking it to int8, and measuring the result.

Three formats, three runtimes:

* the Keras file (``.keras``): weights plus the Python code's configuration, reloaded by Keras itself;
* a TensorFlow SavedModel (a folder): the traced graph and its weights, served by TensorFlow Serving or
  reloaded with ``tf.saved_model.load`` without the model's Python code (TensorFlow backend only);
* an ONNX file: a framework-neutral graph that ONNX Runtime runs on CPUs, GPUs and phones, and that
  ONNX Runtime's tools quantise to int8 after training.

``model.quantize("int8")`` in Keras 3.15 quantises Dense, EinsumDense and Embedding layers but leaves
Conv2D in float32, so for a CNN this module uses ONNX Runtime's post-training *static* quantisation
(:func:`quantize_onnx_static`). The measuring helpers (:func:`keras_weight_bytes`, :func:`onnx_weight_bytes`,
:func:`latency_ms`, :func:`agreement`) compare the formats on size, speed and outputs.

What works where (checked 2026-12 with Keras 3.15.1, TensorFlow 2.21, tf2onnx 1.17.0, onnxruntime 1.31.1,
JAX 0.10.2):

* ``export_saved_model`` needs the TensorFlow backend (Keras traces the model into a ``tf.function``).
* ``export_onnx`` under TensorFlow goes through tf2onnx: opset 15 by default, batch normalisation folded into
  the convolutions, outputs within about 1e-6 of Keras. The GPT of chapter 6 converts too, at a fixed context
  length, once tf2onnx is taught TensorFlow's ``Erfc`` op
  (:func:`bigmodel_utils.backend.tensorflow_only.teach_tf2onnx_erfc` does it).
* Under JAX, Keras hands the model to the separate ``jax2onnx`` package, which the book does not install (it
  brings flax, equinox, optax, orbax and huggingface-hub with it). With jax2onnx 0.17.1 the CNN converts
  (opset 23) but ONNX Runtime cannot run the file (a MaxPool with a 4-D kernel, "Unsupported pooling size")
  and the GPT does not trace, so export under TensorFlow. Running and quantising an ONNX file works under
  every backend: ONNX Runtime does not use Keras.

TensorFlow is imported only inside functions, so the package imports under JAX; the functions
that need TensorFlow whatever the backend (the SavedModel ones) are grouped at the end under "TensorFlow
only". Used in chapter 7.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from bigmodel_utils.backend.compile import predictor
from bigmodel_utils.validation import check_choice, check_int

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
"""Values of ``calibration_method`` in :func:`quantize_onnx_static`."""


def _check_path(name: str, value) -> Path:
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise ValueError(f"{name} must be a file or folder path (str or pathlib.Path), got {value!r}")
    return Path(value)


def _check_model(model) -> keras.Model:
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
    return model


def _check_images(name: str, images) -> np.ndarray:
    array = np.asarray(images)
    if array.ndim < 2 or len(array) == 0 or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{name} must be a non-empty numeric batch of shape (N, ...), got shape {array.shape} "
                         f"and dtype {array.dtype}")
    return array


# --------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------


def keras_weight_bytes(model: keras.Model) -> float:
    """Bytes of a Keras model's variables as they are stored: sum of size x bytes per value of its dtype.

    float32 weights count 4 bytes a value, int8 kernels of a ``model.quantize("int8")`` model 1 byte; Keras
    stores ``"int4"`` kernels two to a byte in int8 variables of half the size, so they count 0.5 byte per
    original value. Quantisation's scales (and int4's zero points and group indices) are counted too. The
    random-seed state of dropout layers is not a weight and is left out. Used in chapter 7.
    """
    model = _check_model(model)
    total = 0.0
    for variable in model.variables:
        if variable.path.endswith("seed_generator_state"):
            continue
        dtype = str(variable.dtype)
        per_value = 0.5 if dtype in ("int4", "uint4") else np.dtype(dtype).itemsize
        total += int(np.prod(variable.shape)) * per_value
    return total


def onnx_weight_bytes(path: str | os.PathLike) -> int:
    """Bytes of the weights (initialisers) stored in an ONNX file, without the graph around them.

    The rest of the file is the graph: node and tensor names and attributes, which for a small quantised
    model are a noticeable share (each quantised tensor gets a scale, a zero point and two extra nodes).
    Used in chapter 7.
    """
    import onnx
    from onnx import numpy_helper

    path = _check_path("path", path)
    if not path.is_file():
        raise FileNotFoundError(f"path must be an existing ONNX file, got {str(path)!r}")
    graph = onnx.load(str(path)).graph
    return int(sum(numpy_helper.to_array(tensor).nbytes for tensor in graph.initializer))


# --------------------------------------------------------------------------------------
# Comparing outputs and speed
# --------------------------------------------------------------------------------------


def agreement(a, b) -> dict[str, float]:
    """How closely two models' outputs for the same inputs agree.

    ``a`` and ``b`` are arrays of the same shape, for example class probabilities (N, classes). Returns
    ``{"max_abs_diff": ..., "label_agreement": ...}``: the largest absolute difference of any element, and,
    when the last axis has at least two entries (a classifier), the fraction of rows whose argmax labels are
    equal (NaN otherwise). Used in chapter 7.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"a and b must be non-empty arrays of the same shape, got {a.shape} and {b.shape}")
    labels = float("nan")
    if a.ndim >= 2 and a.shape[-1] >= 2:
        labels = float(np.mean(a.argmax(axis=-1) == b.argmax(axis=-1)))
    return {"max_abs_diff": float(np.max(np.abs(a - b))), "label_agreement": labels}


def latency_ms(fn: Callable, x, repeats: int = 50, warmup: int = 5) -> dict[str, float]:
    """Time ``fn(x)``: the median and 90th-percentile milliseconds per call, after ``warmup`` untimed calls.

    ``fn`` must return a finished result (NumPy, not a tensor still being computed), which all the runners
    here do. Returns ``{"median_ms": ..., "p90_ms": ..., "repeats": ...}``. Used in chapter 7 to compare
    Keras, SavedModel and ONNX Runtime at batch 1 and batch 256.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    repeats = check_int("repeats", repeats, minimum=1)
    warmup = check_int("warmup", warmup, minimum=0)
    for _ in range(warmup):
        fn(x)
    times = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        fn(x)
        times[i] = time.perf_counter() - start
    return {"median_ms": float(np.median(times) * 1e3), "p90_ms": float(np.percentile(times, 90) * 1e3),
            "repeats": repeats}


def keras_predictor(model: keras.Model, jit_compile: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    """A function from a NumPy batch to the model's outputs as NumPy, compiled by the backend's compiler.

    This is what to time instead of ``model.predict``, which adds a data pipeline and callbacks to every
    call (milliseconds at batch 1). TensorFlow: ``tf.function``, with XLA when ``jit_compile`` (off by
    default: for the CNN on two CPU cores XLA was slightly faster at batch 1 but twice as slow at batch 256);
    JAX: ``jax.jit`` of the stateless call (always compiled), both by
    :func:`bigmodel_utils.backend.compile.predictor`. Each new batch shape compiles once, so warm up before
    timing. Used in chapter 7.
    """
    return predictor(_check_model(model), jit_compile)


# --------------------------------------------------------------------------------------
# ONNX and ONNX Runtime (any backend that Keras can export from)
# --------------------------------------------------------------------------------------


def _ensure_called(model: keras.Model) -> None:
    """Call a functional or sequential model once on zeros: a freshly loaded model has never been called,
    and Keras 3.15's ONNX export refuses such a model ("The model provided has never called")."""
    inputs = getattr(model, "inputs", None)
    if not inputs or len(inputs) != 1:
        return
    shape = [1 if dim is None else dim for dim in inputs[0].shape]
    model(np.zeros(shape, dtype=inputs[0].dtype), training=False)


def export_onnx(model: keras.Model, path: str | os.PathLike, opset: int | None = None,
                input_signature=None) -> dict[str, float]:
    """Write ``model``'s forward pass (inference mode) to the ONNX file ``path``.

    Calls ``model.export(path, format="onnx")``. With the TensorFlow backend Keras converts a traced
    ``tf.function`` with tf2onnx (opset 15 unless ``opset`` says otherwise; batch normalisation is folded into
    the convolution weights) and the batch dimension stays dynamic; see the module's notes for JAX.
    ``input_signature`` (a list of ``keras.InputSpec``) overrides the one Keras reads off the model: a
    subclassed model such as the GPT would otherwise get a float32 input, so pass
    ``[keras.InputSpec(shape=(None, context), dtype="int32")]``. Keep the length fixed: with a dynamic length
    (``(None, None)``) tf2onnx 1.17 writes a graph whose first attention reshape fails in ONNX Runtime, so pad
    shorter prompts to the context (the causal mask keeps padding at the end out of sight).

    Returns ``{"seconds": ..., "opset": ...}``: the conversion time and the ONNX operator-set version
    written. Used in chapter 7.
    """
    import onnx

    model = _check_model(model)
    path = _check_path("path", path)
    if opset is not None:
        opset = check_int("opset", opset, minimum=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    _ensure_called(model)
    if keras.backend.backend() == "tensorflow":
        from bigmodel_utils.backend import tensorflow_only

        tensorflow_only.teach_tf2onnx_erfc()
    start = time.perf_counter()
    with warnings.catch_warnings():  # Keras's tf2onnx patch for NumPy 2 trips NumPy's np.object notice
        warnings.filterwarnings("ignore", message=".*np.object.*", category=FutureWarning)
        model.export(str(path), format="onnx", verbose=False, opset_version=opset, input_signature=input_signature)
    seconds = time.perf_counter() - start
    written = onnx.load(str(path), load_external_data=False)
    version = next(entry.version for entry in written.opset_import if entry.domain in ("", "ai.onnx"))
    return {"seconds": seconds, "opset": int(version)}


def onnx_session(path: str | os.PathLike, num_threads: int | None = None):
    """An ``onnxruntime.InferenceSession`` for the ONNX file ``path`` on the CPU.

    ``num_threads`` is the number of threads one call may use (intra-op); the default is the number of
    cores this process may run on, at most 8 (more rarely helps a small model). Graph optimisations are all
    on, which is also what fuses a quantised model's QuantizeLinear/DequantizeLinear pairs into integer
    kernels. Used in chapter 7.
    """
    import onnxruntime

    path = _check_path("path", path)
    if not path.is_file():
        raise FileNotFoundError(f"path must be an existing ONNX file, got {str(path)!r}")
    if num_threads is None:
        available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        num_threads = min(available, 8)
    num_threads = check_int("num_threads", num_threads, minimum=1)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(session, x) -> np.ndarray:
    """Run an ONNX Runtime session with one input on the batch ``x``; returns its first output as NumPy.

    ``x`` is cast to the input's dtype (float32 for a Keras image model), so a float64 array works too.
    Used in chapter 7.
    """
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ValueError(f"session must have exactly one input, got {len(inputs)}: {[i.name for i in inputs]}")
    dtype = {"tensor(float)": np.float32, "tensor(int32)": np.int32, "tensor(int64)": np.int64}.get(
        inputs[0].type, np.float32)
    return session.run(None, {inputs[0].name: np.asarray(x, dtype=dtype)})[0]


class ImageCalibrationReader:
    """Feeds calibration images to ONNX Runtime's quantiser in batches; see :func:`quantize_onnx_static`.

    It has the two methods of ``onnxruntime.quantization.CalibrationDataReader`` (which accepts any class
    with a ``get_next``): ``get_next()`` returns the next ``{input_name: batch}`` and None when the images
    are used up, ``rewind()`` starts again. All batches have the same size, the largest divisor of the
    number of images up to ``batch_size``: the percentile and entropy calibrators stack the batches'
    outputs and fail on a shorter last batch (onnxruntime 1.31). Used in chapter 7.
    """

    def __init__(self, images, input_name: str, batch_size: int = 64):
        self.images = np.asarray(images, dtype=np.float32)
        self.input_name = input_name
        self.batch_size = max(size for size in range(1, min(batch_size, len(self.images)) + 1)
                              if len(self.images) % size == 0)
        self.position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.images):
            return None
        batch = self.images[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return {self.input_name: batch}

    def rewind(self) -> None:
        self.position = 0


def _short_names(model_proto) -> None:
    """Rename the inner tensors and nodes of an ONNX graph to short names (``t12``, ``n3``), in place.

    tf2onnx names every tensor after its TensorFlow path ("improved_cnn/conv2d_5/convolution/...:0") and
    the quantiser adds three or four derived names per quantised tensor; for a small model these strings
    are a seventh of the int8 file. The graph's inputs and outputs keep their names.
    """
    graph = model_proto.graph
    keep = {value.name for value in graph.input} | {value.name for value in graph.output}
    renamed: dict[str, str] = {}

    def new_name(old: str) -> str:
        if not old or old in keep:
            return old
        if old not in renamed:
            renamed[old] = f"t{len(renamed)}"
        return renamed[old]

    for tensor in graph.initializer:
        tensor.name = new_name(tensor.name)
    for value in graph.value_info:
        value.name = new_name(value.name)
    for number, node in enumerate(graph.node):
        node.name = f"n{number}"
        node.input[:] = [new_name(name) for name in node.input]
        node.output[:] = [new_name(name) for name in node.output]


def quantize_onnx_static(
    float_path: str | os.PathLike,
    int8_path: str | os.PathLike,
    calibration_images,
    per_channel: bool = True,
    calibration_method: str = "minmax",
    exclude_softmax: bool = True,
) -> dict[str, float]:
    """Quantise a float ONNX model to int8 weights *and* activations (QDQ format), calibrated on images.

    ``onnxruntime.quantization.quantize_static`` runs ``calibration_images`` (N, H, W, C) float32, a few
    hundred are enough, through the model, records the range of every tensor (``calibration_method``:
    "minmax", the observed range; "percentile", the 0.001-99.999% range; "entropy", the range that keeps
    the histogram's KL divergence smallest) and stores each range as an int8 scale and zero point. Weights
    get one scale per output channel when ``per_channel`` (convolution filters differ in size by orders of
    magnitude, so one scale for the whole tensor wastes most of the 256 levels on the small ones).

    Why static rather than dynamic quantisation for convolutions: dynamic quantisation (``quantize_dynamic``)
    stores only the weights in int8 and measures each activation's range at run time, in every call; ONNX
    Runtime then runs a convolution as ConvInteger and turns its int32 result back into float32 before the
    next layer. A CNN's feature maps are large (28 x 28 x 16 values per image after the first layer, against
    128 for a Dense layer), so that scanning and converting costs more than the integer arithmetic saves: on
    chapter 4's CNN (width 16, two CPU cores, 2026-12) the dynamic file ran several times *slower* than
    float32. Static quantisation fixes the activation ranges ahead of time from calibration data, so ONNX
    Runtime fuses each Conv with its QuantizeLinear/DequantizeLinear neighbours into one QLinearConv that
    reads and writes int8, and the int8 model ran faster than float32.

    The defaults were chosen on that CNN: MinMax, Percentile and Entropy calibration, per channel or not,
    all kept the test accuracy within 0.25 points of float32 (on 2,000 test images; 0.05 points is one
    image), so the default is the fastest, MinMax; ``quant_pre_process`` (shape inference and ONNX Runtime's
    graph optimiser) is not run, because tf2onnx has already folded batch normalisation into the
    convolutions and it changed nothing measurable but cost two seconds. See the ONNX Runtime quantisation
    guide, https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html (read 2026-12).

    With ``exclude_softmax`` the final Softmax runs in float32 on dequantised logits: quantising the
    probabilities themselves would round them to steps of 1/256 and gains nothing. Before quantising, the
    graph's inner tensors get short names: the names are part of the file, and the quantiser adds three
    derived names per tensor to tf2onnx's long ones (a seventh of a small model's int8 file otherwise).
    Returns ``{"seconds": ..., "calibration_images": ...}``. Used in chapter 7.
    """
    import onnx
    from onnxruntime import quantization

    float_path, int8_path = _check_path("float_path", float_path), _check_path("int8_path", int8_path)
    if not float_path.is_file():
        raise FileNotFoundError(f"float_path must be an existing ONNX file, got {str(float_path)!r}")
    images = _check_images("calibration_images", calibration_images)
    check_choice("calibration_method", calibration_method, CALIBRATION_METHODS)
    if not isinstance(per_channel, bool):
        raise ValueError(f"per_channel must be True or False, got {per_channel!r}")
    method = {"minmax": quantization.CalibrationMethod.MinMax,
              "percentile": quantization.CalibrationMethod.Percentile,
              "entropy": quantization.CalibrationMethod.Entropy}[calibration_method]
    start = time.perf_counter()
    model_proto = onnx.load(str(float_path))
    _short_names(model_proto)
    inputs = [value.name for value in model_proto.graph.input]
    if len(inputs) != 1:
        raise ValueError(f"float_path must hold a model with one input, got {len(inputs)}: {inputs}")
    excluded = [node.name for node in model_proto.graph.node if node.op_type == "Softmax"] if exclude_softmax \
        else []
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    quantization.quantize_static(
        model_proto, str(int8_path), ImageCalibrationReader(images, inputs[0]),
        quant_format=quantization.QuantFormat.QDQ,
        activation_type=quantization.QuantType.QInt8, weight_type=quantization.QuantType.QInt8,
        per_channel=per_channel, calibrate_method=method, nodes_to_exclude=excluded,
    )
    return {"seconds": time.perf_counter() - start, "calibration_images": len(images)}


# --------------------------------------------------------------------------------------
# TensorFlow only: SavedModel, and tf2onnx's missing Erfc
# --------------------------------------------------------------------------------------


def _require_tensorflow(what: str) -> None:
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(f"{what} needs the TensorFlow backend (KERAS_BACKEND=tensorflow), "
                           f"but Keras runs on {backend!r}; export to ONNX instead (export_onnx)")


def export_saved_model(model: keras.Model, directory: str | os.PathLike) -> dict[str, float]:
    """Write ``model``'s inference pass as a TensorFlow SavedModel into the folder ``directory``.

    TensorFlow backend only. Calls ``model.export(directory, format="tf_saved_model")``, whose endpoint
    ``serve`` takes a float32 batch of any size. Keras 3.15 stores every variable twice in the folder (once
    per Keras variable, once per TensorFlow variable the traced function captured; keras-team/keras issue
    23553, open in 2026-12), so the folder holds about twice the weights plus the graph. Returns
    ``{"seconds": ...}``, the export time. Reload it with :func:`load_saved_model`. Used in chapter 7.
    """
    _require_tensorflow("export_saved_model")
    model = _check_model(model)
    directory = _check_path("directory", directory)
    start = time.perf_counter()
    model.export(str(directory), format="tf_saved_model", verbose=False)
    return {"seconds": time.perf_counter() - start}


def load_saved_model(directory: str | os.PathLike):
    """Reload a SavedModel written by :func:`export_saved_model` with ``tf.saved_model.load``.

    Needs TensorFlow (not the model's Python code). Returns the loaded object; run it with
    :func:`run_saved_model`. Used in chapter 7.
    """
    from bigmodel_utils.backend import tensorflow_only

    directory = _check_path("directory", directory)
    if not (directory / "saved_model.pb").is_file():
        raise FileNotFoundError(f"directory must be a SavedModel folder (with saved_model.pb), got {str(directory)!r}")
    loaded = tensorflow_only.load_saved_model(directory)
    if not hasattr(loaded, "serve"):
        raise ValueError(f"directory holds a SavedModel without a 'serve' endpoint: {str(directory)!r}")
    return loaded


def run_saved_model(loaded, x) -> np.ndarray:
    """Call a reloaded SavedModel's ``serve`` endpoint on the float32 batch ``x``; returns NumPy.

    Used in chapter 7.
    """
    from bigmodel_utils.backend import tensorflow_only

    return tensorflow_only.run_saved_model(loaded, x)

