"""The decode cost model: KV-cache sizes, the published configs, the roofline formula and this machine's timings.

Expected values are written as numbers with where they come from (a model's config.json or paper, a sum done by
hand), or as relations between two measurements; none is recomputed with the formula under test. Timings are in
the tests marked ``perf`` (``make bench``), each asserting a ratio of two things measured in the same run.
"""

from __future__ import annotations

import hashlib
import statistics

import numpy as np
import pytest

from bigmodel_utils import gpt
from bigmodel_utils.data import files
from bigmodel_utils.techniques import decoding

TINY = gpt.GPTConfig(vocab_size=32, context=16, num_layers=2, num_heads=2, width=32)
# chapter 6's GPT at this size, counted by hand: 2 blocks of 12 d^2 + 13 d (d = 32: 12,704 each), token embedding
# 32 x 32 (tied to the output layer), positions 16 x 32, the final norm's 2 d and the output bias of 32
TINY_PARAMETERS = 2 * 12_704 + 1_024 + 512 + 64 + 32  # 27,040
# its float32 KV cache: K and V for 2 layers x 2 heads x 16 values x 4 bytes = 512 bytes a token
TINY_KV_BYTES_PER_TOKEN = 512


@pytest.fixture(scope="module")
def tiny_gpt():
    return gpt.build_gpt(TINY, seed=0)


# Published shapes (each model's config.json on Hugging Face; GPT-3: Brown et al. 2020, Table 2.1) and the KV
# cache per token in 16-bit values that they give: 2 (K and V) x layers x KV heads x head size x 2 bytes.
PUBLISHED_KV = [
    # name, layers, KV heads, head size, bytes per token
    ("Llama 3 8B", 32, 8, 128, 131_072),  # 128 KiB: grouped-query attention, 8 KV heads for 32 query heads
    ("Llama 2 7B", 32, 32, 128, 524_288),  # 512 KiB: multi-head, 32 KV heads
    ("Llama 3 70B", 80, 8, 128, 327_680),  # 320 KiB
    ("Mistral 7B v0.1", 32, 8, 128, 131_072),
    ("Qwen2.5 7B", 28, 4, 128, 57_344),  # 56 KiB: 4 KV heads for 28 query heads
    ("GPT-3 175B", 96, 96, 128, 4_718_592),  # 4.5 MiB
]
# Parameter counts as the checkpoints report them (the safetensors totals on each model's Hugging Face page;
# Qwen2.5 7B's model card rounds its count to 7.61B, of which 6.53B outside the embeddings)
PUBLISHED_PARAMETERS = {
    "Llama 2 7B": 6_738_415_616,
    "Llama 3 8B": 8_030_261_248,
    "Llama 3 70B": 70_553_706_496,
    "Mistral 7B v0.1": 7_241_732_096,
    "Qwen2.5 7B": 7_615_616_512,
}


@pytest.mark.parametrize(("name", "layers", "kv_heads", "head_size", "expected"), PUBLISHED_KV)
def test_kv_cache_per_token_of_published_models(name, layers, kv_heads, head_size, expected):
    assert decoding.kv_cache_bytes_per_token(layers, kv_heads, head_size) == expected, name
    # and the bundled table, whose shapes come from the same sources, gives the same figure
    table = decoding.model_configs().set_index("name")
    assert table.loc[name, "kv_cache_bytes_per_token"] == expected


def test_kv_cache_scales_with_heads_bytes_context_and_batch():
    llama3 = decoding.kv_cache_bytes_per_token(32, 8, 128)
    # grouped-query attention's saving: one KV head for every four query heads holds a quarter of the cache
    assert decoding.kv_cache_bytes_per_token(32, 32, 128) == 4 * llama3
    assert decoding.kv_cache_bytes_per_token(32, 8, 128, bytes_per_value=1) == 65_536  # an 8-bit cache: half
    assert decoding.kv_cache_bytes_per_token(32, 8, 128, bytes_per_value=4) == 262_144  # float32: twice
    # A full 8,192-token context for a batch of 4 is 4 GiB (128 KiB x 8 Ki x 4)
    assert decoding.kv_cache_bytes(131_072, 8192, batch=4) == 4 * 2**30
    # doubling the context, or the batch, doubles the cache
    assert decoding.kv_cache_bytes(131_072, 4096, batch=4) == 2 * 2**30
    assert decoding.kv_cache_bytes(131_072, 8192, batch=2) == 2 * 2**30


