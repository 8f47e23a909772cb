"""Neural-network maths from scratch in plain NumPy, small enough to read on one screen each.

Dense layers and activations, losses computed stably through log-softmax,
backpropagation for a two-layer network with a finite-difference check,
gradient descent, momentum and Adam (the paper's Algorithm 1 and the form
Keras uses), Glorot initialisation, and two test surfaces for optimisers.
Every function keeps the dtype of its inputs (float32 in, float32 out), so
the same code is compared with TensorFlow in float64 and in float32.

Nothing here imports TensorFlow or Keras: the chapter and the tests do that
to check these functions. Used in chapter 3.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

TOLERANCES = {
    "float64": {"rtol": 1e-5, "atol": 1e-12},
    "float32": {"rtol": 1e-4, "atol": 1e-5},
}
"""How closely a scratch result must match TensorFlow: ``|scratch - tf| <= atol + rtol * |tf|`` elementwise.

float64 carries about 16 significant digits, so 1e-5 relative is a loose
bar (the atol only covers entries that are exactly zero in one result).
float32 carries about 7, and TensorFlow may sum in a different order, so
float32 is held to 1e-4 relative plus 1e-5 absolute.
"""

ACTIVATIONS = ("linear", "relu", "sigmoid", "softmax")
OPTIMIZERS = ("sgd", "momentum", "adam", "adam_paper", "adam_no_denominator")


# ---------------------------------------------------------------- activations and the dense layer


def relu(z):
    """ReLU, max(z, 0), elementwise."""
    return np.maximum(z, 0)


def sigmoid(z):
    """Logistic sigmoid 1 / (1 + exp(-z)), computed without overflow for large |z|."""
    e = np.exp(-np.abs(z))  # never larger than 1, so it cannot overflow
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def softmax(z, axis=-1):
    """Softmax along ``axis``; subtracting the maximum first keeps exp() from overflowing."""
    e = np.exp(z - np.max(z, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def log_softmax(z, axis=-1):
    """log(softmax(z)) without ever forming a probability that could round to 0."""
    shifted = z - np.max(z, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def log_sigmoid(z):
    """log(sigmoid(z)) = -log(1 + exp(-z)); it is log_softmax([0, z]) taken at the second entry."""
    return -np.logaddexp(0, -z)


def dense_forward(x, w, b, activation="linear"):
    """One dense layer, y = f(x W + b): x (n, d_in), w (d_in, d_out), b (d_out,) -> y (n, d_out)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    if np.ndim(x) != 2 or np.ndim(w) != 2 or np.shape(x)[1] != np.shape(w)[0] or np.shape(b) != np.shape(w)[1:]:
        raise ValueError(f"shapes must be x (n, d_in), w (d_in, d_out), b (d_out,); got "
                         f"{np.shape(x)}, {np.shape(w)}, {np.shape(b)}")
    z = x @ w + b
    functions = {"linear": lambda a: a, "relu": relu, "sigmoid": sigmoid, "softmax": softmax}
    return functions[activation](z)


# ---------------------------------------------------------------- losses


def _check_same_shape(y_true, y_pred):
    if np.shape(y_true) != np.shape(y_pred):
        raise ValueError(f"targets and predictions must have the same shape, got {np.shape(y_true)} "
                         f"and {np.shape(y_pred)}")


def mean_squared_error(y_true, y_pred):
    """Keras's mean squared error: the plain mean of (y - y_hat)^2 over every entry."""
    _check_same_shape(y_true, y_pred)
    return np.mean((y_true - y_pred) ** 2)


def half_mean_squared_error(y_true, y_pred):
    """The textbook L = 1/(2n) sum_i ||y_i - y_hat_i||^2 over n rows; its gradient is (y_hat - y) / n."""
    _check_same_shape(y_true, y_pred)
    n = np.shape(y_true)[0]
    return np.sum((y_true - y_pred) ** 2) / (2 * n)


def binary_cross_entropy(y_true, logits):
    """Mean of -[y log sigmoid(z) + (1 - y) log sigmoid(-z)] over every entry, from logits z."""
    _check_same_shape(y_true, logits)
    return -np.mean(y_true * log_sigmoid(logits) + (1 - y_true) * log_sigmoid(-logits))


