"""Scaling laws measured on the chapter-6 GPT: loss against parameters at a fixed number of
tokens (Kaplan et al. 2020), and compute-optimal sizes from IsoFLOP curves (Hoffmann et al.
2022, approach 2).

* :class:`SizeTrainer` trains one GPT shape on a given number of tokens, again and again, with a
  learning-rate schedule matched to each run's length, and returns its validation loss window by
  window.
* :func:`fit_saturating_power_law` fits ``L(N) = E + A N^(-alpha)`` (least squares on log loss)
  and :func:`bootstrap_alpha` gives an interval for ``alpha`` by resampling validation windows.
* :func:`isoflop_optimum` fits a parabola to loss against ``log10 N`` around the minimum at one
  compute budget ``C`` (training on ``D = C / 6N`` tokens) and returns the size, tokens and tokens
  per parameter at its vertex; :func:`fit_optimal_size_exponent` fits ``N_opt ~ C^a`` across budgets.

Used in chapter 9 ("Compute").
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from bigmodel_utils import gpt, optimizers, validation
from bigmodel_utils.data import text

KAPLAN_ALPHA_N = 0.076
"""Kaplan et al. (2020), eq. 1.5: test loss ~ N^(-0.076) in non-embedding parameters."""
CHINCHILLA_TOKENS_PER_PARAMETER = 20.0
"""Hoffmann et al. (2022): about 20 training tokens per parameter at the compute optimum."""
CHINCHILLA_SIZE_EXPONENT = 0.5
"""Hoffmann et al. (2022), table 2: N_opt ~ C^a with a about 0.5 (Kaplan et al. found 0.73)."""


def non_embedding_parameters(config: gpt.GPTConfig) -> int:
    """Kaplan et al.'s ``N``: the parameters of the blocks and the final LayerNorm (chapter 6's
    :func:`bigmodel_utils.gpt.parameter_count`)."""
    return gpt.parameter_count(config)["non_embedding"]


def per_window_loss(model, x: np.ndarray, y: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Mean next-token cross-entropy (nats) of each window: ``(windows,)`` for inputs and
    targets ``(windows, T)``."""
    logits = np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    picked = np.take_along_axis(log_probs, y[..., None].astype(np.int64), axis=-1)[..., 0]
    return -picked.mean(axis=1)