def test_published_configs_load_with_sources_and_match_their_parameter_counts():
    table = decoding.model_configs().set_index("name")
    assert {"Llama 3 8B", "Llama 3 70B", "Llama 2 7B", "GPT-3 175B"} <= set(table.index)
    assert table["source"].str.len().min() > 10
    assert hashlib.sha256((files.data_dir() / decoding.MODEL_CONFIGS_FILE).read_bytes()).hexdigest() == (
        decoding.MODEL_CONFIGS_SHA256)
    assert table.loc["Llama 3 70B", "num_kv_heads"] == 8 and table.loc["Llama 3 70B", "attention"] == "GQA"
    assert table.loc["Llama 2 7B", "attention"] == "MHA"
    # Every Llama-style row: the count from its shapes is the checkpoint's published count
    gated = table[table["mlp"] == "gated"]
    assert set(gated.index) == set(PUBLISHED_PARAMETERS)
    for name, row in gated.iterrows():
        counted = decoding.llama_parameter_count(row.vocab_size, row.hidden_size, row.num_layers, row.num_heads,
                                                  row.num_kv_heads, row.head_size, row.intermediate_size,
                                                  row.qkv_bias)
        assert counted == row.parameters == PUBLISHED_PARAMETERS[name], name
    assert table["weight_bytes"]["Llama 3 8B"] == 16_060_522_496  # bfloat16: two bytes a parameter
    # GPT-3's 175B is the paper's figure; 12 L d^2 plus the embeddings comes within 1%
    gpt3 = table.loc["GPT-3 175B"]
    rough = 12 * gpt3.num_layers * gpt3.hidden_size**2 + (gpt3.vocab_size + gpt3.max_context) * gpt3.hidden_size
    assert rough == pytest.approx(175e9, rel=0.01) and gpt3.parameters == 175e9


def test_llama_parameter_count_from_config_json_by_hand():
    # Llama 3 8B's config.json: vocab 128,256, hidden 4,096, 32 layers, 32 heads, 8 KV heads, head 128, MLP 14,336
    assert decoding.llama_parameter_count(128_256, 4096, 32, 32, 8, 128, 14_336) == 8_030_261_248
    # Qwen2.5 7B: biases on Q, K and V (28 layers x (3,584 + 2 x 512) = 129,024 parameters) make the difference
    with_bias = decoding.llama_parameter_count(152_064, 3584, 28, 28, 4, 128, 18_944, qkv_bias=True)
    without = decoding.llama_parameter_count(152_064, 3584, 28, 28, 4, 128, 18_944, qkv_bias=False)
    assert with_bias == 7_615_616_512 and with_bias - without == 129_024
    # the model card's 6.53B without embeddings: untied input and output embeddings of 152,064 x 3,584 each
    assert with_bias - 2 * 152_064 * 3584 == pytest.approx(6.53e9, abs=0.005e9)


def test_gpu_table_has_sources_and_dates():
    for key, spec in decoding.GPUS.items():
        assert "https://" in spec.source and len(spec.as_of) == 7, key
    # the datasheets' figures
    assert decoding.gpu("H100").memory_bandwidth == 3.35e12 and decoding.gpu("H100").memory_bytes == 80e9
    assert decoding.gpu("H200").memory_bandwidth == 4.8e12 and decoding.gpu("T4").memory_bandwidth == 320e9
    assert decoding.gpu(decoding.GPUS["L4"]) is decoding.GPUS["L4"]


def test_prediction_on_a_hand_example():
    # 1 GB of weights, 1 kB of cache per token, 1,000 cached tokens, batch 2: a step reads 1.002 GB
    assert decoding.decode_bytes_per_step(1e9, 1e3, 1000, batch=2) == pytest.approx(1.002e9)
    # and makes 2 tokens at 1 TB/s: 2 x 1e12 / 1.002e9 = 1,996.0 tokens/s
    assert decoding.predicted_decode_tokens_per_second(1e9, 1e3, 1000, 2, 1e12) == pytest.approx(1996.008, rel=1e-6)
    # Llama 3 8B in bfloat16 on an H100 (3.35 TB/s), one sequence of 1,024 tokens: a step reads 16,060,522,496
    # bytes of weights and 1,024 x 131,072 = 134,217,728 of cache, 16,194,740,224 in all: 206.9 tokens/s
    weights = 16_060_522_496
    single = decoding.predicted_decode_tokens_per_second(weights, 131_072, 1024, 1, 3.35e12)
    assert single == pytest.approx(206.857, rel=1e-5)
    # Batching shares the weight reads: more tokens per second, but never past the cache-only bound
    rates = [decoding.predicted_decode_tokens_per_second(weights, 131_072, 1024, b, 3.35e12) for b in (1, 8, 64)]
    assert rates[0] < rates[1] < rates[2] < 3.35e12 / (1024 * 131_072)
    assert rates[1] < 8 * rates[0]
    # batch 64: 64 x 3.35e12 / (16,060,522,496 + 64 x 134,217,728 = 24,650,457,088) = 8,697.6 tokens/s
    assert rates[2] == pytest.approx(8697.6, rel=1e-5)


