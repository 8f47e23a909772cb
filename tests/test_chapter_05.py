"""Chapter 5 under the smoke profile: the results JSON holds real, consistent values."""

from __future__ import annotations

import pytest

from bigmodel_utils import tuning

CHAPTER = "05_tuning"


@pytest.fixture(scope="module")
def results(run_chapter):
    return run_chapter(CHAPTER)


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


def test_accuracies_and_the_comparison_are_consistent(results):
    baseline, tuned = results["baseline"], results["tuned"]
    for model in (baseline, tuned):
        assert 0.0 <= model["val_accuracy"] <= 1.0 and 0.0 <= model["test_accuracy"] <= 1.0
    assert results["tuned_beats_baseline_on_validation"] == (tuned["val_accuracy"] > baseline["val_accuracy"])
    assert tuned["found_by"] in tuning.TUNERS
    best = max(r["best_val_accuracy"] for r in results["tuners"].values())
    assert results["tuners"][tuned["found_by"]]["best_val_accuracy"] == best
    tuning.CNNHyperModel().point({name: tuned[name] for name in tuning.SEARCH_SPACE})  # raises if outside the space
    assert baseline["batch_size"] == tuning.UNTUNED_VALUES["batch_size"]
    assert baseline["peak_learning_rate"] == pytest.approx(1e-3 * baseline["batch_size"] / 32)


def test_reload_trains_nothing_and_one_more_trial_trains_one(results):
    assert results["reload_trained_epochs"] == 0
    assert results["resume_new_trials"] == 1


def test_memory_was_measured(results):
    memory = results["memory"]
    assert memory["random_search_peak_rss_mb"] >= memory["random_search_start_rss_mb"] > 100
    for tuner in results["tuners"].values():
        assert tuner["peak_rss_mb"] > 100 and tuner["seconds"] > 0
    assert results["distributed"] is None  # smoke leaves the three-process demo to tests/test_tuning.py
