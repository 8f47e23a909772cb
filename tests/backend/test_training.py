"""Tests for bigmodel_utils.cnn.training: precision choice, pipelines, callbacks, resuming, throughput, predict,
and a MirroredStrategy run on two logical CPU devices (in a subprocess, which owns its device split)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from bigmodel_utils.cnn import models, training

ROOT = Path(__file__).resolve().parents[2]
T4 = training.DeviceInfo("GPU", "Tesla T4", (7, 5))
A100 = training.DeviceInfo("GPU", "NVIDIA A100-SXM4-40GB", (8, 0))
P100 = training.DeviceInfo("GPU", "Tesla P100", (6, 0))
CPU = training.DeviceInfo("CPU", "2 cores")


def tiny_data(n=96, size=28, seed=0):
    """Images whose class is written in their brightness, so a small model can learn it in a few steps."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    images = (rng.random((n, size, size)) * 40 + labels[:, None, None] * 20).astype(np.uint8)
    return images, labels


@pytest.mark.parametrize(
    ("device", "expected"),
    [(T4, "mixed_float16"), (A100, "mixed_bfloat16"), (P100, "float32"), (CPU, "float32"),
     (training.DeviceInfo("TPU", "TPU v2"), "mixed_bfloat16"),
     (training.DeviceInfo("CPU", "AMD EPYC", cpu_bfloat16=True), "mixed_bfloat16")],
)
def test_auto_precision_follows_the_device(device, expected):
    assert training.resolve_precision_policy("auto", device) == expected
    assert training.resolve_precision_policy("float32", A100) == "float32"


def test_cpu_info_names_the_cpu_and_reads_its_bfloat16_flag(monkeypatch, tmp_path):
    fake = tmp_path / "cpuinfo"
    fake.write_text("model name\t: Example CPU\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda path, *a, **k: real_open(fake if path == "/proc/cpuinfo" else path,
                                                                           *a, **k))
    info = training.cpu_info()
    assert info.kind == "CPU" and info.name.startswith("Example CPU") and info.cpu_bfloat16
    fake.write_text("model name\t: Old CPU\nflags\t\t: fpu avx2\n")
    assert training.cpu_info().cpu_bfloat16 is False


def test_precision_policy_rejects_unknown_names_and_restores_the_previous_policy():
    with pytest.raises(ValueError,
                       match="policy must be one of 'auto', 'float32', 'mixed_float16', 'mixed_bfloat16'; got 'fp8'"):
        training.resolve_precision_policy("fp8")
    before = keras.mixed_precision.global_policy().name
    with training.precision_policy("mixed_bfloat16") as name:
        assert name == keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    assert keras.mixed_precision.global_policy().name == before


def test_mixed_float16_model_gets_loss_scaling():
    with training.precision_policy("mixed_float16"):
        model = training.compile_classifier(models.build_improved_cnn(width=4), 1e-3)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)


def test_linear_learning_rate_scaling():
    assert training.scaled_learning_rate(1e-3, 256) == pytest.approx(8e-3)
    assert training.scaled_learning_rate(0.1, 8192, base_batch_size=256) == pytest.approx(3.2)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        training.scaled_learning_rate(1e-3, 0)


def test_warmup_cosine_rises_then_decays_to_zero():
    schedule = training.warmup_cosine(0.01, total_steps=100, warmup_steps=10)
    values = [float(schedule(step)) for step in (0, 5, 10, 55, 100)]
    assert values[0] == pytest.approx(0.0)
    assert values[1] == pytest.approx(0.005, rel=1e-4)
    assert values[2] == pytest.approx(0.01, rel=1e-4)
    assert values[3] == pytest.approx(0.005, rel=1e-3)
    assert values[4] == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="warmup_steps must be an integer from 0 to 9, got 10"):
        training.warmup_cosine(0.01, 10, 10)


def test_translation_inside_a_model_blocks_xla_but_the_model_alone_does_not():
    improved = models.build_improved_cnn(width=4)
    assert training.layers_blocking_xla(improved) == []
    inside = keras.Sequential([keras.Input((28, 28, 1)), training.augmentation(translate=0.1), improved])
    assert training.layers_blocking_xla(inside) == ["RandomTranslation"]
    assert training.layers_blocking_xla(keras.Sequential([training.augmentation(translate=0.0)])) == []


