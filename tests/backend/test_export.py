"""Tests for bigmodel_utils.techniques.export: SavedModel and ONNX agree with Keras, int8 ONNX is smaller and still
agrees, the size and timing helpers measure what they say, and bad arguments are named."""

from __future__ import annotations

import time

import keras
import numpy as np
import pytest

from bigmodel_utils import gpt
from bigmodel_utils.cnn import models
from bigmodel_utils.data import image_data
from bigmodel_utils.techniques import export

TENSORFLOW = keras.backend.backend() == "tensorflow"
needs_tensorflow = pytest.mark.skipif(not TENSORFLOW, reason="SavedModel and tf2onnx export need TensorFlow")


def random_images(n, seed=0):
    return np.random.default_rng(seed).random((n, 28, 28, 1)).astype("float32")


@pytest.fixture(scope="module")
def fashion():
    """2,000 training and 500 test images of the bundled Fashion-MNIST subset, as float32 (N, 28, 28, 1)."""
    dataset = image_data.load_fashion_mnist()
    return (image_data.prepare_images(dataset.x_train[:2000]), dataset.y_train[:2000],
            image_data.prepare_images(dataset.x_test[:500]), dataset.y_test[:500])


@pytest.fixture(scope="module")
def tiny_cnn(fashion):
    """The improved CNN at width 4, trained for two epochs on 2,000 images: weak, but its labels mean something."""
    x_train, y_train, _, _ = fashion
    keras.utils.set_random_seed(0)
    model = models.build_improved_cnn(width=4)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(x_train, y_train, batch_size=64, epochs=2, verbose=0)
    return model


@pytest.fixture(scope="module")
def tiny_onnx(tiny_cnn, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    info = export.export_onnx(tiny_cnn, path)
    return path, info


@needs_tensorflow
@pytest.mark.timeout(120)
def test_onnx_and_saved_model_agree_with_keras(tiny_cnn, tiny_onnx, fashion, tmp_path):
    x_test = fashion[2]
    expected = export.keras_predictor(tiny_cnn)(x_test)
    path, info = tiny_onnx
    assert info["opset"] >= 13 and info["seconds"] > 0
    from_onnx = export.run_onnx(export.onnx_session(path, num_threads=1), x_test)
    export.export_saved_model(tiny_cnn, tmp_path / "saved")
    from_saved = export.run_saved_model(export.load_saved_model(tmp_path / "saved"), x_test)
    for outputs in (from_onnx, from_saved):
        result = export.agreement(expected, outputs)
        assert result["max_abs_diff"] < 1e-5 and result["label_agreement"] == 1.0
    # the batch dimension stays dynamic: one image and 500 images through the same file
    assert np.allclose(export.run_onnx(export.onnx_session(path), x_test[:1]), expected[:1], atol=1e-5)


@needs_tensorflow
@pytest.mark.timeout(120)
def test_int8_labels_agree_with_float_for_a_trained_model(tiny_cnn, tiny_onnx, fashion, tmp_path):
    x_train, _, x_test, y_test = fashion
    float_path = tiny_onnx[0]
    info = export.quantize_onnx_static(float_path, tmp_path / "tiny_int8.onnx", x_train[:200])
    assert info["calibration_images"] == 200
    float_session, int8_session = export.onnx_session(float_path), export.onnx_session(tmp_path / "tiny_int8.onnx")
    # renaming the inner tensors keeps the names a caller uses
    assert [i.name for i in int8_session.get_inputs()] == [i.name for i in float_session.get_inputs()]
    assert [o.name for o in int8_session.get_outputs()] == [o.name for o in float_session.get_outputs()]
    float_out, int8_out = export.run_onnx(float_session, x_test), export.run_onnx(int8_session, x_test)
    assert np.mean(float_out.argmax(1) == y_test) > 0.3, "the tiny model must have learnt something"
    assert export.agreement(float_out, int8_out)["label_agreement"] >= 0.9
    # the final softmax stays in float32, so the int8 model's probabilities still sum to one
    assert np.allclose(int8_out.sum(axis=1), 1.0, atol=1e-5)


@needs_tensorflow
@pytest.mark.timeout(120)
def test_int8_file_is_at_least_three_times_smaller_at_width_16(tmp_path):
    model = models.build_improved_cnn(width=16)
    export.export_onnx(model, tmp_path / "float.onnx")
    # percentile calibration on 100 images: 64 does not divide 100, so this also checks the equal batches
    export.quantize_onnx_static(tmp_path / "float.onnx", tmp_path / "int8.onnx", random_images(100),
                                calibration_method="percentile")
    float_bytes, int8_bytes = (tmp_path / "float.onnx").stat().st_size, (tmp_path / "int8.onnx").stat().st_size
    assert float_bytes / int8_bytes >= 3.4  # 3.2 without the short tensor names, 3.6 with them
    weights_ratio = export.onnx_weight_bytes(tmp_path / "float.onnx") / export.onnx_weight_bytes(tmp_path / "int8.onnx")
    assert 3.5 <= weights_ratio <= 4.0
    assert export.onnx_weight_bytes(tmp_path / "float.onnx") <= float_bytes


@needs_tensorflow
@pytest.mark.timeout(120)
def test_gpt_exports_to_onnx_with_a_fixed_context(tmp_path):
    config = gpt.GPTConfig(vocab_size=65, context=64, num_layers=2, num_heads=4, width=64)
    model = gpt.build_gpt(config, seed=0)
    tokens = np.random.default_rng(0).integers(0, 65, (3, 64)).astype("int32")
    expected = keras.ops.convert_to_numpy(model(tokens, training=False))
    signature = [keras.InputSpec(shape=(None, config.context), dtype="int32")]
    export.export_onnx(model, tmp_path / "gpt.onnx", input_signature=signature)
    outputs = export.run_onnx(export.onnx_session(tmp_path / "gpt.onnx"), tokens)
    assert outputs.shape == (3, 64, 65)
    assert export.agreement(expected, outputs)["max_abs_diff"] < 1e-5


def test_calibration_reader_uses_equal_batches_and_every_image():
    images = random_images(100)
    reader = export.ImageCalibrationReader(images, "x", batch_size=64)
    batches = list(iter(reader.get_next, None))
    assert {len(batch["x"]) for batch in batches} == {50}
    assert np.array_equal(np.concatenate([batch["x"] for batch in batches]), images)
    reader.rewind()
    assert np.array_equal(reader.get_next()["x"], images[:50])


@pytest.mark.filterwarnings("ignore:Layer .* does not have a `quantize` method")
def test_keras_weight_bytes_of_an_int8_model_is_about_a_quarter():
    def dense_model():
        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((256,)), keras.layers.Dense(512, activation="relu"),
                                 keras.layers.Dropout(0.1), keras.layers.Dense(10)])

    float_model = dense_model()
    assert export.keras_weight_bytes(float_model) == 4 * float_model.count_params()
    int8_model = dense_model()
    int8_model.quantize("int8")
    ratio = export.keras_weight_bytes(int8_model) / export.keras_weight_bytes(float_model)
    assert 0.25 < ratio < 0.27  # int8 kernels plus float32 biases and one float32 scale per output unit
    int4_model = dense_model()
    int4_model.quantize("int4")
    # two int4 values per stored byte, plus group scales and zero points: well under the int8 size
    assert export.keras_weight_bytes(int4_model) < 0.6 * export.keras_weight_bytes(int8_model)


