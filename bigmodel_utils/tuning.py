"""Hyperparameter tuning with KerasTuner: one search space, three tuners, honest epoch and memory accounting.

The search space of the book's improved CNN (:func:`bigmodel_utils.models.build_improved_cnn`)
is declared once, in :func:`declare_search_space`, and used by :class:`CNNHyperModel`
for every tuner. Its default values are chapter 4's hand-picked settings
(:data:`UNTUNED_VALUES`), so the untuned model is a point of the space.

:func:`make_tuner` builds a RandomSearch, Hyperband or BayesianOptimization
tuner that also keeps a ledger of every epoch it actually trains
(``epochs.jsonl`` in the search's folder, appended across restarts and
processes) together with the process's resident memory after each trial.

Run as a module it is one process of a distributed search
(``python -m bigmodel_utils.tuning --help``); :func:`run_distributed_search`
starts a chief and workers on this machine.

Used in chapter 5. Needs ``keras-tuner`` (and, with the TensorFlow backend,
``tensorboard``, which keras-tuner imports) and ``psutil`` for memory.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
import numpy as np

from . import data as data_module
from . import models, training

# ---------------------------------------------------------------------------
# The search space, defined once
# ---------------------------------------------------------------------------

UNTUNED_VALUES: dict[str, Any] = {
    "width": 16,
    "dense_units": 128,
    "dropout": 0.3,
    "learning_rate": 4e-3,
    "optimizer": "adam",
    "batch_size": 128,
}
"""Chapter 4's hand-picked settings (its ``quick`` profile) as a point of the search space.

