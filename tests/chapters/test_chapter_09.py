"""Chapter 9 run under the smoke profile: its results JSON holds real, consistent values."""

from __future__ import annotations

import math

import numpy as np
import pytest

CHAPTER = "09_future_challenges"


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


def test_scaling_law_on_the_gpt(results):
    rows = results["scaling"]
    sizes = [r["N"] for r in rows]
    assert len(rows) >= 3 and sizes == sorted(sizes) and sizes[-1] / sizes[0] >= 10
    assert len({r["D"] for r in rows}) == 1  # every size trained on the same tokens
    losses = [r["val_loss"] for r in rows]
    # the loss falls with N: the largest model is clearly best, and run-to-run noise may swap at most one
    # pair of neighbours among five sizes (none among three)
    assert losses[-1] < losses[0] - 0.05
    assert sum(larger >= smaller for smaller, larger in zip(losses, losses[1:])) <= (len(losses) - 1) // 4
    assert all(loss < math.log(65) for loss in losses)  # better than a uniform guess over 65 characters
    law = results["scaling_law"]
    low, high = results["scaling_alpha_interval"]
    assert 0 < low <= law["alpha"] <= high < 3
    assert 0 <= law["E"] < min(losses)
    assert law["rmse_log"] < 0.05  # the curve passes through the points
    assert results["scaling_loglog_exponent"] < 0


def test_isoflop_runs_spend_their_budget_and_find_an_optimum_each(results):
    runs = results["isoflop"]
    for run in runs:  # D = C / 6N, rounded to whole steps
        assert abs(run["C"] / run["budget"] - 1) <= 0.5 / run["steps"] + 1e-9
        assert run["C"] == pytest.approx(6 * run["N"] * run["D"])
    budgets = sorted({run["budget"] for run in runs})
    best_loss = []
    for budget in budgets:
        group = sorted((r for r in runs if r["budget"] == budget), key=lambda r: r["N"])
        tokens = [r["D"] for r in group]
        assert tokens == sorted(tokens, reverse=True)  # a larger model gets fewer tokens
        best_loss.append(min(r["val_loss"] for r in group))
    assert all(later < earlier for earlier, later in zip(best_loss, best_loss[1:]))  # more compute, lower loss
    optima = results["isoflop_optima"]
    assert [o["budget"] for o in optima] == budgets
    for optimum in optima:
        group = [r for r in runs if r["budget"] == optimum["budget"]]
        assert min(r["N"] for r in group) <= optimum["N"] <= max(r["N"] for r in group)
        assert optimum["D"] == pytest.approx(optimum["budget"] / (6 * optimum["N"]))
        assert optimum["tokens_per_parameter"] == pytest.approx(optimum["D"] / optimum["N"])
        assert optimum["loss"] <= max(r["val_loss"] for r in group)
        sizes = sorted(r["N"] for r in group)
        if optimum["inside"]:  # the parabola's vertex lies between the sizes around the lowest loss
            assert sizes[0] < optimum["N"] < sizes[-1]
        else:  # the lowest loss is at an end: that run is the optimum, as trained
            lowest = min(group, key=lambda r: r["val_loss"])
            assert lowest["N"] in (sizes[0], sizes[-1])
            assert optimum["N"] == pytest.approx(lowest["N"]) and optimum["loss"] == pytest.approx(lowest["val_loss"])
    # N_opt ~ C^a: the slope of the least-squares line through the recorded optima on log-log axes
    exponent = results["isoflop_size_exponent"]
    if len(optima) < 2:
        assert exponent is None
    else:
        slope = np.polyfit(np.log([o["budget"] for o in optima]), np.log([o["N"] for o in optima]), 1)[0]
        assert exponent == pytest.approx(slope, abs=1e-9)


SMOKE_TEST_IMAGES = 2000  # the bundled Fashion-MNIST subset's test split (data/README.md), which smoke reads


