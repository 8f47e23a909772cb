"""Compiling, callbacks and resumable training: the history file and backups that let a run resume
after a crash, and chapter 4's trained CNN for later chapters. The learning-rate schedule is
:func:`bigmodel_utils.optimizers.warmup_cosine` (re-exported as ``training.warmup_cosine``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from bigmodel_utils.cnn.training.pipeline import tensorflow_available
from bigmodel_utils.cnn.training.precision import float32_copy
from bigmodel_utils.data import image_data as data_module
from bigmodel_utils.data.files import write_json_atomically
from bigmodel_utils.validation import check_int

HISTORY_FILE = "history.json"
BACKUP_DIR = "backup"
BEST_MODEL_FILE = "best.keras"


def compile_classifier(model: keras.Model, learning_rate=1e-3, jit_compile="auto",
                       steps_per_execution: int = 1) -> keras.Model:
    """Compile ``model`` with Adam, sparse categorical cross-entropy and accuracy; returns the model.

    ``learning_rate`` is a float or a schedule (:func:`bigmodel_utils.optimizers.warmup_cosine`).
    ``jit_compile="auto"`` lets Keras decide about XLA: on for GPUs, off on
    CPU-only machines, under ``tf.distribute`` and when a layer cannot be
    compiled (read the decision back from ``model.jit_compile``).
    ``steps_per_execution`` runs that many training steps per call into the
    compiled graph, which saves per-step Python overhead on fast devices.
    """
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    return model


def layers_blocking_xla(model: keras.Model) -> list[str]:
    """Class names of the layers (searched recursively) that set ``supports_jit=False`` and so turn XLA off.

    Used in chapter 4: ``["RandomTranslation"]`` for a model with that augmentation layer inside.
    """

    def walk(layer):
        for sub in getattr(layer, "layers", []):
            yield sub
            yield from walk(sub)

    return [type(layer).__name__ for layer in walk(model) if not layer.supports_jit]


def read_history(output_dir: str | os.PathLike) -> dict[str, list[float]]:
    """Return the per-epoch metrics that :class:`HistoryFile` saved in ``output_dir`` (empty when none)."""
    path = Path(output_dir) / HISTORY_FILE
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


class HistoryFile(keras.callbacks.Callback):
    """Keep every epoch's metrics (and its wall time in seconds) in ``history.json``, across restarts.

    When a run resumes at epoch k (restored by ``BackupAndRestore``), the file
    is cut back to its first k epochs, so it always matches the model's state.
    Put it after ``BackupAndRestore`` in the callback list (see :func:`standard_callbacks`).
    """

    def __init__(self, output_dir):
        super().__init__()
        self.path = Path(output_dir) / HISTORY_FILE
        self.history: dict[str, list[float]] = {}
        self.resumed_from_epoch: int | None = None
        self._epoch_start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        if self.resumed_from_epoch is None:  # first epoch of this fit() call
            self.resumed_from_epoch = epoch
            stored = read_history(self.path.parent)
            # A kill between the backup and this file loses one epoch's metrics: keep its place as None.
            self.history = {k: (v + [None] * epoch)[:epoch] for k, v in stored.items()}
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._epoch_start
        for key, value in {**(logs or {}), "epoch_seconds": seconds}.items():
            self.history.setdefault(key, []).append(float(value))
        write_json_atomically(self.path, self.history)


class EpochTimer(keras.callbacks.Callback):
    """Record the wall time of each training epoch in seconds (``self.seconds``)."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def standard_callbacks(
    output_dir: str | os.PathLike,
    *,
    monitor: str = "val_accuracy",
    patience: int | None = 5,
    backup: bool = True,
    tensorboard: bool | None = None,
) -> list[keras.callbacks.Callback]:
    """The callbacks of a long run, all writing under ``output_dir``:

    - :class:`HistoryFile` (``history.json``, survives restarts),
    - ``BackupAndRestore`` (``backup/``): a restarted ``fit`` resumes at the last finished epoch,
    - ``ModelCheckpoint`` of the best model so far (``best.keras``, by ``monitor``),
    - ``EarlyStopping`` after ``patience`` epochs without improvement, restoring the best weights,
    - ``TensorBoard`` logs (``logs/``; default: only when TensorFlow is installed),
    - ``TerminateOnNaN``: stop at once when the loss becomes NaN.

    HistoryFile runs right after BackupAndRestore: when it has written epoch k,
    the backup of epoch k is complete, so a run killed at any time resumes at
    the last epoch the history shows. Used in chapter 4 and by the command line.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    mode = "min" if "loss" in monitor else "max"
    # Resuming (a backup exists): the best checkpoint must beat the best epoch so far, not start over.
    resuming = (output_dir / BACKUP_DIR).exists()
    previous = read_history(output_dir).get(monitor, []) if resuming else []
    best_so_far = (min(previous) if mode == "min" else max(previous)) if previous else None
    callbacks: list[keras.callbacks.Callback] = []
    if backup:
        callbacks.append(keras.callbacks.BackupAndRestore(str(output_dir / BACKUP_DIR), double_checkpoint=True))
    callbacks.append(HistoryFile(output_dir))
    callbacks.append(keras.callbacks.ModelCheckpoint(
        str(output_dir / BEST_MODEL_FILE), monitor=monitor, mode=mode, save_best_only=True,
        initial_value_threshold=best_so_far,
    ))
    if patience is not None:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=patience,
                                                       restore_best_weights=True))
    if tensorboard is None:
        tensorboard = tensorflow_available()
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(output_dir / "logs")))
    callbacks.append(keras.callbacks.TerminateOnNaN())
    return callbacks


RUN_SETTINGS_FILE = "settings.json"


def run_folder(parent: str | os.PathLike, name: str, settings: dict[str, Any]) -> Path:
    """Return the output folder of a run, ``parent / f"{name}-{key}"``, keyed on everything that shapes the run.

    ``key`` is the first 10 hex digits of a SHA-256 of ``settings`` (JSON, sorted
    keys): a rerun with the same settings finds its backup and resumes, and a
    rerun with another batch size or learning rate gets a fresh folder instead
    of resuming a backup of a different run. The settings are written to
    ``settings.json`` in the folder; a folder whose file says otherwise is
    refused. Used in chapter 4.
    """
    if not name or any(c in name for c in "/\\"):
        raise ValueError(f"name must be a non-empty folder name without slashes, got {name!r}")
    try:
        text = json.dumps(settings, sort_keys=True, default=str)
    except TypeError as error:
        raise ValueError(f"settings must be a dict of JSON-friendly values, got {settings!r}") from error
    folder = Path(parent) / f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"
    saved = folder / RUN_SETTINGS_FILE
    if saved.is_file() and json.loads(saved.read_text()) != json.loads(text):
        raise ValueError(f"run folder {folder} holds a run with other settings ({saved.read_text().strip()}); "
                         "delete it or choose another parent folder")
    folder.mkdir(parents=True, exist_ok=True)
    saved.write_text(text + "\n")
    return folder


@dataclass
class TrainingRun:
    """What :func:`train` returns: the full history (across restarts) and where the run started."""

    history: dict[str, list[float]]
    resumed_from_epoch: int
    epochs_run: int
    seconds: float
    output_dir: Path | None = None

    @property
    def epochs_completed(self) -> int:
        return len(next(iter(self.history.values()), []))


def train(
    model: keras.Model,
    train_data,
    *,
    epochs: int,
    validation_data=None,
    output_dir: str | os.PathLike | None = None,
    monitor: str = "val_accuracy",
    patience: int | None = 5,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int | str = "auto",
) -> TrainingRun:
    """Fit a compiled model with :func:`standard_callbacks` (when ``output_dir`` is given) and time it.

    Run it again with the same ``output_dir`` after an interruption and it
    resumes at the last finished epoch; the returned history covers all epochs.
    Without ``output_dir`` it is a plain timed ``fit``.
    """
    epochs = check_int("epochs", epochs, minimum=1)
    if validation_data is None and monitor.startswith("val_"):
        monitor = monitor[len("val_"):]
    extra = list(callbacks)
    run_callbacks = extra if output_dir is None else standard_callbacks(
        output_dir, monitor=monitor, patience=patience) + extra
    timer = EpochTimer()
    start = time.perf_counter()
    fit_history = model.fit(train_data, validation_data=validation_data, epochs=int(epochs), shuffle=False,
                            callbacks=[*run_callbacks, timer], verbose=verbose)  # the pipeline shuffles
    seconds = time.perf_counter() - start
    history_file = next((c for c in run_callbacks if isinstance(c, HistoryFile)), None)
    if history_file is not None and history_file.resumed_from_epoch is not None:
        history, resumed = history_file.history, history_file.resumed_from_epoch
    else:
        history = {k: [float(v) for v in vs] for k, vs in fit_history.history.items()}
        history["epoch_seconds"] = timer.seconds
        resumed = int(epochs) - len(timer.seconds) if output_dir is not None else 0
    return TrainingRun(history, resumed, len(timer.seconds), seconds,
                       None if output_dir is None else Path(output_dir))


def load_or_train_cnn(path: str | os.PathLike, dataset, width: int = 16, epochs: int = 2,
                      batch_size: int = 128, seed: int = 0) -> keras.Model:
    """Return chapter 4's improved CNN saved at ``path``, or, when there is none (a fresh
    build, Colab), one of ``width`` trained now for ``epochs`` epochs on ``dataset`` (an
    :class:`~bigmodel_utils.data.image_data.ImageDataset`) and saved at ``path`` for next time.

    Which of the two happened is printed. Used in chapter 7.
    """
    from bigmodel_utils.cnn.models import build_improved_cnn

    path = Path(path)
    if path.is_file():
        try:
            model = keras.saving.load_model(path, safe_mode=True)
            print(f"Loaded chapter 4's model from {path}.")
            return float32_copy(model)
        except Exception as error:  # a file from an older version of this code, or a damaged one
            print(f"Could not load {path} ({type(error).__name__}: {str(error).splitlines()[0][:120]}).")
    print(f"No usable CNN at {path}: training one of width {width} for {epochs} epoch(s) instead.")
    keras.utils.set_random_seed(seed)
    x = data_module.prepare_images(dataset.x_train)
    model = compile_classifier(build_improved_cnn(x.shape[1:], dataset.num_classes, width=width))
    model.fit(x, dataset.y_train, batch_size=batch_size, epochs=epochs, verbose=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return float32_copy(model)