Chapter 4 trains with Adam, batches of 128 and a learning rate that warms up
to 1e-3 x 128 / 32 = 4e-3 and then decays; :meth:`CNNHyperModel.fit` gives
every point of the space the same schedule, so this point is chapter 4's recipe.
"""

SEARCH_SPACE: dict[str, dict[str, Any]] = {
    "width": {"kind": "choice", "values": [8, 16, 32], "help": "filters in the first stage (doubled per stage)"},
    "dense_units": {"kind": "choice", "values": [32, 64, 128], "help": "units of the hidden dense layer"},
    "dropout": {"kind": "float", "min": 0.0, "max": 0.5, "step": 0.1, "help": "dropout rate before each dense layer"},
    "learning_rate": {"kind": "float", "min": 1e-4, "max": 3e-2, "sampling": "log", "help": "step size"},
    "optimizer": {"kind": "choice", "values": ["adam", "rmsprop", "sgd"], "help": "sgd has Nesterov momentum 0.9"},
    "batch_size": {"kind": "choice", "values": [32, 64, 128], "help": "images per gradient step (set in fit)"},
}
"""Every tuned hyperparameter, its range and what it does; :func:`declare_search_space` reads this table."""

TUNERS = ("random", "hyperband", "bayesian")
"""Tuner kinds accepted by :func:`make_tuner`."""

OBJECTIVE = "val_accuracy"
LEDGER_FILE = "epochs.jsonl"


def _check_fixed(fixed: dict[str, Any] | None) -> dict[str, Any]:
    fixed = dict(fixed or {})
    unknown = sorted(set(fixed) - set(SEARCH_SPACE))
    if unknown:
        raise ValueError(f"fixed names unknown hyperparameters {unknown}; the search space has {sorted(SEARCH_SPACE)}")
    return fixed


def declare_search_space(hp: kt.HyperParameters, fixed: dict[str, Any] | None = None) -> dict[str, Any]:
    """Declare the six hyperparameters of :data:`SEARCH_SPACE` on ``hp`` and return their current values.

    Defaults are :data:`UNTUNED_VALUES`. Names in ``fixed`` are pinned to the
    given value (``hp.Fixed``), which tests and the distributed demo use to
    keep trials small. Declaring again returns the same values, so ``build``
    and ``fit`` can both call it.
    """
    fixed = _check_fixed(fixed)
    values = {}
    for name, spec in SEARCH_SPACE.items():
        if name in fixed:
            values[name] = hp.Fixed(name, fixed[name])
        elif spec["kind"] == "choice":
            values[name] = hp.Choice(name, spec["values"], default=UNTUNED_VALUES[name])
        else:
            values[name] = hp.Float(name, spec["min"], spec["max"], step=spec.get("step"),
                                    sampling=spec.get("sampling", "linear"), default=UNTUNED_VALUES[name])
    return values


def make_optimizer(name: str, learning_rate) -> keras.optimizers.Optimizer:
    """Return a fresh Keras optimizer: ``"adam"``, ``"rmsprop"`` or ``"sgd"`` (Nesterov momentum 0.9).

    ``learning_rate`` is a number or a Keras learning-rate schedule.
    """
    if not isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule) and not (
        isinstance(learning_rate, (int, float)) and not isinstance(learning_rate, bool) and 0 < learning_rate < 10
    ):
        raise ValueError(f"learning_rate must be a number between 0 and 10 or a schedule, got {learning_rate!r}")
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True)
    raise ValueError(f"optimizer must be one of adam, rmsprop, sgd; got {name!r}")


def warmup_cosine_for(peak_learning_rate: float, steps_per_epoch: int, epochs: int):
    """Chapter 4's learning-rate schedule for a run of ``epochs`` epochs of ``steps_per_epoch`` steps.

    The rate rises linearly from 0 to ``peak_learning_rate`` over the first
    half epoch, then decays to 0 along a cosine until the last step
    (:func:`bigmodel_utils.training.warmup_cosine`). Used in chapter 5.
    """
    steps_per_epoch = _positive_int("steps_per_epoch", steps_per_epoch)
    epochs = _positive_int("epochs", epochs)
    return training.warmup_cosine(peak_learning_rate, epochs * steps_per_epoch, steps_per_epoch // 2)


def build_training_state(model: keras.Model, x, y) -> keras.Model:
    """Create a compiled model's optimizer and metric variables now, eagerly, from two examples of ``x``/``y``.

    On the TensorFlow backend, Keras otherwise creates them inside the first
    traced training step, and TensorFlow keeps the small graphs that
    initialise them after the model is gone: several MiB per trial for this
    model with Adam, even with ``keras.backend.clear_session()`` between
    trials. Nothing is trained and the metrics are reset afterwards. Returns
    ``model``. Used in chapter 5.
    """
    x_few, y_few = x[:2], y[:2]
    y_pred = model(x_few, training=False)
    model.compute_loss(x_few, y_few, y_pred)
    model.compute_metrics(x_few, y_few, y_pred, sample_weight=None)
    model.reset_metrics()
    model.optimizer.build(model.trainable_variables)
    return model


class CNNHyperModel(kt.HyperModel):
    """The improved CNN of chapter 4 as a KerasTuner HyperModel.

    ``build`` seeds the weights (``seed``), builds
    ``build_improved_cnn(width, dense_units, dropout)`` and compiles it with
    the chosen optimizer at a constant learning rate. ``fit`` passes the
    chosen batch size on to ``model.fit`` and, with ``schedule=True``,
    recompiles the optimizer with chapter 4's schedule (:func:`warmup_cosine_for`)
    peaking at the chosen learning rate, over the epochs this call trains: a
    Hyperband trial that continues an earlier one starts a new warm-up and
    decay (a warm restart). It creates the optimizer and metric variables
    before training (:func:`build_training_state`), which keeps memory flatter
    across trials. Every trial with the same architecture starts from the same
    initial weights, so trials differ only by their hyperparameters. Used in
    chapter 5.
    """

    def __init__(self, input_shape=(28, 28, 1), num_classes: int = 10, seed: int = 0,
                 fixed: dict[str, Any] | None = None, schedule: bool = True, name: str = "improved_cnn_hypermodel"):
        super().__init__(name=name)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.seed = seed
        self.fixed = _check_fixed(fixed)
        self.schedule = bool(schedule)

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        values = declare_search_space(hp, self.fixed)
        keras.utils.set_random_seed(self.seed)
        model = models.build_improved_cnn(self.input_shape, self.num_classes, width=values["width"],
                                          dense_units=values["dense_units"], dropout=values["dropout"])
        model.compile(optimizer=make_optimizer(values["optimizer"], values["learning_rate"]),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    def fit(self, hp: kt.HyperParameters, model: keras.Model, *args, **kwargs):
        values = declare_search_space(hp, self.fixed)
        kwargs["batch_size"] = values["batch_size"]
        x = args[0] if args else kwargs.get("x")
        steps_per_epoch = kwargs.get("steps_per_epoch")
        if steps_per_epoch is None and hasattr(x, "__len__"):
            steps_per_epoch = math.ceil(len(x) / values["batch_size"])
        if self.schedule and steps_per_epoch:  # without a length (a generator), the rate stays constant
            epochs = kwargs.get("epochs", 1) - kwargs.get("initial_epoch", 0)
            schedule = warmup_cosine_for(values["learning_rate"], steps_per_epoch, epochs)
            model.compile(optimizer=make_optimizer(values["optimizer"], schedule),
                          loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        y = args[1] if len(args) > 1 else kwargs.get("y")
        if hasattr(x, "__getitem__") and y is not None:
            build_training_state(model, x, y)
        return model.fit(*args, **kwargs)

    def default_hyperparameters(self) -> kt.HyperParameters:
        """The space's default point: :data:`UNTUNED_VALUES`, except what ``fixed`` pins."""
        hp = kt.HyperParameters()
        declare_search_space(hp, self.fixed)
        return hp

    def point(self, values: dict[str, Any]) -> kt.HyperParameters:
        """The point of the search space with ``values`` (the rest at their defaults), ready for ``build``/``fit``.

        Raises ValueError for an unknown name, a value outside the space, or a
        value that contradicts ``fixed``.
        """
        hp = self.default_hyperparameters()
        for name, value in values.items():
            spec = SEARCH_SPACE.get(name)
            if spec is None:
                raise ValueError(f"{name!r} is not in the search space; it has {sorted(SEARCH_SPACE)}")
            if name in self.fixed:
                if value != self.fixed[name]:
                    raise ValueError(f"{name} is fixed to {self.fixed[name]!r} in this HyperModel, got {value!r}")
            elif spec["kind"] == "choice" and value not in spec["values"]:
                raise ValueError(f"{name} must be one of {spec['values']}, got {value!r}")
            elif spec["kind"] == "float" and not spec["min"] <= value <= spec["max"]:
                raise ValueError(f"{name} must be between {spec['min']:g} and {spec['max']:g}, got {value!r}")
            hp.values[name] = value
        return hp