def test_dp_sgd_checks_and_tradeoff(results):
    assert results["clip_check_passed"] and results["clip_matches_scratch"]
    assert results["noise_std_over_sigma_c"] == pytest.approx(1.0, abs=0.05)
    tradeoff = sorted(results["dp_tradeoff"], key=lambda r: r["noise multiplier"])
    assert tradeoff[0]["noise multiplier"] == 0.0 and tradeoff[0]["epsilon"] is None  # no noise: no guarantee
    epsilons = [r["epsilon"] for r in tradeoff[1:]]
    assert all(e > 0 for e in epsilons) and all(a > b for a, b in zip(epsilons, epsilons[1:]))
    accuracies = [r["test accuracy"] for r in tradeoff] + [results["dp_baseline_accuracy"]]
    for accuracy in accuracies:  # right answers out of the 2,000 test images
        correct = accuracy * SMOKE_TEST_IMAGES
        assert correct == pytest.approx(round(correct), abs=1e-3) and 0 <= round(correct) <= SMOKE_TEST_IMAGES
    # Ten classes, chance is 0.1: ordinary training and DP-SGD with little or no noise learn something in 10 steps
    # (0.51 to 0.55 measured), and the most noise costs accuracy (0.33), which is the trade-off the chapter shows
    assert results["dp_baseline_accuracy"] > 0.3 and tradeoff[0]["test accuracy"] > 0.3
    least_noise, most_noise = tradeoff[1], tradeoff[-1]
    assert least_noise["test accuracy"] > 0.3
    assert most_noise["test accuracy"] < least_noise["test accuracy"]


def test_membership_inference_compares_both_models(results):
    attacks = {r["training"]: r for r in results["membership_inference"]}
    assert set(attacks) == {"ordinary", "DP-SGD"}
    assert attacks["ordinary"]["epsilon"] is None
    assert 0 < attacks["DP-SGD"]["epsilon"] < math.inf
    # An over-trained model leaks: its members' losses are lower than outsiders', so the attack beats a coin
    assert attacks["ordinary"]["attack AUC"] > 0.55
    # The DP model's epsilon (sigma = 2, a quarter of the 300 members per step, 2 epochs: 8 steps, delta = 1e-5)
    # is below the chapter's full-batch bound for the same steps, min over alpha of T alpha / 2 sigma^2 +
    # log(1 / delta) / (alpha - 1) = 7.79: the accountant credits the subsampling
    epsilon, delta = attacks["DP-SGD"]["epsilon"], 1e-5
    orders = np.linspace(1.01, 256, 20_000)
    full_batch = float(np.min(8 * orders / (2 * 2.0**2) + np.log(1 / delta) / (orders - 1)))
    assert full_batch == pytest.approx(7.79, abs=0.01) and epsilon < full_batch
    # Kairouz et al.'s bound on any attack's advantage under (epsilon, delta)-DP, as the chapter states it
    bound = results["membership_advantage_bound"]
    assert bound == pytest.approx((math.exp(epsilon) - 1 + 2 * delta) / (math.exp(epsilon) + 1), rel=1e-9)
    # The measured attack stays within it, without slack
    assert attacks["DP-SGD"]["attack advantage"] <= bound
    # The best threshold's advantage (TPR - FPR) and the AUC describe the same ROC curve: a monotone curve through
    # (FPR, FPR + advantage) has an area of at least the advantage, and one that never rises more than the
    # advantage above the diagonal has an area of at most 1 - (1 - advantage)^2 / 2
    for name, attack in attacks.items():
        advantage, auc = attack["attack advantage"], attack["attack AUC"]
        assert 0 < advantage <= auc <= 1 - (1 - advantage) ** 2 / 2, name


def test_explanations_cover_four_real_images(results):
    assert results["gradcam_shape"] == [4, 28, 28]
    assert 0.5 < results["explained_cnn_accuracy"] <= 1.0  # a trained model, not a random one
    # Completeness: the attributions sum to the logit difference, to within the Riemann sum's error
    # (the unit test bounds it at 2% for 64 steps; the chapter uses 128)
    assert results["integrated_gradients_max_relative_error"] < 0.03


def test_projection_starts_from_the_frontier_of_the_data(results):
    from bigmodel_utils.calculators import trends

    epoch = trends.load_epoch_models()
    start = results["projection_start"]
    assert start["training_flop"] == epoch["training_flop"].max()
    assert start["model"] == epoch.loc[epoch["training_flop"].idxmax(), "model"]
    first_year_cost = results["projection_cost_usd"][str(start["year"])]
    assert first_year_cost > results["llama_405b_estimate"]["cost"]  # the frontier is beyond Llama 3.1 405B


def test_full_profile_shrunk_runs_the_gpu_branches(jax_full):
    results = jax_full
    assert results["profile"] == "full" and results["backend"] == "jax"
    assert [r["width"] for r in results["scaling"]] == [4, 8, 16]
    assert len(results["isoflop_optima"]) == 1 and results["isoflop_size_exponent"] is None
    # one epoch of DP-SGD on 100 members: the attack stays within the (epsilon, 1e-5) bound, without slack
    private = next(r for r in results["membership_inference"] if r["training"] == "DP-SGD")
    bound = results["membership_advantage_bound"]
    assert bound == pytest.approx((math.exp(private["epsilon"]) - 1 + 2e-5) / (math.exp(private["epsilon"]) + 1))
    assert private["attack advantage"] <= bound
