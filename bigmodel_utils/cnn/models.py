"""Model builders shared by chapters 2, 4, 5 and 9, in backend-agnostic Keras 3.

``build_classic_cnn`` is the model most introductions show (and its problems);
``build_improved_cnn`` is the book's better model for the same data.
"""

from __future__ import annotations

import keras
from keras import layers

from bigmodel_utils.validation import check_choice, check_int, check_number, is_int

CLASSIC_FILTERS = (32, 64, 128)


def classic_min_image_size(num_blocks: int = len(CLASSIC_FILTERS)) -> int:
    """Smallest square input the classic CNN takes: each block is a 3x3 'valid' conv then 2x2 pooling."""
    size = 1
    for _ in range(num_blocks):
        size = 2 * size + 2  # invert floor((s - 2) / 2) >= size
    return size


def _check_input_shape(input_shape, min_size: int) -> tuple[int, int, int]:
    """``input_shape`` as (height, width, channels) of positive integers, at least ``min_size`` pixels square."""
    if len(tuple(input_shape)) != 3 or not all(is_int(d) and d >= 1 for d in input_shape):
        raise ValueError(f"input_shape must be three positive integers (height, width, channels), got {input_shape!r}")
    height, width, channels = (int(d) for d in input_shape)
    if min(height, width) < min_size:
        raise ValueError(
            f"image size {height}x{width} is too small for this model: it needs at least {min_size}x{min_size}"
        )
    return height, width, channels


def build_classic_cnn(input_shape=(224, 224, 3), num_classes: int = 10, name: str = "classic_cnn", *,
                      filters=CLASSIC_FILTERS, dense_units: int = 512, head: str = "flatten") -> keras.Model:
    """The introductory CNN: Conv2D 32/64/128 (3x3, ReLU) each with 2x2 max-pooling, Flatten, Dense 512, Dense.

    With the default 224x224x3 input it has 44,401,226 parameters, 99.8% of
    them in the Dense 512 layer behind Flatten. The output layer is float32
    so the model also trains under mixed precision. ``filters`` (one block
    per entry), ``dense_units`` and ``head`` ("flatten", or "gap" for global
    average pooling) vary the layout, as chapter 2 does; :func:`footprint.cnn_costs`
    counts the same family by formula. Used in chapters 2 and 4.
    """
    filters = tuple(filters)
    if not filters or not all(is_int(f) and f >= 1 for f in filters):
        raise ValueError(f"filters must be a non-empty sequence of positive integers, got {filters!r}")
    check_choice("head", head, ("flatten", "gap"))
    input_shape = _check_input_shape(input_shape, classic_min_image_size(len(filters)))
    num_classes = check_int("num_classes", num_classes, minimum=2)
    model = keras.Sequential(name=name)
    model.add(keras.Input(shape=input_shape))
    for count in filters:
        model.add(layers.Conv2D(count, 3, activation="relu"))
        model.add(layers.MaxPooling2D(2))
    model.add(layers.Flatten() if head == "flatten" else layers.GlobalAveragePooling2D())
    model.add(layers.Dense(dense_units, activation="relu"))
    model.add(layers.Dense(num_classes, activation="softmax", dtype="float32"))
    return model


def build_improved_cnn(
    input_shape=(28, 28, 1),
    num_classes: int = 10,
    width: int = 32,
    dense_units: int = 128,
    dropout: float = 0.3,
    name: str = "improved_cnn",
) -> keras.Model:
    """A compact CNN: three stages of two 3x3 conv + batch norm + ReLU, global average pooling, dropout.

    ``width`` is the number of filters in the first stage (doubled in each
    later stage), which chapter 9 varies for its scaling experiment;
    ``dense_units=0`` drops the hidden dense layer. Batch normalisation uses
    momentum 0.9, so its test-time statistics are usable after a few hundred
    steps. The output layer is float32 for mixed precision. Used in chapters
    4, 5 and 6.
    """
    input_shape = _check_input_shape(input_shape, 8)
    num_classes = check_int("num_classes", num_classes, minimum=2)
    width = check_int("width", width, minimum=1)
    dense_units = check_int("dense_units", dense_units, minimum=0)
    dropout = check_number("dropout", dropout, 0, 1, include_maximum=False)
    inputs = keras.Input(shape=input_shape)
    x = inputs
    for stage in range(3):
        filters = width * 2**stage
        for _ in range(2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            # momentum 0.9 instead of Keras's 0.99: the moving statistics used at test time settle
            # within one short epoch, so a few-epoch CPU run is evaluated with sensible statistics.
            x = layers.BatchNormalization(momentum=0.9)(x)
            x = layers.Activation("relu")(x)
        if stage < 2:
            x = layers.MaxPooling2D(2)(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(dropout)(x)
    if dense_units:
        x = layers.Dense(dense_units, activation="relu")(x)
        x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)


def parameter_table(model: keras.Model) -> list[dict]:
    """One row per layer with parameters: name, kind, output shape, parameter count and share of the total.

    Used in chapter 4 to show where the classic model's parameters sit.
    """
    total = model.count_params()
    rows = []
    for layer in model.layers:
        count = layer.count_params()
        if count:
            rows.append({
                "layer": layer.name, "kind": type(layer).__name__,
                "output_shape": tuple(layer.output.shape[1:]), "parameters": count, "share": count / total,
            })
    return rows


def memory_estimate(model: keras.Model, batch_size: int, activation_dtype: str = "float32",
                    optimizer: str = "adam") -> dict[str, float]:
    """Estimate training memory in MiB: weights, gradients, optimizer state and one batch of layer outputs.

    The state comes from :func:`bigmodel_utils.calculators.footprint.training_memory`
    (float32 weights, which Keras keeps
    even under mixed precision, and the optimizer's slots: two for Adam), the activations from
    :func:`bigmodel_utils.calculators.footprint.activation_memory`, counting every layer's output once for a batch of
    ``batch_size``, which is what backpropagation has to keep. Frameworks add workspace on top, so treat
    the result as a lower bound. Used in chapter 4.
    """
    from bigmodel_utils.calculators import footprint

    batch_size = check_int("batch_size", batch_size, minimum=1)
    mib = 1024**2
    state = footprint.training_memory(model.count_params(), weights="float32", optimizer=optimizer)
    outputs = sum(_prod(layer.output.shape[1:]) for layer in model.layers)
    estimate = {
        "weights_mib": state.weights / mib,
        "gradients_mib": state.gradients / mib,
        "optimizer_mib": state.optimizer_state / mib,
        "activations_mib": footprint.activation_memory(outputs, batch_size, activation_dtype) / mib,
    }
    estimate["total_mib"] = sum(estimate.values())
    return estimate


def _prod(shape) -> int:
    """Product of a shape's dimensions (1 for a scalar shape)."""
    result = 1
    for dim in shape:
        result *= int(dim)
    return result