# ---------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------


def rss_mb() -> float:
    """Resident memory of this process in MiB (psutil), what the operating system counts against it."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


class MemoryMonitor:
    """Sample this process's resident memory (MiB) every ``interval`` seconds in a thread, as a context manager.

    >>> with MemoryMonitor() as monitor:  # doctest: +SKIP
    ...     tuner.search(...)
    >>> monitor.peak_mb  # doctest: +SKIP

    Sampling catches short peaks inside a trial (activations, data copies)
    that a measurement between trials would miss.
    """

    def __init__(self, interval: float = 0.05):
        if not 0 < interval <= 10:
            raise ValueError(f"interval must be between 0 and 10 seconds, got {interval!r}")
        self.interval = interval
        self.samples_mb: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self):
        while not self._stop.is_set():
            self.samples_mb.append(rss_mb())
            self._stop.wait(self.interval)

    def __enter__(self) -> MemoryMonitor:
        self.samples_mb = [rss_mb()]
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.samples_mb.append(rss_mb())

    @property
    def start_mb(self) -> float:
        return self.samples_mb[0]

    @property
    def peak_mb(self) -> float:
        return max(self.samples_mb)


def growth_per_trial(rss_after_trials: Sequence[float], skip: int = 1) -> float:
    """Least-squares slope of resident memory against trial number, in MiB per trial.

    The first ``skip`` trials are left out: the first trial of a process
    allocates thread pools and kernels once. A slope near zero means memory
    is flat across trials; a leak shows as a steady positive slope.
    """
    values = np.asarray(rss_after_trials, dtype=float)[skip:]
    if len(values) < 2:
        raise ValueError(f"need at least {skip + 2} trials to measure growth, got {len(rss_after_trials)}")
    slope, _ = np.polyfit(np.arange(len(values), dtype=float), values, 1)
    return float(slope)


# ---------------------------------------------------------------------------
# Epoch accounting: what a tuner really trained
# ---------------------------------------------------------------------------


def read_ledger(project_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every record in a search folder's ``epochs.jsonl``: ``{"event": "epoch" | "trial", ...}``, oldest first."""
    path = Path(project_dir) / LEDGER_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _append(path: Path, record: dict[str, Any]) -> None:
    # One short line per write in append mode: records from several processes do not interleave.
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")


