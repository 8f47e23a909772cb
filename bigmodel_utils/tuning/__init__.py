"""Hyperparameter tuning with KerasTuner: one search space, three tuners, honest epoch and memory accounting.

The search space of the book's improved CNN (:func:`bigmodel_utils.cnn.models.build_improved_cnn`)
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

The package has one module per concern: :mod:`.space` (the search space and hypermodel),
:mod:`.accounting` (epochs, memory, reading a search back), :mod:`.schedule` (Hyperband's
schedule from scratch) and :mod:`.distributed` (chief and workers). Used in chapter 5.
Needs ``keras-tuner`` (and, with the TensorFlow backend,
``tensorboard``, which keras-tuner imports) and ``psutil`` for memory.
"""

from bigmodel_utils.tuning.accounting import (
    LEDGER_FILE,
    OBJECTIVE,
    TUNERS,
    AccountingBayesianOptimization,
    AccountingHyperband,
    AccountingRandomSearch,
    EpochAccounting,
    MemoryMonitor,
    best_so_far,
    growth_per_trial,
    make_tuner,
    read_ledger,
    rss_mb,
    trials_table,
)
from bigmodel_utils.tuning.distributed import distributed_commands, free_port, main, run_distributed_search
from bigmodel_utils.tuning.schedule import HyperbandSchedule, hyperband_schedule
from bigmodel_utils.tuning.space import (
    SEARCH_SPACE,
    UNTUNED_VALUES,
    CNNHyperModel,
    build_training_state,
    declare_search_space,
    make_optimizer,
    search_split,
    warmup_cosine_for,
)

__all__ = [
    "LEDGER_FILE", "OBJECTIVE", "SEARCH_SPACE", "TUNERS", "UNTUNED_VALUES", "AccountingBayesianOptimization",
    "AccountingHyperband", "AccountingRandomSearch", "CNNHyperModel", "EpochAccounting", "HyperbandSchedule",
    "MemoryMonitor", "best_so_far", "build_training_state", "declare_search_space", "distributed_commands",
    "free_port", "growth_per_trial", "hyperband_schedule", "main", "make_optimizer", "make_tuner", "read_ledger",
    "rss_mb", "run_distributed_search", "search_split", "trials_table", "warmup_cosine_for",
]
