"""Tests for bigmodel_utils.techniques.parallel: ZeRO's memory per device against the paper's worked example, the
GPT's sharding layout, and the sharded training run on two virtual JAX devices."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from bigmodel_utils import gpt
from bigmodel_utils.techniques import parallel

GB = 1e9  # Rajbhandari et al. count gigabytes in powers of ten


@pytest.mark.parametrize(("stage", "expected_gb"), [(0, 120.0), (1, 31.4), (2, 16.6), (3, 1.9)])
def test_zero_matches_the_papers_worked_example(stage, expected_gb):
    # ZeRO (Rajbhandari et al. 2020), figure 1: a 7.5B-parameter model on 64 GPUs with mixed-precision Adam
    memory = parallel.zero_memory(7.5e9, 64, stage)
    assert memory.total / GB == pytest.approx(expected_gb, abs=0.05)


def test_zero_partitions_exactly_what_each_stage_says():
    p, devices = 1e9, 8
    plain = parallel.zero_memory(p, devices, 0)
    assert (plain.weights, plain.gradients, plain.optimizer_states) == (2 * p, 2 * p, 12 * p)
    assert parallel.zero_memory(p, devices, 1).optimizer_states == 12 * p / devices
    assert parallel.zero_memory(p, devices, 1).gradients == 2 * p
    assert parallel.zero_memory(p, devices, 2).gradients == 2 * p / devices
    assert parallel.zero_memory(p, devices, 2).weights == 2 * p
    assert parallel.zero_memory(p, devices, 3).total == pytest.approx(16 * p / devices)
    # one device: every stage is plain training, chapter 2's 16 bytes a parameter
    assert {parallel.zero_memory(p, 1, s).total for s in range(4)} == {16 * p}


def test_devices_needed_is_the_smallest_count_that_fits():
    p = 70e9  # Llama 3 70B: 1.12 TB of training state
    assert parallel.devices_needed(p, 0) is None  # replicated: never fits in 80 GB
    assert parallel.devices_needed(p, 1) is None  # 4 bytes a parameter stay on every device: 280 GB
    assert parallel.devices_needed(p, 3) == 14  # 1120 GB / 80 GB
    for stage in (1, 2, 3):
        needed = parallel.devices_needed(175e9, stage, device_bytes=1e12)
        if needed is not None:
            assert parallel.zero_memory(175e9, needed, stage).total <= 1e12
            assert needed == 1 or parallel.zero_memory(175e9, needed - 1, stage).total > 1e12


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: parallel.zero_memory(1e9, 0, 1), "devices must be a positive integer, got 0"),
        (lambda: parallel.zero_memory(1e9, 8, 4), "stage must be one of 0, 1, 2, 3; got 4"),
        (lambda: parallel.zero_memory(1e9, 8, 1, recipe="fp64"),
         r"recipe must be one of 'float32 \+ Adam', .*; got 'fp64'"),
        (lambda: parallel.devices_needed(1e9, 3, device_bytes=0), "device_bytes must be"),
    ],
)
def test_bad_arguments_name_the_parameter(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_layout_map_shards_every_matrix_of_the_gpt_and_replicates_the_rest():
    mesh = keras.distribution.DeviceMesh((1, 2), ("batch", "model"), ["cpu:0", "cpu:1"])
    layout_map = parallel.gpt_layout_map(mesh)
    model = gpt.build_gpt(gpt.GPTConfig(vocab_size=65, context=16, num_layers=2, num_heads=2, width=32), seed=0)
    sharded = replicated = 0
    for variable in model.weights:
        path = variable.path.split("/", 1)[1]  # without the model's own name
        layout = layout_map[variable.path]
        size = int(np.prod(variable.shape))
        if variable.ndim == 2:  # every matrix is split, on exactly one axis
            assert layout is not None, path
            assert sorted(a for a in layout.axes if a) == ["model"], path
            split = layout.axes.index("model")
            assert variable.shape[split] % 2 == 0
            sharded += size
        elif layout is None:
            replicated += size
        else:
            sharded += size
    # Megatron's pairing: columns of the first matrix of attention and MLP, rows of the second
    assert layout_map["gpt/block_0/attention/qkv/kernel"].axes == (None, "model")
    assert layout_map["gpt/block_0/attention/out/kernel"].axes == ("model", None)
    assert layout_map["gpt/block_1/mlp_out/kernel"].axes == ("model", None)
    assert layout_map["gpt/final_norm/gamma"] is None
    assert replicated / (sharded + replicated) < 0.05  # so a device holds about half


@pytest.fixture(scope="module")
def sharded_run():
    pytest.importorskip("jax", reason="jax is not installed: the sharded run needs it")
    config = gpt.GPTConfig(vocab_size=65, context=16, num_layers=1, num_heads=2, width=32)
    tokens = np.tile(np.arange(65), 200)  # a text the model can learn: the alphabet, repeated
    return parallel.run_on_virtual_devices(config, steps=12, batch_size=8, learning_rate=1e-2, tokens=tokens)


def test_sharded_runs_learn_the_same_as_one_device(sharded_run):
    single = np.array(sharded_run["single_device"]["losses"])
    assert sharded_run["backend"] == "jax" and len(sharded_run["devices"]) == 2
    assert len(single) == 12 and single[-1] < single[0] - 0.5  # it learns
    for way in ("data_parallel", "model_parallel"):
        np.testing.assert_allclose(sharded_run[way]["losses"], single, rtol=1e-4)


def test_model_parallel_halves_the_parameter_bytes_per_device(sharded_run):
    total = sharded_run["single_device"]["param_bytes"]
    assert sharded_run["data_parallel"]["param_bytes_per_device"] == [total, total]  # replicated
    for per_device in sharded_run["model_parallel"]["param_bytes_per_device"]:
        assert 0.5 * total <= per_device <= 0.525 * total


def test_the_sharded_run_rejects_what_cannot_be_split():
    config = gpt.GPTConfig(vocab_size=65, context=16, num_layers=1, num_heads=3, width=33)
    with pytest.raises(ValueError, match="config.width must be divisible by devices"):
        parallel.run_on_virtual_devices(config)
    with pytest.raises(ValueError, match="devices must be an integer of at least 2, got 1"):
        parallel.run_on_virtual_devices(config, devices=1)