class EpochAccounting:
    """Mixin for a KerasTuner tuner: record each trained epoch and each finished trial.

    Keras callbacks passed to ``search`` are deep-copied for every trial, so a
    counter inside one would count nothing; the tuner's own hooks are called
    with the trial instead. This process's records are in ``epoch_log`` and
    ``trial_log``; every process appends the same records to ``epochs.jsonl``
    in the search folder, which survives a killed process.
    """

    def on_search_begin(self):
        super().on_search_begin()
        if not hasattr(self, "epoch_log"):
            self.epoch_log: list[dict[str, Any]] = []
            self.trial_log: list[dict[str, Any]] = []
        self._search_start = time.perf_counter()

    def on_trial_begin(self, trial):
        super().on_trial_begin(trial)
        self._trial_start = time.perf_counter()
        self._trial_epochs = 0

    def on_epoch_end(self, trial, model, epoch, logs=None):
        super().on_epoch_end(trial, model, epoch, logs=logs)
        self._trial_epochs += 1
        record = {
            "event": "epoch", "tuner_id": self.tuner_id, "trial_id": trial.trial_id, "epoch": int(epoch) + 1,
            "seconds": time.perf_counter() - self._search_start, "rss_mb": rss_mb(),
            **{k: float(v) for k, v in (logs or {}).items()},
        }
        self.epoch_log.append(record)
        _append(Path(self.project_dir) / LEDGER_FILE, record)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        # No gc.collect() here: KerasTuner collects before every build, and each collection walks every object.
        hp = trial.hyperparameters.values
        record = {
            "event": "trial", "tuner_id": self.tuner_id, "trial_id": trial.trial_id, "status": str(trial.status),
            "epochs_trained": self._trial_epochs, "seconds": time.perf_counter() - self._trial_start,
            "rss_mb": rss_mb(), "score": self.oracle.get_trial(trial.trial_id).score,
            "continues_trial": hp.get("tuner/trial_id"),
        }
        self.trial_log.append(record)
        _append(Path(self.project_dir) / LEDGER_FILE, record)

    @property
    def epochs_trained(self) -> int:
        """Epochs this process trained during ``search`` (all trials, promoted ones included)."""
        return len(getattr(self, "epoch_log", []))


class AccountingRandomSearch(EpochAccounting, kt.RandomSearch):
    """RandomSearch that keeps an epoch ledger (see :class:`EpochAccounting`)."""


class AccountingHyperband(EpochAccounting, kt.Hyperband):
    """Hyperband that keeps an epoch ledger (see :class:`EpochAccounting`)."""


class AccountingBayesianOptimization(EpochAccounting, kt.BayesianOptimization):
    """BayesianOptimization that keeps an epoch ledger (see :class:`EpochAccounting`)."""


_TUNER_CLASSES = {
    "random": AccountingRandomSearch,
    "hyperband": AccountingHyperband,
    "bayesian": AccountingBayesianOptimization,
}


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def make_tuner(
    kind: str,
    hypermodel: kt.HyperModel,
    *,
    directory: str | os.PathLike,
    project_name: str,
    max_trials: int | None = None,
    max_epochs: int | None = None,
    factor: int = 3,
    num_initial_points: int = 2,
    seed: int = 0,
    overwrite: bool = False,
) -> kt.Tuner:
    """Build a tuner of ``kind`` (one of :data:`TUNERS`) that maximises validation accuracy and counts epochs.

    - ``"random"`` and ``"bayesian"`` need ``max_trials``; each trial trains
      for the ``epochs`` given to ``search``.
    - ``"hyperband"`` needs ``max_epochs`` and ``factor``; it decides the
      number of trials and their epochs itself (see :func:`hyperband_schedule`).
    - ``"bayesian"`` samples ``num_initial_points`` random trials before its
      Gaussian process proposes the next ones (KerasTuner's default, three per
      hyperparameter, would make a short search purely random).

    The search lives in ``directory/project_name``. With ``overwrite=False``
    an existing folder is reloaded: finished trials are kept and a search
    continues where it stopped, which is how a killed search resumes, and also
    how a stale folder quietly answers for a search you have since changed.
    ``overwrite=True`` deletes the folder first.
    """
    if kind not in _TUNER_CLASSES:
        raise ValueError(f"kind must be one of {', '.join(TUNERS)}; got {kind!r}")
    if not project_name or any(sep in str(project_name) for sep in ("/", "\\")):
        raise ValueError(f"project_name must be a plain folder name, got {project_name!r}")
    common = {"hypermodel": hypermodel, "objective": OBJECTIVE, "seed": seed, "directory": str(directory),
              "project_name": project_name, "overwrite": bool(overwrite)}
    if kind == "hyperband":
        if max_trials is not None:
            raise ValueError("max_trials does not apply to hyperband: set max_epochs and factor instead")
        max_epochs = _positive_int("max_epochs", max_epochs)
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 2:
            raise ValueError(f"factor must be an integer of at least 2, got {factor!r}")
        return AccountingHyperband(max_epochs=max_epochs, factor=factor, **common)
    max_trials = _positive_int("max_trials", max_trials)
    if kind == "bayesian":
        num_initial_points = _positive_int("num_initial_points", num_initial_points)
        return AccountingBayesianOptimization(max_trials=max_trials, num_initial_points=num_initial_points, **common)
    return AccountingRandomSearch(max_trials=max_trials, **common)


