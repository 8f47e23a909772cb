"""Training helpers: input pipelines, precision policies, callbacks, resumable fits, throughput and prediction.

Everything here is backend-agnostic Keras 3. TensorFlow is imported only
inside the functions whose topic is TensorFlow itself (``tf.data`` pipelines,
``tf.distribute`` device splitting); under ``KERAS_BACKEND=jax`` or ``torch``
the pipeline falls back to NumPy batches, so this module also works where
TensorFlow is not installed.

Used in chapter 4 (and by chapters 5 and 8 for their training runs).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import keras
import numpy as np

from . import data as data_module

PRECISION_POLICIES = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
"""Values accepted by :func:`resolve_precision_policy`."""

HISTORY_FILE = "history.json"
BACKUP_DIR = "backup"
BEST_MODEL_FILE = "best.keras"


# ---------------------------------------------------------------------------
# Devices and precision
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceInfo:
    """The accelerator training will use: ``kind`` is "GPU", "TPU" or "CPU".

    ``compute_capability`` is a (major, minor) tuple for NVIDIA GPUs (7.5 for a
    T4, 8.0 for an A100, 9.0 for an H100) and None otherwise. ``cpu_bfloat16``
    says whether a CPU has native bfloat16 instructions (x86 AVX512-BF16 or
    AMX-BF16, Arm BF16), which TensorFlow's oneDNN kernels use.
    """

    kind: str
    name: str
    compute_capability: tuple[int, int] | None = None
    cpu_bfloat16: bool = False

    def __str__(self) -> str:
        extra = ""
        if self.compute_capability:
            extra = f", compute capability {self.compute_capability[0]}.{self.compute_capability[1]}"
        elif self.cpu_bfloat16:
            extra = ", native bfloat16"
        return f"{self.kind}: {self.name}{extra}"


CPU_BFLOAT16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}
"""CPU feature flags (as /proc/cpuinfo spells them) of native bfloat16 arithmetic."""


def cpu_info() -> DeviceInfo:
    """Describe the CPU: its model name and whether it has native bfloat16 instructions (Linux; else False)."""
    name, flags = f"{os.cpu_count()} cores", set()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key == "model name" and name.endswith("cores"):
                    name = f"{value.strip()}, {os.cpu_count()} cores"
                elif key in ("flags", "features"):
                    flags.update(value.split())
    except OSError:  # not Linux: report no native bfloat16 rather than guess
        pass
    return DeviceInfo("CPU", name, cpu_bfloat16=bool(flags & CPU_BFLOAT16_FLAGS))


def _parse_capability(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return int(value[0]), int(value[1])
    parts = str(value).split(".")
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        return int(parts[0]), int(parts[1])
    return None


def device_info() -> DeviceInfo:
    """Describe the first accelerator the Keras backend sees, or the CPU when there is none.

    Used in chapter 4 to pick the mixed-precision policy.
    """
    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                details = tf.config.experimental.get_device_details(gpus[0])
                return DeviceInfo("GPU", details.get("device_name", gpus[0].name),
                                  _parse_capability(details.get("compute_capability")))
            if tf.config.list_physical_devices("TPU"):
                return DeviceInfo("TPU", "TPU")
        elif backend == "jax":
            import jax

            device = jax.devices()[0]
            if device.platform in ("gpu", "tpu"):
                return DeviceInfo(device.platform.upper(), getattr(device, "device_kind", str(device)),
                                  _parse_capability(getattr(device, "compute_capability", None)))
        elif backend == "torch":
            import torch

            if torch.cuda.is_available():
                return DeviceInfo("GPU", torch.cuda.get_device_name(0), tuple(torch.cuda.get_device_capability(0)))
    except Exception:  # a broken driver must not stop a chapter: fall back to the CPU
        pass
    return cpu_info()


def resolve_precision_policy(policy: str = "auto", device: DeviceInfo | None = None) -> str:
    """Turn ``policy`` into a concrete Keras dtype policy name.

    ``"auto"`` picks ``mixed_bfloat16`` on TPUs, on GPUs of compute capability
    8.0 or more (A100, L4, H100) and on CPUs with native bfloat16 instructions;
    ``mixed_float16`` on GPUs of 7.x (V100, T4: fp16 tensor cores but no bf16);
    and ``float32`` everywhere else (older GPUs, CPUs without bfloat16, where
    16-bit arithmetic is emulated and slower).
    """
    if policy not in PRECISION_POLICIES:
        raise ValueError(f"policy must be one of {', '.join(PRECISION_POLICIES)}; got {policy!r}")
    if policy != "auto":
        return policy
    device = device_info() if device is None else device
    if device.kind == "TPU" or (device.kind == "CPU" and device.cpu_bfloat16):
        return "mixed_bfloat16"
    if device.kind == "GPU" and device.compute_capability is not None:
        if device.compute_capability >= (8, 0):
            return "mixed_bfloat16"
        if device.compute_capability >= (7, 0):
            return "mixed_float16"
    return "float32"


def set_precision_policy(policy: str = "auto") -> str:
    """Set Keras's global dtype policy (see :func:`resolve_precision_policy`) and return its name.

    Models built afterwards compute in the policy's dtype and keep float32
    weights; build the output layer with ``dtype="float32"`` (the book's
    builders do) so the softmax and the loss stay in float32.
    """
    name = resolve_precision_policy(policy)
    keras.mixed_precision.set_global_policy(name)
    return name


@contextmanager
def precision_policy(policy: str = "auto"):
    """Use a dtype policy inside a ``with`` block and restore the previous one afterwards."""
    previous = keras.mixed_precision.global_policy().name
    try:
        yield set_precision_policy(policy)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def scaled_learning_rate(base_learning_rate: float, batch_size: int, base_batch_size: int = 32) -> float:
    """The linear scaling rule of Goyal et al. (2017): multiply the learning rate by batch_size / base_batch_size.

    >>> scaled_learning_rate(1e-3, 256)
    0.008
    """
    for name, value in (("batch_size", batch_size), ("base_batch_size", base_batch_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not (isinstance(base_learning_rate, (int, float)) and 0 < base_learning_rate < 10):
        raise ValueError(f"base_learning_rate must be a number between 0 and 10, got {base_learning_rate!r}")
    return float(base_learning_rate) * batch_size / base_batch_size


def split_cpu(num_devices: int = 2) -> list[str]:
    """Split the physical CPU into ``num_devices`` logical TensorFlow devices and return their names.

    This lets ``tf.distribute.MirroredStrategy`` run with several replicas on a
    laptop. TensorFlow fixes its devices at its first operation, so call this
    before anything runs (in a notebook: in the setup cell). Calling it again
    with the same number is harmless. Used in chapter 4.
    """
    if isinstance(num_devices, bool) or not isinstance(num_devices, int) or not 1 <= num_devices <= 64:
        raise ValueError(f"num_devices must be an integer from 1 to 64, got {num_devices!r}")
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)
    except RuntimeError as error:
        names = [d.name for d in tf.config.list_logical_devices("CPU")]
        if len(names) == num_devices:
            return names
        raise RuntimeError(
            f"split_cpu({num_devices}) came too late: TensorFlow already runs with {len(names)} CPU device(s). "
            "Call it before the first TensorFlow operation (restart the kernel) or in a fresh process."
        ) from error
    return [d.name for d in tf.config.list_logical_devices("CPU")]


# ---------------------------------------------------------------------------
# Input pipelines
# ---------------------------------------------------------------------------


def augmentation(seed: int = 0, flip: bool = True, translate: float = 0.1) -> keras.Sequential:
    """Random horizontal flips and shifts of up to ``translate`` of the image size, as Keras layers.

    Apply them in the input pipeline (:func:`make_pipeline` does), not inside
    the model: ``RandomTranslation`` has ``supports_jit=False``, and one such
    layer inside a model makes ``jit_compile="auto"`` turn XLA off for all of it.
    """
    if not 0.0 <= translate < 0.5:
        raise ValueError(f"translate must be a fraction of the image size in [0, 0.5), got {translate!r}")
    stages = []
    if flip:
        stages.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if translate:
        stages.append(keras.layers.RandomTranslation(translate, translate, fill_mode="constant", seed=seed + 1))
    return keras.Sequential(stages, name="augmentation")


def tensorflow_available() -> bool:
    """True when TensorFlow can be imported (it is optional under the JAX and PyTorch backends)."""
    try:
        return find_spec("tensorflow") is not None
    except (ImportError, ValueError):  # ValueError: a blocked or half-imported module
        return False


class NumpyBatches(keras.utils.PyDataset):
    """Batches from NumPy arrays for any backend: scaled, resized and optionally augmented per batch.

    The fallback of :func:`make_pipeline` when the backend is not TensorFlow.
    """

    def __init__(self, images, labels, batch_size, image_size=None, channels=None, shuffle=False,
                 augment=None, seed=0):
        super().__init__()
        self.images, self.labels = images, np.asarray(labels)
        self.batch_size, self.image_size, self.channels = batch_size, image_size, channels
        self.shuffle, self.augment = shuffle, augment
        self.rng = np.random.default_rng(seed)
        self.order = np.arange(len(self.labels))
        self.on_epoch_end()

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __getitem__(self, index):
        rows = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        x = data_module.prepare_images(self.images[rows], self.image_size, self.channels)
        if self.augment is not None:
            x = keras.ops.convert_to_numpy(self.augment(x, training=True))
        return x, self.labels[rows]

    def on_epoch_end(self):
        if self.shuffle:
            self.rng.shuffle(self.order)


def make_pipeline(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    *,
    image_size: int | None = None,
    channels: int | None = None,
    shuffle: bool = False,
    augment: keras.layers.Layer | None = None,
    seed: int = 0,
    cache: bool = True,
    prefetch: bool = True,
):
    """Feed uint8 images (N, H, W[, C]) and int labels (N,) to ``fit`` in batches of float32 in [0, 1].

    With TensorFlow installed this is a ``tf.data`` pipeline: cache the raw
    uint8 arrays, shuffle, batch, scale and resize per batch, apply
    ``augment`` (a Keras layer, for example :func:`augmentation`) in the
    pipeline's ``map``, and prefetch the next batches while the model trains.
    Otherwise it is a :class:`NumpyBatches` sequence doing the same in NumPy.
    """
    batch_size = data_module.check_batch_size(batch_size)
    image_size = data_module.check_image_size(image_size)
    if len(images) != len(labels):
        raise ValueError(f"images and labels differ in length: {len(images)} != {len(labels)}")
    if not tensorflow_available():
        return NumpyBatches(images, labels, batch_size, image_size, channels, shuffle, augment, seed)
    return data_module.make_tf_dataset(
        images, labels, batch_size, image_size=image_size, channels=channels, shuffle=shuffle, seed=seed,
        cache=cache, augment=augment, prefetch=prefetch,
    )


# ---------------------------------------------------------------------------
# Compiling and callbacks
# ---------------------------------------------------------------------------


def warmup_cosine(peak_learning_rate: float, total_steps: int, warmup_steps: int = 0):
    """A learning-rate schedule: linear warm-up from 0 to the peak, then cosine decay to 0 at ``total_steps``.

    The warm-up is what lets a large batch use a linearly scaled learning rate
    (Goyal et al. 2017). Returns a Keras ``LearningRateSchedule``.
    """
    if not 0 < peak_learning_rate < 10:
        raise ValueError(f"peak_learning_rate must be between 0 and 10, got {peak_learning_rate!r}")
    if isinstance(total_steps, bool) or not isinstance(total_steps, (int, np.integer)) or total_steps < 1:
        raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}")
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"warmup_steps must be from 0 to total_steps - 1 ({total_steps - 1}), got {warmup_steps!r}")
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup_steps else peak_learning_rate, int(total_steps - warmup_steps),
        warmup_target=peak_learning_rate if warmup_steps else None, warmup_steps=int(warmup_steps),
    )


def compile_classifier(model: keras.Model, learning_rate=1e-3, jit_compile="auto",
                       steps_per_execution: int = 1) -> keras.Model:
    """Compile ``model`` with Adam, sparse categorical cross-entropy and accuracy; returns the model.

    ``learning_rate`` is a float or a schedule (:func:`warmup_cosine`).
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


