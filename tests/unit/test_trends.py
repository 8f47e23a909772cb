"""Tests for bigmodel_utils.calculators.trends: the fits on data with a known answer, and the two bundled tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bigmodel_utils.calculators import trends

RAW_EPOCH = Path(__file__).resolve().parents[3] / "shared" / "reference" / "epoch_notable_ai_models_2025-03.csv"
# ten rows of that file, unchanged (tests/fixtures/README.md says which and why)
RAW_EXCERPT = Path(__file__).resolve().parents[1] / "fixtures" / "reference" / (
    "epoch_notable_ai_models_2025-03_excerpt.csv")
BUNDLED_EPOCH = Path(__file__).resolve().parents[2] / "data" / "epoch_notable_models.csv"


def test_exponential_fit_recovers_a_known_doubling_time():
    years = np.arange(2000, 2021, 0.5)
    rng = np.random.default_rng(0)
    values = 1e15 * 2.0 ** ((years - 2000) * 12 / 6.0) * 10 ** rng.normal(0, 0.05, years.size)
    trend = trends.fit_exponential_trend(years, values)
    assert trend.doubling_time_months == pytest.approx(6.0, rel=0.03)
    assert trend.r2 > 0.99 and trend.n == years.size
    assert trend.predict([2000.0])[0] == pytest.approx(1e15, rel=0.1)


def test_power_law_fit_recovers_exponent():
    x = np.logspace(6, 10, 20)
    law = trends.fit_power_law(x, 5.0 * x**-0.076)
    assert law.exponent == pytest.approx(-0.076) and law.coefficient == pytest.approx(5.0)


def test_fit_rejects_bad_input():
    with pytest.raises(ValueError, match="positive"):
        trends.fit_exponential_trend([1, 2, 3], [1, -2, 3])
    with pytest.raises(ValueError, match="at least 3"):
        trends.fit_exponential_trend([1, 2, np.nan], [1, 2, 3])


@pytest.fixture(scope="module")
def landmarks():
    return trends.load_landmark_models()


@pytest.fixture(scope="module")
def epoch():
    return trends.load_epoch_models()


def test_landmark_table_contract(landmarks):
    assert list(landmarks.columns) == list(trends.LANDMARK_COLUMNS)
    assert 35 <= len(landmarks) <= 45 and landmarks["name"].is_unique
    assert landmarks["year"].between(1998, 2025).all()
    assert set(landmarks["domain"]) <= set(trends.DOMAINS)
    assert set(landmarks["flop_kind"].dropna()) <= {"reported", "estimated"}
    # A compute figure has a kind, and no kind without a figure.
    assert (landmarks["flop_kind"].notna() == landmarks["training_flop"].notna()).all()
    assert landmarks["source"].notna().all() and landmarks["notes"].notna().all()


def test_landmark_sparse_models_have_fewer_active_parameters(landmarks):
    sparse = landmarks.dropna(subset=["active_parameters"])
    assert {"DeepSeek-V3", "Mixtral 8x7B", "Qwen3-235B-A22B"} <= set(sparse["name"])
    assert (sparse["active_parameters"] < sparse["parameters"]).all()
    assert sparse["notes"].str.contains("active").all()


def test_landmark_numbers_we_quote(landmarks):
    row = landmarks.set_index("name")
    assert row.loc["GPT-3 (175B)", "parameters"] == 175e9
    assert row.loc["GPT-3 (175B)", "training_flop"] == pytest.approx(3.14e23)
    assert row.loc["GPT-3 (175B)", "flop_kind"] == "reported"
    assert row.loc["Llama 3.1 405B", "training_flop"] == pytest.approx(3.8e25)


def test_landmark_tokens_only_on_request(landmarks):
    with_tokens = trends.load_landmark_models(include_tokens=True)
    assert "training_tokens" not in landmarks.columns
    assert with_tokens.set_index("name").loc["Chinchilla", "training_tokens"] == 1.4e12


def test_epoch_table_contract(epoch):
    for column in ("model", "domain", "organization", "publication_date", "year", "parameters", "training_flop"):
        assert column in epoch.columns
    assert pd.api.types.is_datetime64_any_dtype(epoch["publication_date"])
    assert epoch["year"].dtype == float
    assert len(epoch) > 800 and set(epoch["domain"]) <= set(trends.DOMAINS)
    gpt3 = epoch[epoch["model"] == "GPT-3 175B (davinci)"].iloc[0]
    assert gpt3["year"] == pytest.approx(2020 + (31 + 29 + 31 + 30 + 27) / 366)


def test_epoch_known_error_is_corrected(epoch):
    llama = epoch.set_index("model").loc["Llama 2-7B"]
    assert llama["parameters"] == 7e9 and "corrected" in llama["notes"]


def test_main_domain():
    assert trends.main_domain("Multimodal,Language,Vision") == "multimodal"
    assert trends.main_domain("Vision,Language") == "multimodal"
    assert trends.main_domain("Vision,Image generation") == "vision"
    assert trends.main_domain("Audio") == "speech"
    assert trends.main_domain("Robotics") == "other"


def test_trimming_an_excerpt_of_the_raw_file_gives_the_bundled_rows():
    trimmed = trends.trim_epoch_table(RAW_EXCERPT)
    # the row without a publication date (Llama 4 Behemoth) is dropped; the other nine keep the source's order
    assert trimmed["model"].tolist() == [
        "EXAONE Deep 32B", "QwQ-32B", "Llama 2-7B", "Whisper", "CLIP (ViT L/14@336px)", "GPT-3 175B (davinci)",
        "AlexNet", "Theseus"]
    assert list(trimmed.columns) == [c for c in trends.EPOCH_COLUMNS if c != "year"]
    rows = trimmed.set_index("model")
    # Epoch lists Llama 2-7B with 7e10 parameters; the paper's 7e9 replaces it, and the note says so
    assert rows.loc["Llama 2-7B", "parameters"] == 7e9 and "corrected from 7e10" in rows.loc["Llama 2-7B", "notes"]
    assert rows["domain"].to_dict() == {
        "EXAONE Deep 32B": "language", "QwQ-32B": "language", "Llama 2-7B": "language", "Whisper": "speech",
        "CLIP (ViT L/14@336px)": "multimodal", "GPT-3 175B (davinci)": "language", "AlexNet": "vision",
        "Theseus": "other"}
    assert rows.loc["GPT-3 175B (davinci)", "training_flop"] == pytest.approx(3.14e23)
    # and every row is the bundled file's, which was trimmed from the whole snapshot (written to 6 digits)
    bundled = pd.read_csv(BUNDLED_EPOCH)
    positions = [int(np.flatnonzero(bundled["model"] == model)[0]) for model in trimmed["model"]]
    assert positions == sorted(positions) and (bundled["model"].iloc[positions] == trimmed["model"].values).all()
    expected = bundled.iloc[positions].reset_index(drop=True)
    for column in ("parameters", "training_flop", "training_data_size"):
        np.testing.assert_allclose(trimmed[column], expected[column], rtol=1e-5)
    for column in ("domain", "domains", "organization", "publication_date", "confidence", "notes"):
        assert trimmed[column].fillna("").tolist() == expected[column].fillna("").tolist(), column


@pytest.mark.skipif(not RAW_EPOCH.is_file(), reason="Epoch AI's full CSV is not in ../shared/reference")
def test_bundled_epoch_file_is_rebuilt_from_the_source(epoch):
    rebuilt = trends.trim_epoch_table(RAW_EPOCH)
    assert len(rebuilt) == len(epoch)
    np.testing.assert_array_equal(rebuilt["model"], epoch["model"])
    for column in ("parameters", "training_flop", "training_data_size"):
        np.testing.assert_allclose(rebuilt[column], epoch[column], rtol=1e-5)
    assert rebuilt["domain"].tolist() == epoch["domain"].tolist()


def test_bootstrap_interval_contains_the_true_doubling_time():
    rng = np.random.default_rng(1)
    years = rng.uniform(2010, 2024, 200)
    values = 1e18 * 2.0 ** ((years - 2010) * 2.0) * 10 ** rng.normal(0, 0.5, years.size)  # 6-month doubling
    low, high = trends.bootstrap_doubling_time(years, values, num_samples=300, seed=0)
    assert low < 6.0 < high and high - low < 1.5
    with pytest.raises(ValueError, match="num_samples"):
        trends.bootstrap_doubling_time(years, values, num_samples=3)