def test_cache_arrays_grow_with_batch_and_context(tiny_gpt):
    # The cache chapter 6 really allocates, against the figure per token: the arrays, not the formula
    one, two = gpt.KVCache(tiny_gpt, 1), gpt.KVCache(tiny_gpt, 2)
    nbytes = [sum(np.asarray(t).nbytes for t in cache.tensors) for cache in (one, two)]
    assert nbytes == [16 * TINY_KV_BYTES_PER_TOKEN, 2 * 16 * TINY_KV_BYTES_PER_TOKEN]  # 8,192 and 16,384
    longer = gpt.build_gpt(gpt.GPTConfig(vocab_size=32, context=32, num_layers=2, num_heads=2, width=32), seed=0)
    assert sum(np.asarray(t).nbytes for t in gpt.KVCache(longer, 1).tensors) == 2 * nbytes[0]  # twice the context
    assert decoding.gpt_kv_cache_bytes_per_token(TINY) == TINY_KV_BYTES_PER_TOKEN
    assert decoding.gpt_kv_cache_bytes_per_token(tiny_gpt, bytes_per_value=2) == TINY_KV_BYTES_PER_TOKEN // 2


@pytest.mark.timeout(120)
def test_decode_measurement_counts_the_bytes_of_this_model(tiny_gpt):
    result = decoding.measure_decode_speed(tiny_gpt, batch=2, num_tokens=5)
    assert tiny_gpt.count_params() == TINY_PARAMETERS
    assert (result.batch, result.num_tokens, result.context_length) == (2, 5, 16)
    # float32 weights: 4 x 27,040 = 108,160 bytes; the cache of 2 rows x 16 positions x 512 bytes = 16,384
    assert result.weight_bytes == 108_160 and result.kv_cache_bytes == 16_384
    assert result.bytes_read_per_step == 124_544
    # the cache as allocated: every float32 array chapter 6's cache holds
    assert result.kv_cache_bytes == sum(np.asarray(t).nbytes for t in gpt.KVCache(tiny_gpt, 2).tensors)
    # the recorded rates are the recorded seconds, per row of the batch and per byte read
    assert result.tokens_per_second == pytest.approx(2 / result.seconds_per_step)
    assert result.achieved_bytes_per_second == pytest.approx(124_544 / result.seconds_per_step)
    # at 10 GB/s the roofline makes 2 tokens each 124,544 bytes: 160,585.8 tokens/s
    assert result.predicted_tokens_per_second(1e10) == pytest.approx(160_585.8, rel=1e-6)
    assert result.as_dict()["context_length"] == 16 and result.as_dict()["bytes_read_per_step"] == 124_544


@pytest.mark.timeout(120)
def test_prefill_and_decode_rates_are_their_recorded_seconds(tiny_gpt):
    # batch 2, as above, reuses the compiled one-token step
    result = decoding.prefill_vs_decode(tiny_gpt, prompt_length=16, batch=2)
    assert (result.prompt_length, result.batch) == (16, 2)
    assert result.prefill_tokens_per_second == pytest.approx(2 * 16 / result.prefill_seconds)
    assert result.decode_tokens_per_second == pytest.approx(2 / result.decode_seconds_per_token)
    # speedup is prefill's rate over decode's: 16 tokens a row in prefill_seconds, against one per step
    assert result.speedup == pytest.approx(16 * result.decode_seconds_per_token / result.prefill_seconds)
    assert result.as_dict()["speedup"] == pytest.approx(result.speedup)


# ---------------------------------------------------------------- measurements (make bench)


@pytest.mark.perf
@pytest.mark.timeout(180)
def test_perf_decode_reads_far_below_the_measured_memory_bandwidth(tiny_gpt):
    """Chapter 7's point: a tiny model's decode step is bound by each call's fixed cost, not by memory, so the
    bytes it reads per second stay far below what a plain copy moves. Both are measured here, alternately, five
    times; the medians are compared."""
    bandwidth, achieved = [], []
    for _ in range(5):
        bandwidth.append(decoding.measure_memory_bandwidth(num_bytes=64 * 2**20, repeats=3))
        achieved.append(decoding.measure_decode_speed(tiny_gpt, batch=2, num_tokens=5).achieved_bytes_per_second)
    ratio = statistics.median(bandwidth) / statistics.median(achieved)
    print(f"copy {statistics.median(bandwidth) / 1e9:.1f} GB/s, decode {statistics.median(achieved) / 1e9:.2f} "
          f"GB/s: {ratio:.0f}x")
    assert ratio > 2


@pytest.mark.perf
@pytest.mark.timeout(180)
def test_perf_prefill_processes_tokens_faster_than_decode_makes_them(tiny_gpt):
    """One pass over a 16-token prompt against 16 one-token steps: the same weights, read once instead of 16
    times. Prefill's rate over decode's (a ratio of two timings of the same run), median of five runs."""
    speedups = [decoding.prefill_vs_decode(tiny_gpt, prompt_length=16, batch=2, repeats=5).speedup for _ in range(5)]
    print(f"prefill / decode tokens per second: {sorted(round(s, 1) for s in speedups)}")
    assert statistics.median(speedups) > 2


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
