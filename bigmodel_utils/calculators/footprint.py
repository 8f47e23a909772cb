"""Calculators for what "large" costs: parameters, memory and FLOPs.

The calculators are pure functions of numbers: layer sizes in, counts out.
They follow the book's formulas (chapter 2):

* Dense:  ``params = (in_features + 1) * units`` (the +1 is the bias);
  forward FLOPs ``= 2 * in_features * units`` per example.
* Conv2D: ``params = (k_h * k_w * in_channels + 1) * filters``;
  forward FLOPs ``= 2 * out_h * out_w * k_h * k_w * in_channels * filters``.
* Pooling, Flatten, Dropout and activations have no parameters.
* Training a transformer costs about ``6 * N * D`` FLOP for N parameters and
  D tokens (Kaplan et al. 2020): 2ND forward, 4ND backward.

FLOPs count one multiply-add as two floating-point operations and leave out
bias additions, activations and pooling, which are a small fraction of the
work in these layers. Memory is counted in bytes.

Two functions read a built Keras model: :func:`layer_costs` applies the
formulas to each layer's configuration, and the backend seam counts independently:
:func:`bigmodel_utils.backend.jax_only.xla_flop_count` asks XLA's cost analysis (JAX) and
:func:`bigmodel_utils.backend.tensorflow_only.flop_count` TensorFlow's profiler.
Everything else is plain arithmetic. Used in chapters 1, 2 and 9.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from bigmodel_utils.validation import check_choice, positive, positive_int

# ---------------------------------------------------------------------------
# Number formats
# ---------------------------------------------------------------------------

DTYPE_BYTES = {"float32": 4.0, "float16": 2.0, "bfloat16": 2.0, "float8": 1.0, "int8": 1.0, "int4": 0.5}
"""Bytes per stored value for each number format the book discusses."""

DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "fp8": "float8", "half": "float16"}
"""Short names accepted wherever a dtype is expected."""


def canonical_dtype(dtype: str) -> str:
    """Return the canonical name of ``dtype`` (``"bf16"`` -> ``"bfloat16"``); raise ValueError if unknown."""
    if not isinstance(dtype, str):
        raise ValueError(f"dtype must be a string such as 'float32' or 'bf16', got {dtype!r}")
    name = DTYPE_ALIASES.get(dtype.strip().lower(), dtype.strip().lower())
    if name not in DTYPE_BYTES:
        accepted = ", ".join(list(DTYPE_BYTES) + list(DTYPE_ALIASES))
        raise ValueError(f"dtype must be one of {accepted}; got {dtype!r}")
    return name


def bytes_per_value(dtype: str) -> float:
    """Bytes one number takes in ``dtype``: 4 for float32, 2 for bfloat16/float16, 1 for int8, 0.5 for int4."""
    return DTYPE_BYTES[canonical_dtype(dtype)]


# ---------------------------------------------------------------------------
# Argument checks (one line, naming the argument)
# ---------------------------------------------------------------------------


def _pair(name: str, value) -> tuple[int, int]:
    """An int or a pair of ints (height, width), as Keras accepts for kernel sizes and strides."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an integer or a pair (height, width), got {value!r}")
        return positive_int(name, value[0]), positive_int(name, value[1])
    size = positive_int(name, value)
    return size, size


def _padding(padding: str) -> str:
    if not isinstance(padding, str) or padding.lower() not in ("valid", "same"):
        raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
    return padding.lower()


# ---------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------


def dense_params(in_features: int, units: int, use_bias: bool = True) -> int:
    """Parameters of a Dense layer: a weight per (input, unit) pair plus one bias per unit."""
    in_features = positive_int("in_features", in_features)
    units = positive_int("units", units)
    return in_features * units + (units if use_bias else 0)


def conv2d_params(in_channels: int, filters: int, kernel_size, use_bias: bool = True) -> int:
    """Parameters of a Conv2D layer: ``k_h * k_w * in_channels`` weights per filter plus one bias per filter.

    The count does not depend on the image size: the same kernel slides over every position.
    """
    in_channels = positive_int("in_channels", in_channels)
    filters = positive_int("filters", filters)
    k_h, k_w = _pair("kernel_size", kernel_size)
    return k_h * k_w * in_channels * filters + (filters if use_bias else 0)


