"""Differentially private training (DP-SGD), its privacy budget, and a membership-inference attack.

DP-SGD (Abadi et al. 2016) changes one thing in a training step: instead of
averaging the batch's gradient, it

1. computes each example's gradient separately (:func:`per_example_gradients`),
2. scales every example's gradient down to L2 norm at most ``clip_norm`` C
   (:func:`clip_per_example`), so no single example can move the model far,
3. sums the clipped gradients and adds Gaussian noise with standard deviation
   ``noise_multiplier * clip_norm`` = sigma * C to every coordinate
   (:func:`add_noise`), which hides whether any one example was there,
4. divides by the expected batch size and lets the optimizer take its step.

Batches are drawn by Poisson sampling (each example joins a step's batch with
probability q, independently), which is what the privacy accountant assumes;
:func:`dp_sgd_epsilon` then turns (sigma, q, steps, delta) into epsilon with
the maintained ``dp-accounting`` library. :func:`membership_inference` runs
the loss-threshold attack of Yeom et al. (2018) that shows why this matters.

Per-example gradients need the backend's autodiff: TensorFlow
(``tf.vectorized_map`` over a ``GradientTape``) and JAX (``jax.vmap`` of
``jax.grad`` over ``model.stateless_call``) are supported; everything else
here is backend-agnostic ``keras.ops``. Used in chapter 9.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import keras
import numpy as np
from keras import ops

from bigmodel_utils.backend import autodiff
from bigmodel_utils.backend.compile import graph_function
from bigmodel_utils.validation import check_choice, check_int, check_number, non_negative, positive

# ---------------------------------------------------------------------------
# The two pure pieces of DP-SGD: clipping and noise
# ---------------------------------------------------------------------------


def per_example_norms(per_example_grads) -> np.ndarray:
    """L2 norm of each example's whole gradient (all variables together), shape (batch,)."""
    squares = [ops.sum(ops.reshape(ops.square(g), (ops.shape(g)[0], -1)), axis=1) for g in per_example_grads]
    return ops.sqrt(ops.sum(ops.stack(squares, axis=0), axis=0))


def clip_per_example(per_example_grads, clip_norm: float):
    """Scale each example's gradient to L2 norm at most ``clip_norm``; return (clipped, norms before clipping).

    ``per_example_grads`` is a list with one tensor per model variable, each of
    shape (batch, *variable_shape); the norm of example i is taken over all
    variables together. Gradients already shorter than ``clip_norm`` are left
    unchanged (scale ``min(1, C / norm)``).
    """
    clip_norm = positive("clip_norm", clip_norm)
    if not per_example_grads:
        raise ValueError("per_example_grads must be a non-empty list of (batch, ...) tensors")
    norms = per_example_norms(per_example_grads)
    scale = ops.minimum(1.0, clip_norm / ops.maximum(norms, 1e-12))
    clipped = []
    for g in per_example_grads:
        shape = (-1,) + (1,) * (len(ops.shape(g)) - 1)
        clipped.append(g * ops.cast(ops.reshape(scale, shape), g.dtype))
    return clipped, norms


def add_noise(summed_grads, noise_multiplier: float, clip_norm: float, seed=None):
    """Add Gaussian noise N(0, (noise_multiplier * clip_norm)^2) to every coordinate of each summed gradient.

    ``seed`` is an int or a ``keras.random.SeedGenerator`` (pass the same
    generator every step so each step draws fresh noise). A
    ``noise_multiplier`` of 0 returns the sums unchanged (clipping only, no
    privacy guarantee).
    """
    sigma = non_negative("noise_multiplier", noise_multiplier)
    clip_norm = positive("clip_norm", clip_norm)
    if sigma == 0:
        return list(summed_grads)
    std = sigma * clip_norm
    return [g + keras.random.normal(ops.shape(g), stddev=std, dtype=g.dtype, seed=seed) for g in summed_grads]


# ---------------------------------------------------------------------------
# Per-example gradients (backend-specific autodiff)
# ---------------------------------------------------------------------------


def sparse_crossentropy(labels, probabilities):
    """Per-example cross-entropy (batch,) for integer labels and softmax outputs."""
    return keras.losses.sparse_categorical_crossentropy(labels, probabilities)


