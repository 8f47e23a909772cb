"""Chapter 1 under the smoke profile: the data checks and the fitted doubling times it reports."""

from __future__ import annotations

import pytest

CHAPTER = "01_background"


def test_tables_loaded_and_cross_checked(results):
    assert results["num_landmarks"] >= 35
    assert results["num_epoch_models"] > 800
    # Most landmark numbers agree with Epoch's; the few that do not are explained in the notes.
    assert results["landmarks_checked_against_epoch"] >= 30
    assert results["landmarks_agreeing_with_epoch"] >= 0.8 * results["landmarks_checked_against_epoch"]


def test_compute_grew_faster_after_the_break(results):
    months = results["doubling_months"]
    # Sevilla et al. (2022) found about 20 months before 2010 and about 6 after, on an earlier snapshot.
    assert 12 < months["training_flop_before"] < 30
    assert 4 < months["training_flop_after"] < 8
    assert months["parameters_after"] < months["parameters_before"]
    assert months["training_flop_after"] < months["parameters_after"]


def test_bootstrap_intervals_contain_the_fits(results):
    for key, (low, high) in results["doubling_months_95_interval"].items():
        assert low < results["doubling_months"][key] < high, key


def test_tokens_per_parameter(results):
    ratio = results["tokens_per_parameter"]
    assert ratio["Chinchilla"] == pytest.approx(20.0)
    assert ratio["GPT-3 (175B)"] < 2 < 30 < ratio["Llama 3.1 405B"]
    assert results["gpt3_over_alexnet_compute"] == pytest.approx(3.14e23 / 4.7e17)


def test_full_profile_draws_its_larger_bootstrap(jax_full):
    # The full profile differs from smoke only in BOOTSTRAP_SAMPLES (5,000 instead of 100), and the whole chapter
    # takes seconds, so it runs unshrunk: the interval it reports is the one 5,000 resamples give, not 100.
    from bigmodel_utils.calculators import trends

    results = jax_full
    assert results["profile"] == "full" and results["backend"] == "jax"
    epoch = trends.load_epoch_models().dropna(subset=["training_flop"])
    after = epoch[epoch["year"] >= results["break_year"]]
    expected = {samples: trends.bootstrap_doubling_time(after["year"], after["training_flop"], samples,
                                                        seed=results["seed"])
                for samples in (5000, 100)}
    assert expected[5000] != expected[100]  # the sample count shows in the interval
    assert results["doubling_months_95_interval"]["training_flop_after"] == pytest.approx(expected[5000], rel=1e-12)
