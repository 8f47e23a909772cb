"""Honest accounting of a search: the epochs each tuner really trains (a ledger appended across
restarts and processes), the process's memory after each trial, and reading a search back.
Used in chapter 5.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras_tuner as kt
import numpy as np

from bigmodel_utils.validation import check_choice, check_int, check_number, positive_int

TUNERS = ("random", "hyperband", "bayesian")
"""Tuner kinds accepted by :func:`make_tuner`."""

OBJECTIVE = "val_accuracy"
LEDGER_FILE = "epochs.jsonl"



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
        self.interval = check_number("interval", interval, 0, 10, include_minimum=False)
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
    check_choice("kind", kind, TUNERS)
    if not project_name or any(sep in str(project_name) for sep in ("/", "\\")):
        raise ValueError(f"project_name must be a plain folder name, got {project_name!r}")
    common = {"hypermodel": hypermodel, "objective": OBJECTIVE, "seed": seed, "directory": str(directory),
              "project_name": project_name, "overwrite": bool(overwrite)}
    if kind == "hyperband":
        if max_trials is not None:
            raise ValueError("max_trials does not apply to hyperband: set max_epochs and factor instead")
        max_epochs = positive_int("max_epochs", max_epochs)
        factor = check_int("factor", factor, minimum=2)
        return AccountingHyperband(max_epochs=max_epochs, factor=factor, **common)
    max_trials = positive_int("max_trials", max_trials)
    if kind == "bayesian":
        num_initial_points = positive_int("num_initial_points", num_initial_points)
        return AccountingBayesianOptimization(max_trials=max_trials, num_initial_points=num_initial_points, **common)
    return AccountingRandomSearch(max_trials=max_trials, **common)



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

