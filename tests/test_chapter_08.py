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
    # The point of the experiment: the loss falls as a power of size and of compute (negative exponents)
    assert -2.0 < results["scaling_exponent_parameters"] < 0
    assert -2.0 < results["scaling_exponent_compute"] < 0
    assert rows[-1]["test loss"] < rows[0]["test loss"]


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
    # An over-trained model leaks: its members' losses are lower than outsiders', so the attack beats a coin
    assert attacks["ordinary"]["attack AUC"] > 0.55
    # No attack can beat the (epsilon, delta) bound by more than the sampling noise of a few hundred records
    bound = results["membership_advantage_bound"]
    assert 0 < bound < 1 and attacks["DP-SGD"]["attack advantage"] <= bound + 0.1


def test_explanations_cover_four_real_images(results):
    assert results["gradcam_shape"] == [4, 28, 28]
    # Completeness: the attributions sum to the logit difference, to within the Riemann sum's error
    # (the unit test bounds it at 2% for 64 steps; smoke uses 64 too)
    assert results["integrated_gradients_max_relative_error"] < 0.03


def test_projection_starts_from_the_frontier_of_the_data(results):
    from bigmodel_utils import trends

    epoch = trends.load_epoch_models()
    start = results["projection_start"]
    assert start["training_flop"] == epoch["training_flop"].max()
    assert start["model"] == epoch.loc[epoch["training_flop"].idxmax(), "model"]
    first_year_cost = results["projection_cost_usd"][str(start["year"])]
    assert first_year_cost > results["llama_405b_estimate"]["cost"]  # the frontier is beyond Llama 3.1 405B
