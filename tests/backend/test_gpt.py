"""The GPT of chapter 6: attention against Keras, parameter and FLOP counts, KV cache, training, saving."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from bigmodel_utils import gpt
from bigmodel_utils.data import text

TINY = gpt.GPTConfig(vocab_size=11, context=12, num_layers=2, num_heads=2, width=16)


@pytest.fixture(scope="module")
def tiny_model():
    return gpt.build_gpt(TINY, seed=1)


def test_scratch_attention_matches_keras_multi_head_attention():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 7, 16)).astype("float32")
    layer = keras.layers.MultiHeadAttention(num_heads=4, key_dim=4)
    expected = keras.ops.convert_to_numpy(layer(x, x, use_causal_mask=True))
    got = gpt.multi_head_attention(x, gpt.mha_weights(layer), causal=True)
    assert np.max(np.abs(got - expected)) < 1e-5
    unmasked = keras.ops.convert_to_numpy(layer(x, x))
    assert (
        np.max(
            np.abs(
                gpt.multi_head_attention(x, gpt.mha_weights(layer), causal=False)
                - unmasked
            )
        )
        < 1e-5
    )
    assert np.max(np.abs(unmasked - expected)) > 1e-3  # the mask matters


def test_attention_weights_are_causal_rows_that_sum_to_one():
    q = k = v = np.random.default_rng(1).normal(size=(5, 4))
    out, weights = gpt.scaled_dot_product_attention(q, k, v, gpt.causal_mask(5))
    assert np.allclose(weights.sum(axis=-1), 1) and np.all(np.triu(weights, 1) == 0)
    assert np.allclose(out[0], v[0])  # the first position can only look at itself


def test_model_attention_layer_matches_the_scratch_version(tiny_model):
    layer = tiny_model.blocks[0].attention
    kernel, bias = (np.asarray(w) for w in layer.qkv.get_weights())
    out_kernel, out_bias = (np.asarray(w) for w in layer.out.get_weights())
    d, heads, size = TINY.width, TINY.num_heads, TINY.head_size
    kernel, bias = kernel.reshape(d, 3, heads, size), bias.reshape(3, heads, size)
    weights = {
        "query_kernel": kernel[:, 0],
        "key_kernel": kernel[:, 1],
        "value_kernel": kernel[:, 2],
        "query_bias": bias[0],
        "key_bias": bias[1],
        "value_bias": bias[2],
        "output_kernel": out_kernel.reshape(heads, size, d),
        "output_bias": out_bias,
    }
    x = np.random.default_rng(2).normal(size=(2, 6, d)).astype("float32")
    assert (
        np.max(
            np.abs(
                keras.ops.convert_to_numpy(layer(x))
                - gpt.multi_head_attention(x, weights)
            )
        )
        < 1e-5
    )


def test_future_tokens_do_not_change_earlier_logits(tiny_model):
    tokens = np.array([[1, 2, 3, 4, 5, 6]], dtype="int32")
    changed = tokens.copy()
    changed[0, 4:] = [9, 10]
    a = keras.ops.convert_to_numpy(tiny_model(tokens))
    b = keras.ops.convert_to_numpy(tiny_model(changed))
    assert np.allclose(a[:, :4], b[:, :4], atol=1e-6) and not np.allclose(
        a[:, 4:], b[:, 4:]
    )


@pytest.mark.parametrize(
    "config",
    [
        TINY,
        gpt.GPTConfig(vocab_size=65, context=64, num_layers=4, num_heads=4, width=128),
        gpt.GPTConfig(vocab_size=300, context=32, num_layers=3, num_heads=6, width=48),
    ],
)
def test_parameter_count_by_hand_equals_keras(config):
    """Every part of the hand count against Keras's own count of the layers it covers."""
    counted = gpt.parameter_count(config)
    model = gpt.build_gpt(config)
    assert counted["total"] == model.count_params()
    assert counted["per_block"] == model.blocks[0].count_params()
    assert counted["blocks"] == sum(block.count_params() for block in model.blocks)
    assert counted["embedding"] == model.token_embedding.count_params() + model.position_embedding.count_params()
    assert counted["non_embedding"] == counted["blocks"] + model.final_norm.count_params()
    assert counted["output_bias"] == model.output_bias.shape[0]


# Shapes (and lengths) where every term of the formula is a large share of the count: the output layer
# 2dV is 28%, 35% and 7% of the forward pass, attention's computed square 4LTd 29%, 9% and 17%.
WIDE_VOCABULARY = gpt.GPTConfig(vocab_size=1000, context=256, num_layers=2, num_heads=2, width=64)
XLA_CASES = [
    (WIDE_VOCABULARY, 256),
    (WIDE_VOCABULARY, 64),  # a shorter input than the context: flops_per_token(config, context=64)
    (gpt.GPTConfig(vocab_size=300, context=128, num_layers=3, num_heads=4, width=96), 128),
]