def batch_norm_params(channels: int) -> int:
    """Parameters of BatchNormalization as Keras counts them: scale and shift (trained) plus the moving
    mean and variance (not trained), four per channel."""
    return 4 * positive_int("channels", channels)


# ---------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------


def conv_output_size(size: int, kernel_size: int, strides: int = 1, padding: str = "valid") -> int:
    """Output length along one spatial axis of a convolution or pooling window.

    ``valid``: ``floor((size - kernel_size) / strides) + 1``; ``same``: ``ceil(size / strides)``.
    Raises ValueError if a 'valid' window does not fit in the input.
    """
    size = positive_int("size", size)
    kernel_size = positive_int("kernel_size", kernel_size)
    strides = positive_int("strides", strides)
    if _padding(padding) == "same":
        return -(-size // strides)
    if kernel_size > size:
        raise ValueError(f"kernel_size {kernel_size} is larger than the input size {size} with 'valid' padding")
    return (size - kernel_size) // strides + 1


def conv2d_output_shape(input_hw, kernel_size, strides=1, padding: str = "valid") -> tuple[int, int]:
    """(height, width) after a 2-D convolution or pooling window; see :func:`conv_output_size`."""
    if not isinstance(input_hw, (tuple, list)) or len(input_hw) != 2:
        raise ValueError(f"input_hw must be a pair (height, width), got {input_hw!r}")
    k_h, k_w = _pair("kernel_size", kernel_size)
    s_h, s_w = _pair("strides", strides)
    return (conv_output_size(input_hw[0], k_h, s_h, padding), conv_output_size(input_hw[1], k_w, s_w, padding))


# ---------------------------------------------------------------------------
# Compute
# ---------------------------------------------------------------------------


def dense_flops(in_features: int, units: int) -> int:
    """Forward FLOPs of a Dense layer for one example: one multiply-add (2 FLOPs) per weight."""
    return 2 * positive_int("in_features", in_features) * positive_int("units", units)


def conv2d_flops(output_hw, in_channels: int, filters: int, kernel_size) -> int:
    """Forward FLOPs of a Conv2D layer for one example: each output value takes ``k_h*k_w*in_channels``
    multiply-adds, and there are ``out_h * out_w * filters`` output values."""
    if not isinstance(output_hw, (tuple, list)) or len(output_hw) != 2:
        raise ValueError(f"output_hw must be a pair (height, width), got {output_hw!r}")
    out_h, out_w = positive_int("output height", output_hw[0]), positive_int("output width", output_hw[1])
    k_h, k_w = _pair("kernel_size", kernel_size)
    in_channels = positive_int("in_channels", in_channels)
    filters = positive_int("filters", filters)
    return 2 * out_h * out_w * k_h * k_w * in_channels * filters


def training_flops(num_params, num_tokens) -> float:
    """Approximate training compute of a transformer, ``6 * N * D`` FLOP (Kaplan et al. 2020).

    ``num_params`` is N, the parameters used per token (the *active* ones for a
    sparse mixture of experts); ``num_tokens`` is D, the tokens seen in
    training. The forward pass costs about 2N FLOP per token, the backward pass
    twice that. Attention over the context adds a term this rule leaves out.
    """
    return 6.0 * positive("num_params", num_params) * positive("num_tokens", num_tokens)


def compute_optimal_tokens(num_params, tokens_per_param: float = 20.0) -> float:
    """Tokens for compute-optimal training of ``num_params`` parameters: about 20 per parameter
    (Hoffmann et al. 2022, "Chinchilla"). Returns a token count."""
    return positive("num_params", num_params) * positive("tokens_per_param", tokens_per_param)


def cnn_costs(
    image_size: int,
    channels: int = 3,
    filters=(32, 64, 128),
    dense_units: int = 512,
    num_classes: int = 10,
    head: str = "flatten",
) -> dict[str, int]:
    """Parameters and forward FLOPs of the book's CNN family, by formula alone.

    Each entry of ``filters`` is a block: a 3x3 'valid' Conv2D then 2x2
    max-pooling. ``head="flatten"`` flattens the last feature map into Dense
    ``dense_units``; ``head="gap"`` averages each channel over the image first
    (global average pooling). ``dense_units=0`` drops the hidden Dense layer.
    The defaults with ``image_size=224`` are ``models.build_classic_cnn()``.
    Returns ``{"params", "conv_params", "dense_params", "flops", "conv_flops",
    "dense_flops"}``. Used in chapter 2 to see how cost grows with width,
    depth and input size.
    """
    image_size = positive_int("image_size", image_size)
    in_channels = positive_int("channels", channels)
    check_choice("head", head, ("flatten", "gap"))
    if not isinstance(filters, (tuple, list)) or not filters:
        raise ValueError(f"filters must be a non-empty sequence of filter counts, got {filters!r}")
    cost = dict.fromkeys(("conv_params", "dense_params", "conv_flops", "dense_flops"), 0)
    size = image_size
    for block, block_filters in enumerate(filters):
        if size < 4:
            raise ValueError(f"image_size {image_size} is too small for {len(filters)} blocks (block {block + 1})")
        out = conv_output_size(size, 3)
        cost["conv_params"] += conv2d_params(in_channels, block_filters, 3)
        cost["conv_flops"] += conv2d_flops((out, out), in_channels, block_filters, 3)
        size, in_channels = conv_output_size(out, 2, 2), block_filters
    features = in_channels * (size * size if head == "flatten" else 1)
    widths = [features] + ([positive_int("dense_units", dense_units)] if dense_units else []) + [
        positive_int("num_classes", num_classes)]
    for fan_in, units in zip(widths[:-1], widths[1:]):
        cost["dense_params"] += dense_params(fan_in, units)
        cost["dense_flops"] += dense_flops(fan_in, units)
    cost["params"] = cost["conv_params"] + cost["dense_params"]
    cost["flops"] = cost["conv_flops"] + cost["dense_flops"]
    return cost


# ---------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------

OPTIMIZER_STATE_SLOTS = {"sgd": 0, "momentum": 1, "adagrad": 1, "rmsprop": 1, "lion": 1, "adam": 2, "adamw": 2}
"""Numbers the optimizer keeps per parameter: SGD none, momentum one velocity, Adam two moments."""


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes for the model's state during training (activations not included)."""

    weights: float
    gradients: float
    master_weights: float
    optimizer_state: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.master_weights + self.optimizer_state

    def as_dict(self) -> dict[str, float]:
        """The four parts and the total, in bytes."""
        return {f.name: getattr(self, f.name) for f in fields(self)} | {"total": self.total}


def optimizer_slots(optimizer: str) -> int:
    """Values stored per parameter by ``optimizer`` (see :data:`OPTIMIZER_STATE_SLOTS`)."""
    if not isinstance(optimizer, str) or optimizer.lower() not in OPTIMIZER_STATE_SLOTS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZER_STATE_SLOTS)}; got {optimizer!r}")
    return OPTIMIZER_STATE_SLOTS[optimizer.lower()]


