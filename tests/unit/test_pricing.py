"""The serving cost model: the sourced price table, cost per token, monthly bills and the break-even volume."""

from __future__ import annotations

import hashlib
import math
import re

import matplotlib
import pytest

from bigmodel_utils.calculators import pricing
from bigmodel_utils.data import files
from bigmodel_utils.techniques import decoding

matplotlib.use("Agg")


def test_price_table_loads_and_every_row_is_sourced_and_dated():
    table = pricing.load_prices()
    assert 10 <= len(table) <= 25
    assert set(table["kind"]) == {"gpu_hour", "api"}
    assert all(re.match(r"https://[\w.-]+\.\w+/", source) for source in table["source"])
    assert all(re.fullmatch(r"20\d\d-(0[1-9]|1[0-2])", as_of) for as_of in table["as_of"])
    assert (table["price_usd"] > 0).all()
    assert hashlib.sha256((files.data_dir() / pricing.PRICES_FILE).read_bytes()).hexdigest() == pricing.PRICES_SHA256
    # every priced GPU has a datasheet bandwidth, so the chapter can turn its price into a cost per token
    gpus = table[table["kind"] == "gpu_hour"]
    assert set(gpus["accelerator"]) <= set(decoding.GPUS)
    assert {"T4", "L4", "A100-80GB", "H100"} <= set(gpus["accelerator"])


def test_per_gpu_prices_are_the_instance_price_divided_by_its_gpus():
    table = pricing.load_prices()
    checked = 0
    for row in table[table["kind"] == "gpu_hour"].itertuples():
        found = re.search(r"\$([\d.]+) per instance-hour for (\d+) GPUs", row.note)
        if found:
            assert row.price_usd == pytest.approx(float(found[1]) / int(found[2]), abs=1e-4), row.item
            checked += 1
    assert checked >= 2


def test_api_prices_pair_input_and_output():
    prices = pricing.api_prices()
    assert len(prices) >= 5 and prices[["input_usd_per_million", "output_usd_per_million"]].notna().all().all()
    assert (prices["output_usd_per_million"] >= prices["input_usd_per_million"]).all()  # generating costs more
    mini = prices.set_index("model").loc["gpt-4o-mini"]
    assert (mini.input_usd_per_million, mini.output_usd_per_million) == (0.15, 0.60)


def test_cost_per_million_by_hand():
    assert pricing.cost_per_million(1000, 3.6) == pytest.approx(1.0)  # 3.6 M tokens an hour for $3.60
    assert pricing.cost_per_million(1000, 3.6, utilization=0.5) == pytest.approx(2.0)  # idle half the time
    assert pricing.self_hosted_monthly_cost(2.0, num_gpus=2) == pytest.approx(2 * 730 * 2.0)
    assert pricing.self_hosted_monthly_cost(2.0, volume=1e9, marginal_usd_per_million=0.1) == pytest.approx(1560.0)
    assert pricing.monthly_capacity(1000) == pytest.approx(1000 * 730 * 3600)


def test_break_even_on_a_hand_worked_example():
    # One GPU at $2/h always on: $1,460 a month. Against an API at $0.50 per million: 2.92 billion tokens.
    result = pricing.break_even_volume(2.0, 1, 0.5, throughput_per_second=1000)
    assert result.fixed_usd_per_month == pytest.approx(1460.0)
    assert result.volume_per_month == pytest.approx(2.92e9)
    # ...but at 1,000 tokens/s it serves only 2.628 billion a month: it never catches up
    assert result.capacity_per_month == pytest.approx(2.628e9)
    assert result.self_hosting_can_win is False
    assert pricing.break_even_volume(2.0, 1, 0.5, throughput_per_second=1500).self_hosting_can_win is True
    # a marginal cost of $0.10 per million narrows the margin to $0.40: 3.65 billion
    assert pricing.break_even_volume(2.0, 1, 0.5, self_hosted_marginal=0.1).volume_per_month == pytest.approx(3.65e9)
    assert math.isinf(pricing.break_even_volume(2.0, 1, 0.5, self_hosted_marginal=0.5).volume_per_month)
    assert pricing.break_even_volume(2.0, 1, 0.5).capacity_per_month is None