def per_example_gradients(model: keras.Model, x, y, loss_fn=sparse_crossentropy):
    """Gradients of each example's loss with respect to ``model.trainable_variables``.

    Returns a list with one tensor per trainable variable, of shape
    (batch, *variable.shape). The model must not mix examples inside a batch
    (no batch normalisation in training mode), or "per-example" loses its
    meaning. TensorFlow vectorises the loop with ``tf.vectorized_map``; JAX
    with ``jax.vmap``.
    """
    return autodiff.per_example_gradients(model, x, y, loss_fn)


def _clipped_sum_fn(model, loss_fn, clip_norm):
    """Return f(x, y, mask) -> (sum of clipped per-example gradients over mask, per-example norms)."""

    def clipped_sum(x, y, mask):
        grads = per_example_gradients(model, x, y, loss_fn)
        clipped, norms = clip_per_example(grads, clip_norm)
        weights = ops.cast(mask, "float32")
        sums = []
        for g in clipped:
            shape = (-1,) + (1,) * (len(ops.shape(g)) - 1)
            sums.append(ops.sum(g * ops.cast(ops.reshape(weights, shape), g.dtype), axis=0))
        return sums, norms

    return graph_function(clipped_sum)


# ---------------------------------------------------------------------------
# Training with DP-SGD
# ---------------------------------------------------------------------------


@dataclass
class DPTrainingResult:
    """What :func:`train_dp_sgd` did: its settings, steps and per-epoch history."""

    clip_norm: float
    noise_multiplier: float
    batch_size: int
    sampling_probability: float
    steps: int
    num_examples: int
    history: dict = field(default_factory=dict)

    def epsilon(self, delta: float) -> float:
        """The privacy budget spent, epsilon at ``delta`` (infinite without noise)."""
        return dp_sgd_epsilon(self.noise_multiplier, self.sampling_probability, self.steps, delta)


def poisson_batches(num_examples: int, sampling_probability: float, steps: int, rng: np.random.Generator):
    """Yield ``steps`` index arrays; each example is in a batch independently with ``sampling_probability``."""
    for _ in range(steps):
        yield np.flatnonzero(rng.random(num_examples) < sampling_probability)


def train_dp_sgd(
    model: keras.Model,
    x,
    y,
    *,
    clip_norm: float = 1.0,
    noise_multiplier: float = 1.0,
    batch_size: int = 256,
    epochs: float = 1,
    optimizer: keras.optimizers.Optimizer | None = None,
    loss_fn=sparse_crossentropy,
    seed: int = 0,
    validation_data=None,
) -> DPTrainingResult:
    """Train ``model`` in place with DP-SGD and return a :class:`DPTrainingResult`.

    ``batch_size`` is the *expected* batch size: each step includes every
    example with probability q = batch_size / len(x) (Poisson sampling), and
    one epoch is round(1 / q) steps. The noisy sum is divided by the expected
    batch size, as in Abadi et al. (2016). ``optimizer`` defaults to SGD with
    momentum 0.9 and learning rate 0.5 (DP-SGD's noise favours large
    batches and large steps). ``noise_multiplier=0`` trains with clipping
    only and no privacy guarantee. Used in chapter 9.
    """
    x = np.asarray(x, dtype="float32")
    y = np.asarray(y)
    n = len(x)
    if n != len(y) or n == 0:
        raise ValueError(f"x and y must be non-empty and equally long, got {len(x)} and {len(y)}")
    batch_size = check_int("batch_size", batch_size, minimum=1, maximum=n)
    positive("epochs", epochs)
    non_negative("noise_multiplier", noise_multiplier)
    positive("clip_norm", clip_norm)
    q = batch_size / n
    steps = max(1, round(epochs / q))
    steps_per_epoch = max(1, round(1 / q))
    # Poisson batches vary in size; padding to a fixed capacity keeps one compiled step.
    capacity = int(math.ceil(batch_size + 4 * math.sqrt(batch_size))) + 1
    optimizer = optimizer or keras.optimizers.SGD(learning_rate=0.5, momentum=0.9)
    clipped_sum = _clipped_sum_fn(model, loss_fn, clip_norm)
    rng = np.random.default_rng(seed)
    noise_seed = keras.random.SeedGenerator(seed)
    history = {"loss": [], "clipped_fraction": [], "val_accuracy": []}
    clipped = []
    for step, batch in enumerate(poisson_batches(n, q, steps, rng), start=1):
        total = [ops.zeros(v.shape, v.dtype) for v in model.trainable_variables]
        for start in range(0, max(len(batch), 1), capacity):  # a rare batch larger than capacity: several chunks
            chunk = batch[start:start + capacity]
            idx = np.zeros(capacity, dtype=np.int64)
            idx[:len(chunk)] = chunk
            mask = np.arange(capacity) < len(chunk)
            sums, norms = clipped_sum(x[idx], y[idx], mask)
            total = [t + s for t, s in zip(total, sums)]
            norms = ops.convert_to_numpy(norms)[mask]
            clipped.extend((norms > clip_norm).tolist())
        noisy = add_noise(total, noise_multiplier, clip_norm, seed=noise_seed)
        optimizer.apply_gradients(zip([g / batch_size for g in noisy], model.trainable_variables))
        if step % steps_per_epoch == 0 or step == steps:
            # Training loss on the first 1,000 examples (a fixed sample, so epochs compare).
            history["loss"].append(float(np.mean(per_example_loss(model, x[:1000], y[:1000], loss_fn))))
            history["clipped_fraction"].append(float(np.mean(clipped)) if clipped else 0.0)
            if validation_data is not None:
                history["val_accuracy"].append(accuracy(model, *validation_data))
            clipped = []
    if validation_data is None:
        history.pop("val_accuracy")
    return DPTrainingResult(clip_norm, noise_multiplier, batch_size, q, steps, n, history)


