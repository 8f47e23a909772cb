"""Tests for bigmodel_utils.calculators.footprint: the formulas against
 Keras's own counts and TensorFlow's FLOP count."""

from __future__ import annotations

import keras
import pytest
from keras import layers

from bigmodel_utils.backend import jax_only
from bigmodel_utils.calculators import footprint
from bigmodel_utils.cnn import models


def lenet5_like():
    """LeNet-5's layout in Keras: 'same' then 'valid' 5x5 convolutions, average pooling, three Dense layers."""
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(6, 5, padding="same", activation="tanh"),
        layers.AveragePooling2D(2),
        layers.Conv2D(16, 5, activation="tanh"),
        layers.AveragePooling2D(2),
        layers.Flatten(),
        layers.Dense(120, activation="tanh"),
        layers.Dense(84, activation="tanh"),
        layers.Dense(10, activation="softmax"),
    ])


def strided_rectangular():
    """Non-square input, non-square kernels, strides, 'same' padding, a bias-free conv and overlapping pooling."""
    return keras.Sequential([
        keras.Input((40, 30, 3)),
        layers.Conv2D(8, (3, 1), strides=(2, 1), padding="same"),
        layers.Conv2D(12, (1, 5), strides=2, use_bias=False),
        layers.BatchNormalization(),
        layers.ReLU(),
        layers.MaxPooling2D(3, strides=1, padding="same"),
        layers.GlobalMaxPooling2D(),
        layers.Dropout(0.2),
        layers.Dense(7),
    ])


def mlp():
    return keras.Sequential([keras.Input((20,)), layers.Dense(64, activation="relu"), layers.Dense(3)])


ARCHITECTURES = {
    "classic_cnn_224": lambda: models.build_classic_cnn(),
    "classic_cnn_32x32x1": lambda: models.build_classic_cnn((32, 32, 1), num_classes=4),
    "improved_cnn": lambda: models.build_improved_cnn((28, 28, 1)),
    "lenet5_like": lenet5_like,
    "strided_rectangular": strided_rectangular,
    "mlp": mlp,
}


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def model(request):
    return ARCHITECTURES[request.param]()


def test_parameter_formulas_match_keras(model):
    costs = footprint.layer_costs(model)
    assert sum(c.params for c in costs) == model.count_params()
    for cost in costs:  # layer by layer, not only in total
        assert cost.params == model.get_layer(cost.name).count_params(), cost.name