@pytest.mark.skipif(keras.backend.backend() != "jax",
                    reason="reads XLA's cost analysis through jax.jit; runs in the JAX leg of the tests")
@pytest.mark.parametrize("config, length", XLA_CASES)
def test_flops_per_token_agree_with_xla_cost_analysis(config, length):
    """Kaplan's forward count against XLA's own count of the compiled forward pass over ``length`` tokens.

    Our layer computes attention's whole T x T square and masks it, so XLA must find the formula plus the
    masked half, 2LTd (the formula counts the causal half only, the model FLOPs). XLA also counts the
    element-wise work the formula leaves out (softmax, LayerNorm, GELU, bias and residual additions): 9-10%
    for these widths, so its count must lie between 1 and 1.12 times that sum. Leaving out a term of the
    formula (the output layer, attention) or a factor 2 moves the ratio out of that range in every case;
    counting attention's square in full (4LTd) moves it out in the first, ignoring ``context`` in the second.
    """
    import jax

    model = gpt.build_gpt(config, seed=0)

    def forward(trainable, non_trainable, tokens):
        return model.stateless_call(trainable, non_trainable, tokens, training=False)[0]

    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    tokens = np.zeros((1, length), dtype="int32")
    analysis = jax.jit(forward).lower(trainable, non_trainable, tokens).compile().cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older JAX: one dict per device
        analysis = analysis[0]
    xla_per_token = analysis["flops"] / length
    computed = gpt.flops_per_token(config, context=length)["forward"] + 2 * config.num_layers * length * config.width
    assert 1.0 <= xla_per_token / computed <= 1.12


def test_config_refuses_bad_shapes():
    with pytest.raises(ValueError, match="width must be divisible by num_heads"):
        gpt.GPTConfig(vocab_size=10, context=8, num_heads=3, width=16)
    with pytest.raises(ValueError, match="context must be a positive integer, got 0"):
        gpt.GPTConfig(vocab_size=10, context=0)


def test_kv_cache_gives_the_logits_of_a_full_pass(tiny_model):
    tokens = (
        np.random.default_rng(3)
        .integers(0, TINY.vocab_size, size=(2, 9))
        .astype("int32")
    )
    full = gpt.next_token_logits(tiny_model, tokens, use_cache=False)
    cached = gpt.next_token_logits(tiny_model, tokens, use_cache=True)
    assert full.shape == (2, TINY.vocab_size) and np.max(np.abs(full - cached)) < 1e-4


def test_generation_with_and_without_cache_agrees(tiny_model):
    prompt = np.array([1, 2, 3], dtype="int32")
    greedy = [
        gpt.generate(tiny_model, prompt, 8, top_k=1, use_cache=c) for c in (True, False)
    ]
    assert greedy[0].shape == (8,) and np.array_equal(*greedy)
    sampled = [
        gpt.generate(tiny_model, prompt, 8, temperature=0.8, seed=5, use_cache=c)
        for c in (True, False)
    ]
    assert np.array_equal(*sampled)
    fits = TINY.context - len(prompt) + 1  # new tokens before the cache is full
    long = [
        gpt.generate(tiny_model, prompt, 30, top_k=1, use_cache=c)
        for c in (True, False)
    ]
    assert long[0].shape == (30,) and long[0].max() < TINY.vocab_size
    assert np.array_equal(
        long[0][:fits], long[1][:fits]
    )  # the same until the cache restarts


def test_top_k_and_temperature_shape_the_distribution():
    logits = np.array([[0.0, 1.0, 2.0, 3.0]])
    rng = np.random.default_rng(0)
    draws = np.concatenate([gpt.sample_next(logits, 1.0, 2, rng) for _ in range(200)])
    assert set(draws.tolist()) == {2, 3}
    cold = np.concatenate([gpt.sample_next(logits, 0.05, None, rng) for _ in range(50)])
    assert set(cold.tolist()) == {3}


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"prompt": np.array([], dtype="int32")}, "prompt length must be an integer from 1 to 12, got 0"),
        ({"temperature": 0}, "temperature must be a positive number, got 0"),
        ({"top_k": 0}, "top_k must be an integer from 1 to 11, got 0"),
        ({"top_k": 12}, "top_k must be an integer from 1 to 11, got 12"),
        ({"top_k": 2.0}, r"top_k must be an integer from 1 to 11, got 2\.0"),
        ({"num_new_tokens": 0}, "num_new_tokens must be a positive integer, got 0"),
        ({"prompt": np.ones(13, dtype="int32")}, "prompt length must be an integer from 1 to 12, got 13"),
    ],
)
def test_bad_generation_arguments_get_one_line_errors(tiny_model, arguments, message):
    call = {
        "prompt": np.array([1, 2, 3], dtype="int32"),
        "num_new_tokens": 4,
        **arguments,
    }
    with pytest.raises(ValueError, match=message):
        gpt.generate(tiny_model, call.pop("prompt"), **call)


