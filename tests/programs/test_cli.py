"""Tests for the command line ``python -m bigmodel_utils.cnn train``: flag errors, a finished run, kill and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bigmodel_utils.cnn import __main__ as cli

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--profile", "smoke", "--num-train", "640", "--num-test", "200", "--width", "4", "--batch-size", "64",
         "--quiet"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--epochs", "0"], "argument --epochs: epochs must be an integer from 1 to 1000, got 0"),
        (["--epochs", "two"], "argument --epochs: epochs must be an integer from 1 to 1000, got 'two'"),
        (["--batch-size", "-8"], "argument --batch-size: batch size must be an integer from 1 to 65536, got -8"),
        (["--learning-rate", "fast"],
         "argument --learning-rate: learning rate must be a finite number (above 0 and below 10), got 'fast'"),
        (["--learning-rate", "0"],
         "argument --learning-rate: learning rate must be a finite number (above 0 and below 10), got 0.0"),
        (["--image-size", "4"], "argument --image-size: image size must be an integer from 8 to 1024, got 4"),
        (["--model", "resnet"], "argument --model: invalid choice: 'resnet'"),
        (["--dataset", "imagenet"], "argument --dataset: invalid choice: 'imagenet'"),
        (["--mixed-precision", "fp8"], "argument --mixed-precision: invalid choice: 'fp8'"),
        (["--profile", "fast"], "argument --profile: invalid choice: 'fast'"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_flags_exit_2_with_a_message_naming_them(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--output", str(tmp_path / "run"), *flags])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_output_is_required_and_must_be_a_folder(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["train"])
    assert "the following arguments are required: --output" in capsys.readouterr().err
    file = tmp_path / "file.txt"
    file.write_text("not a folder")
    with pytest.raises(SystemExit):
        cli.main(["train", "--output", str(file)])
    assert f"argument --output: {file} exists and is not a folder" in capsys.readouterr().err


def test_an_output_folder_that_cannot_be_written_fails_at_once_in_one_line(tmp_path, capsys, monkeypatch):
    import bigmodel_utils.data.image_data

    def must_not_load(*args, **kwargs):
        raise AssertionError("the data was loaded before --output was checked")

    monkeypatch.setattr(bigmodel_utils.data.image_data, "load_dataset", must_not_load)
    file = tmp_path / "file.txt"
    file.write_text("not a folder")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--output", str(file / "run"), *SMALL])
    error = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2
    assert error[-1].endswith(f"argument --output: cannot write to {file / 'run'} (Not a directory)")
    assert "Traceback" not in "\n".join(error)


def test_classic_model_refuses_an_image_size_it_cannot_take(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--model", "classic", "--image-size", "16", "--output", str(tmp_path / "c"), *SMALL])
    assert "argument --image-size: the classic model needs at least 22 pixels, got 16" in capsys.readouterr().err


def start(output: Path, epochs: int, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}
    command = [sys.executable, "-m", "bigmodel_utils.cnn", "train", "--epochs", str(epochs), "--output", str(output),
               "--patience", "50", *SMALL, *extra]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def epochs_on_disk(output: Path) -> int:
    try:
        return len(json.loads((output / "history.json").read_text())["loss"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


def test_killed_run_resumes_at_the_right_epoch_and_finishes(tmp_path):
    output, epochs = tmp_path / "demo", 6
    process = start(output, epochs)
    deadline = time.monotonic() + 240
    while epochs_on_disk(output) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # no chance to clean up: like a lost Colab runtime
    first_output = process.communicate(timeout=60)[0]
    killed_after = epochs_on_disk(output)
    assert 2 <= killed_after < epochs, first_output[-2000:]
    assert not (output / "metrics.json").exists() and (output / "backup").is_dir()

    resumed = start(output, epochs)
    second_output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, second_output[-3000:]
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == killed_after
    assert metrics["epochs_run_this_time"] == epochs - killed_after
    assert metrics["epochs_completed"] == epochs and metrics["finished"] is True
    assert metrics["optimizer_steps"] == epochs * metrics["steps_per_epoch"]  # optimizer state restored too
    assert f"Epoch {killed_after + 1}/{epochs}" in second_output and "Epoch 1/" not in second_output
    assert f"resumed_from_epoch={killed_after}" in second_output.splitlines()[-1]
    history = json.loads((output / "history.json").read_text())
    assert all(len(values) == epochs for values in history.values())
    assert metrics["test_accuracy"] > 0.3  # ten classes: chance is 0.1
    for name in ("model.keras", "best.keras", "config.json", "logs"):
        assert (output / name).exists(), name
    assert not (output / "backup").exists()

    # A finished run is not trained again; a run with other settings is refused.
    again = start(output, epochs)
    assert "already finished" in again.communicate(timeout=120)[0] and again.returncode == 0
    changed = start(output, epochs, "--seed", "7")
    message = changed.communicate(timeout=120)[0]
    assert changed.returncode == 2 and "--seed 0 -> 7" in message


def test_the_same_seed_repeats_a_run_exactly_with_augmentation_on(tmp_path):
    histories = []
    for name in ("first", "second"):
        done = start(tmp_path / name, 1)
        log = done.communicate(timeout=300)[0]
        assert done.returncode == 0, log[-3000:]
        histories.append(json.loads((tmp_path / name / "history.json").read_text()))
        assert json.loads((tmp_path / name / "config.json").read_text())["augment"] is True
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert histories[0][key] == histories[1][key], key