def predict_probabilities(model: keras.Model, x, batch_size: int = 1000) -> np.ndarray:
    """The model's outputs (N, classes) in inference mode, computed batch by batch.

    Calls the model directly rather than ``model.predict``, which compiles a
    new function for every model and warns about retracing when a chapter
    trains many small models in a loop.
    """
    x = np.asarray(x, dtype="float32")
    parts = [ops.convert_to_numpy(model(x[i:i + batch_size], training=False)) for i in range(0, len(x), batch_size)]
    return np.concatenate(parts, axis=0)


def accuracy(model: keras.Model, x, y, batch_size: int = 1000) -> float:
    """Fraction of examples whose highest-probability class is the label."""
    probabilities = predict_probabilities(model, x, batch_size)
    return float(np.mean(np.argmax(probabilities, axis=1) == np.asarray(y)))


# ---------------------------------------------------------------------------
# Privacy accounting
# ---------------------------------------------------------------------------


def dp_sgd_epsilon(noise_multiplier: float, sampling_probability: float, steps: int, delta: float,
                   accountant: str = "rdp") -> float:
    """Epsilon of DP-SGD after ``steps`` Poisson-sampled Gaussian steps, at failure probability ``delta``.

    Uses Google's maintained ``dp-accounting`` library: ``accountant="rdp"``
    (Renyi DP, Mironov 2017; the usual choice) or ``"pld"`` (privacy loss
    distributions, tighter and slower). ``noise_multiplier=0`` gives
    ``math.inf``: without noise there is no guarantee. Used in chapter 9.
    """
    sigma = non_negative("noise_multiplier", noise_multiplier)
    q = check_number("sampling_probability", sampling_probability, 0, 1, include_minimum=False)
    steps = check_int("steps", steps, minimum=1)
    check_number("delta", delta, 0, 1, include_minimum=False, include_maximum=False)
    check_choice("accountant", accountant, ("rdp", "pld"))
    if sigma == 0:
        return math.inf
    try:
        import dp_accounting
    except ImportError as error:  # the 'privacy' extra of this package
        raise ImportError("dp_sgd_epsilon needs dp-accounting: pip install 'dp-accounting>=0.4'") from error
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), int(steps)
    )
    tracker = dp_accounting.rdp.RdpAccountant() if accountant == "rdp" else dp_accounting.pld.PLDAccountant()
    tracker.compose(event)
    return float(tracker.get_epsilon(delta))


