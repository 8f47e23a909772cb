"""bigmodel_utils.book.runtime: profiles, seeding, results files and the environment report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bigmodel_utils.book import runtime


@pytest.mark.parametrize("name", ["smoke", "quick", "full", " Quick "])
def test_explicit_profiles_resolve_to_themselves(name):
    assert runtime.resolve_profile(name) == name.strip().lower()


def test_profile_comes_from_environment(monkeypatch):
    monkeypatch.setenv("BOOK_PROFILE", "smoke")
    assert runtime.resolve_profile() == "smoke"


def test_auto_follows_the_accelerators(monkeypatch):
    monkeypatch.setattr(runtime, "list_accelerators", lambda: [])
    assert runtime.resolve_profile("auto") == "quick"
    monkeypatch.setattr(runtime, "list_accelerators", lambda: ["GPU:0"])
    assert runtime.resolve_profile("auto") == "full"


def test_unknown_profile_is_a_one_line_error_naming_value_and_choices(monkeypatch):
    monkeypatch.setenv("BOOK_PROFILE", "fast")
    with pytest.raises(runtime.ProfileError) as info:
        runtime.resolve_profile()
    message = str(info.value)
    assert "\n" not in message and "'fast'" in message
    assert all(p in message for p in runtime.PROFILES)


def test_by_profile_picks_and_rejects():
    assert runtime.by_profile("smoke", smoke=1, quick=2, full=3) == 1
    assert runtime.by_profile("full", smoke=1, quick=2, full=3) == 3
    with pytest.raises(runtime.ProfileError, match="'auto'"):
        runtime.by_profile("auto", smoke=1, quick=2, full=3)


def test_set_seed_makes_numpy_and_keras_repeatable():
    import keras

    runtime.set_seed(3)
    first = (np.random.rand(3), keras.ops.convert_to_numpy(keras.random.uniform((3,))))
    runtime.set_seed(3)
    second = (np.random.rand(3), keras.ops.convert_to_numpy(keras.random.uniform((3,))))
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


@pytest.mark.parametrize("seed", [-1, 1.5, "1", True])
def test_set_seed_rejects_bad_values(seed):
    with pytest.raises(ValueError, match="seed"):
        runtime.set_seed(seed)


def test_write_results_converts_numpy_and_skips_none(tmp_path):
    assert runtime.write_results(None, {"a": 1}) is None
    target = tmp_path / "nested" / "results.json"
    runtime.write_results(target, {"acc": np.float32(0.5), "counts": np.arange(3), "bad": float("nan")})
    assert json.loads(target.read_text()) == {"acc": 0.5, "counts": [0, 1, 2], "bad": None}
    with pytest.raises(TypeError):
        runtime.write_results(target, [1, 2])


def test_environment_report_names_profile_versions_and_data():
    import keras

    report = runtime.environment_report("quick", data_source="bundled subset")
    text = str(report)
    assert report.items["keras"] == keras.__version__
    assert text.splitlines()[0].startswith("profile") and "quick" in text and "bundled subset" in text


def test_gpu_advice_tells_colab_readers_how_to_get_a_gpu(monkeypatch):
    monkeypatch.setenv("COLAB_RELEASE_TAG", "test")
    assert "Change runtime type" in runtime.gpu_advice([])
    assert "GPU:0" in runtime.gpu_advice(["GPU:0"])


def test_artifact_dir_uses_environment_and_rejects_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("BOOK_ARTIFACTS_DIR", str(tmp_path))
    assert runtime.artifact_dir("04_cnn") == tmp_path / "04_cnn" and (tmp_path / "04_cnn").is_dir()
    with pytest.raises(ValueError, match="name"):
        runtime.artifact_dir("../escape")


def test_glue_stores_plain_python_numbers(monkeypatch):
    import myst_nb

    stored = {}
    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display: stored.update({name: value}))
    assert runtime.glue("share", np.float64(99.5)) is None
    assert type(stored["share"]) is float and stored["share"] == 99.5
    runtime.glue("count", np.int64(3))
    assert type(stored["count"]) is int


def test_show_source_prints_the_code_without_its_docstring(capsys):
    from bigmodel_utils import gpt

    runtime.show_source(gpt.softmax, gpt.TransformerBlock)
    shown = capsys.readouterr().out
    assert shown.startswith("def softmax(scores") and "class TransformerBlock(keras.layers.Layer):\n    def" in shown
    assert "shifted = scores - scores.max" in shown and '"""' not in shown
    runtime.show_source(gpt.softmax, docstrings=True)
    assert '"""Softmax along' in capsys.readouterr().out
    with pytest.raises(ValueError, match="at least one"):
        runtime.show_source()