# ---------------------------------------------------------------------------
# Hyperband's schedule, from scratch
# ---------------------------------------------------------------------------


@dataclass
class HyperbandSchedule:
    """The rounds Hyperband will run: one dict per (bracket, round), and the totals."""

    max_epochs: int
    factor: int
    rounds: list[dict[str, int]] = field(default_factory=list)

    @property
    def trials(self) -> int:
        return sum(r["trials"] for r in self.rounds)

    @property
    def epochs_trained(self) -> int:
        """Epochs actually trained: a promoted model continues from its checkpoint."""
        return sum(r["trials"] * r["new_epochs"] for r in self.rounds)

    @property
    def epochs_if_from_scratch(self) -> int:
        """Epochs if every trial trained from scratch up to its target (what ``trials x epochs`` suggests)."""
        return sum(r["trials"] * r["epochs"] for r in self.rounds)


def hyperband_schedule(max_epochs: int, factor: int = 3, iterations: int = 1) -> HyperbandSchedule:
    """Predict the trials and epochs of KerasTuner's Hyperband (Li et al. 2018) without running it.

    Brackets run from the most aggressive (many models, few epochs) to plain
    random search (few models, ``max_epochs`` each). In bracket ``b`` round
    ``r`` KerasTuner trains ``ceil(B / (b + 1) * factor**(b - r))`` models to
    ``ceil(max_epochs / factor**(b - r))`` epochs, with
    ``B = ceil(1 + log_factor(max_epochs))``; round ``r > 0`` continues the
    best models of round ``r - 1`` from their checkpoints. Used in chapter 5.
    """
    max_epochs = _positive_int("max_epochs", max_epochs)
    iterations = _positive_int("iterations", iterations)
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 2:
        raise ValueError(f"factor must be an integer of at least 2, got {factor!r}")
    num_brackets, epochs = 0, float(max_epochs)
    while epochs >= 1:
        epochs /= factor
        num_brackets += 1
    last_round_size = math.ceil(1 + math.log(max_epochs, factor))
    schedule = HyperbandSchedule(max_epochs, factor)
    for iteration in range(iterations):
        for bracket in reversed(range(num_brackets)):
            previous_epochs = 0
            for round_num in range(bracket + 1):
                trials = math.ceil(last_round_size / (bracket + 1) * factor ** (bracket - round_num))
                target = math.ceil(max_epochs / factor ** (bracket - round_num))
                schedule.rounds.append({"iteration": iteration, "bracket": bracket, "round": round_num,
                                        "trials": trials, "epochs": target, "new_epochs": target - previous_epochs})
                previous_epochs = target
    return schedule


# ---------------------------------------------------------------------------
# Reading a search back
# ---------------------------------------------------------------------------


