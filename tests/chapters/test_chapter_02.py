"""Chapter 2 under the smoke profile: parameter, memory and FLOP counts checked against Keras and the backend's
own FLOP count (TensorFlow's profiler, or XLA's cost analysis under JAX)."""

from __future__ import annotations

import math

import pytest

CHAPTER = "02_core_concepts"

# which independent FLOP count the chapter prints under each backend
FLOP_COUNTERS = {"tensorflow": "tensorflow profiler", "jax": "XLA cost analysis"}


def test_parameter_counts(results):
    assert results["classic_cnn_params"] == results["classic_cnn_params_keras"] == 44_401_226
    assert results["params_formula_matches_keras"] is True
    assert round(100 * results["largest_layer_share"], 1) == 99.8
    assert results["gap_head_params"] == results["gap_head_params_keras"] == 164_426


def test_flops_agree_with_the_backends_own_count(results):
    assert results["forward_flops_formula"] == results["forward_flops_counted"] == 1_010_479_872
    assert results["flop_counter"] == FLOP_COUNTERS[results["backend"]]
    assert 0.9 < results["conv_flop_share"] < 0.95


def test_xla_counts_the_same_flops_under_jax(jax_full):
    # The same chapter under KERAS_BACKEND=jax, in the shrunk full profile (tests/conftest.py)
    # counts with XLA's cost analysis, with no TensorFlow involved, and must land on the same number.
    jax_results = jax_full
    assert jax_results["backend"] == "jax" and jax_results["flop_counter"] == FLOP_COUNTERS["jax"]
    assert jax_results["forward_flops_counted"] == jax_results["forward_flops_formula"] == 1_010_479_872
    assert jax_results["classic_cnn_params_keras"] == 44_401_226


def test_memory(results):
    assert results["bytes_per_parameter"]["mixed bf16 + Adam"] == 16
    assert results["bytes_per_parameter"]["pure bf16 + Adam"] == 8
    assert results["gpt3_training_state_bytes"] == pytest.approx(175e9 * 16)


def test_six_nd_rule(results):
    ratios = results["six_nd_over_reported"]
    for name in ("GPT-3 (175B)", "Chinchilla", "Llama 3.1 405B"):
        assert ratios[name] == pytest.approx(1.0, abs=0.05), name
    assert ratios["T5-11B"] == pytest.approx(2.0, abs=0.1)  # encoder-decoder: half the parameters per token


def test_growth_exponents(results):
    exponents = results["growth_exponents"]
    assert exponents["width"]["params"] == pytest.approx(2.0, abs=0.1)
    assert 1.8 < exponents["input size"]["flops"] < 2.4


def test_training_experiments_learned_something(results):
    accuracy = results["accuracy_by_training_images"]
    sizes = sorted(accuracy, key=int)
    assert accuracy[sizes[-1]] > 0.3  # ten classes: chance is 0.1
    assert accuracy[sizes[-1]] >= accuracy[sizes[0]]
    losses = results["final_loss_by_optimizer"]
    assert all(math.isfinite(v) for v in losses.values())
    assert losses["Adam"] < losses["SGD"]


def test_full_profile_shrunk_trains_on_four_fractions_of_the_full_dataset(jax_full):
    results = jax_full
    assert results["profile"] == "full" and results["backend"] == "jax"
    accuracy = results["accuracy_by_training_images"]
    assert sorted(map(int, accuracy)) == [19200 // 64, 19200 // 16, 19200 // 4, 19200]
    assert 0.7 < accuracy["19200"] <= 1.0  # one epoch of 150 steps (0.82 measured); chance is 0.1
    assert accuracy["19200"] > accuracy["300"]
    assert results["final_loss_by_optimizer"]["Adam"] < results["final_loss_by_optimizer"]["SGD"]
