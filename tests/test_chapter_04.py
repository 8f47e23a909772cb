"""Chapter 4 under the smoke profile: the results JSON holds real, consistent values."""

from __future__ import annotations

import math

import pytest

from bigmodel_utils import models

CHAPTER = "04_cnn_on_gpu"


@pytest.fixture(scope="module")
def results(run_chapter):
    return run_chapter(CHAPTER)


def test_both_models_learned_and_were_timed_inside_the_run(results):
    for name in ("classic", "improved"):
        model = results[name]
        # Ten classes: chance is 0.1. Smoke trains one or two epochs on 1,800 images.
        assert model["test_accuracy"] > 0.3, (name, model["test_accuracy"])
        assert model["parameters"] > 0 and model["memory_mib"] > 0
    classic, improved = results["classic"], results["improved"]
    # The epoch timers measured epochs of this run: together they fit inside the chapter's own time.
    assert 0 < classic["seconds_per_epoch"] * classic["epochs"] + improved["train_seconds"] < results["chapter_seconds"]
    assert improved["seconds_per_epoch"] <= improved["train_seconds"]


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
    # jit_compile="auto" turns XLA on for a GPU and leaves it off on a CPU
    assert improved["xla"] is (results["device_kind"] == "GPU")
    assert improved["learning_rate"] == pytest.approx(1e-3 * improved["batch_size"] / 32)  # linear scaling


def test_checkpoint_folder_is_keyed_on_the_run_settings(results):
    name = results["improved_dir"]
    assert name.startswith("improved-") and len(name) == len("improved-") + 10
    assert f"width{results['improved']['width']}" not in name  # not the old profile-and-width name


def test_equal_budget_comparison_uses_both_histories(results):
    budget = results["equal_budget"]
    assert budget["epochs"] == min(results["classic"]["epochs"], results["improved"]["epochs_completed"])
    for name in ("classic", "improved"):
        assert 0.1 < budget[f"{name}_validation_accuracy"] <= 1.0, name
        assert 0 < budget[f"{name}_seconds"] < results["chapter_seconds"]
    assert budget["classic_seconds"] == pytest.approx(budget["epochs"] * results["classic"]["seconds_per_epoch"],
                                                      rel=0.5)


def test_throughput_measures_this_model_on_this_machine(results):
    throughput = results["throughput"]
    classic, optimised = throughput["classic_images_per_second"], throughput["optimised_images_per_second"]
    assert throughput["setups"]["classic"]["batch_size"] == 32
    assert throughput["setups"]["optimised"]["batch_size"] > 32
    # The benchmark and the training run time the same model on the same machine, by different code:
    # their rates agree within a factor of 20 (a unit slip, seconds for milliseconds, would not).
    trained = results["improved"]["train_images_per_second"]
    for rate in (classic, optimised):
        assert trained / 20 < rate < trained * 20, (rate, trained)
    for setup in throughput["setups"].values():
        assert len(setup["run_seconds"]) == throughput["runs"]
        assert sum(setup["run_seconds"]) < results["chapter_seconds"]


def test_mirrored_strategy_and_apply_steps(results):
    assert results["mirrored"]["replicas"] == 2 and results["mirrored"]["global_batch"] == 64
    assert results["mirrored"]["variable_type"] == "MirroredVariable"
    assert results["apply"]["reload_matches"] is True and results["apply"]["single_shape"] == [1, 10]
    assert all(results["checks"].values()), results["checks"]
