"""The decode cost model: KV-cache sizes, the published configs, the roofline formula and this machine's timings."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from bigmodel_utils import gpt
from bigmodel_utils.data import files
from bigmodel_utils.techniques import decoding


@pytest.fixture(scope="module")
def tiny_gpt():
    return gpt.build_gpt(gpt.GPTConfig(vocab_size=32, context=16, num_layers=2, num_heads=2, width=32), seed=0)


def test_llama3_8b_kv_cache_by_hand_and_grouped_query_saving():
    # 32 layers x 8 KV heads x 128 values x 2 bytes (bfloat16) x 2 (K and V)
    assert decoding.kv_cache_bytes_per_token(32, 8, 128) == 32 * 8 * 128 * 2 * 2 == 131_072
    # The same shape with one KV head per query head (multi-head attention) holds 4 times as much
    mha = decoding.kv_cache_bytes_per_token(32, 32, 128)
    assert mha / decoding.kv_cache_bytes_per_token(32, 8, 128) == pytest.approx(4.0)
    assert decoding.kv_cache_bytes_per_token(32, 8, 128, bytes_per_value=1) == 65_536  # an 8-bit cache
    # A full 8,192-token context for a batch of 4 is 4 GiB
    assert decoding.kv_cache_bytes(131_072, 8192, batch=4) == 4 * 2**30


def test_published_configs_load_with_sources_and_match_their_parameter_counts():
    table = decoding.model_configs().set_index("name")
    assert {"Llama 3 8B", "Llama 3 70B", "Llama 2 7B", "GPT-3 175B"} <= set(table.index)
    assert table["source"].str.len().min() > 10
    assert hashlib.sha256((files.data_dir() / decoding.MODEL_CONFIGS_FILE).read_bytes()).hexdigest() == (
        decoding.MODEL_CONFIGS_SHA256)
    llama3 = table.loc["Llama 3 8B"]
    assert llama3["kv_cache_bytes_per_token"] == 131_072
    assert table.loc["Llama 3 70B", "num_kv_heads"] == 8 and table.loc["Llama 3 70B", "attention"] == "GQA"
    assert table.loc["Llama 2 7B", "kv_cache_bytes_per_token"] == 4 * llama3["kv_cache_bytes_per_token"]
    # Every Llama-style row: the parameter count follows from its shapes and is near the size in its name
    nominal = {"Llama 2 7B": 7e9, "Llama 3 8B": 8e9, "Llama 3 70B": 70e9, "Mistral 7B v0.1": 7e9, "Qwen2.5 7B": 7e9}
    for name, row in table[table["mlp"] == "gated"].iterrows():
        counted = decoding.llama_parameter_count(row.vocab_size, row.hidden_size, row.num_layers, row.num_heads,
                                                  row.num_kv_heads, row.head_size, row.intermediate_size,
                                                  row.qkv_bias)
        assert counted == row.parameters, name
        assert counted == pytest.approx(nominal[name], rel=0.1), name
    assert table.loc["Qwen2.5 7B", "parameters"] == pytest.approx(7.61e9, rel=0.001)  # the model card's figure
    # GPT-3's 175B is the paper's figure; 12 L d^2 plus the embeddings comes within 1%
    gpt3 = table.loc["GPT-3 175B"]
    rough = 12 * gpt3.num_layers * gpt3.hidden_size**2 + (gpt3.vocab_size + gpt3.max_context) * gpt3.hidden_size
    assert rough == pytest.approx(gpt3.parameters, rel=0.01)


def test_gpu_table_has_sources_and_dates():
    for key, spec in decoding.GPUS.items():
        assert "https://" in spec.source and len(spec.as_of) == 7, key
    assert decoding.gpu("H200").memory_bandwidth > decoding.gpu("H100").memory_bandwidth
    assert decoding.gpu(decoding.GPUS["L4"]) is decoding.GPUS["L4"]


def test_prediction_on_a_hand_example():
    # 1 GB of weights, 1 kB of cache per token, 1,000 cached tokens, batch 2: a step reads 1.002 GB
    assert decoding.decode_bytes_per_step(1e9, 1e3, 1000, batch=2) == pytest.approx(1.002e9)
    assert decoding.predicted_decode_tokens_per_second(1e9, 1e3, 1000, 2, 1e12) == pytest.approx(2e12 / 1.002e9)
    # Llama 3 8B in bfloat16 on an H100, one sequence: about 3.35 TB/s / 16 GB = 208 tokens/s
    weights = 2 * 8_030_261_248
    single = decoding.predicted_decode_tokens_per_second(weights, 131_072, 1024, 1, 3.35e12)
    assert 200 < single < 3.35e12 / weights
    # Batching shares the weight reads: more tokens per second, but never past the cache-only bound
    rates = [decoding.predicted_decode_tokens_per_second(weights, 131_072, 1024, b, 3.35e12) for b in (1, 8, 64)]
    assert rates[0] < rates[1] < rates[2] < 3.35e12 / (1024 * 131_072)
    assert rates[1] < 8 * rates[0]
    # 80 GB less 16 GB of weights leaves room for 59 sequences of 8,192 tokens
    assert decoding.max_batch_in_memory(weights, 131_072, 8192, 80e9) == 59
    assert decoding.max_batch_in_memory(2 * 70_553_706_496, 327_680, 8192, 80e9) == 0  # 70B does not fit


@pytest.mark.timeout(60)
def test_measured_bandwidth_is_plausible():
    bandwidth = decoding.measure_memory_bandwidth(num_bytes=64 * 2**20, repeats=3)
    assert 1e9 < bandwidth < 1e12


@pytest.mark.timeout(120)
def test_decode_measurement_is_consistent(tiny_gpt):
    result = decoding.measure_decode_speed(tiny_gpt, batch=2, num_tokens=5)
    config = tiny_gpt.config
    assert result.tokens_per_second == pytest.approx(2 / result.seconds_per_step)
    assert result.weight_bytes == 4 * tiny_gpt.count_params()
    # the byte count equals the float32 arrays chapter 6's cache really holds
    cache = gpt.KVCache(tiny_gpt, 2)
    assert result.kv_cache_bytes == sum(np.asarray(t).nbytes for t in cache.tensors)
    assert result.kv_cache_bytes == 2 * 16 * decoding.gpt_kv_cache_bytes_per_token(config)
    assert result.bytes_read_per_step == result.weight_bytes + result.kv_cache_bytes
    assert result.achieved_bytes_per_second == pytest.approx(result.bytes_read_per_step / result.seconds_per_step)
    assert result.predicted_tokens_per_second(1e10) == pytest.approx(decoding.predicted_decode_tokens_per_second(
        result.weight_bytes, decoding.gpt_kv_cache_bytes_per_token(config), config.context, 2, 1e10))
    assert result.as_dict()["context_length"] == 16


@pytest.mark.timeout(120)
def test_prefill_processes_tokens_faster_than_decode_makes_them(tiny_gpt):
    # batch 2, as above, reuses the compiled one-token step
    result = decoding.prefill_vs_decode(tiny_gpt, prompt_length=16, batch=2)
    assert result.prefill_tokens_per_second == pytest.approx(2 * 16 / result.prefill_seconds)
    assert result.decode_tokens_per_second == pytest.approx(2 / result.decode_seconds_per_token)
    assert result.speedup > 1
    assert result.as_dict()["speedup"] == pytest.approx(result.speedup)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: decoding.kv_cache_bytes_per_token(0, 8, 128), "num_layers must be a positive integer"),
        (lambda m: decoding.kv_cache_bytes_per_token(32, 8, 128, -2), "bytes_per_value must be a positive"),
        (lambda m: decoding.kv_cache_bytes_per_token(32, 8.5, 128), "num_kv_heads must be a positive integer"),
        (lambda m: decoding.predicted_decode_tokens_per_second(1e9, 1e3, 10, 1, 0), "bandwidth must be a positive"),
        (lambda m: decoding.decode_bytes_per_step(1e9, 1e3, 10, batch=0), "batch must be a positive integer"),
        (lambda m: decoding.measure_memory_bandwidth(num_bytes=1000), "num_bytes must be at least 1 MiB"),
        (lambda m: decoding.measure_memory_bandwidth(repeats=0), "repeats must be a positive integer"),
        (lambda m: decoding.measure_decode_speed(m, num_tokens=100), "num_tokens must be at most the context"),
        (lambda m: decoding.measure_decode_speed("gpt"), "model must be a gpt.GPT"),
        (lambda m: decoding.prefill_vs_decode(m, prompt_length=17), "prompt_length must be at most the context"),
        (lambda m: decoding.gpt_kv_cache_bytes_per_token(object()), "config must be a gpt.GPTConfig"),
        (lambda m: decoding.gpu("B200"), "gpu must be one of"),
    ],
)
def test_bad_arguments_say_what_is_wrong(tiny_gpt, call, message):
    with pytest.raises(ValueError, match=message):
        call(tiny_gpt)
