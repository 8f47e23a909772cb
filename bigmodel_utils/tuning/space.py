"""The search space of the book's improved CNN, declared once, and the hypermodel every tuner uses.

Its default values are chapter 4's hand-picked settings (:data:`UNTUNED_VALUES`), so the untuned
model is a point of the space. Used in chapter 5.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import keras_tuner as kt
import numpy as np

from bigmodel_utils import optimizers
from bigmodel_utils.cnn import models
from bigmodel_utils.data import image_data as data_module
from bigmodel_utils.validation import check_choice, check_int, check_number, positive_int

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


def check_fixed(fixed: dict[str, Any] | None) -> dict[str, Any]:
    """A copy of ``fixed`` (pinned hyperparameters, name to value; None for none), after checking that every
    name is in :data:`SEARCH_SPACE`; a ValueError names the unknown ones. The hypermodel and the distributed
    search's command line both take it (chapter 5)."""
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
    fixed = check_fixed(fixed)
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

    ``learning_rate`` is a number above 0 and below 10, or a Keras learning-rate schedule.
    """
    check_choice("optimizer", name, ("adam", "rmsprop", "sgd"))
    if not isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        check_number("learning_rate", learning_rate, 0, 10, include_minimum=False, include_maximum=False)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate)
    return keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True)


def warmup_cosine_for(peak_learning_rate: float, steps_per_epoch: int, epochs: int):
    """Chapter 4's learning-rate schedule for a run of ``epochs`` epochs of ``steps_per_epoch`` steps.

    The rate rises linearly from 0 to ``peak_learning_rate`` over the first
    half epoch, then decays to 0 along a cosine until the last step
    (:func:`bigmodel_utils.optimizers.warmup_cosine`). Used in chapter 5.
    """
    steps_per_epoch = positive_int("steps_per_epoch", steps_per_epoch)
    epochs = positive_int("epochs", epochs)
    return optimizers.warmup_cosine(peak_learning_rate, epochs * steps_per_epoch, steps_per_epoch // 2)


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
        seed = check_int("seed", seed, minimum=0)
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.seed = seed
        self.fixed = check_fixed(fixed)
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



def search_split(dataset: data_module.ImageDataset, num_train: int, num_val: int, seed: int = 0):
    """Cut a tuning split out of a dataset's training images, as float32 arrays (N, H, W, C) and int labels.

    A permutation of the training images drawn with ``seed`` gives the first
    ``num_train`` to training and the next ``num_val`` to validation, so the
    two never overlap and both have about as many images of every class (the
    tail of the bundled subset does not). The test set is not touched.
    Returns ``(x_train, y_train), (x_val, y_val)``. Used in chapter 5.
    """
    total = len(dataset.y_train)
    num_train = positive_int("num_train", num_train)
    num_val = positive_int("num_val", num_val)
    if num_train + num_val > total:
        raise ValueError(f"num_train + num_val must be at most {total} (the training images), "
                         f"got {num_train} + {num_val}")
    order = np.random.default_rng(seed).permutation(total)
    train, val = np.sort(order[:num_train]), np.sort(order[num_train:num_train + num_val])
    images, labels = dataset.x_train, dataset.y_train
    prepare = data_module.prepare_images
    return (prepare(images[train]), labels[train]), (prepare(images[val]), labels[val])

