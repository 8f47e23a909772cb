"""bigmodel_utils.data.image_data: sources, verification, the subset, pipelines and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from bigmodel_utils.data import files, image_data

HAS_DEBIAN_COPY = all((image_data.DEBIAN_FASHION_MNIST_DIR / f).is_file()
                      for f, _ in image_data.FASHION_MNIST_FILES.values())


@pytest.fixture(scope="module")
def subset():
    return image_data.load_fashion_mnist(subset=True)


def test_bundled_subset_is_stratified_and_verified(subset):
    assert subset.x_train.shape == (18000, 28, 28) and subset.x_test.shape == (2000, 28, 28)
    assert subset.x_train.dtype == np.uint8 and subset.y_train.dtype == np.int64
    assert np.bincount(subset.y_train).tolist() == [1800] * 10
    assert np.bincount(subset.y_test).tolist() == [200] * 10
    assert "bundled" in subset.source and subset.fallback is None


@pytest.mark.skipif(not HAS_DEBIAN_COPY, reason="Debian's dataset-fashion-mnist is not installed")
def test_subset_is_the_same_when_cut_from_the_full_set(subset, monkeypatch, tmp_path):
    monkeypatch.setenv("BOOK_DATA_DIR", str(tmp_path))  # no bundled file here: must cut it from the full set
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    rebuilt = image_data.load_fashion_mnist(subset=True, allow_download=False)
    assert "cut from" in rebuilt.source
    np.testing.assert_array_equal(rebuilt.x_train, subset.x_train)
    np.testing.assert_array_equal(rebuilt.y_test, subset.y_test)


@pytest.mark.skipif(not HAS_DEBIAN_COPY, reason="Debian's dataset-fashion-mnist is not installed")
def test_full_set_from_debian(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    full = image_data.load_dataset("fashion_mnist", "full", allow_download=False)
    assert full.x_train.shape == (60000, 28, 28) and full.x_test.shape == (10000, 28, 28)
    assert "Debian" in full.source and not full.subset


def test_full_set_falls_back_to_subset_and_says_so(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(image_data, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "missing")
    loaded = image_data.load_fashion_mnist(subset=False, allow_download=False)
    assert loaded.subset and loaded.fallback.startswith("FALLBACK")
    assert "FALLBACK" in capsys.readouterr().out


def test_corrupt_copy_is_rejected(monkeypatch, tmp_path):
    import gzip
    import shutil

    if not HAS_DEBIAN_COPY:
        pytest.skip("needs Debian's copy to build a corrupt one")
    folder = tmp_path / "datasets" / "fashion-mnist"
    folder.mkdir(parents=True)
    for name, _ in image_data.FASHION_MNIST_FILES.values():
        shutil.copy(image_data.DEBIAN_FASHION_MNIST_DIR / name, folder / name)
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[-1] = (raw[-1] + 1) % 10  # one wrong label
    labels.write_bytes(gzip.compress(bytes(raw)))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(image_data, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "missing")
    with pytest.raises(image_data.DataUnavailableError, match="y_test .* does not match"):
        image_data._full_fashion_mnist(allow_download=False)


def test_unknown_dataset_is_a_one_line_error():
    with pytest.raises(ValueError) as info:
        image_data.load_dataset("imagenet")
    assert "'imagenet'" in str(info.value) and "fashion_mnist" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("bad", [-5, 0, 18001, 2.5])
def test_bad_subset_sizes_name_the_argument(bad):
    with pytest.raises(ValueError, match=r"num_train must be an integer from 1 to 18000"):
        image_data.load_fashion_mnist(num_train=bad)


def test_num_train_and_num_test_keep_the_head(subset):
    small = image_data.load_fashion_mnist(num_train=500, num_test=100)
    np.testing.assert_array_equal(small.x_train, subset.x_train[:500])
    assert len(small.y_test) == 100


def test_digits_come_from_scikit_learn():
    digits = image_data.load_dataset("digits")
    assert digits.x_train.shape[1:] == (8, 8) and digits.x_train.max() == 255
    assert len(digits.y_train) + len(digits.y_test) == 1797


def test_an_option_the_loader_does_not_take_is_a_one_line_error():
    with pytest.raises(ValueError) as info:
        image_data.load_dataset("digits", "quick", num_train=5)
    message = str(info.value)
    assert "num_train=5" in message and "test_fraction, seed" in message and "\n" not in message
    with pytest.raises(ValueError, match="it accepts none"):
        image_data.load_dataset("cifar10", "quick", num_train=5)


@pytest.mark.parametrize("bad", [0, -1, 5000, 3.0, "28"])
def test_bad_image_sizes_are_rejected(bad):
    with pytest.raises(ValueError, match=f"image_size must be an integer from 1 to 1024, got {bad!r}"):
        image_data.prepare_images(np.zeros((2, 28, 28), np.uint8), image_size=bad)


def test_prepare_images_scales_resizes_and_expands_channels():
    images = np.full((2, 28, 28), 255, np.uint8)
    out = image_data.prepare_images(images, image_size=56, channels=3)
    assert out.shape == (2, 56, 56, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, 1.0, atol=1e-6)


def test_tf_pipeline_matches_numpy_path(subset):
    pytest.importorskip("tensorflow")
    from bigmodel_utils.backend import tensorflow_only

    dataset = tensorflow_only.make_tf_dataset(subset.x_train[:10], subset.y_train[:10], batch_size=4, image_size=32,
                                              channels=3)
    batches = list(dataset.as_numpy_iterator())
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    x = np.concatenate([b[0] for b in batches])
    np.testing.assert_allclose(x, image_data.prepare_images(subset.x_train[:10], 32, 3), atol=1e-5)


def test_book_files_match_their_recorded_hashes_and_download_is_verified(monkeypatch, tmp_path):
    import hashlib
    import io

    from bigmodel_utils.calculators import trends

    filename, expected = trends.LANDMARK_FILE, trends.DATA_SHA256[trends.LANDMARK_FILE]
    for name, digest in trends.DATA_SHA256.items():
        assert hashlib.sha256((files.data_dir() / name).read_bytes()).hexdigest() == digest, name
    good = (files.data_dir() / filename).read_bytes()
    # Without data/ (as in Colab) the file is downloaded; a payload that does not match is refused.
    monkeypatch.setenv("BOOK_DATA_DIR", str(tmp_path / "absent"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    requested = []

    def fake_urlopen(payload):
        return lambda url, timeout: requested.append(url) or io.BytesIO(payload)

    monkeypatch.setattr("urllib.request.urlopen", fake_urlopen(b"tampered"))
    with pytest.raises(image_data.DataUnavailableError, match="SHA-256"):
        files.book_file(filename, expected)
    monkeypatch.setattr("urllib.request.urlopen", fake_urlopen(good))
    assert files.book_file(filename, expected).read_bytes() == good
    assert requested[-1].startswith("https://raw.githubusercontent.com/") and requested[-1].endswith(filename)


def test_json_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    import json

    target = tmp_path / "run" / "history.json"
    files.write_json_atomically(target, {"loss": [1.5], "epoch": 1})  # creates the folder
    assert target.read_text() == '{\n  "epoch": 1,\n  "loss": [\n    1.5\n  ]\n}'  # sorted keys, 2-space indents

    def killed(source, destination):
        raise KeyboardInterrupt  # the process dies between writing and renaming

    monkeypatch.setattr("os.replace", killed)
    with pytest.raises(KeyboardInterrupt):
        files.write_json_atomically(target, {"loss": [1.5, 1.2], "epoch": 2})
    assert json.loads(target.read_text()) == {"loss": [1.5], "epoch": 1}  # the old file, whole
    assert json.loads((tmp_path / "run" / "history.json.tmp").read_text())["epoch"] == 2


def test_every_class_has_a_chinese_name_for_the_chinese_edition():
    from bigmodel_utils.data import image_data as book_data

    names = book_data.FASHION_MNIST_CLASSES + book_data.CIFAR10_CLASSES
    assert set(book_data.CLASS_NAMES_ZH) == set(names)
    assert len(set(book_data.CLASS_NAMES_ZH.values())) == len(names)  # no two classes share a name
    assert book_data.CLASS_NAMES_ZH["Ankle boot"] == "短靴"