# ---------------------------------------------------------------------------
# Membership inference
# ---------------------------------------------------------------------------


def per_example_loss(model: keras.Model, x, y, loss_fn=sparse_crossentropy, batch_size: int = 1000) -> np.ndarray:
    """Each example's loss under ``model`` (inference mode), shape (N,)."""
    probabilities = predict_probabilities(model, x, batch_size)
    return ops.convert_to_numpy(loss_fn(np.asarray(y), probabilities)).astype(np.float64)


@dataclass(frozen=True)
class MembershipInference:
    """Result of the loss-threshold attack: AUC 0.5 means the attacker learns nothing."""

    auc: float
    advantage: float  # max over thresholds of (true-positive rate - false-positive rate)
    threshold: float  # loss below which the attacker says "member", at the best advantage
    member_loss_mean: float
    nonmember_loss_mean: float


def membership_inference(member_losses, nonmember_losses) -> MembershipInference:
    """Loss-threshold membership inference (Yeom et al. 2018): guess "member" when the loss is low.

    Training examples (members) tend to have lower loss than unseen ones; the
    AUC of the score ``-loss`` measures how well an attacker who sees only
    the loss can tell them apart. Used in chapter 9.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    members = np.asarray(member_losses, dtype=float).ravel()
    others = np.asarray(nonmember_losses, dtype=float).ravel()
    if members.size == 0 or others.size == 0:
        raise ValueError("member_losses and nonmember_losses must both be non-empty")
    labels = np.r_[np.ones(members.size), np.zeros(others.size)]
    scores = -np.r_[members, others]
    fpr, tpr, thresholds = roc_curve(labels, scores)
    best = int(np.argmax(tpr - fpr))
    return MembershipInference(
        auc=float(roc_auc_score(labels, scores)), advantage=float(tpr[best] - fpr[best]),
        threshold=float(-thresholds[best]), member_loss_mean=float(members.mean()),
        nonmember_loss_mean=float(others.mean()),
    )


def membership_advantage_bound(epsilon: float, delta: float = 0.0) -> float:
    """The largest membership advantage (TPR - FPR, from 0 to 1) an attack can have under (epsilon, delta)-DP.

    Read as a test of "is this record in the training set?", DP requires
    ``TPR <= e^eps FPR + delta`` and ``1 - FPR <= e^eps (1 - TPR) + delta``;
    the largest ``TPR - FPR`` both allow is ``(e^eps - 1 + 2 delta) / (e^eps + 1)``
    (Kairouz, Oh and Viswanath 2015). It is below 1 for every finite epsilon,
    unlike the pure-epsilon bound ``e^eps - 1`` of Yeom et al. (2018), which
    says nothing from ``epsilon = ln 2``. Used in chapter 9.
    """
    epsilon = non_negative("epsilon", epsilon)
    delta = check_number("delta", delta, 0, 1, include_maximum=False)
    return float(min(1.0, (math.expm1(epsilon) + 2 * delta) / (math.exp(epsilon) + 1)))


def build_dp_classifier(input_shape=(28, 28, 1), num_classes: int = 10, width: int = 16,
                        name: str = "dp_cnn") -> keras.Model:
    """A small CNN suited to DP-SGD: no batch normalisation (it mixes examples) and tanh activations.

    Two strided 3x3 convolutions (``width`` and ``2 * width`` filters), whose
    feature maps are flattened into a softmax layer. Bounded activations such as tanh keep
    gradients small, so clipping removes less signal (Papernot et al. 2021).
    Used in chapter 9.
    """
    width = check_int("width", width, minimum=1)
    num_classes = check_int("num_classes", num_classes, minimum=2)
    return keras.Sequential([
        keras.Input(shape=tuple(input_shape)),
        keras.layers.Conv2D(width, 3, strides=2, padding="same", activation="tanh"),
        keras.layers.Conv2D(2 * width, 3, strides=2, padding="same", activation="tanh"),
        keras.layers.Flatten(),
        keras.layers.Dense(num_classes, activation="softmax"),
    ], name=name)
