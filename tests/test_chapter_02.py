"""Chapter 2 under the smoke profile: parameter, memory and FLOP counts checked against Keras and TensorFlow."""

from __future__ import annotations

import math

import pytest

pytestmark = pytest.mark.notebooks


@pytest.fixture(scope="module")
def results(run_chapter):
    return run_chapter("02_core_concepts")


def test_parameter_counts(results):
    assert results["classic_cnn_params"] == results["classic_cnn_params_keras"] == 44_401_226
    assert results["params_formula_matches_keras"] is True
    assert round(100 * results["largest_layer_share"], 1) == 99.8
    assert results["gap_head_params"] == results["gap_head_params_keras"] == 164_426


def test_flops_agree_with_tensorflow(results):
    assert results["forward_flops_formula"] == results["forward_flops_tensorflow"] == 1_010_479_872
    assert 0.9 < results["conv_flop_share"] < 0.95


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
    assert results["achieved_gflops_per_s"] > 0
