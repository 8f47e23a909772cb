"""Chapter 5 under the smoke profile: the results JSON holds real, consistent values."""

from __future__ import annotations

import pytest

from bigmodel_utils import tuning

CHAPTER = "05_tuning"


def test_each_tuner_ran_two_tiny_trials(results):
    assert results["profile"] == "smoke"
    assert {kind: r["trials"] for kind, r in results["tuners"].items()} == {"random": 2, "hyperband": 2, "bayesian": 2}


def test_epochs_were_counted_not_assumed(results):
    tuners, hyperband = results["tuners"], results["hyperband"]
    for kind, tuner in tuners.items():
        assert tuner["epochs_trained"] == tuner["epochs_planned"], kind
    schedule = tuning.hyperband_schedule(hyperband["max_epochs"], hyperband["factor"])
    assert hyperband["epochs_predicted"] == schedule.epochs_trained == tuners["hyperband"]["epochs_trained"]
    assert hyperband["trials_predicted"] == schedule.trials


def test_accuracies_were_measured_on_the_stated_splits(results):
    baseline, tuned = results["baseline"], results["tuned"]
    for model in (baseline, tuned):
        # An accuracy is a count of right answers over the split's size: a whole number of images
        for key, size in (("val_accuracy", results["num_val"]), ("test_accuracy", results["num_test"])):
            assert model[key] * size == pytest.approx(round(model[key] * size), abs=1e-3), (key, model[key])
    assert tuned["found_by"] in tuning.TUNERS
    best = max(r["best_val_accuracy"] for r in results["tuners"].values())
    assert results["tuners"][tuned["found_by"]]["best_val_accuracy"] == best
    tuning.CNNHyperModel().point({name: tuned[name] for name in tuning.SEARCH_SPACE})  # raises if outside the space
    assert baseline["batch_size"] == tuning.UNTUNED_VALUES["batch_size"]
    assert baseline["peak_learning_rate"] == pytest.approx(1e-3 * baseline["batch_size"] / 32)


def test_the_verdict_follows_the_paired_interval(results):
    paired, n = results["paired_test_difference"], results["num_test"]
    assert paired["num_test"] == n
    # evaluate() and the per-image predictions are two computations of the same accuracies
    difference = results["tuned"]["test_accuracy"] - results["baseline"]["test_accuracy"]
    assert paired["mean"] == pytest.approx(difference, abs=1e-6)
    assert paired["mean"] == pytest.approx((paired["tuned_right_only"] - paired["untuned_right_only"]) / n)
    assert paired["low"] <= paired["mean"] <= paired["high"]
    # The bootstrap interval is about as wide as the normal approximation of the same paired differences
    p_plus, p_minus = paired["tuned_right_only"] / n, paired["untuned_right_only"] / n
    sd = (p_plus + p_minus - (p_plus - p_minus) ** 2) ** 0.5
    if sd > 0:
        assert (paired["high"] - paired["low"]) == pytest.approx(2 * 1.96 * sd / n**0.5, rel=0.3)
    expected = "tuned" if paired["low"] > 0 else "untuned" if paired["high"] < 0 else "undecided"
    assert paired["verdict"] == expected


def test_reload_trains_nothing_and_one_more_trial_trains_one(results):
    assert results["reload_trained_epochs"] == 0
    assert results["resume_new_trials"] == 1


def test_memory_and_time_records_agree(results):
    # Memory and time are measured, not bounded (they depend on the machine and on what else runs); what the
    # chapter reports must agree with itself. The memory section's peak is the random search's monitor, the one
    # the summary table shows for that tuner; its start is a sample of the same monitor, so at most the peak.
    memory, tuners = results["memory"], results["tuners"]
    assert memory["random_search_peak_rss_mb"] == tuners["random"]["peak_rss_mb"]
    assert memory["random_search_start_rss_mb"] <= memory["random_search_peak_rss_mb"]
    # a slope needs three trials: with smoke's two the chapter reports no growth rather than a fit through two
    assert memory["random_search_trials"] == tuners["random"]["trials"] == 2 and memory["growth_mb_per_trial"] == 0
    # the three searches and the baseline ran one after another inside the chapter's own time
    spent = sum(tuner["seconds"] for tuner in tuners.values()) + results["baseline"]["seconds"]
    assert 0 < spent < results["chapter_seconds"]
    assert results["distributed"] is None  # smoke leaves the three-process demo to tests/programs/test_tuning.py


def test_full_profile_shrunk_searches_the_full_dataset_with_hyperband_brackets(jax_full):
    results = jax_full
    assert results["profile"] == "full" and results["backend"] == "jax"
    assert results["num_search_train"] == 64 and results["num_val"] == 64
    assert results["num_test"] == results["paired_test_difference"]["num_test"] == 10000  # the subset has 2,000
    tuners, hyperband = results["tuners"], results["hyperband"]
    assert (hyperband["max_epochs"], hyperband["factor"]) == (2, 2)
    schedule = tuning.hyperband_schedule(2, 2)
    assert len({r["bracket"] for r in schedule.rounds}) == 2 and any(r["round"] > 0 for r in schedule.rounds)
    assert {kind: r["trials"] for kind, r in tuners.items()} == {"random": 1, "hyperband": schedule.trials,
                                                                  "bayesian": 1}
    for kind, tuner in tuners.items():
        assert tuner["epochs_trained"] == tuner["epochs_planned"], kind
    # the continued trial trained only its new epoch: fewer than from scratch
    assert tuners["hyperband"]["epochs_trained"] == schedule.epochs_trained < schedule.epochs_if_from_scratch
    assert results["resume_new_trials"] == 1 and results["reload_trained_epochs"] == 0
    assert results["baseline"]["width"] == 8 and results["distributed"] is None