@pytest.mark.parametrize("size", [None, 32])
def test_pipeline_yields_scaled_float_batches_like_the_numpy_path(size):
    images, labels = tiny_data(40)
    pipeline = training.make_pipeline(images, labels, 16, image_size=size, channels=3 if size else None)
    numpy_batches = training.NumpyBatches(images, labels, 16, size, 3 if size else None)
    batches = list(pipeline)
    assert [len(b[1]) for b in batches] == [16, 16, 8]
    x, y = (np.asarray(t) for t in batches[0])
    assert x.dtype == np.float32 and x.shape == ((16, 28, 28, 1) if size is None else (16, 32, 32, 3))
    assert 0.0 <= x.min() and x.max() <= 1.0
    x_np, y_np = numpy_batches[0]
    np.testing.assert_allclose(x, x_np, atol=1e-5)
    np.testing.assert_array_equal(y, y_np)
    assert len(numpy_batches) == 3


def test_pipeline_augmentation_changes_images_but_keeps_shape_and_range():
    images, labels = tiny_data(32)
    plain = np.asarray(next(iter(training.make_pipeline(images, labels, 32)))[0])
    augmented = np.asarray(next(iter(training.make_pipeline(
        images, labels, 32, augment=training.augmentation(seed=3, translate=0.2))))[0])
    assert augmented.shape == plain.shape
    assert 0.0 <= augmented.min() and augmented.max() <= 1.0 + 1e-6
    assert np.abs(augmented - plain).max() > 0.1


def test_the_same_seed_gives_the_same_augmented_batches_every_time():
    images, labels = tiny_data(256)

    def two_epochs():
        pipeline = training.make_pipeline(images, labels, 32, shuffle=True, seed=5,
                                          augment=training.augmentation(seed=5, translate=0.2))
        return [np.asarray(x) for _ in range(2) for x, _ in pipeline]

    first, second = two_epochs(), two_epochs()
    assert len(first) == 16
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert np.abs(first[0] - first[8]).max() > 0.1  # and the second epoch draws new shifts


def test_run_folder_is_keyed_on_the_settings_and_refuses_a_mismatch(tmp_path):
    settings = {"batch_size": 128, "learning_rate": 4e-3, "width": 16}
    folder = training.run_folder(tmp_path, "improved", settings)
    assert folder == training.run_folder(tmp_path, "improved", dict(settings))
    assert json.loads((folder / "settings.json").read_text()) == settings
    other = training.run_folder(tmp_path, "improved", {**settings, "batch_size": 256})
    assert other != folder and other.name.startswith("improved-")
    (folder / "settings.json").write_text(json.dumps({**settings, "width": 8}))
    with pytest.raises(ValueError, match="holds a run with other settings"):
        training.run_folder(tmp_path, "improved", settings)
    with pytest.raises(ValueError, match="name must be a non-empty folder name"):
        training.run_folder(tmp_path, "a/b", settings)


def test_pipeline_rejects_mismatched_inputs():
    images, labels = tiny_data(10)
    with pytest.raises(ValueError, match="images and labels differ in length: 10 != 9"):
        training.make_pipeline(images, labels[:9], 4)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        training.make_pipeline(images, labels, 0)


def test_history_file_is_cut_back_to_the_resumed_epoch(tmp_path):
    (tmp_path / training.HISTORY_FILE).write_text(json.dumps({"loss": [3.0, 2.0, 1.0]}))
    callback = training.HistoryFile(tmp_path)
    callback.on_epoch_begin(1)
    callback.on_epoch_end(1, {"loss": 0.5})
    assert training.read_history(tmp_path)["loss"] == [3.0, 0.5]
    assert callback.resumed_from_epoch == 1


