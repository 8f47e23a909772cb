"""Tests for bigmodel_utils.techniques.scaling_laws: the fits recover laws they were given, the bootstrap covers the
truth, IsoFLOP optima land where the parabola bottoms out, and a reused SizeTrainer equals a fresh one."""

from __future__ import annotations

import numpy as np
import pytest

from bigmodel_utils import gpt
from bigmodel_utils.data import text
from bigmodel_utils.techniques import scaling_laws

SIZES = np.array([500.0, 1_800, 6_600, 25_000, 100_000])


def test_fit_recovers_a_known_saturating_power_law():
    losses = 1.5 + 12.0 * SIZES**-0.35
    law = scaling_laws.fit_saturating_power_law(SIZES, losses)
    assert law.alpha == pytest.approx(0.35, rel=1e-3)
    assert law.E == pytest.approx(1.5, rel=1e-3) and law.A == pytest.approx(12.0, rel=1e-2)
    np.testing.assert_allclose(law.predict(SIZES), losses, rtol=1e-5)
    assert law.rmse_log < 1e-6


def test_fit_of_a_plain_power_law_puts_the_floor_at_zero():
    law = scaling_laws.fit_saturating_power_law(SIZES, 5.0 * SIZES**-0.076)
    assert law.E < 0.05 and law.alpha == pytest.approx(0.076, abs=0.01)


def test_bootstrap_interval_covers_the_true_exponent_and_shrinks_with_more_windows():
    rng = np.random.default_rng(0)
    truth = 1.5 + 12.0 * SIZES**-0.35

    def interval(windows):
        per_window = truth[:, None] + rng.normal(0, 0.05, (len(SIZES), windows))
        low, high, alphas = scaling_laws.bootstrap_alpha(SIZES, per_window, samples=100, seed=1)
        assert len(alphas) == 100
        return low, high

    low, high = interval(64)
    assert low < 0.35 < high
    wide, narrow = high - low, np.subtract(*interval(1024)[::-1])
    assert narrow < wide / 2  # 16 times the windows: about a quarter of the width


def test_isoflop_optimum_is_the_vertex_of_the_parabola():
    sizes = np.array([1e5, 3e3, 1e4, 3e4, 1e3])  # in any order
    losses = 2.0 + 0.3 * (np.log10(sizes) - 3.7) ** 2  # minimum at N = 10**3.7
    optimum = scaling_laws.isoflop_optimum(sizes, losses, budget=6e12)
    assert optimum.N == pytest.approx(10**3.7, rel=1e-6) and optimum.inside
    assert optimum.loss == pytest.approx(2.0)
    assert optimum.D == pytest.approx(6e12 / (6 * 10**3.7))
    assert optimum.tokens_per_parameter == pytest.approx(optimum.D / optimum.N)


def test_isoflop_optimum_fits_only_around_the_minimum():
    sizes = np.array([1e3, 3e3, 1e4, 3e4, 1e5])
    losses = np.array([3.0, 2.5, 2.45, 2.5, 4.0])  # the last point would drag a global parabola
    optimum = scaling_laws.isoflop_optimum(sizes, losses, budget=1e12)
    x = np.log10(sizes[1:4])
    a, b, _ = np.polyfit(x, losses[1:4], 2)
    assert optimum.inside and optimum.N == pytest.approx(10 ** (-b / (2 * a)))
    assert 3e3 < optimum.N < 3e4 and optimum.loss <= 2.45


@pytest.mark.parametrize(("losses", "best"), [([2.0, 2.5, 3.2], 0), ([2.0, 1.9, 1.5], 2), ([2.0, 1.8, 1.7], 2)])
def test_isoflop_curve_without_a_minimum_inside_reports_the_best_size_as_outside(losses, best):
    # rising (vertex below the range), bending down (no minimum), flattening (vertex above the range)
    sizes = np.array([1e3, 3e3, 1e4])
    optimum = scaling_laws.isoflop_optimum(sizes, losses, budget=1e10)
    assert optimum.N == pytest.approx(sizes[best]) and optimum.loss == min(losses)
    assert not optimum.inside


def test_optimal_size_exponent_through_chinchilla_like_optima():
    optima = [scaling_laws.IsoFlopOptimum(c, 0.09 * c**0.5, c / (6 * 0.09 * c**0.5), 0.0, 2.0, True)
              for c in (1e18, 1e19, 1e20)]
    assert scaling_laws.fit_optimal_size_exponent(optima) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="at least 2 budgets"):
        scaling_laws.fit_optimal_size_exponent(optima[:1])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: scaling_laws.fit_saturating_power_law([1, 2], [3, 2]), "at least 3 sizes"),
        (lambda: scaling_laws.fit_saturating_power_law([1, 2, 3], [3, 2]), "same length"),
        (lambda: scaling_laws.fit_saturating_power_law([1, 2, 3], [3, 0, 1]), "positive and finite"),
        (lambda: scaling_laws.isoflop_optimum([1, 2, 3], [3, 2, 1], 0), "budget must be a positive number, got 0"),
        (lambda: scaling_laws.bootstrap_alpha(SIZES, np.ones((5, 4)), level=1.5),
         r"level must be a finite number \(above 0 and below 1\), got 1.5"),
    ],
)
def test_bad_arguments_name_the_parameter(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.fixture(scope="module")
def text_ids():
    return np.tile(np.arange(20), 500)  # a sequence a tiny model can learn


def test_a_reused_trainer_equals_a_fresh_one(text_ids):
    config = gpt.GPTConfig(vocab_size=20, context=8, num_layers=1, num_heads=1, width=8)
    eval_x, eval_y = text.windows(text_ids, 8, 16, seed=5)
    reused = scaling_laws.SizeTrainer(config, batch_size=4, learning_rate=1e-2, jit_compile=False)
    reused.run(text_ids, 4 * 8 * 30, eval_x, eval_y, seed=3)  # a longer run first: the reset must undo it
    second = reused.run(text_ids, 4 * 8 * 10, eval_x, eval_y, seed=7)
    fresh = scaling_laws.SizeTrainer(config, batch_size=4, learning_rate=1e-2, jit_compile=False)
    first = fresh.run(text_ids, 4 * 8 * 10, eval_x, eval_y, seed=7)
    assert second["steps"] == first["steps"] == 10
    assert second["D"] == 10 * 4 * 8 and second["C"] == 6 * second["N"] * second["D"]
    assert second["N"] == gpt.parameter_count(config)["non_embedding"]
    np.testing.assert_allclose(second["window_losses"], first["window_losses"], rtol=1e-5)
    assert first["val_loss"] < np.log(20)  # it learned something in ten steps


def test_the_schedule_warms_up_then_decays_to_a_tenth(text_ids):
    config = gpt.GPTConfig(vocab_size=20, context=8, num_layers=1, num_heads=1, width=8)
    trainer = scaling_laws.SizeTrainer(config, batch_size=4, learning_rate=1e-2, jit_compile=False)
    trainer.run_steps.assign(100.0)
    trainer.warmup_steps.assign(10.0)
    rates = []
    for step in (0, 9, 10, 55, 100):
        trainer.optimizer.iterations.assign(step)
        rates.append(float(trainer._learning_rate()))
    assert rates[0] == pytest.approx(1e-3) and rates[1] == pytest.approx(1e-2)
    assert rates[2] == pytest.approx(1e-2) and rates[3] == pytest.approx(0.55e-2, rel=1e-3)
    assert rates[4] == pytest.approx(1e-3)