def categorical_cross_entropy(y_true, logits):
    """Mean over rows of -sum_k y_k log softmax(z)_k, from logits z (n, K) and one-hot targets (n, K)."""
    _check_same_shape(y_true, logits)
    return -np.mean(np.sum(y_true * log_softmax(logits), axis=-1))


def naive_softmax(z):
    """Softmax straight from the formula exp(z) / sum exp(z): overflows once z passes about 88 in float32."""
    return np.exp(z) / np.sum(np.exp(z), axis=-1, keepdims=True)


def naive_categorical_cross_entropy(y_true, logits):
    """Cross-entropy as -log(naive_softmax(z)): log(0) = -inf once a probability underflows."""
    return -np.mean(np.sum(y_true * np.log(naive_softmax(logits)), axis=-1))


def naive_binary_cross_entropy(y_true, logits):
    """Binary cross-entropy through p = 1 / (1 + exp(-z)): p rounds to exactly 0 or 1 for large |z|."""
    p = 1 / (1 + np.exp(-logits))
    return -np.mean(y_true * np.log(p) + (1 - y_true) * np.log(1 - p))


def one_hot(labels, num_classes, dtype=np.float32):
    """Integer labels (n,) -> one-hot rows (n, num_classes)."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}, got values from {labels.min()} to {labels.max()}")
    return np.eye(num_classes, dtype=dtype)[labels]


# ---------------------------------------------------------------- a two-layer network and backpropagation


def glorot_uniform(fan_in, fan_out, rng, dtype=np.float32):
    """Weights (fan_in, fan_out) drawn from U(-a, a) with a = sqrt(6 / (fan_in + fan_out)).

    The variance of U(-a, a) is a^2 / 3 = 2 / (fan_in + fan_out), Glorot and Bengio's compromise between
    keeping the forward signal (fan_in) and the backward gradient (fan_out) at a constant scale.
    """
    if fan_in < 1 or fan_out < 1:
        raise ValueError(f"fan_in and fan_out must be positive, got {fan_in} and {fan_out}")
    limit = math.sqrt(6 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(dtype)


def init_two_layer(num_inputs, num_hidden, num_outputs, rng, dtype=np.float32):
    """Parameters of x -> ReLU(x W1 + b1) -> logits = h W2 + b2: Glorot-uniform weights, zero biases (as Keras)."""
    return {
        "W1": glorot_uniform(num_inputs, num_hidden, rng, dtype), "b1": np.zeros(num_hidden, dtype),
        "W2": glorot_uniform(num_hidden, num_outputs, rng, dtype), "b2": np.zeros(num_outputs, dtype),
    }


def two_layer_forward(params, x):
    """Forward pass; returns the logits (n, K) and what the backward pass needs."""
    z1 = x @ params["W1"] + params["b1"]
    h = relu(z1)
    logits = h @ params["W2"] + params["b2"]
    return logits, (x, z1, h)


def two_layer_backward(params, cache, y_true, logits):
    """Gradients of the mean categorical cross-entropy, by the chain rule, one layer at a time."""
    x, z1, h = cache
    n = x.shape[0]
    d_logits = (softmax(logits) - y_true) / n  # dL/dz2 for softmax followed by cross-entropy
    d_w2 = h.T @ d_logits
    d_b2 = d_logits.sum(axis=0)
    d_h = d_logits @ params["W2"].T
    d_z1 = d_h * (z1 > 0)  # ReLU passes the gradient where its input was positive
    d_w1 = x.T @ d_z1
    d_b1 = d_z1.sum(axis=0)
    return {"W1": d_w1, "b1": d_b1, "W2": d_w2, "b2": d_b2}


def two_layer_loss_and_grads(params, x, y_true):
    """Mean categorical cross-entropy of the two-layer network and its gradients for every parameter."""
    logits, cache = two_layer_forward(params, x)
    return categorical_cross_entropy(y_true, logits), two_layer_backward(params, cache, y_true, logits)


def numerical_gradient(loss_fn: Callable, params: dict, step: float = 1e-6) -> dict:
    """Central differences (L(w + h) - L(w - h)) / 2h for every entry of every float64 parameter.

    ``loss_fn(params)`` returns a scalar. Entries are nudged in place and restored.
    float32 is refused: its rounding (about 1e-7 relative) swamps a difference quotient with h = 1e-6.
    """
    grads = {}
    for name, value in params.items():
        if value.dtype != np.float64:
            raise ValueError(f"numerical_gradient needs float64 parameters, got {name} as {value.dtype}")
        grad = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            original = value[index]
            value[index] = original + step
            loss_plus = loss_fn(params)
            value[index] = original - step
            loss_minus = loss_fn(params)
            value[index] = original
            grad[index] = (loss_plus - loss_minus) / (2 * step)
        grads[name] = grad
    return grads


def stack_statistics(x, weights, activation="tanh", saturation=0.99):
    """Follow x (n, d) through a deep stack of layers a <- f(a W) (no biases), one (d, d) matrix per layer.

    Returns {"std": [...], "saturated": [...]}: per layer, the standard deviation of the activations and the
    fraction of them with |a| > ``saturation`` (where tanh is flat and passes almost no gradient back).
    """
    functions = {"tanh": np.tanh, "relu": relu, "linear": lambda a: a}
    if activation not in functions:
        raise ValueError(f"activation must be one of {', '.join(functions)}, got {activation!r}")
    stats = {"std": [], "saturated": []}
    for w in weights:
        x = functions[activation](x @ w)
        stats["std"].append(float(np.std(x)))
        stats["saturated"].append(float(np.mean(np.abs(x) > saturation)))
    return stats


# ---------------------------------------------------------------- optimisers


def sgd_step(w, grad, lr=0.01):
    """Gradient descent: w <- w - lr * grad."""
    return w - lr * grad


def momentum_step(w, grad, velocity, lr=0.01, momentum=0.9):
    """Heavy-ball momentum in Keras's form: v <- momentum * v - lr * grad; w <- w + v."""
    velocity = momentum * velocity - lr * grad
    return w + velocity, velocity