class StopAt(keras.callbacks.Callback):
    """Simulate a crash at the start of a given epoch."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt(f"interrupted at epoch {epoch}")


def make_model(steps_per_epoch, epochs):
    model = models.build_improved_cnn(width=4, dense_units=0)
    return training.compile_classifier(model, training.warmup_cosine(5e-3, steps_per_epoch * epochs, 2))


def test_train_resumes_after_an_interruption_with_the_whole_history(tmp_path):
    images, labels = tiny_data(64)
    train_ds = training.make_pipeline(images, labels, 16, shuffle=True)
    epochs, steps = 4, 4
    with pytest.raises(KeyboardInterrupt):
        training.train(make_model(steps, epochs), train_ds, validation_data=train_ds, epochs=epochs,
                       output_dir=tmp_path, callbacks=[StopAt(2)], verbose=0)
    assert len(training.read_history(tmp_path)["loss"]) == 2
    assert (tmp_path / training.BACKUP_DIR).is_dir() and (tmp_path / training.BEST_MODEL_FILE).is_file()

    model = make_model(steps, epochs)  # a fresh process would start like this
    run = training.train(model, train_ds, validation_data=train_ds, epochs=epochs, output_dir=tmp_path, verbose=0)
    assert run.resumed_from_epoch == 2 and run.epochs_run == 2 and run.epochs_completed == 4
    assert len(run.history["val_accuracy"]) == len(run.history["epoch_seconds"]) == 4
    assert int(model.optimizer.iterations) == epochs * steps  # the optimizer state came back too
    assert not (tmp_path / training.BACKUP_DIR).exists()  # removed once the run finished
    assert (tmp_path / "logs").is_dir()


def test_train_without_output_dir_is_a_timed_fit():
    images, labels = tiny_data(64)
    model = make_model(4, 2)
    run = training.train(model, training.make_pipeline(images, labels, 16), epochs=2, verbose=0)
    assert run.resumed_from_epoch == 0 and run.epochs_completed == 2 and run.seconds > 0
    assert len(run.history["epoch_seconds"]) == 2
    with pytest.raises(ValueError, match="epochs must be a positive integer, got 0"):
        training.train(model, None, epochs=0)


def test_measure_throughput_alternates_setups_and_reports_medians():
    images, labels = tiny_data(64)
    setups = [training.classic_setup(16), training.optimised_setup(32, device=CPU)]
    assert setups[1].learning_rate == pytest.approx(1e-3) and setups[1].precision == "float32"
    start = time.perf_counter()
    results = training.measure_throughput(lambda: models.build_improved_cnn(width=4), images, labels, setups,
                                          runs=3, warmup_runs=1)
    elapsed = time.perf_counter() - start
    # What "auto" resolves to on this machine: off on a CPU, on on a GPU
    auto_xla = training.compile_classifier(models.build_improved_cnn(width=4), jit_compile="auto").jit_compile
    timed = sum(sum(r.run_seconds) for r in results.values())
    assert 0 < timed < elapsed  # the timed passes happened inside the call, warm-up passes untimed
    for name, result in results.items():
        assert len(result.run_seconds) == 3 and min(result.run_seconds) > 0
        # 64 images per pass: the rate lies between the slowest and the fastest pass's
        assert 64 / max(result.run_seconds) <= result.images_per_second <= 64 / min(result.run_seconds)
        assert result.best_images_per_second >= result.images_per_second > 64 / elapsed
        assert result.as_dict()["name"] == name
    assert results["classic"].jit_compile is False  # the classic setup never asks for XLA
    assert results["optimised"].jit_compile is bool(auto_xla)
    with pytest.raises(ValueError, match="distinct names"):
        training.measure_throughput(models.build_improved_cnn, images, labels, [setups[0], setups[0]])


def test_optimised_setup_on_a_t4_uses_float16_and_scales_the_learning_rate():
    setup = training.optimised_setup(256, device=T4)
    assert (setup.precision, setup.pipeline, setup.jit_compile) == ("mixed_float16", "pipeline", "auto")
    assert setup.learning_rate == pytest.approx(8e-3) and setup.steps_per_execution > 1


@pytest.fixture(scope="module")
def small_model():
    return models.build_improved_cnn(width=4)


def test_predict_accepts_one_image_or_a_batch_in_uint8_or_float(small_model):
    images, _ = tiny_data(3)
    one = training.predict(small_model, images[0], class_names=list("abcdefghij"))
    assert one.probabilities.shape == (1, 10) and len(one.names) == 1
    batch = training.predict(small_model, images.astype(np.float32) / 255.0)
    np.testing.assert_allclose(batch.probabilities[0], one.probabilities[0], atol=1e-5)
    assert batch.labels.shape == (3,) and np.all(batch.confidence <= 1.0)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.full((28, 28), 200.0), r"outside \[0, 1\] \(divide 0-255 values by 255\)"),
        (np.zeros((2, 32, 32, 3), np.uint8), r"shape \(2, 32, 32, 3\); the model expects images of 28x28 pixels"),
        (np.full((28, 28), np.nan), "NaN or infinite"),
        (np.array([["a"] * 28] * 28), "dtype <U1"),
        (np.zeros((0, 28, 28)), "empty batch"),
        (np.full((28, 28), 300, np.int32), "outside 0-255"),
    ],
)
def test_predict_says_what_it_expects_when_the_input_is_wrong(small_model, images, message):
    with pytest.raises(ValueError, match=message):
        training.predict(small_model, images)


def test_split_cpu_refuses_once_tensorflow_has_started():
    tf = pytest.importorskip("tensorflow")
    from bigmodel_utils.backend import tensorflow_only

    tf.constant(1.0) + 1.0  # make sure the runtime is initialised in this process
    count = len(tf.config.list_logical_devices("CPU"))
    with pytest.raises(RuntimeError, match="came too late"):
        tensorflow_only.split_cpu(count + 1)
    with pytest.raises(ValueError, match="num_devices must be an integer from 1 to 64, got 0"):
        tensorflow_only.split_cpu(0)


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np
    from bigmodel_utils.backend import tensorflow_only
    from bigmodel_utils.cnn import models, training
    from bigmodel_utils.data import image_data
    devices = tensorflow_only.split_cpu(2)  # before any other TensorFlow operation
    import tensorflow as tf
    strategy = tf.distribute.MirroredStrategy(devices)
    dataset = image_data.load_dataset("fashion_mnist", "smoke", num_train=1536, num_test=500)
    per_replica = 32
    global_batch = per_replica * strategy.num_replicas_in_sync
    train_ds = training.make_pipeline(dataset.x_train, dataset.y_train, global_batch, shuffle=True)
    test_ds = training.make_pipeline(dataset.x_test, dataset.y_test, global_batch)
    with strategy.scope():
        model = models.build_improved_cnn(width=8)
        training.compile_classifier(model, training.warmup_cosine(training.scaled_learning_rate(1e-3, global_batch),
                                                                  3 * len(train_ds), len(train_ds) // 2))
    run = training.train(model, train_ds, epochs=3, verbose=0)
    loss, accuracy = model.evaluate(test_ds, verbose=0)
    print(json.dumps({
        "devices": devices, "replicas": strategy.num_replicas_in_sync, "global_batch": global_batch,
        "variable_type": type(model.trainable_weights[0].value).__name__,
        "replica_values": len(model.trainable_weights[0].value.values),
        "xla": bool(model.jit_compile), "accuracy": accuracy, "train_loss": run.history["loss"],
    }))
    """
)