def _atomic_write_json(path: Path, content: Any) -> None:
    """Write JSON through a temporary file and a rename, so a killed process never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(content, indent=2, sort_keys=True))
    os.replace(tmp, path)


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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write_json(self.path, self.history)


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
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
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


# ---------------------------------------------------------------------------
# Throughput
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingSetup:
    """How a model is fed and compiled for a throughput measurement.

    ``pipeline`` is "numpy" (float32 arrays straight into ``fit``) or
    "pipeline" (:func:`make_pipeline`: ``tf.data`` with cache and prefetch when
    TensorFlow is installed, NumPy batches otherwise).
    """

    name: str
    batch_size: int
    learning_rate: float
    pipeline: str = "numpy"
    precision: str = "float32"
    jit_compile: bool | str = False
    steps_per_execution: int = 1

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def classic_setup(batch_size: int = 32, learning_rate: float = 1e-3) -> TrainingSetup:
    """The setup most introductions use: NumPy arrays, batch 32, float32, no XLA."""
    return TrainingSetup("classic", batch_size, learning_rate)


def optimised_setup(batch_size: int = 256, base_learning_rate: float = 1e-3, base_batch_size: int = 32,
                    device: DeviceInfo | None = None) -> TrainingSetup:
    """The book's setup for the same model: input pipeline, a larger batch with the learning rate scaled
    linearly, and, where the device has them, mixed precision, XLA and several steps per execution.

    On a CPU ``jit_compile="auto"`` leaves XLA off, and mixed precision is
    used only where the CPU has native bfloat16 (:func:`resolve_precision_policy`).
    """
    device = device_info() if device is None else device
    accelerator = device.kind != "CPU"
    return TrainingSetup(
        "optimised", batch_size, scaled_learning_rate(base_learning_rate, batch_size, base_batch_size),
        pipeline="pipeline", precision=resolve_precision_policy("auto", device), jit_compile="auto",
        steps_per_execution=8 if accelerator else 1,
    )


@dataclass
class Throughput:
    """Training images per second of one setup: the median over timed passes, warm-up passes dropped."""

    setup: TrainingSetup
    images_per_run: int
    run_seconds: list[float] = field(default_factory=list)
    jit_compile: bool | None = None

    @property
    def seconds_per_run(self) -> float:
        return statistics.median(self.run_seconds)

    @property
    def images_per_second(self) -> float:
        """Images per second of the median pass: the figure to report."""
        return self.images_per_run / self.seconds_per_run

    @property
    def best_images_per_second(self) -> float:
        """Images per second of the fastest pass: what the machine can do when nothing else runs on it."""
        return self.images_per_run / min(self.run_seconds)

    def as_dict(self) -> dict[str, Any]:
        return {**self.setup.as_dict(), "images_per_run": self.images_per_run, "run_seconds": self.run_seconds,
                "median_seconds": self.seconds_per_run, "images_per_second": self.images_per_second,
                "best_images_per_second": self.best_images_per_second, "xla": self.jit_compile}


def measure_throughput(
    build_model: Callable[[], keras.Model],
    images: np.ndarray,
    labels: np.ndarray,
    setups: Sequence[TrainingSetup],
    *,
    runs: int = 3,
    warmup_runs: int = 1,
    image_size: int | None = None,
    channels: int | None = None,
) -> dict[str, Throughput]:
    """Time one training pass over ``images`` per setup, ``runs`` times, and keep the medians.

    Each setup gets its own model from ``build_model()`` (built under the
    setup's precision). The timed passes of the setups alternate, so a change
    in machine load during the measurement hits all of them alike; the first
    ``warmup_runs`` passes (tracing, XLA compilation, filling the cache) are
    not timed. Returns {setup name: :class:`Throughput`}. Used in chapter 4
    and ``benchmarks/throughput.py``.
    """
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ValueError(f"runs must be a positive integer, got {runs!r}")
    if len({s.name for s in setups}) != len(setups) or not setups:
        raise ValueError(f"setups must be a non-empty list with distinct names, got {[s.name for s in setups]}")
    prepared = []
    for setup in setups:
        if setup.pipeline not in ("numpy", "pipeline"):
            raise ValueError(f"pipeline must be 'numpy' or 'pipeline', got {setup.pipeline!r}")
        with precision_policy(setup.precision):
            model = compile_classifier(build_model(), setup.learning_rate, jit_compile=setup.jit_compile,
                                       steps_per_execution=setup.steps_per_execution)
        if setup.pipeline == "numpy":
            x = data_module.prepare_images(images, image_size, channels)
            fit_args = {"x": x, "y": np.asarray(labels), "batch_size": data_module.check_batch_size(setup.batch_size)}
        else:
            fit_args = {"x": make_pipeline(images, labels, setup.batch_size, image_size=image_size,
                                           channels=channels, shuffle=True)}
        prepared.append((setup, model, fit_args, Throughput(setup, len(labels))))
    for run in range(warmup_runs + runs):
        for _, model, fit_args, result in prepared:
            start = time.perf_counter()
            model.fit(**fit_args, epochs=1, verbose=0, shuffle=True if "y" in fit_args else False)
            if run >= warmup_runs:
                result.run_seconds.append(time.perf_counter() - start)
            result.jit_compile = bool(model.jit_compile)
    return {setup.name: result for setup, _, _, result in prepared}


# ---------------------------------------------------------------------------
# Prediction
# ---------------------------------------------------------------------------


@dataclass
class Predictions:
    """Class probabilities (N, num_classes), predicted labels (N,) and, when known, their names."""

    probabilities: np.ndarray
    labels: np.ndarray
    names: list[str] | None = None

    @property
    def confidence(self) -> np.ndarray:
        """The probability of the predicted class, (N,)."""
        return self.probabilities.max(axis=-1)


def _expected_shape(model: keras.Model) -> tuple[int, int, int]:
    shape = tuple(model.input_shape[1:])
    if len(shape) != 3 or any(d is None for d in shape):
        raise ValueError(f"predict needs a model with a fixed image input (H, W, C), this one takes {shape}")
    return shape


def check_images(images, expected_shape: tuple[int, int, int]) -> np.ndarray:
    """Check and convert images for a model taking ``expected_shape`` = (H, W, C); returns float32 (N, H, W, C).

    Accepts one image or a batch, with or without the channel axis, as uint8
    in 0-255 or floats in [0, 1]. Anything else raises a ValueError that says
    what was given and what the model expects.
    """
    height, width, channels = expected_shape
    want = (f"the model expects images of {height}x{width} pixels with {channels} channel(s), as uint8 "
            f"0-255 or floats in [0, 1], shaped ({height}, {width}), ({height}, {width}, {channels}) for one "
            f"image or with a leading batch axis")
    x = np.asarray(images)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)
                                 or x.dtype == bool):
        raise ValueError(f"images have dtype {x.dtype}; {want}")
    if x.ndim >= 2 and x.shape[-2:] == (height, width) and channels == 1:
        x = x[..., None]  # (H, W) or (N, H, W) grayscale: add the channel axis
    if x.ndim == 3:
        x = x[None]  # one image
    if x.ndim != 4 or x.shape[1:] != (height, width, channels):
        raise ValueError(f"images have shape {np.shape(images)}; {want}")
    if x.shape[0] == 0:
        raise ValueError(f"images is an empty batch; {want}")
    if np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all():
            raise ValueError(f"images contain NaN or infinite values; {want}")
        low, high = float(x.min()), float(x.max())
        if low < 0.0 or high > 1.0:
            hint = " (divide 0-255 values by 255)" if high <= 255.0 and low >= 0.0 else ""
            raise ValueError(f"float images range over [{low:g}, {high:g}], outside [0, 1]{hint}; {want}")
        return x.astype(np.float32)
    if x.dtype != np.uint8 and (x.min() < 0 or x.max() > 255):
        raise ValueError(f"integer images range over [{x.min()}, {x.max()}], outside 0-255; {want}")
    return x.astype(np.float32) / 255.0


def predict(model: keras.Model, images, class_names: Sequence[str] | None = None,
            batch_size: int = 256) -> Predictions:
    """Classify one image or a batch with :func:`check_images` first; returns :class:`Predictions`.

    Used in chapter 4 (the "apply" step) and by the command line.
    """
    x = check_images(images, _expected_shape(model))
    probabilities = np.asarray(model.predict(x, batch_size=data_module.check_batch_size(batch_size), verbose=0),
                               dtype=np.float32)
    labels = probabilities.argmax(axis=-1)
    names = None if class_names is None else [class_names[i] for i in labels]
    return Predictions(probabilities, labels, names)


# ---------------------------------------------------------------------------
# A trained classifier for later chapters
# ---------------------------------------------------------------------------


def load_or_train_cnn(path: str | os.PathLike, dataset, width: int = 16, epochs: int = 2,
                      batch_size: int = 128, seed: int = 0) -> keras.Model:
    """Return chapter 4's improved CNN saved at ``path``, or, when there is none (a fresh
    build, Colab), one of ``width`` trained now for ``epochs`` epochs on ``dataset`` (an
    :class:`~bigmodel_utils.data.ImageDataset`) and saved at ``path`` for next time.

    Which of the two happened is printed. Used in chapter 7.
    """
    from .models import build_improved_cnn

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


def _float32_policies(config):
    """``config`` (a model's nested config) with every layer's dtype policy set to float32."""
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy" and "config" in config:
            return {**config, "config": {**config["config"], "name": "float32"}}
        return {key: _float32_policies(value) for key, value in config.items()}
    if isinstance(config, list):
        return [_float32_policies(value) for value in config]
    return config


def float32_copy(model: keras.Model) -> keras.Model:
    """A copy of a functional or sequential ``model`` that computes in float32, with the same weights.

    Chapter 4 may train under mixed precision (bfloat16 or float16 computation, float32 weights); export
    runtimes and ONNX Runtime's quantiser want float32 graphs, so chapter 7 serves this copy. Used in
    chapter 7.
    """
    copy = model.__class__.from_config(_float32_policies(model.get_config()))
    copy.set_weights(model.get_weights())
    return copy