def training_memory(
    num_params,
    weights: str = "float32",
    gradients: str | None = None,
    optimizer: str = "adam",
    optimizer_state: str = "float32",
    master_weights: str | None = None,
) -> MemoryBreakdown:
    """Bytes to hold a model's weights, gradients, optional master copy and optimizer state while training.

    ``weights`` is the dtype the model computes with; ``gradients`` defaults
    to the same; ``master_weights`` is the dtype of a separate full-precision
    copy kept by mixed-precision training (None: no copy). For example,
    mixed-precision Adam (bf16 weights and gradients, float32 master copy and
    moments) needs 2 + 2 + 4 + 8 = 16 bytes per parameter (Rajbhandari et al.
    2020). Activations come on top and depend on batch size.
    """
    n = positive("num_params", num_params)
    gradients = weights if gradients is None else gradients
    return MemoryBreakdown(
        weights=n * bytes_per_value(weights),
        gradients=n * bytes_per_value(gradients),
        master_weights=0.0 if master_weights is None else n * bytes_per_value(master_weights),
        optimizer_state=n * optimizer_slots(optimizer) * bytes_per_value(optimizer_state),
    )


TRAINING_RECIPES = {
    "float32 + Adam": {"weights": "float32", "optimizer": "adam", "optimizer_state": "float32"},
    "mixed bf16 + Adam": {"weights": "bfloat16", "optimizer": "adam", "optimizer_state": "float32",
                          "master_weights": "float32"},
    "mixed bf16 + 8-bit Adam": {"weights": "bfloat16", "optimizer": "adam", "optimizer_state": "int8",
                                "master_weights": "float32"},
    "pure bf16 + Adam": {"weights": "bfloat16", "optimizer": "adam", "optimizer_state": "bfloat16"},
    "float32 + SGD": {"weights": "float32", "optimizer": "sgd"},
}
"""Common ways to store a model while training, as keyword arguments of :func:`training_memory`."""