def test_agreement_measures_difference_and_labels():
    a = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    b = np.array([[0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
    result = export.agreement(a, b)
    assert result["max_abs_diff"] == pytest.approx(0.2)
    assert result["label_agreement"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match=r"a and b must be non-empty arrays of the same shape, got \(3, 2\) and"):
        export.agreement(a, b[:2])


def test_latency_ms_times_each_call():
    result = export.latency_ms(lambda x: time.sleep(x), 0.002, repeats=5, warmup=1)
    assert 2.0 <= result["median_ms"] <= result["p90_ms"] < 200
    assert result["repeats"] == 5


def test_keras_predictor_matches_the_model_and_returns_numpy():
    keras.utils.set_random_seed(0)
    model = models.build_improved_cnn(width=4)
    images = random_images(6)
    outputs = export.keras_predictor(model)(images)
    assert isinstance(outputs, np.ndarray)
    np.testing.assert_allclose(outputs, keras.ops.convert_to_numpy(model(images, training=False)), atol=1e-6)


def test_bad_arguments_are_named(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="repeats must be a positive integer, got 0"):
        export.latency_ms(print, 1, repeats=0)
    with pytest.raises(ValueError, match="warmup must be a non-negative integer, got -1"):
        export.latency_ms(print, 1, warmup=-1)
    with pytest.raises(TypeError, match="fn must be callable"):
        export.latency_ms("model", 1)
    with pytest.raises(ValueError, match="path must be a file or folder path"):
        export.onnx_session(None)
    with pytest.raises(TypeError, match="model must be a keras.Model, got str"):
        export.keras_weight_bytes("model.keras")
    with pytest.raises(FileNotFoundError, match="float_path must be an existing ONNX file"):
        export.quantize_onnx_static(tmp_path / "missing.onnx", tmp_path / "int8.onnx", random_images(4))
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(ValueError,
                       match="calibration_method must be one of 'minmax', 'percentile', 'entropy'; got 'kl'"):
        export.quantize_onnx_static(tmp_path / "model.onnx", tmp_path / "int8.onnx", random_images(4),
                                    calibration_method="kl")
    with pytest.raises(ValueError, match="calibration_images must be a non-empty numeric batch"):
        export.quantize_onnx_static(tmp_path / "model.onnx", tmp_path / "int8.onnx", np.zeros((0, 28, 28, 1)))
    with pytest.raises(ValueError, match="num_threads must be a positive integer, got 0"):
        export.onnx_session(tmp_path / "model.onnx", num_threads=0)
    with pytest.raises(FileNotFoundError, match="directory must be a SavedModel folder"):
        export.load_saved_model(tmp_path)
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(RuntimeError, match="export_saved_model needs the TensorFlow backend.*'jax'"):
        export.export_saved_model(models.build_improved_cnn(width=4), tmp_path / "saved")