def adam_step(w, grad, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    """Adam as Algorithm 1 of Kingma and Ba prints it (step t counts from 1); returns w, m, v."""
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad**2
    m_hat = m / (1 - beta1**t)
    v_hat = v / (1 - beta2**t)
    return w - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def adam_step_keras(w, grad, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps_hat=1e-7):
    """Adam as keras.optimizers.Adam computes it: the bias corrections folded into the step size.

    The same as :func:`adam_step` with eps = eps_hat / sqrt(1 - beta2**t) (the paper's "epsilon hat").
    """
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad**2
    alpha_t = lr * math.sqrt(1 - beta2**t) / (1 - beta1**t)
    return w - alpha_t * m / (np.sqrt(v) + eps_hat), m, v


def adam_no_denominator_step(w, grad, m, t, lr=1e-3, beta1=0.9):
    """The 'Adam' some texts print, w <- w - lr * m_hat: no division by sqrt(v_hat), so no normalisation."""
    m = beta1 * m + (1 - beta1) * grad
    m_hat = m / (1 - beta1**t)
    return w - lr * m_hat, m


def _check_hyperparameters(lr, hyperparameters):
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    for name in ("momentum", "beta1", "beta2"):
        if name in hyperparameters and not 0 <= hyperparameters[name] < 1:
            raise ValueError(f"{name} must be in [0, 1), got {hyperparameters[name]!r}")


def optimize(gradient: Callable, w0, num_steps: int, optimizer: str = "sgd", lr: float = 0.01, **hyperparameters):
    """Run ``num_steps`` steps of one optimiser from w0; returns the path, shape (num_steps + 1, *w0.shape).

    ``optimizer`` is one of :data:`OPTIMIZERS`: "adam" is Keras's form, "adam_paper" Algorithm 1.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    _check_hyperparameters(lr, hyperparameters)
    w = np.array(w0)
    m, v = np.zeros_like(w), np.zeros_like(w)  # momentum's velocity lives in m
    path = [w]
    for t in range(1, num_steps + 1):
        g = gradient(w)
        if optimizer == "sgd":
            w = sgd_step(w, g, lr)
        elif optimizer == "momentum":
            w, m = momentum_step(w, g, m, lr, **hyperparameters)
        elif optimizer == "adam":
            w, m, v = adam_step_keras(w, g, m, v, t, lr, **hyperparameters)
        elif optimizer == "adam_paper":
            w, m, v = adam_step(w, g, m, v, t, lr, **hyperparameters)
        else:
            w, m = adam_no_denominator_step(w, g, m, t, lr, **hyperparameters)
        path.append(w)
    return np.stack(path)


def adam_init(params: dict) -> dict:
    """Adam's state for a dict of parameters: zero first and second moments and the step count t = 0."""
    return {"t": 0, "m": {k: np.zeros_like(p) for k, p in params.items()},
            "v": {k: np.zeros_like(p) for k, p in params.items()}}


def adam_update(params: dict, grads: dict, state: dict, lr=1e-3, **hyperparameters) -> None:
    """One Keras-form Adam step on every parameter of a dict, in place (params and state)."""
    state["t"] += 1
    for k in params:
        params[k], state["m"][k], state["v"][k] = adam_step_keras(
            params[k], grads[k], state["m"][k], state["v"][k], state["t"], lr, **hyperparameters)


# ---------------------------------------------------------------- test surfaces for optimisers


def quadratic(w, curvatures=(1.0, 50.0)):
    """Ill-conditioned bowl 0.5 * (c1 x^2 + c2 y^2) on w[..., 0] = x, w[..., 1] = y; minimum 0 at the origin."""
    return 0.5 * (curvatures[0] * w[..., 0] ** 2 + curvatures[1] * w[..., 1] ** 2)


def quadratic_gradient(w, curvatures=(1.0, 50.0)):
    """Gradient of :func:`quadratic`: (c1 x, c2 y)."""
    return np.stack([curvatures[0] * w[..., 0], curvatures[1] * w[..., 1]], axis=-1)


def rosenbrock(w, a=1.0, b=100.0):
    """Rosenbrock's banana valley (a - x)^2 + b (y - x^2)^2; minimum 0 at (a, a^2)."""
    x, y = w[..., 0], w[..., 1]
    return (a - x) ** 2 + b * (y - x**2) ** 2


def rosenbrock_gradient(w, a=1.0, b=100.0):
    """Gradient of :func:`rosenbrock`: (-2 (a - x) - 4 b x (y - x^2), 2 b (y - x^2))."""
    x, y = w[..., 0], w[..., 1]
    return np.stack([-2 * (a - x) - 4 * b * x * (y - x**2), 2 * b * (y - x**2)], axis=-1)


# ---------------------------------------------------------------- training helpers and agreement checks


def minibatch_order(num_examples: int, batch_size: int, rng) -> list:
    """One epoch's mini-batches as index arrays: a random permutation cut into ``batch_size`` pieces."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    order = rng.permutation(num_examples)
    return [order[i : i + batch_size] for i in range(0, num_examples, batch_size)]


def accuracy(logits, labels) -> float:
    """Fraction of rows whose largest logit (or probability) is at the true label."""
    return float(np.mean(np.argmax(logits, axis=-1) == np.asarray(labels)))


def agreement(actual, expected, rtol=None, atol=None) -> dict:
    """Compare a scratch result with a reference: largest absolute difference, the tolerance and the verdict.

    Tolerances default to :data:`TOLERANCES` for the reference's dtype (float64 or float32).
    """
    actual, expected = np.asarray(actual), np.asarray(expected)
    if actual.shape != expected.shape:
        raise ValueError(f"results to compare must have the same shape, got {actual.shape} and {expected.shape}")
    default = TOLERANCES["float32" if expected.dtype == np.float32 else "float64"]
    rtol = default["rtol"] if rtol is None else rtol
    atol = default["atol"] if atol is None else atol
    difference = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    passed = bool(np.all(difference <= atol + rtol * np.abs(expected.astype(np.float64))))
    return {"max_abs_diff": float(difference.max(initial=0.0)), "rtol": rtol, "atol": atol, "passed": passed}
