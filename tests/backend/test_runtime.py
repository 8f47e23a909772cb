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


def test_one_device_list_serves_the_report_and_the_precision_choice(monkeypatch):
    from bigmodel_utils.backend import devices
    from bigmodel_utils.cnn import training

    t4 = [devices.Accelerator("GPU", 0, "Tesla T4", (7, 5)), devices.Accelerator("GPU", 1, "Tesla T4", (7, 5))]
    monkeypatch.setattr(devices, "accelerators", lambda: t4)
    assert runtime.list_accelerators() == ["GPU:0", "GPU:1"]
    assert training.device_info() == training.DeviceInfo("GPU", "Tesla T4", (7, 5))
    assert training.resolve_precision_policy("auto") == "mixed_float16"
    monkeypatch.setattr(devices, "accelerators", lambda: [])
    assert runtime.list_accelerators() == [] and training.device_info().kind == "CPU"
    monkeypatch.setenv("COLAB_TPU_ADDR", "10.0.0.2:8470")
    assert runtime.list_accelerators() == ["TPU:0"]


class FakeJaxGPU:
    platform, id, device_kind, compute_capability = "gpu", 3, "NVIDIA H100 80GB HBM3", "9.0"


def test_devices_reads_the_backends_answer_and_survives_a_broken_driver(monkeypatch):
    import keras

    from bigmodel_utils.backend import devices

    if keras.backend.backend() == "tensorflow":
        from bigmodel_utils.backend import tensorflow_only as source

        name, fake = "accelerators", lambda: [("GPU", 3, "NVIDIA H100 80GB HBM3", "9.0")]
    else:
        import jax as source

        name, fake = "devices", lambda: [FakeJaxGPU()]
    monkeypatch.setattr(source, name, fake)
    assert devices.accelerators() == [devices.Accelerator("GPU", 3, "NVIDIA H100 80GB HBM3", (9, 0))]
    assert str(devices.accelerators()[0]) == "GPU:3"

    def broken():
        raise RuntimeError("CUDA driver version is insufficient")

    monkeypatch.setattr(source, name, broken)
    assert devices.accelerators() == []


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
    runtime.show_source(runtime.by_profile, runtime.EnvironmentReport)
    shown = capsys.readouterr().out
    assert shown.startswith("def by_profile(profile: str, *, smoke: Any, quick: Any, full: Any) -> Any:\n    choices")
    assert "@dataclass(frozen=True)\nclass EnvironmentReport:\n    items: dict[str, str]" in shown
    assert '"""' not in shown and ">>> by_profile" not in shown
    runtime.show_source(runtime.by_profile, docstrings=True)
    assert '"""Pick the default for ``profile``' in capsys.readouterr().out
    with pytest.raises(ValueError, match="at least one"):
        runtime.show_source()


def test_show_source_folds_the_argument_checks_into_one_comment(capsys):
    from bigmodel_utils import optimizers

    runtime.show_source(optimizers.warmup_cosine)
    shown = capsys.readouterr().out.splitlines()
    assert "check_" not in "\n".join(shown) and "include_minimum" not in "\n".join(shown)
    assert shown[3] == "    # (argument checks left out: bigmodel_utils.validation)"
    assert shown[4] == "    return keras.optimizers.schedules.CosineDecay("
    with pytest.raises(ValueError, match="warmup_steps must be an integer from 0 to 9, got 10"):
        optimizers.warmup_cosine(1e-3, 10, 10)  # the checks still run, only the page leaves them out
    runtime.show_source(optimizers.adamw)  # nothing to fold
    assert "argument checks" not in capsys.readouterr().out
