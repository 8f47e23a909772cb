"""Chapter 8 run under the smoke profile: its results JSON holds real, consistent values."""

from __future__ import annotations

import math

import pytest

pytestmark = pytest.mark.notebooks


@pytest.fixture(scope="module")
def results(run_chapter):
    return run_chapter("08_future_challenges")


def test_growth_trends_and_power_law(results):
    assert 3 < results["compute_doubling_months"] < 12  # Epoch AI's models since 2010
    assert results["parameter_doubling_months"] > results["compute_doubling_months"]
    assert 1.0 < results["compute_vs_parameters_exponent"] < 2.5  # data grew with the models


def test_cost_calculator_matches_published_runs(results):
    runs = results["published_runs"]
    assert runs["GPT-3 175B"]["days"] == pytest.approx(14.8)
    assert 0.15 < runs["GPT-3 175B"]["implied_mfu"] < 0.25
    assert 0.30 < runs["Llama 3.1 405B"]["implied_mfu"] < 0.43
    low, high = results["llama_405b_hours_at_reported_mfu"]
    assert low < high < 30.84e6 < 1.3 * high  # the published hours exceed the steady-state estimate
    assert 0.75 < results["gpt3_board_energy_share"] < 1.0
    projected = list(results["projection_cost_usd"].values())
    assert all(later > earlier for earlier, later in zip(projected, projected[1:]))


def test_scaling_experiment_trains_every_width(results):
    rows = results["scaling"]
    assert len(rows) >= 3
    assert [r["width"] for r in rows] == sorted(r["width"] for r in rows)
    for smaller, larger in zip(rows, rows[1:]):
        assert larger["parameters"] > smaller["parameters"]
        assert larger["training FLOP"] > smaller["training FLOP"]
    assert all(0 < r["test loss"] < 10 and 0 <= r["test accuracy"] <= 1 for r in rows)
    assert math.isfinite(results["scaling_exponent_parameters"])
    assert math.isfinite(results["scaling_exponent_compute"])


def test_dp_sgd_checks_and_tradeoff(results):
    assert results["clip_check_passed"] and results["clip_matches_scratch"]
    assert results["noise_std_over_sigma_c"] == pytest.approx(1.0, abs=0.05)
    tradeoff = sorted(results["dp_tradeoff"], key=lambda r: r["noise multiplier"])
    assert tradeoff[0]["noise multiplier"] == 0.0 and tradeoff[0]["epsilon"] is None  # no noise: no guarantee
    epsilons = [r["epsilon"] for r in tradeoff[1:]]
    assert all(e > 0 for e in epsilons) and all(a > b for a, b in zip(epsilons, epsilons[1:]))
    assert all(0.0 <= r["test accuracy"] <= 1.0 for r in tradeoff)
    assert 0.0 < results["dp_baseline_accuracy"] <= 1.0


def test_membership_inference_compares_both_models(results):
    attacks = {r["training"]: r for r in results["membership_inference"]}
    assert set(attacks) == {"ordinary", "DP-SGD"}
    assert attacks["ordinary"]["epsilon"] is None
    assert 0 < attacks["DP-SGD"]["epsilon"] < math.inf
    assert all(0.0 <= a["attack AUC"] <= 1.0 and -1.0 <= a["attack advantage"] <= 1.0 for a in attacks.values())


def test_explanations_cover_four_real_images(results):
    assert results["gradcam_shape"] == [4, 28, 28]
    assert math.isfinite(results["integrated_gradients_max_relative_error"])
