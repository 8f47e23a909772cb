"""Chapter 6 (language models) under the smoke profile, and under full shrunk by papermill parameters."""

from __future__ import annotations

import math

import pytest

CHAPTER = "06_language_models"


def test_tokenizers_cost_what_their_encodings_say(results):
    rows = {(r["corpus"], r["tokenizer"]): r for r in results["tokenizers"]}
    assert rows["shakespeare", "byte"]["tokens per character"] == 1.0  # the corpus is ASCII
    assert rows["shakespeare", "char"]["vocabulary"] == 65
    assert 2.8 < rows["tang", "byte"]["tokens per character"] < 3.0  # three bytes a hanzi, one a newline
    for corpus in ("shakespeare", "tang"):
        assert rows[corpus, "char"]["tokens per character"] == 1.0
        assert rows[corpus, "bpe"]["tokens per character"] < rows[corpus, "byte"]["tokens per character"]
    assert rows["tang", "bpe"]["tokens per character"] > 1.0  # a small BPE cannot beat characters here


def test_attention_matches_keras_and_scaling_prevents_saturation(results):
    assert results["attention_agrees"] and results["attention_max_difference"] < 1e-5
    rows = {(r["d_k"], r["scaled"]): r for r in results["saturation"]}
    assert rows[1024, False]["largest weight (mean)"] > 0.9
    assert all(rows[d, True]["largest weight (mean)"] < 0.3 for d in (4, 16, 64, 256, 1024))
    assert all(0.9 < rows[d, True]["score std"] < 1.1 for d in (4, 16, 64, 256, 1024))
    assert rows[1024, False]["score std"] == pytest.approx(32, rel=0.1)  # sqrt(1024)


def test_parameter_counts_and_flops(results):
    assert results["parameter_counts_agree"]
    gpt2 = next(r for r in results["parameter_counts"] if r["model"] == "GPT-2 small")
    assert gpt2["count_params()"] == 124_439_808 + 50_257  # GPT-2 small, plus our output bias
    config = results["config"]
    d, layers = config["width"], config["num_layers"]
    non_embedding = layers * (12 * d * d + 13 * d) + 2 * d
    flops = results["flops_per_token"]
    assert flops["training"] == 3 * flops["forward"]
    assert flops["forward"] == 2 * non_embedding + 2 * layers * config["context"] * d + 2 * d * 65
    assert results["six_nd_flop"] == 6 * non_embedding * results["shakespeare"]["tokens_seen"]


def test_training_beats_the_uniform_baseline_and_measures_its_speed(results):
    run = results["shakespeare"]
    baselines = run["baselines"]
    assert baselines["uniform"] == pytest.approx(math.log(65))
    assert baselines["uniform"] > baselines["unigram"] > baselines["bigram"] > 2.0
    assert run["final_val_loss"] < baselines["uniform"]
    assert run["tokens_seen"] == run["steps"][-1] * run["batch_size"] * run["context"]
    assert run["perplexity"] == pytest.approx(math.exp(run["final_val_loss"]))
    # Timings are checked against each other, not bounded: the rate is the tokens over the recorded seconds, and
    # MFU is the counted FLOPs per second over this machine's matmul rate measured in the same run
    assert results["tokens_per_second"] == pytest.approx(run["tokens_seen"] / run["train_seconds"])
    assert results["counted_flop"] == results["flops_per_token"]["training"] * run["tokens_seen"]
    assert results["mfu"] == pytest.approx(
        results["counted_flop"] / run["train_seconds"] / results["matmul_flops_per_second"])
    # the seconds at each evaluation are a running clock; the training time is where it stopped
    assert run["train_seconds"] == run["seconds"][-1] and run["seconds"] == sorted(run["seconds"])
    assert len(run["seconds"]) == len(run["steps"]) == len(run["val_loss"])


def test_kv_cache_agrees_and_both_ways_are_timed(results):
    kv = results["kv_cache"]
    assert kv["agrees"] and kv["max_difference"] < 1e-4
    # The speed-up is a benchmark of the quick profile (the chapter and the note report it): at smoke size,
    # 16 tokens of a 28k-parameter model, both ways cost about one call's overhead a token. What the run records
    # must agree with itself: the speed-up is the recomputing time over the cached time.
    assert kv["new_tokens"] == 16
    assert kv["speedup"] == pytest.approx(kv["seconds"]["recomputed"] / kv["seconds"]["cached"])


def test_tang_model_samples_and_models_reload(results):
    tang = results["tang"]
    assert tang["vocab_size"] > 2000 and len(tang["samples"]) == 8
    assert tang["final_val_loss"] < math.log(tang["vocab_size"])
    assert results["reloaded_same_logits"]
    assert [path.rsplit("/", 1)[-1] for path in results["saved_models"]] == ["shakespeare.keras", "tang.keras"]


def test_sharded_gpt_learns_as_on_one_device_with_half_the_bytes(results):
    sharding = results["sharding"]
    assert sharding["backend"] == "jax" and len(sharding["devices"]) == 2
    single = sharding["single_device"]["losses"]
    assert len(single) >= 2 and single[-1] < single[0]  # it trains
    for way in ("data_parallel", "model_parallel"):
        assert max(abs(a - b) for a, b in zip(sharding[way]["losses"], single)) < 1e-4
    assert sharding["largest_loss_difference"] < 1e-4
    total = sharding["total_param_bytes"]
    assert sharding["data_parallel"]["param_bytes_per_device"] == [total, total]  # replicated
    for per_device in sharding["model_parallel"]["param_bytes_per_device"]:
        assert 0.5 * total <= per_device <= 0.525 * total  # half, plus what stays whole


def test_zero_memory_matches_the_paper_and_counts_devices(results):
    assert [round(gb, 1) for gb in results["zero_worked_example_gb"]] == [120.0, 31.4, 16.6, 1.9]
    table = {(r["model"], r["training"]): r for r in results["zero_memory"]}
    assert table["GPT-3 175B", "plain"]["80 GB devices needed"] == "never"
    assert table["GPT-3 175B", "ZeRO-3"]["80 GB devices needed"] == 35  # 16 x 175e9 bytes / 80 GB
    assert table["Llama 3 70B", "ZeRO-3"]["80 GB devices needed"] == 14
    assert table["GPT-3 175B", "ZeRO-3"]["GB per device on 64"] == pytest.approx(43.75)


def test_full_profile_shrunk_runs_the_gpu_branches(jax_full):
    results = jax_full
    assert results["profile"] == "full" and results["backend"] == "jax"
    assert results["config"]["dropout"] == 0.2  # the full profile's regularisation is on
    assert results["config"]["width"] == 32 and results["shakespeare"]["steps"] == [2, 4]
    assert len(results["sharding"]["model_parallel"]["losses"]) == 2  # the sharded section ran too
