"""The training-cost calculator: formulas, the published runs it is checked on, and its argument checks."""

from __future__ import annotations

import math

import pytest

from bigmodel_utils.calculators import costs, trends


def test_one_petaflop_second_for_an_hour_is_one_gpu_hour():
    assert costs.gpu_hours(3.6e18, 1e15, 1.0) == pytest.approx(1.0)
    assert costs.gpu_hours(3.6e18, 1e15, 0.5) == pytest.approx(2.0)  # half the utilisation, twice the time


def test_implied_utilization_inverts_gpu_hours():
    hours = costs.gpu_hours(3.8e25, 989e12, 0.41)
    assert costs.implied_utilization(3.8e25, hours, 989e12) == pytest.approx(0.41)


def test_days_cost_and_energy():
    assert costs.training_days(24_000, 1000) == pytest.approx(1.0)
    assert costs.training_cost(1000, 2.5) == pytest.approx(2500.0)
    # 1,000 GPU-hours at 700 W is 0.7 MWh; a PUE of 1.2 adds 20%
    assert costs.energy_mwh(1000, 700, pue=1.2) == pytest.approx(0.84)


def test_estimate_training_run_is_consistent():
    run = costs.estimate_training_run(1e24, "A100", utilization=0.5, num_gpus=2048, price_per_gpu_hour=1.5, pue=1.1)
    expected_hours = 1e24 / (312e12 * 0.5) / 3600
    assert run.gpu_hours == pytest.approx(expected_hours)
    assert run.days == pytest.approx(expected_hours / 2048 / 24)
    assert run.cost == pytest.approx(1.5 * expected_hours)
    assert run.energy_mwh == pytest.approx(expected_hours * 400 * 1.1 / 1e6)
    assert run.as_dict()["accelerator"] == "NVIDIA A100 SXM4"


def test_gpt3_published_run_matches_the_calculator():
    run = costs.PUBLISHED_RUNS["GPT-3 175B"]
    v100 = costs.ACCELERATORS[run.accelerator]
    assert costs.training_days(run.gpu_hours, run.num_gpus) == pytest.approx(14.8)
    utilization = costs.implied_utilization(run.training_flop, run.gpu_hours, v100.peak_flops)
    assert 0.15 < utilization < 0.25  # Epoch AI lists 0.197 for this run
    # Board power alone (300 W) is below the measured 1,287 MWh but within 25% of it
    estimate = costs.energy_mwh(run.gpu_hours, v100.power_watts)
    assert 0.75 * run.energy_mwh < estimate < run.energy_mwh


def test_llama_405b_published_hours_are_above_the_calculator_at_the_reported_mfu():
    run = costs.PUBLISHED_RUNS["Llama 3.1 405B"]
    h100 = costs.ACCELERATORS[run.accelerator]
    # The paper reports 38-43% MFU in steady pre-training; the model card's hours include everything else.
    low, high = (costs.gpu_hours(run.training_flop, h100.peak_flops, mfu) for mfu in (0.43, 0.38))
    assert low < high < run.gpu_hours < 1.3 * high
    assert 0.30 < costs.implied_utilization(run.training_flop, run.gpu_hours, h100.peak_flops) < 0.38


def test_published_flop_figures_match_the_books_landmark_table():
    table = trends.load_landmark_models().set_index("name")
    assert costs.PUBLISHED_RUNS["GPT-3 175B"].training_flop == table.loc["GPT-3 (175B)", "training_flop"]
    assert costs.PUBLISHED_RUNS["Llama 3.1 405B"].training_flop == table.loc["Llama 3.1 405B", "training_flop"]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: costs.gpu_hours(1e20, 1e14, 1.5), "utilization must be a fraction"),
        (lambda: costs.gpu_hours(-1, 1e14, 0.5), "training_flop must be a positive number"),
        (lambda: costs.gpu_hours(1e20, math.inf, 0.5), "peak_flops must be a positive number"),
        (lambda: costs.training_days(100, 0), "num_gpus must be a positive integer"),
        (lambda: costs.energy_mwh(100, 700, pue=0.9), r"pue must be a finite number \(at least 1\), got 0.9"),
        (lambda: costs.estimate_training_run(1e20, "B200"),
         "accelerator must be one of 'T4', 'V100', 'A100', 'H100'; got 'B200'"),
    ],
)
def test_bad_arguments_say_what_is_wrong(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_the_accelerator_table_is_the_pinned_file_and_feeds_the_calculator():
    import hashlib

    from bigmodel_utils.calculators import accelerators
    from bigmodel_utils.data import files

    data = (files.data_dir() / accelerators.ACCELERATORS_FILE).read_bytes()
    assert hashlib.sha256(data).hexdigest() == accelerators.ACCELERATORS_SHA256
    # chapter 9's table: the dense peak at the training precision (bfloat16 where the chip has it) and board power
    expected = {"T4": ("NVIDIA T4", 65e12, "float16 dense", 70.0),
                "V100": ("NVIDIA V100 SXM2", 125e12, "float16 dense", 300.0),
                "A100": ("NVIDIA A100 SXM4", 312e12, "bfloat16 dense", 400.0),
                "H100": ("NVIDIA H100 SXM5", 989.5e12, "bfloat16 dense", 700.0)}  # 1,979 with sparsity, halved
    assert {key: (a.name, a.peak_flops, a.precision, a.power_watts)
            for key, a in costs.ACCELERATORS.items()} == expected
    assert list(costs.ACCELERATORS) == list(expected)  # the order chapter 9 prints them in
    with pytest.raises(ValueError, match="accelerator must be one of 'T4', 'V100', 'L4', .*; got 'B200'"):
        accelerators.datasheet("B200")


def test_every_datasheet_row_is_sourced_and_its_peaks_are_ordered():
    from bigmodel_utils.calculators import accelerators

    for key, sheet in accelerators.datasheets().items():
        assert "https://" in sheet.source and sheet.peak_tflops, key
        peaks = [sheet.peak_tflops.get(p) for p in accelerators.PRECISIONS]
        # tensor-core 16-bit >= TF32 >= plain float32: a figure left "with sparsity" would break the order
        known = [p for p in peaks if p is not None]
        assert known == sorted(known, reverse=True), key
        if sheet.peak_tflops.get("tf32"):
            assert sheet.peak_tflops["tf32"] == pytest.approx(sheet.peak_tflops["bfloat16"] / 2, rel=0.01), key
