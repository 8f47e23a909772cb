"""Chapter 4 under the smoke profile: the results JSON holds real, consistent values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bigmodel_utils.cnn import models

CHAPTER = "04_cnn_on_gpu"


def correct_answers(accuracy: float, num_images: int) -> int:
    """The number of right answers an accuracy stands for, checked to be a whole number of the images."""
    correct = accuracy * num_images
    assert correct == pytest.approx(round(correct), abs=1e-3), (accuracy, num_images)
    assert 0 <= round(correct) <= num_images
    return round(correct)


def test_both_models_learned_and_were_timed_inside_the_run(results):
    assert results["num_test"] == 500
    for name in ("classic", "improved"):
        model = results[name]
        # Ten classes: chance is 0.1. Smoke trains one or two epochs on 1,800 images.
        assert model["test_accuracy"] > 0.3, (name, model["test_accuracy"])
        correct_answers(model["test_accuracy"], results["num_test"])  # evaluated on the 500 test images
        # the training rate is the training images over the recorded (median) epoch time
        assert model["train_images_per_second"] == pytest.approx(results["num_train"] / model["seconds_per_epoch"])
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
    # the memory estimates are those of the models trained, at the batch each trained with
    assert classic["memory_mib"] == models.memory_estimate(models.build_classic_cnn((28, 28, 1)), 32)["total_mib"]
    assert improved["memory_mib"] == models.memory_estimate(
        models.build_improved_cnn((28, 28, 1), width=width), improved["batch_size"])["total_mib"]


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
    num_val = results["num_train"] // 9  # the 200 held-out images
    for name in ("classic", "improved"):
        assert correct_answers(budget[f"{name}_validation_accuracy"], num_val) > num_val // 10, name  # chance: 20
        assert 0 < budget[f"{name}_seconds"] < results["chapter_seconds"]
    # smoke trains the classic model for one epoch: its time at the equal budget is that epoch's, the one recorded
    assert results["classic"]["epochs"] == budget["epochs"] == 1
    assert budget["classic_seconds"] == pytest.approx(results["classic"]["seconds_per_epoch"])


def test_throughput_measures_this_model_on_this_machine(results):
    throughput = results["throughput"]
    classic, optimised = throughput["classic_images_per_second"], throughput["optimised_images_per_second"]
    assert throughput["setups"]["classic"]["batch_size"] == 32
    assert throughput["setups"]["optimised"]["batch_size"] > 32
    # Rates are checked against the times recorded beside them (a unit slip, seconds for milliseconds, would
    # show), not bounded: timings on a shared machine vary too much for that
    for setup in throughput["setups"].values():
        assert len(setup["run_seconds"]) == throughput["runs"]
        assert sum(setup["run_seconds"]) < results["chapter_seconds"]
        # each rate is the images of a timed pass over its median time
        assert setup["images_per_run"] == throughput["images_per_run"]
        assert setup["median_seconds"] == pytest.approx(float(np.median(setup["run_seconds"])))
        assert setup["images_per_second"] == pytest.approx(setup["images_per_run"] / setup["median_seconds"])
    assert classic == throughput["setups"]["classic"]["images_per_second"]
    assert optimised == throughput["setups"]["optimised"]["images_per_second"]
    assert throughput["speedup"] == pytest.approx(optimised / classic)


def test_mirrored_strategy_and_apply_steps(results):
    mirrored = results["mirrored"]
    if results["backend"] == "tensorflow":  # the CPU split in two by tensorflow_only.split_cpu(2)
        assert mirrored["distribution"] == "tensorflow: MirroredStrategy"
        assert mirrored["replicas"] == mirrored["copies_of_each_weight"] == 2 and mirrored["global_batch"] == 64
        assert mirrored["variable_type"] == "MirroredVariable"
    num_val = results["num_train"] // 9  # a tenth of the images is held out: 200 of 2,000
    assert mirrored["val_accuracy"] * num_val == pytest.approx(round(mirrored["val_accuracy"] * num_val), abs=1e-3)
    assert results["apply"]["reload_matches"] is True and results["apply"]["single_shape"] == [1, 10]
    assert all(results["checks"].values()), results["checks"]


def test_inverted_images_lower_the_accuracy(results):
    # The chapter's warning at the door: the same 200 test images, inverted, are classified far worse
    apply = results["apply"]
    as_trained, inverted = (correct_answers(apply[k], 200) for k in ("accuracy_as_trained", "inverted_accuracy"))
    assert as_trained > 60 and inverted < as_trained  # chance is 20 of 200 (92 and 32 measured)


def test_under_jax_data_parallel_takes_the_place_of_mirrored_strategy(jax_full):
    # The same chapter under KERAS_BACKEND=jax, in the shrunk full profile (tests/conftest.py):
    # keras.distribution.DataParallel over every device JAX sees (one CPU here), each weight a jax.Array
    # replicated whole on every device; the models train as under TensorFlow.
    import jax

    results = jax_full
    assert results["backend"] == "jax"
    mirrored = results["mirrored"]
    devices = len(jax.devices())
    assert mirrored["distribution"] == "jax: DataParallel"
    assert mirrored["replicas"] == mirrored["copies_of_each_weight"] == devices
    assert mirrored["global_batch"] == 32 * devices and mirrored["variable_type"] == "ArrayImpl"
    num_val = results["num_train"] // 9  # evaluated on the validation images (4 in the shrunk run)
    assert mirrored["val_accuracy"] * num_val == pytest.approx(round(mirrored["val_accuracy"] * num_val), abs=1e-3)
    assert results["improved"]["xla"] is True  # JAX compiles every step with XLA, on a CPU too
    assert results["apply"]["reload_matches"] is True and results["apply"]["single_shape"] == [1, 10]
    assert all(results["checks"].values()), results["checks"]


def test_full_profile_shrunk_trains_the_classic_model_at_224(jax_full):
    results = jax_full
    assert results["profile"] == "full" and results["backend"] == "jax"
    assert results["num_train"] == 36 and results["num_test"] == 20
    classic = results["classic"]
    assert classic["input_shape"] == [224, 224, 3]  # through the pipeline, not the 28x28x1 arrays
    assert classic["parameters"] == classic["parameters_224"] == 44_401_226 and classic["epochs"] == 1
    assert classic["probe_224_seconds_per_epoch"] is None  # the full profile trains at 224 instead of probing
    # one epoch on 36 images is a run of the branch, not training: its accuracy is a count of right answers among
    # the 20 test images, at 224x224x3 through the pipeline, with no claim of learning
    correct_answers(classic["test_accuracy"], results["num_test"])
    assert results["throughput"]["speedup"] == pytest.approx(
        results["throughput"]["optimised_images_per_second"] / results["throughput"]["classic_images_per_second"])
    assert classic["memory_mib"] == models.memory_estimate(models.build_classic_cnn((224, 224, 3)), 32)["total_mib"]
    assert classic["train_images_per_second"] == pytest.approx(36 / classic["seconds_per_epoch"])
    improved = results["improved"]
    assert improved["width"] == 32 and improved["batch_size"] == 256  # the full profile's model and batch
    assert improved["epochs_completed"] == 1 and results["equal_budget"]["epochs"] == 1
    assert results["cli_test_accuracy"] is None and results["cifar10_test_accuracy"] is None
    assert all(results["checks"].values()), results["checks"]