def test_improved_model_trains_under_mirrored_strategy_on_two_logical_cpus():
    if keras.backend.backend() != "tensorflow":  # the subprocess would run TensorFlow anyway: once is enough
        pytest.skip("tf.distribute.MirroredStrategy is TensorFlow's; under JAX, keras.distribution (test_parallel.py)")
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["devices"] == ["/device:CPU:0", "/device:CPU:1"]
    assert result["replicas"] == 2 and result["global_batch"] == 64
    assert result["variable_type"] == "MirroredVariable" and result["replica_values"] == 2
    assert result["xla"] is False  # jit_compile="auto" turns XLA off under tf.distribute
    assert result["train_loss"][-1] < result["train_loss"][0]
    assert result["accuracy"] > 0.4  # ten classes: chance is 0.1


def test_without_tensorflow_the_pipeline_is_numpy_batches_and_still_trains(monkeypatch):
    monkeypatch.setattr(training.pipeline, "tensorflow_available", lambda: False)
    images, labels = tiny_data(48)
    pipeline = training.make_pipeline(images, labels, 16, shuffle=True, augment=training.augmentation(seed=1))
    assert isinstance(pipeline, training.NumpyBatches) and len(pipeline) == 3
    results = training.measure_throughput(lambda: models.build_improved_cnn(width=4), images, labels,
                                          [training.optimised_setup(16, device=CPU)], runs=1)
    assert results["optimised"].images_per_second > 0


def test_load_or_train_cnn_trains_once_then_loads_the_saved_model(tmp_path, capsys):
    from bigmodel_utils.data.image_data import ImageDataset

    images, labels = tiny_data(64)
    dataset = ImageDataset("tiny", images, labels, images[:16], labels[:16], tuple("abcdefghij"), "test", False)
    path = tmp_path / "cnn.keras"
    trained = training.load_or_train_cnn(path, dataset, width=4, epochs=1, batch_size=32)
    assert "training one of width 4" in capsys.readouterr().out and path.is_file()
    loaded = training.load_or_train_cnn(path, dataset, width=4, epochs=1)
    assert "Loaded chapter 4's model" in capsys.readouterr().out
    x = images[:4, :, :, None].astype("float32") / 255
    np.testing.assert_allclose(loaded.predict(x, verbose=0), trained.predict(x, verbose=0), atol=1e-5)