def in_bounds_taps(size: int, kernel: int, stride: int, padding: str) -> int:
    """Kernel taps that land inside the input, summed over the output positions of one axis."""
    if padding == "valid":
        return ((size - kernel) // stride + 1) * kernel
    out = -(-size // stride)
    pad_before = max((out - 1) * stride + kernel - size, 0) // 2
    return sum(sum(0 <= o * stride - pad_before + k < size for k in range(kernel)) for o in range(out))


def test_flop_formulas_match_the_backends_own_count(model):
    """Layer by layer against an independent count: TensorFlow's profiler (TensorFlow backend) counts what the
    formulas count; XLA's cost analysis (JAX) counts only the kernel taps inside the image, so with "same"
    padding it finds fewer, exactly as many as the taps that land inside."""
    formula = {c.name: c.flops for c in footprint.layer_costs(model) if c.flops}
    if keras.backend.backend() == "tensorflow":
        from bigmodel_utils.backend import tensorflow_only

        counted = tensorflow_only.flop_count(model)
        assert counted, "found no Conv2D or MatMul ops"
        assert list(counted.values()) == list(formula.values())
        return
    if keras.backend.backend() != "jax":
        pytest.skip("an independent FLOP count needs TensorFlow's profiler or XLA (JAX)")
    counted = jax_only.xla_flop_count(model)
    assert list(counted) == list(formula)
    for name, flops in counted.items():
        layer = model.get_layer(name)
        if type(layer).__name__ == "Dense" or layer.padding == "valid":
            assert flops == formula[name], name
        else:
            (height, width), (kh, kw) = layer.input.shape[1:3], layer.kernel_size
            taps = (in_bounds_taps(height, kh, layer.strides[0], "same")
                    * in_bounds_taps(width, kw, layer.strides[1], "same"))
            assert flops == 2 * taps * layer.input.shape[-1] * layer.filters, name
            assert flops < formula[name], name


def test_each_flop_counter_refuses_the_other_backend(model):
    if keras.backend.backend() == "tensorflow":
        with pytest.raises(RuntimeError, match="xla_flop_count needs KERAS_BACKEND=jax"):
            jax_only.xla_flop_count(model)
    else:
        pytest.importorskip("tensorflow")
        from bigmodel_utils.backend import tensorflow_only

        with pytest.raises(RuntimeError, match="flop_count needs KERAS_BACKEND=tensorflow"):
            tensorflow_only.flop_count(model)


def test_classic_cnn_known_numbers():
    costs = footprint.layer_costs(models.build_classic_cnn())
    big = max(costs, key=lambda c: c.params)
    assert sum(c.params for c in costs) == 44_401_226
    assert big.kind == "Dense" and big.params == (26 * 26 * 128 + 1) * 512
    assert footprint.cnn_costs(224)["params"] == 44_401_226
    assert footprint.cnn_costs(224)["flops"] == sum(c.flops for c in costs)


@pytest.mark.parametrize("filters,size,head", [((16, 32), 64, "flatten"), ((32, 64, 128, 256), 96, "gap"),
                                               ((8,), 30, "flatten")])
def test_cnn_costs_matches_a_built_keras_model(filters, size, head):
    model = keras.Sequential([keras.Input((size, size, 3))])
    for f in filters:
        model.add(layers.Conv2D(f, 3, activation="relu"))
        model.add(layers.MaxPooling2D(2))
    model.add(layers.GlobalAveragePooling2D() if head == "gap" else layers.Flatten())
    model.add(layers.Dense(512, activation="relu"))
    model.add(layers.Dense(10))
    expected = footprint.cnn_costs(size, 3, filters, head=head)
    assert expected["params"] == model.count_params()
    assert expected["flops"] == sum(c.flops for c in footprint.layer_costs(model))


def test_small_formulas_by_hand():
    assert footprint.dense_params(3, 2) == 8 and footprint.dense_params(3, 2, use_bias=False) == 6
    assert footprint.conv2d_params(3, 32, 3) == 896
    assert footprint.conv2d_params(2, 4, (1, 5), use_bias=False) == 40
    assert footprint.conv_output_size(224, 3) == 222 and footprint.conv_output_size(7, 3, 2, "same") == 4
    assert footprint.conv2d_flops((2, 2), 1, 1, 3) == 2 * 4 * 9
    assert footprint.dense_flops(512, 10) == 10_240


def test_memory_recipes():
    per_parameter = {name: footprint.training_memory(1, **recipe).total
                     for name, recipe in footprint.TRAINING_RECIPES.items()}
    assert per_parameter["mixed bf16 + Adam"] == 16 and per_parameter["float32 + Adam"] == 16
    assert per_parameter["pure bf16 + Adam"] == 8 and per_parameter["float32 + SGD"] == 8
    assert per_parameter["mixed bf16 + 8-bit Adam"] == 2 + 2 + 4 + 2  # the two moments in one byte each
    gpt3 = footprint.training_memory(175e9, "bf16", optimizer="adam", master_weights="fp32")
    assert gpt3.total == pytest.approx(2.8e12)
    assert gpt3.as_dict()["optimizer_state"] == pytest.approx(175e9 * 8)
    assert footprint.inference_memory(7e9, "int8") == 7e9
    assert footprint.inference_memory(7e9, "int4") == 3.5e9
    assert footprint.activation_memory(1000, 32, "bf16") == 64_000


def test_training_flops_rule():
    # GPT-3: 175e9 parameters x 300e9 tokens x 6 = 3.15e23, the paper reports 3.14e23.
    assert footprint.training_flops(175e9, 300e9) == pytest.approx(3.15e23)
    assert footprint.compute_optimal_tokens(70e9) == pytest.approx(1.4e12)


@pytest.mark.parametrize("call,name", [
    (lambda: footprint.dense_params(0, 10), "in_features"),
    (lambda: footprint.dense_params(10, 2.5), "units"),
    (lambda: footprint.conv2d_params(3, 8, (3, 3, 3)), "kernel_size"),
    (lambda: footprint.conv2d_params(True, 8, 3), "in_channels"),
    (lambda: footprint.conv_output_size(2, 3), "kernel_size"),
    (lambda: footprint.conv_output_size(8, 3, padding="full"), "padding"),
    (lambda: footprint.conv2d_flops((0, 4), 3, 8, 3), "output height"),
    (lambda: footprint.bytes_per_value("float64"), "dtype"),
    (lambda: footprint.training_memory(1e9, optimizer="adamax"), "optimizer"),
    (lambda: footprint.training_memory(-5), "num_params"),
    (lambda: footprint.training_flops(7e9, float("nan")), "num_tokens"),
    (lambda: footprint.cnn_costs(10), "image_size"),
    (lambda: footprint.cnn_costs(224, head="attention"), "head"),
])
def test_errors_name_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_layer_costs_rejects_unsupported_layers():
    model = keras.Sequential([keras.Input((8, 8, 3)), layers.DepthwiseConv2D(3), layers.Flatten(), layers.Dense(2)])
    with pytest.raises(ValueError, match="DepthwiseConv2D"):
        footprint.layer_costs(model)


def test_dtype_aliases():
    assert footprint.canonical_dtype("BF16") == "bfloat16"
    assert footprint.bytes_per_value("fp16") == 2