def test_saved_model_loads_in_safe_mode_with_the_same_outputs(tiny_model, tmp_path):
    path = tmp_path / "tiny.keras"
    tiny_model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    tokens = np.array([[1, 2, 3, 4]], dtype="int32")
    assert loaded.config == TINY
    assert np.allclose(
        keras.ops.convert_to_numpy(loaded(tokens)),
        keras.ops.convert_to_numpy(tiny_model(tokens)),
    )


def _periodic_tokens():
    return np.tile(np.arange(TINY.vocab_size), 300)


def test_training_learns_a_periodic_sequence_below_its_baselines():
    tokens = _periodic_tokens()
    model = gpt.build_gpt(TINY, seed=0)
    run = gpt.train_language_model(
        model,
        tokens,
        tokens,
        steps=60,
        batch_size=16,
        learning_rate=1e-2,
        warmup_steps=5,
        eval_every=30,
        eval_windows=8,
    )
    assert run.steps == [30, 60] and run.tokens_seen == 60 * 16 * TINY.context
    assert (
        run.final_val_loss
        < 0.2 * text.ngram_baselines(tokens, tokens, TINY.vocab_size)["unigram"]
    )
    assert run.seconds[1] > run.seconds[0] > 0


def test_an_interrupted_run_resumes_from_its_checkpoint(tmp_path, monkeypatch, capsys):
    tokens = _periodic_tokens()
    settings = dict(
        steps=4,
        batch_size=4,
        learning_rate=1e-3,
        warmup_steps=1,
        eval_every=2,
        eval_windows=4,
        checkpoint_dir=tmp_path,
        name="tiny",
        jit_compile=False,
    )
    real_windows, calls = text.windows, []

    def failing_windows(ids, context, count, seed=0, start=None):
        calls.append(seed)
        # validation windows, the first interval, then the second interval dies
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_windows(ids, context, count, seed, start)

    monkeypatch.setattr(text, "windows", failing_windows)
    with pytest.raises(KeyboardInterrupt):
        gpt.train_language_model(
            gpt.build_gpt(TINY, seed=0), tokens, tokens, **settings
        )
    saved = json.loads((tmp_path / "tiny-checkpoint.json").read_text())
    assert saved["run"]["steps"] == [2]
    monkeypatch.setattr(text, "windows", real_windows)
    run = gpt.train_language_model(
        gpt.build_gpt(TINY, seed=0), tokens, tokens, **settings
    )
    assert "Resuming tiny from its checkpoint at step 2 of 4" in capsys.readouterr().out
    assert run.steps == [2, 4] and run.resumed_from_step == 2
    assert not list(tmp_path.glob("tiny-checkpoint*")), (
        "a finished run removes its checkpoint"
    )


def test_optimizer_warms_up_from_zero_then_decays_to_a_tenth():
    optimizer = gpt.make_optimizer(1e-3, total_steps=110, warmup_steps=10, weight_decay=0.05, clipnorm=0.5)
    rates = {}
    for step in (0, 5, 10, 60, 110):
        optimizer.iterations.assign(step)
        rates[step] = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    assert rates[0] == 0.0 and rates[5] == pytest.approx(5e-4) and rates[10] == pytest.approx(1e-3)
    # half-way through the cosine: the mean of the peak and the floor
    assert rates[60] == pytest.approx((1e-3 + 1e-4) / 2) and rates[110] == pytest.approx(1e-4)
    assert optimizer.weight_decay == 0.05 and optimizer.global_clipnorm == 0.5


def test_optimizer_arguments_are_checked():
    message = r"peak_learning_rate must be a finite number \(above 0 and below 10\), got 0\.0"
    with pytest.raises(ValueError, match=message):
        gpt.make_optimizer(0.0, 10, 1)
    with pytest.raises(ValueError, match="warmup_steps must be an integer from 0 to 9, got 10"):
        gpt.make_optimizer(1e-3, 10, 10)


def test_load_or_train_trains_once_then_loads(tmp_path, capsys):
    model, tokenizer = gpt.load_or_train(tmp_path, "shakespeare", steps=2, jit_compile=False)
    assert "training a small one (2 steps)" in capsys.readouterr().out
    assert model.config.vocab_size == tokenizer.vocab_size == 65
    assert (tmp_path / "shakespeare.keras").is_file()
    again, _ = gpt.load_or_train(tmp_path, "shakespeare")
    assert "Loaded chapter 6's model 'shakespeare'" in capsys.readouterr().out
    tokens = tokenizer.encode("ROMEO:")[None, :]
    assert np.allclose(gpt.next_token_logits(again, tokens, use_cache=False),
                       gpt.next_token_logits(model, tokens, use_cache=False), atol=1e-6)
    with pytest.raises(FileNotFoundError, match="no language model 'tang' in"):
        gpt.load_language_model(tmp_path, "tang")