def inference_memory(num_params, dtype: str = "bfloat16") -> float:
    """Bytes to hold the weights alone (serving a model), ``num_params * bytes_per_value(dtype)``."""
    return positive("num_params", num_params) * bytes_per_value(dtype)


def activation_memory(values_per_example, batch_size: int, dtype: str = "float32") -> float:
    """Bytes to keep the layers' outputs of a batch for the backward pass: values x batch x bytes per value."""
    values = positive("values_per_example", values_per_example)
    return values * positive_int("batch_size", batch_size) * bytes_per_value(dtype)


# ---------------------------------------------------------------------------
# From a Keras model: the formulas layer by layer, and TensorFlow's own count
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerCost:
    """One layer of a model: its output shape (per example), parameters and forward FLOPs by formula."""

    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    flops: int


_NO_PARAMETER_LAYERS = {"InputLayer", "Dropout", "Activation", "ReLU", "Softmax", "LeakyReLU", "Identity"}


def layer_costs(model, input_shape=None) -> list[LayerCost]:
    """Apply this module's formulas to each layer of a sequential chain of layers.

    Only the model's input shape and each layer's configuration (units,
    filters, kernel size, strides, padding, use_bias) are read; output shapes
    are computed here with :func:`conv2d_output_shape` (and must match the
    shapes Keras inferred), so comparing the result with
    ``model.count_params()`` is a real check. ``input_shape`` (per example)
    overrides the model's own and skips the shape comparison. Supported layers: Dense,
    Conv2D, BatchNormalization, MaxPooling2D, AveragePooling2D, the global
    poolings, Flatten, Dropout and activation layers; anything else (or a
    branching model) raises ValueError naming the layer. Used in chapter 2.
    """
    shape = tuple(model.inputs[0].shape[1:]) if input_shape is None else tuple(input_shape)
    if any(d is None for d in shape):
        raise ValueError(f"input_shape must be fully known (no None), got {shape}")
    costs = []
    for layer in model.layers:
        kind, config = type(layer).__name__, layer.get_config()
        params, flops = 0, 0
        if kind == "Dense":
            params = dense_params(shape[-1], config["units"], config["use_bias"])
            flops = dense_flops(shape[-1], config["units"]) * math.prod(shape[:-1])
            shape = (*shape[:-1], config["units"])
        elif kind == "Conv2D":
            if config.get("groups", 1) != 1 or _pair("dilation_rate", config["dilation_rate"]) != (1, 1):
                raise ValueError(f"layer {layer.name}: grouped or dilated convolutions are not supported")
            out_hw = conv2d_output_shape(shape[:2], config["kernel_size"], config["strides"], config["padding"])
            params = conv2d_params(shape[2], config["filters"], config["kernel_size"], config["use_bias"])
            flops = conv2d_flops(out_hw, shape[2], config["filters"], config["kernel_size"])
            shape = (*out_hw, config["filters"])
        elif kind in ("MaxPooling2D", "AveragePooling2D"):
            strides = config["strides"] or config["pool_size"]
            shape = (*conv2d_output_shape(shape[:2], config["pool_size"], strides, config["padding"]), shape[2])
        elif kind in ("GlobalAveragePooling2D", "GlobalMaxPooling2D"):
            shape = (shape[2],)
        elif kind == "Flatten":
            shape = (math.prod(shape),)
        elif kind == "BatchNormalization":
            params = batch_norm_params(shape[-1])
        elif kind not in _NO_PARAMETER_LAYERS:
            raise ValueError(f"layer {layer.name!r} of type {kind} is not supported by layer_costs")
        keras_shape = tuple(layer.output.shape[1:]) if input_shape is None else None
        if keras_shape is not None and keras_shape != shape:
            raise ValueError(
                f"layer {layer.name!r}: the formulas give output shape {shape} but Keras has {keras_shape}; "
                "layer_costs supports only simple chains of layers"
            )
        costs.append(LayerCost(layer.name, kind, tuple(int(d) for d in shape), int(params), int(flops)))
    return costs