def test_monotonicity_and_agreement_with_cost_per_token():
    volume = [pricing.break_even_volume(p, 1, 0.5).volume_per_month for p in (1.0, 2.0, 4.0)]
    assert volume[0] < volume[1] < volume[2]  # dearer GPUs need more traffic to pay
    by_gpus = [pricing.break_even_volume(2.0, n, 0.5).volume_per_month for n in (1, 2, 8)]
    assert by_gpus[0] < by_gpus[1] < by_gpus[2]
    by_api = [pricing.break_even_volume(2.0, 1, a).volume_per_month for a in (0.25, 0.5, 2.0)]
    assert by_api[0] > by_api[1] > by_api[2]  # a dearer API makes self-hosting pay sooner
    costs = [pricing.cost_per_million(t, 2.0) for t in (100, 1000, 10_000)]
    assert costs[0] > costs[1] > costs[2]
    # "can win" is the same statement as "at full load a token costs less than the API's"
    for throughput in (200, 800, 1100, 5000):
        for utilization in (0.3, 1.0):
            result = pricing.break_even_volume(2.0, 2, 0.5, self_hosted_marginal=0.05,
                                               throughput_per_second=throughput, utilization=utilization)
            at_capacity = pricing.cost_per_million(throughput, 2.0, utilization) + 0.05
            assert result.self_hosting_can_win == (at_capacity <= 0.5), (throughput, utilization)


def test_break_even_figure():
    figure = pricing.break_even_figure(2.0, 0.5, throughput_per_second=1500)
    ax = figure.axes[0]
    assert ax.get_title() and ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert len(ax.get_lines()) == 4  # API, GPUs, capacity line, break-even point
    import matplotlib.pyplot as plt

    plt.close(figure)


def test_a_row_without_a_source_or_date_is_refused(monkeypatch, tmp_path):
    original = (files.data_dir() / pricing.PRICES_FILE).read_text()
    lines = original.splitlines()
    monkeypatch.setenv("BOOK_DATA_DIR", str(tmp_path))
    no_source = lines[:2] + [lines[2].replace("https://aws.amazon.com/ec2/pricing/on-demand/", "")]
    (tmp_path / pricing.PRICES_FILE).write_text("\n".join(no_source) + "\n")
    with pytest.raises(ValueError, match="line 3 .*source must be the https:// address"):
        pricing.load_prices()
    no_date = lines[:2] + [lines[2].replace(",2026-09,", ",September,")]
    (tmp_path / pricing.PRICES_FILE).write_text("\n".join(no_date) + "\n")
    with pytest.raises(ValueError, match="as_of must be the month the price applied"):
        pricing.load_prices()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: pricing.cost_per_million(1000, 2.0, utilization=1.5), "utilization must be a fraction"),
        (lambda: pricing.cost_per_million(0, 2.0), "throughput_per_second must be a positive number"),
        (lambda: pricing.cost_per_million(1000, -1), "price_per_hour must be a positive number"),
        (lambda: pricing.break_even_volume(2.0, 0, 0.5), "num_gpus must be a positive integer"),
        (lambda: pricing.break_even_volume(2.0, 1, 0), "api_price_per_million must be a positive number"),
        (lambda: pricing.break_even_volume(2.0, 1, 0.5, self_hosted_marginal=-1), "self_hosted_marginal must be"),
        (lambda: pricing.self_hosted_monthly_cost(2.0, volume=-5), "volume must be a number of at least 0, got -5"),
        (lambda: pricing.monthly_capacity(10, hours_per_month=math.inf), "hours_per_month must be a positive"),
    ],
)
def test_bad_inputs_say_what_is_wrong(call, message):
    with pytest.raises(ValueError, match=message):
        call()
