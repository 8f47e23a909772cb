"""Chapter 7 (from model to product) under the smoke profile, and under full shrunk by papermill parameters.

The profiles differ in budgets, and in one branch: only `full` quantises the GPT to float8 as well
(`QUANT_MODES`), so the shrunk full run checks that row of the compression table.
"""

from __future__ import annotations

import math

import psutil
import pytest

CHAPTER = "07_model_to_product"


def test_lora_trains_a_small_share_and_its_factors_reattach(results):
    assert results["lora_max_difference"] < 1e-5
    methods = results["adaptations"]
    frozen, full, lora = methods["frozen"], methods["full"], methods["lora"]
    assert frozen["trainable"] == 0 and full["trainable"] == full["total"]
    assert 0 < lora["trainable_share"] < 0.05
    # two float32 AdamW moments per trainable parameter
    assert lora["optimizer_state_bytes"] == 8 * lora["trainable"]
    assert full["optimizer_state_bytes"] == 8 * full["trainable"]
    assert full["val_loss"] < frozen["val_loss"]  # even a few smoke steps move the loss
    assert results["lora_reattach_difference"] < 1e-5
    assert results["lora_file_ratio"] > 10  # the factors are far smaller than the weights


def test_quantisation_matches_keras_and_shrinks_both_models(results):
    check = results["quantization_check"]
    assert check["same_integers"] and check["scale_difference"] < 1e-5
    assert check["rounding_error"] <= 0.5 / 127 + 1e-6
    rows = {(r["model"], r["format"]): r for r in results["compression"]}
    gpt_float, gpt_int8, gpt_int4 = (rows["GPT", f"Keras {m}"] for m in ("float32", "int8", "int4"))
    assert gpt_float["weight MB"] / gpt_int8["weight MB"] > 3.4
    assert gpt_int8["weight MB"] > gpt_int4["weight MB"]
    assert abs(gpt_int8["val loss"] - gpt_float["val loss"]) < 0.01 * gpt_float["val loss"]
    assert gpt_int8["perplexity"] == pytest.approx(math.exp(gpt_int8["val loss"]))
    cnn_float, cnn_int8 = rows["CNN", "Keras float32"], rows["CNN", "ONNX int8"]
    assert cnn_float["weight MB"] / cnn_int8["weight MB"] > 3.4
    assert abs(cnn_int8["test accuracy"] - cnn_float["test accuracy"]) < 0.02
    assert rows["CNN", "ONNX float32"]["test accuracy"] == pytest.approx(cnn_float["test accuracy"], abs=1e-3)


def test_exported_models_agree_with_keras(results):
    runtimes = {(r["model"], r["runtime"]) for r in results["export"]}
    assert runtimes == {("CNN", "SavedModel"), ("CNN", "ONNX float32"), ("GPT", "ONNX float32")}
    assert all(r["max_abs_diff"] < 1e-4 and r["label_agreement"] == 1.0 for r in results["export"])
    assert results["onnx_max_difference"] < 1e-4


def test_service_validates_answers_everything_and_leaves_nothing(results):
    service = results["serving"]
    refusals = service["refusals"]
    assert len(refusals) >= 6
    assert all(400 <= r["status"] < 500 and r["field"] == r["expected_field"] for r in refusals)
    for path, rows in service["sweeps"].items():
        assert {r["mode"] for r in rows} == {"unbatched", "batched"}, path
        assert all(r["sent"] == r["answered"] == r["ok"] > 0 and not r["errors"] for r in rows), path
        assert all(r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"] for r in rows), path
    assert service["leftovers"] == []
    pid = service["health"]["pid"]
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_decoding_costs_follow_the_bandwidth_formula(results):
    # Measured rates are checked against what the run recorded beside them, not bounded: the prediction is the
    # batch's tokens at the measured bandwidth over the bytes a step reads, and the achieved bandwidth is those
    # bytes at the measured rate
    bandwidth = results["memory_bandwidth"]
    for row in results["decode"]:
        step_bytes = row["MB read per step"] * 1e6
        assert row["predicted tokens/s"] == pytest.approx(row["batch"] * bandwidth / step_bytes)
        assert row["achieved GB/s"] * 1e9 == pytest.approx(step_bytes * row["measured tokens/s"] / row["batch"])
    batches = [row["batch"] for row in results["decode"]]
    read = [row["MB read per step"] for row in results["decode"]]
    assert batches == sorted(batches) and read == sorted(read)  # a larger batch reads more cache per step
    kv = {r["name"]: r for r in results["kv_cache"]}
    assert kv["Llama 3 8B"]["KV kB per token"] == pytest.approx(131.072)  # 2 * 32 * 8 * 128 * 2 bytes
    assert kv["Llama 2 7B"]["KV kB per token"] == pytest.approx(4 * 131.072)  # 32 KV heads instead of 8
    for row in results["roofline"]:
        assert row["batch 1"] < row["batch 16"] < row["batch 64"]
    h100 = next(r for r in results["roofline"] if "H100" in r["GPU"])
    # batch 1: 3.35 TB/s over 16,060,522,496 bytes of weights plus 2,048 x 131,072 of cache: 205.2 tokens/s
    assert h100["batch 1"] == pytest.approx(3.35e12 / (16_060_522_496 + 2048 * 131_072), rel=1e-9)
    prefill = results["prefill"]  # the prompt fills the served model's context, one sequence
    assert prefill["prompt_length"] == results["base_config"]["context"] and prefill["batch"] == 1
    assert prefill["speedup"] == pytest.approx(prefill["prefill_tokens_per_second"]
                                               / prefill["decode_tokens_per_second"])
    assert prefill["prefill_tokens_per_second"] == pytest.approx(prefill["prompt_length"] / prefill["prefill_seconds"])


def test_prices_and_break_even_are_consistent(results):
    costs = results["costs"]
    for row in costs:
        assert row["USD per million"] == pytest.approx(row["price/h"] / (3600 * row["throughput/s"]) * 1e6)
    even = results["break_even"]
    assert even["volume_per_month"] == pytest.approx(even["fixed_usd_per_month"] * 1e6 / even["api_price"])
    assert even["capacity_per_month"] > 0


def test_full_profile_shrunk_quantises_to_float8_too(jax_full):
    results = jax_full
    assert results["profile"] == "full" and results["backend"] == "jax"
    rows = {(r["model"], r["format"]): r for r in results["compression"]}
    assert [r["format"] for r in results["compression"] if r["model"] == "GPT"] == [
        "Keras float32", "Keras int8", "Keras int4", "Keras float8"]
    gpt_float, float8 = rows["GPT", "Keras float32"], rows["GPT", "Keras float8"]
    # float8 in Keras is a training format: float32 kernels plus their scaling factors, so more bytes, not fewer
    assert float8["weight MB"] > gpt_float["weight MB"]
    assert abs(float8["val loss"] - gpt_float["val loss"]) < 0.01 * gpt_float["val loss"]
    assert float8["perplexity"] == pytest.approx(math.exp(float8["val loss"]))
    assert results["adaptations"]["lora"]["trainable"] > 0 and results["serving"]["leftovers"] == []
