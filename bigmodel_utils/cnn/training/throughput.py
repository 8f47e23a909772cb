"""Throughput: training images per second of a setup (pipeline, batch, precision, XLA), measured
as the median over timed passes. Used in chapter 4.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from bigmodel_utils.cnn.training.fitting import compile_classifier
from bigmodel_utils.cnn.training.pipeline import make_pipeline
from bigmodel_utils.cnn.training.precision import (
    DeviceInfo,
    device_info,
    precision_policy,
    resolve_precision_policy,
    scaled_learning_rate,
)
from bigmodel_utils.data import image_data as data_module
from bigmodel_utils.validation import check_int


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
    runs = check_int("runs", runs, minimum=1)
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
            fit_args = {"x": x, "y": np.asarray(labels), "batch_size": check_int("batch_size", setup.batch_size, 1)}
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