def trials_table(tuner: kt.Tuner) -> list[dict[str, Any]]:
    """One row per trial of ``tuner``: id, status, score (best validation accuracy), epochs and hyperparameters."""
    rows = []
    for trial_id, trial in sorted(tuner.oracle.trials.items()):
        values = dict(trial.hyperparameters.values)
        row = {"trial_id": trial_id, "status": str(trial.status), "score": trial.score,
               "target_epochs": values.pop("tuner/epochs", None), "continues_trial": values.pop("tuner/trial_id", None)}
        for key in ("tuner/initial_epoch", "tuner/bracket", "tuner/round"):
            values.pop(key, None)
        rows.append({**row, **values})
    return rows


def best_so_far(epoch_records: Sequence[dict[str, Any]], metric: str = OBJECTIVE) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative epochs trained (1, 2, ...) and the best ``metric`` seen up to each, from ledger epoch records."""
    values = [r[metric] for r in epoch_records if r.get("event", "epoch") == "epoch" and metric in r]
    if not values:
        raise ValueError(f"no epoch record carries {metric!r}")
    return np.arange(1, len(values) + 1), np.maximum.accumulate(np.asarray(values, dtype=float))


def search_split(dataset: data_module.ImageDataset, num_train: int, num_val: int, seed: int = 0):
    """Cut a tuning split out of a dataset's training images, as float32 arrays (N, H, W, C) and int labels.

    A permutation of the training images drawn with ``seed`` gives the first
    ``num_train`` to training and the next ``num_val`` to validation, so the
    two never overlap and both have about as many images of every class (the
    tail of the bundled subset does not). The test set is not touched.
    Returns ``(x_train, y_train), (x_val, y_val)``. Used in chapter 5.
    """
    total = len(dataset.y_train)
    num_train = _positive_int("num_train", num_train)
    num_val = _positive_int("num_val", num_val)
    if num_train + num_val > total:
        raise ValueError(f"num_train + num_val must be at most {total} (the training images), "
                         f"got {num_train} + {num_val}")
    order = np.random.default_rng(seed).permutation(total)
    train, val = np.sort(order[:num_train]), np.sort(order[num_train:num_train + num_val])
    images, labels = dataset.x_train, dataset.y_train
    prepare = data_module.prepare_images
    return (prepare(images[train]), labels[train]), (prepare(images[val]), labels[val])


# ---------------------------------------------------------------------------
# Distributed tuning: one chief oracle, several workers
# ---------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (for the chief's oracle server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def distributed_commands(directory, project_name: str, *, port: int, num_workers: int = 2, kind: str = "random",
                         max_trials: int = 4, epochs: int = 1, num_train: int = 512, num_val: int = 256,
                         seed: int = 0, fixed: dict[str, Any] | None = None) -> list[tuple[dict[str, str], list[str]]]:
    """The environment variables and command line of each process of a distributed search: chief first.

    Every process runs the same command; ``KERASTUNER_TUNER_ID`` says which
    role it has (``chief`` serves the oracle, ``tuner0``, ``tuner1``, ... run
    trials), and ``KERASTUNER_ORACLE_IP``/``KERASTUNER_ORACLE_PORT`` say where
    the chief listens. On several machines, use the chief's address instead of
    127.0.0.1 and a folder every machine can read and write.
    """
    num_workers = _positive_int("num_workers", num_workers)
    if kind not in TUNERS:
        raise ValueError(f"kind must be one of {', '.join(TUNERS)}; got {kind!r}")
    argv = [sys.executable, "-m", "bigmodel_utils.tuning", "--directory", str(directory), "--project-name",
            project_name, "--kind", kind, "--max-trials", str(max_trials), "--epochs", str(epochs),
            "--num-train", str(num_train), "--num-val", str(num_val), "--seed", str(seed),
            "--fixed", json.dumps(_check_fixed(fixed))]
    roles = ["chief"] + [f"tuner{i}" for i in range(num_workers)]
    return [({"KERASTUNER_TUNER_ID": role, "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(port)},
             argv) for role in roles]


def run_distributed_search(directory, project_name: str, *, num_workers: int = 2, timeout: float = 300,
                           **search_args) -> dict[str, Any]:
    """Run a chief and ``num_workers`` workers as subprocesses on 127.0.0.1 and wait for the workers.

    The search folder is emptied first. The workers run on the CPU
    (``CUDA_VISIBLE_DEVICES=""``), with the bundled Fashion-MNIST subset.
    When both workers have finished, the chief, which otherwise polls for
    stragglers every 20 seconds, is stopped; its oracle has saved every trial.
    Returns which trials each worker ran (from the ledger), the exit codes and
    the wall time in seconds. ``search_args`` go to :func:`distributed_commands`.
    """
    import shutil

    project_dir = Path(directory) / project_name
    if project_dir.exists():
        shutil.rmtree(project_dir)
    commands = distributed_commands(directory, project_name, port=free_port(), num_workers=num_workers, **search_args)
    base_env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3",
                "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent),
                                               os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    logs = [open(Path(directory) / f"{project_name}-{env['KERASTUNER_TUNER_ID']}.log", "w") for env, _ in commands]
    processes = [subprocess.Popen(argv, env={**base_env, **env}, stdout=log, stderr=subprocess.STDOUT)
                 for (env, argv), log in zip(commands, logs)]
    chief, workers = processes[0], processes[1:]
    try:
        for worker in workers:
            worker.wait(timeout=max(1.0, timeout - (time.perf_counter() - start)))
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=30)
        for log in logs:
            log.close()
    seconds = time.perf_counter() - start
    trials = [r for r in read_ledger(project_dir) if r["event"] == "trial"]
    by_worker: dict[str, list[str]] = {}
    for record in trials:
        by_worker.setdefault(record["tuner_id"], []).append(record["trial_id"])
    failed = {env["KERASTUNER_TUNER_ID"]: p.returncode for (env, _), p in zip(commands[1:], workers) if p.returncode}
    if failed:
        raise RuntimeError(f"distributed workers failed with exit codes {failed}; see the logs in {directory}")
    return {"trials_by_worker": by_worker, "worker_exit_codes": [p.returncode for p in workers],
            "chief_stopped_by_us": chief.returncode not in (0, None), "seconds": seconds,
            "project_dir": str(project_dir)}


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bigmodel_utils.tuning",
        description="One process of a distributed KerasTuner search of the improved CNN on Fashion-MNIST. "
                    "Set KERASTUNER_TUNER_ID (chief, tuner0, tuner1, ...), KERASTUNER_ORACLE_IP and "
                    "KERASTUNER_ORACLE_PORT; start the chief first, then the workers, all with the same arguments.")
    parser.add_argument("--directory", required=True, help="folder that holds the search (shared by all processes)")
    parser.add_argument("--project-name", required=True, help="the search's folder name inside --directory")
    parser.add_argument("--kind", choices=TUNERS, default="random")
    parser.add_argument("--max-trials", type=int, default=4, help="trials in all (random, bayesian)")
    parser.add_argument("--max-epochs", type=int, default=3, help="Hyperband's max_epochs")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per trial (random, bayesian)")
    parser.add_argument("--num-train", type=int, default=512, help="training images from the bundled subset")
    parser.add_argument("--num-val", type=int, default=256, help="validation images from the bundled subset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fixed", default="{}", help='JSON of pinned hyperparameters, e.g. {"width": 8}')
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m bigmodel_utils.tuning`` (one chief or worker process)."""
    args = _parse_args(argv)
    if "KERASTUNER_TUNER_ID" not in os.environ:
        print("KERASTUNER_TUNER_ID is not set: running the whole search in this one process.")
    is_worker = "KERASTUNER_ORACLE_IP" in os.environ and "chief" not in os.environ.get("KERASTUNER_TUNER_ID", "")
    hypermodel = CNNHyperModel(seed=args.seed, fixed=json.loads(args.fixed))
    sizes = {"max_epochs": args.max_epochs} if args.kind == "hyperband" else {"max_trials": args.max_trials}
    # Only the chief may start a fresh folder: a worker that deleted it would pull the chief's files away.
    tuner = make_tuner(args.kind, hypermodel, directory=args.directory, project_name=args.project_name,
                       seed=args.seed, overwrite=False, **sizes)
    dataset = data_module.load_fashion_mnist(subset=True)
    (x_train, y_train), (x_val, y_val) = search_split(dataset, args.num_train, args.num_val, seed=args.seed)
    tuner.search(x_train, y_train, validation_data=(x_val, y_val), epochs=args.epochs, verbose=0)
    role = "worker" if is_worker else "chief"
    print(f"{os.environ.get('KERASTUNER_TUNER_ID', 'tuner0')} ({role}) done: trained {tuner.epochs_trained} epochs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