class SizeTrainer:
    """Trains a GPT of one shape again and again from the same initial weights, for runs of any
    number of tokens, compiling its training step once (a scaling sweep trains each size several
    times, and on a CPU a compilation costs as much as a hundred small steps).

    Each run resets the weights and the optimizer (moments and step count), so it equals a run of
    a freshly built model: the book's AdamW (:func:`bigmodel_utils.optimizers.adamw`, with gradient
    clipping) with a 10% warm-up and a cosine decay over that run, as in chapter 6.
    """

    def __init__(self, config: gpt.GPTConfig, *, batch_size: int = 32, learning_rate: float = 3e-3,
                 seed: int = 0, jit_compile=None):
        self.config = config
        self.batch_size = validation.positive_int("batch_size", batch_size)
        self.peak_learning_rate = validation.positive("learning_rate", learning_rate)
        self.model = gpt.build_gpt(config, seed=seed)
        self.initial_weights = self.model.get_weights()
        self.optimizer = optimizers.adamw(self._learning_rate)
        # The run's length lives in optimizer variables, so every backend reads the current value
        # inside the compiled step (a Python number would be frozen into it).
        self.run_steps = self.optimizer.add_variable((), "ones", "float32", name="run_steps")
        self.warmup_steps = self.optimizer.add_variable((), "zeros", "float32", name="warmup_steps")
        gpt.compile_language_model(self.model, self.optimizer, jit_compile=jit_compile)

    def _learning_rate(self, final_fraction: float = 0.1):
        """Linear warm-up, then a cosine decay to ``final_fraction`` of the peak at the run's
        last step (chapter 6's schedule, :func:`bigmodel_utils.gpt.make_optimizer`)."""
        from keras import ops

        step = ops.cast(self.optimizer.iterations, "float32")
        warm = self.peak_learning_rate * (step + 1.0) / ops.maximum(self.warmup_steps, 1.0)
        decay_steps = ops.maximum(self.run_steps - self.warmup_steps, 1.0)
        progress = ops.clip((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
        cosine = final_fraction + (1 - final_fraction) * 0.5 * (1 + ops.cos(np.pi * progress))
        return ops.where(step < self.warmup_steps, warm, self.peak_learning_rate * cosine)

    @property
    def non_embedding_parameters(self) -> int:
        return non_embedding_parameters(self.config)

    def run(self, train_tokens: np.ndarray, tokens: float, eval_x: np.ndarray, eval_y: np.ndarray,
            seed: int = 0) -> dict:
        """Train on about ``tokens`` tokens (whole steps, at least one) of random windows of
        ``train_tokens`` and evaluate on the fixed windows ``eval_x``, ``eval_y``.

        Returns ``N`` (non-embedding parameters), ``D`` (tokens trained on), ``C = 6ND`` (FLOP),
        ``steps``, ``val_loss`` (the mean over windows), ``window_losses`` and ``seconds``.
        """
        tokens = validation.positive("tokens", tokens)
        context = self.config.context
        steps = max(1, int(round(tokens / (self.batch_size * context))))
        start = time.perf_counter()
        self.model.set_weights(self.initial_weights)
        if self.optimizer.built:
            for variable in self.optimizer.variables:
                variable.assign(np.zeros(variable.shape, dtype=variable.dtype))
        self.run_steps.assign(float(steps))
        self.warmup_steps.assign(float(steps // 10))
        x, y = text.windows(train_tokens, context, steps * self.batch_size, seed=seed)
        self.model.fit(x, y, batch_size=self.batch_size, epochs=1, shuffle=False, verbose=0)
        window_losses = per_window_loss(self.model, eval_x, eval_y)
        n, d = self.non_embedding_parameters, steps * self.batch_size * context
        return {
            "width": self.config.width,
            "layers": self.config.num_layers,
            "N": n,
            "D": d,
            "C": 6.0 * n * d,
            "steps": steps,
            "val_loss": float(window_losses.mean()),
            "window_losses": window_losses.tolist(),
            "seconds": time.perf_counter() - start,
        }


@dataclass(frozen=True)
class SaturatingPowerLaw:
    """``L(N) = E + A N^(-alpha)``: an irreducible loss ``E`` plus a power law."""

    E: float
    A: float
    alpha: float
    rmse_log: float  # root-mean-square error of log L at the fitted points

    def predict(self, n) -> np.ndarray:
        return self.E + self.A * np.asarray(n, dtype=float) ** (-self.alpha)

    def as_dict(self) -> dict:
        return asdict(self)


def _check_points(n, loss) -> tuple[np.ndarray, np.ndarray]:
    n, loss = np.asarray(n, dtype=float), np.asarray(loss, dtype=float)
    if n.shape != loss.shape or n.ndim != 1:
        raise ValueError(f"n and loss must be 1-D and of the same length, got shapes {n.shape} and {loss.shape}")
    if len(n) < 3:
        raise ValueError(f"n must hold at least 3 sizes to fit three parameters, got {len(n)}")
    if np.any(n <= 0) or np.any(loss <= 0) or not np.all(np.isfinite(loss)):
        raise ValueError("n and loss must be positive and finite")
    return n, loss


def fit_saturating_power_law(n, loss, start: SaturatingPowerLaw | None = None) -> SaturatingPowerLaw:
    """Least-squares fit of ``log L = log(E + A N^(-alpha))`` to sizes ``n`` and losses ``loss``,
    with ``0 <= E < min(loss)`` and ``0 < alpha <= 3``; ``start`` (a previous fit) skips the
    multi-start search."""
    from scipy.optimize import least_squares

    n, loss = _check_points(n, loss)
    scale = float(np.exp(np.log(n).mean()))  # fit in units of the geometric-mean size
    u, log_loss = n / scale, np.log(loss)

    def residuals(theta):
        e, a, alpha = theta
        return np.log(e + a * u ** (-alpha)) - log_loss

    upper_e = 0.999 * loss.min()
    if start is not None:
        guesses = [(min(start.E, upper_e * 0.99), start.A / scale ** start.alpha, start.alpha)]
    else:
        guesses = [
            (fraction * loss.min(), max(loss.mean() - fraction * loss.min(), 1e-3), alpha)
            for fraction in (0.0, 0.5, 0.9)
            for alpha in (0.1, 0.5, 1.0)
        ]
    best = None
    for guess in guesses:
        fit = least_squares(residuals, guess, bounds=([0.0, 1e-12, 1e-4], [upper_e, np.inf, 3.0]))
        if best is None or fit.cost < best.cost:
            best = fit
    e, a, alpha = best.x
    return SaturatingPowerLaw(
        E=float(e), A=float(a * scale**alpha), alpha=float(alpha),
        rmse_log=float(np.sqrt(np.mean(best.fun**2))),
    )


def bootstrap_alpha(n, window_losses, samples: int = 200, level: float = 0.9,
                    seed: int = 0) -> tuple[float, float, np.ndarray]:
    """An interval for ``alpha``: resample the validation windows with replacement (the same
    windows for every size), refit, and take the central ``level`` of the refitted exponents.

    ``window_losses`` is ``(sizes, windows)``. The interval reflects the finite validation set
    only; the spread between training seeds comes on top. Returns ``(low, high, alphas)``.
    """
    window_losses = np.asarray(window_losses, dtype=float)
    samples = validation.positive_int("samples", samples)
    level = validation.check_number("level", level, 0, 1, include_minimum=False, include_maximum=False)
    point = fit_saturating_power_law(n, window_losses.mean(axis=1))
    rng = np.random.default_rng(seed)
    windows = window_losses.shape[1]
    alphas = np.array([
        fit_saturating_power_law(
            n, window_losses[:, rng.integers(0, windows, windows)].mean(axis=1), start=point
        ).alpha
        for _ in range(samples)
    ])
    tail = (1 - level) / 2
    low, high = np.quantile(alphas, [tail, 1 - tail])
    return float(low), float(high), alphas


@dataclass(frozen=True)
class IsoFlopOptimum:
    """The minimum of a parabola fitted to loss against ``log10 N`` at one compute budget."""

    budget: float  # C, FLOP
    N: float  # the loss-minimising non-embedding parameter count
    D: float  # its training tokens, C / 6N
    tokens_per_parameter: float
    loss: float  # the parabola's minimum
    inside: bool  # whether the minimum lies within the sizes trained

    def as_dict(self) -> dict:
        return asdict(self)


def isoflop_optimum(n, loss, budget: float) -> IsoFlopOptimum:
    """The compute-optimal size among models trained with the same ``budget`` (FLOP): a parabola
    ``loss = a x^2 + b x + c`` in ``x = log10 N`` through the size of lowest loss and its two
    neighbours, and its vertex.

    Only the three sizes around the minimum are fitted, since a parabola describes an IsoFLOP
    curve near its bottom, not across a wide range. Where the lowest loss is at the smallest or
    largest size, the curve has no minimum among the sizes trained: that size is returned, marked
    ``inside=False`` (the optimum is at or beyond it, and a parabola would only guess how far).
    """
    n, loss = _check_points(n, loss)
    budget = validation.positive("budget", budget)
    order = np.argsort(n)
    x, loss = np.log10(n[order]), loss[order]
    best = int(np.argmin(loss))
    inside = 0 < best < len(x) - 1
    if inside:
        a, b, c = np.polyfit(x[best - 1:best + 2], loss[best - 1:best + 2], 2)
        best_x, best_loss = -b / (2 * a), c - b * b / (4 * a)  # a > 0: the middle point is lowest
    else:
        best_x, best_loss = x[best], loss[best]
    best_n = 10.0**best_x
    tokens = budget / (6 * best_n)
    return IsoFlopOptimum(
        budget=float(budget), N=float(best_n), D=float(tokens),
        tokens_per_parameter=float(tokens / best_n), loss=float(best_loss), inside=bool(inside),
    )


def fit_optimal_size_exponent(optima: list[IsoFlopOptimum]) -> float:
    """The exponent ``a`` of ``N_opt ~ C^a`` through the optima of two or more budgets (a
    least-squares line on log-log axes)."""
    if len(optima) < 2:
        raise ValueError(f"optima must hold at least 2 budgets, got {len(optima)}")
    budgets = np.log10([o.budget for o in optima])
    sizes = np.log10([o.N for o in optima])
    return float(np.polyfit(budgets, sizes, 1)[0])
