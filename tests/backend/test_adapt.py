"""LoRA and post-training quantisation of the GPT (bigmodel_utils.techniques.adapt)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from bigmodel_utils import gpt
from bigmodel_utils.techniques import adapt, export

CONFIG = gpt.GPTConfig(vocab_size=24, context=16, num_layers=2, num_heads=2, width=16)


@pytest.fixture
def base():
    return gpt.build_gpt(CONFIG, seed=0)


def tokens(batch=3, seed=0):
    return np.random.default_rng(seed).integers(0, CONFIG.vocab_size, (batch, CONFIG.context)).astype("int32")


def logits(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def test_numpy_lora_equals_keras_enable_lora(base):
    model = adapt.enable_lora(adapt.copy_model(base), rank=3)
    layer = model.blocks[1].mlp_in
    rng = np.random.default_rng(1)
    layer.lora_kernel_b.assign(rng.normal(0, 0.1, layer.lora_kernel_b.shape).astype("float32"))
    x = rng.normal(size=(5, CONFIG.width)).astype("float32")
    parts = [keras.ops.convert_to_numpy(v) for v in
             (layer._kernel, layer.bias, layer.lora_kernel_a, layer.lora_kernel_b)]
    expected = adapt.lora_dense(x, *parts, layer.lora_alpha)
    # the layer applies GELU after the affine map
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.activations.gelu(expected)),
                               keras.ops.convert_to_numpy(layer(x)), atol=1e-5)
    assert not np.allclose(parts[0] @ np.ones(layer.units), 0)  # a real kernel, not zeros


def test_lora_trains_only_its_factors_and_counts_them(base):
    model = adapt.enable_lora(adapt.copy_model(base), rank=4)
    assert {v.path.rsplit("/", 1)[-1] for v in model.trainable_weights} == {"lora_kernel_a", "lora_kernel_b"}
    d = CONFIG.width
    # qkv (d -> 3d), out (d -> d), mlp_in (d -> 4d), mlp_out (4d -> d): r * (d_in + d_out) each
    per_block = 4 * ((d + 3 * d) + (d + d) + (d + 4 * d) + (4 * d + d))
    counts = adapt.parameter_counts(model)
    assert counts["trainable"] == CONFIG.num_layers * per_block
    assert counts["total"] == base.count_params() + counts["trainable"]
    # B starts at zero: the adapted model computes exactly what the base does
    np.testing.assert_allclose(logits(model, tokens()), logits(base, tokens()), atol=1e-6)
    memory = adapt.training_memory_bytes(model)
    assert memory["optimizer_state"] == 2 * 4 * counts["trainable"]  # two float32 AdamW moments
    assert memory["weights"] == 4 * counts["total"]


def test_lora_factors_save_alone_and_reattach(base, tmp_path):
    model = adapt.enable_lora(adapt.copy_model(base), rank=2, targets=("qkv", "out"))
    for variable in model.trainable_weights:
        variable.assign(np.random.default_rng(2).normal(0, 0.1, variable.shape).astype("float32"))
    path = adapt.save_lora_weights(model, tmp_path / "adapter.npz")
    assert path.name == "adapter.npz" and path.stat().st_size < 4 * base.count_params()
    fresh = adapt.load_lora_weights(adapt.copy_model(base), path)
    np.testing.assert_allclose(logits(fresh, tokens()), logits(model, tokens()), atol=1e-6)
    assert not np.allclose(logits(fresh, tokens()), logits(base, tokens()), atol=1e-3)
    other = gpt.build_gpt(gpt.GPTConfig(vocab_size=24, context=16, num_layers=2, num_heads=2, width=8))
    with pytest.raises(ValueError, match="lora_kernel_a has shape"):
        adapt.load_lora_weights(other, path)


def test_bad_lora_arguments_are_named(base):
    with pytest.raises(ValueError, match="rank must be a positive integer, got 0"):
        adapt.enable_lora(adapt.copy_model(base), rank=0)
    with pytest.raises(ValueError, match="targets must be a non-empty subset"):
        adapt.enable_lora(adapt.copy_model(base), rank=2, targets=("kernel",))
    with pytest.raises(ValueError, match="no LoRA factors"):
        adapt.save_lora_weights(base, "unused.npz")
    with pytest.raises(ValueError, match="method must be one of 'frozen', 'full', 'lora'; got 'half'"):
        adapt.adapt(base, "half", np.zeros(100, "int32"), np.zeros(100, "int32"), steps=1,
                    batch_size=1, learning_rate=1e-3)


def test_adaptation_learns_a_new_pattern_and_leaves_the_base_alone(base):
    # a text the untrained base cannot predict: the tokens 0..23 in order, over and over
    sequence = np.tile(np.arange(CONFIG.vocab_size, dtype="int32"), 40)
    before = logits(base, tokens())
    results = {}
    for method, learning_rate in (("frozen", 1.0), ("full", 1e-2), ("lora", 5e-2)):
        _, results[method] = adapt.adapt(base, method, sequence, sequence, steps=30, batch_size=8,
                                         learning_rate=learning_rate, rank=4)
    np.testing.assert_array_equal(logits(base, tokens()), before)
    assert results["frozen"].val_loss == pytest.approx(np.log(CONFIG.vocab_size), rel=0.1)
    assert results["full"].val_loss < 0.75 * results["frozen"].val_loss
    # from an untrained base LoRA moves slowly (its factors act on tiny activations), but it moves
    assert results["lora"].val_loss < results["frozen"].val_loss - 0.1
    assert results["lora"].trainable < results["full"].trainable == base.count_params()
    assert 0 < results["lora"].optimizer_state_bytes < results["full"].optimizer_state_bytes


def test_validation_loss_equals_keras_evaluate(base):
    sequence = np.random.default_rng(3).integers(0, CONFIG.vocab_size, 2000).astype("int32")
    _, frozen = adapt.adapt(base, "frozen", sequence, sequence, steps=1, batch_size=1, learning_rate=1.0)
    assert adapt.validation_loss(base, sequence) == pytest.approx(frozen.val_loss, rel=1e-4)


def test_absmax_quantisation_matches_keras_int8_kernel(base):
    quantized = adapt.quantized_copy(base, "int8")
    for float_layer, int8_layer in ((base.blocks[0].attention.qkv, quantized.blocks[0].attention.qkv),
                                    (base.blocks[1].mlp_out, quantized.blocks[1].mlp_out)):
        kernel = keras.ops.convert_to_numpy(float_layer.kernel)
        q, scale = adapt.absmax_quantize(kernel, axis=0)
        np.testing.assert_array_equal(q, keras.ops.convert_to_numpy(int8_layer._kernel))
        np.testing.assert_allclose(scale.ravel(), keras.ops.convert_to_numpy(int8_layer.kernel_scale).ravel(),
                                   rtol=1e-6)
        step = 1 / scale
        assert np.all(np.abs(q / scale - kernel) <= step / 2 + 1e-7)  # at most half a step off
    q4, _ = adapt.absmax_quantize(np.linspace(-1, 1, 64).reshape(16, 4), bits=4)
    assert q4.min() == -7 and q4.max() == 7
    with pytest.raises(ValueError, match="bits must be one of 4, 8; got 3"):
        adapt.absmax_quantize(np.ones((2, 2)), bits=3)


def test_quantised_copies_shrink_and_stay_close(base):
    x = tokens()
    reference = logits(base, x)
    sizes, errors = {}, {}
    for mode in ("float32", "int8", "int4"):
        model = adapt.quantized_copy(base, mode)
        sizes[mode] = export.keras_weight_bytes(model)
        errors[mode] = np.abs(logits(model, x) - reference).max() / np.abs(reference).max()
        # the cached decode step runs the quantised layers too
        cache = gpt.KVCache(model, len(x))
        for column in x[:, :5].T:
            step_logits = cache.feed(column)
        np.testing.assert_allclose(step_logits, logits(model, x[:, :5])[:, -1], atol=1e-4)
    assert errors["float32"] < 1e-6 < errors["int8"] < 0.05 and errors["int8"] < errors["int4"] < 0.5
    assert sizes["float32"] == 4 * base.count_params()
    # at width 16 the float32 norms, biases and scales weigh; chapter 7 measures 3.8x on its model
    assert sizes["float32"] / sizes["int8"] > 2.5 and sizes["int8"] > sizes["int4"]
    with pytest.raises(ValueError, match="mode must be one of 'float32', 'int8', 'int4', 'float8'; got 'int2'"):
        adapt.quantized_copy(base, "int2")


@pytest.mark.timeout(300)
def test_gpt_generation_lora_and_int8_run_on_this_backend():
    """The model code is backend-agnostic: generation (cached and recomputed), LoRA and int8 on whichever backend
    this leg of `make test` runs (TensorFlow, then JAX)."""
    from bigmodel_utils import gpt

    model = gpt.build_gpt(gpt.GPTConfig(vocab_size=20, context=16, num_layers=1, num_heads=2, width=8), seed=0)
    cached = gpt.generate(model, np.array([1, 2, 3]), 6, seed=0)
    recomputed = gpt.generate(model, np.array([1, 2, 3]), 6, seed=0, use_cache=False)
    assert (cached == recomputed).all(), (cached, recomputed)
    lora = adapt.enable_lora(adapt.copy_model(model), rank=2)
    assert adapt.parameter_counts(lora)["trainable"] == 2 * 16 * 8
    quantized = adapt.quantized_copy(model, "int8")
    assert len(gpt.generate(quantized, np.array([1, 2, 3]), 4, seed=0)) == 4
