"""Chapter 4 under the smoke profile: the results JSON holds real, consistent values."""

from __future__ import annotations

import math

import pytest

from bigmodel_utils import models

CHAPTER = "04_cnn_on_gpu"


@pytest.fixture(scope="module")
def results(run_chapter):
    return run_chapter(CHAPTER)


def test_both_models_report_accuracy_parameters_and_throughput(results):
    for name in ("classic", "improved"):
        model = results[name]
        assert 0.0 <= model["test_accuracy"] <= 1.0
        assert model["parameters"] > 0 and model["seconds_per_epoch"] > 0
        assert model["train_images_per_second"] == pytest.approx(results["num_train"] / model["seconds_per_epoch"])
        assert model["memory_mib"] > 0
    assert results["classic"]["test_accuracy"] > 0.3  # ten classes: chance is 0.1


def test_parameter_counts_match_the_builders(results):
    classic, improved = results["classic"], results["improved"]
    assert classic["parameters_224"] == 44_401_226
    assert 0.997 < classic["dense_share_224"] < 0.999
    assert classic["input_shape"] == [28, 28, 1]  # smoke trains the classic architecture at the native size
    assert classic["parameters"] == models.build_classic_cnn((28, 28, 1)).count_params()
    width = improved["width"]
    assert improved["parameters"] == models.build_improved_cnn((28, 28, 1), width=width).count_params()


def test_training_started_from_a_sane_state_and_ran_every_epoch(results):
    improved = results["improved"]
    assert abs(improved["initial_loss"] - math.log(10)) < 0.3  # an untrained 10-class softmax
    assert improved["resumed_from_epoch"] == 0 and improved["epochs_completed"] >= 1
    assert improved["xla"] is False  # CPU-only: jit_compile="auto" leaves XLA off
    assert improved["learning_rate"] == pytest.approx(1e-3 * improved["batch_size"] / 32)  # linear scaling


def test_throughput_ratio_is_the_ratio_of_the_medians(results):
    throughput = results["throughput"]
    classic, optimised = throughput["classic_images_per_second"], throughput["optimised_images_per_second"]
    assert classic > 0 and optimised > 0
    assert throughput["speedup"] == pytest.approx(optimised / classic)
    assert throughput["setups"]["classic"]["batch_size"] == 32
    assert throughput["setups"]["optimised"]["batch_size"] > 32


def test_mirrored_strategy_and_apply_steps(results):
    assert results["mirrored"]["replicas"] == 2 and results["mirrored"]["global_batch"] == 64
    assert results["mirrored"]["variable_type"] == "MirroredVariable"
    assert results["apply"]["reload_matches"] is True and results["apply"]["single_shape"] == [1, 10]
    assert all(results["checks"].values()), results["checks"]
