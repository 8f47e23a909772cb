"""What serving costs: GPU-hours against a price per token, and when self-hosting pays.

Two ways to pay for inference, with dated and sourced prices in
``data/serving_prices.csv`` (:func:`load_prices`):

* **rent GPUs** and pay by the hour whether they are busy or not. One GPU
  serving ``throughput_per_second`` tokens (or images) costs
  ``usd_per_million = price_per_hour / (throughput_per_second * 3600 * utilization) * 1e6``
  (:func:`cost_per_million`); a deployment of ``num_gpus`` always on costs a
  fixed ``num_gpus * hours * price_per_hour`` a month
  (:func:`self_hosted_monthly_cost`) and can serve at most
  ``throughput_per_second * num_gpus * utilization * seconds`` a month;
* **call an API** and pay ``volume * price_per_million / 1e6``, nothing when
  idle.

:func:`break_even_volume` is the monthly volume above which the fixed bill is
the smaller one, and it returns the deployment's capacity too: when the
break-even volume exceeds the capacity, those GPUs can never beat the API.
All money is in US dollars. Used in chapter 7.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

from bigmodel_utils.validation import fraction, is_number, non_negative, positive, positive_int

HOURS_PER_MONTH = 730.0
"""Hours in an average month (365 x 24 / 12), the unit cloud providers bill monthly estimates in."""
SECONDS_PER_HOUR = 3600.0
PER_MILLION = 1e6

PRICES_FILE = "serving_prices.csv"
PRICES_SHA256 = "48c1975f419eaf241d09a37d26b449d0ad1012c6744b5fb7f9bf002abd477029"
"""SHA-256 of ``data/serving_prices.csv``: a copy downloaded in Colab (no ``data/`` there) must match."""

PRICE_COLUMNS = ("kind", "provider", "item", "accelerator", "unit", "price_usd", "as_of", "source", "note")
UNITS = {
    "gpu_hour": ("usd_per_gpu_hour",),
    "api": ("usd_per_million_input_tokens", "usd_per_million_output_tokens", "usd_per_1000_images"),
}
"""The kinds of row in ``serving_prices.csv`` and the units each may use."""


UTILIZATION_EXAMPLE = "0.5 means busy half the time"
"""The hint in the error message for a ``utilization`` outside (0, 1]."""


# --------------------------------------------------------------------------------------
# The price table
# --------------------------------------------------------------------------------------


def _check_prices(table, origin: str = PRICES_FILE) -> None:
    missing = [c for c in PRICE_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{origin} lacks the columns {missing}")
    for number, row in enumerate(table.itertuples(), start=2):  # line 1 is the header
        where = f"{origin} line {number} ({row.item})"
        if row.kind not in UNITS:
            raise ValueError(f"{where}: kind must be one of {', '.join(UNITS)}, got {row.kind!r}")
        if row.unit not in UNITS[row.kind]:
            raise ValueError(f"{where}: unit of a {row.kind} row must be one of {UNITS[row.kind]}, got {row.unit!r}")
        if not (is_number(row.price_usd) and row.price_usd > 0):
            raise ValueError(f"{where}: price_usd must be a positive number, got {row.price_usd!r}")
        if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", str(row.as_of)):
            raise ValueError(f"{where}: as_of must be the month the price applied, YYYY-MM, got {row.as_of!r}")
        if not (isinstance(row.source, str) and re.match(r"https://\S+$", row.source)):
            raise ValueError(f"{where}: source must be the https:// address the price was read from, "
                             f"got {row.source!r}")
        if row.kind == "gpu_hour" and not (isinstance(row.accelerator, str) and row.accelerator):
            raise ValueError(f"{where}: a gpu_hour row must name its accelerator")


def load_prices():
    """The sourced serving prices as a DataFrame, one price per row, checked as it loads.

    Columns: ``kind`` (``"gpu_hour"``: on-demand price of one GPU for an hour,
    instance prices divided by the GPUs in the instance, as ``note`` says;
    ``"api"``: a hosted model's price), ``provider``, ``item``, ``accelerator``
    (a key of :data:`bigmodel_utils.techniques.decoding.GPUS` for GPU rows, empty for
    API rows), ``unit`` (``usd_per_gpu_hour``,
    ``usd_per_million_input_tokens``, ``usd_per_million_output_tokens`` or
    ``usd_per_1000_images``), ``price_usd``, ``as_of`` (the YYYY-MM the source
    shows the price for), ``source`` (the https address it was read from) and
    ``note``. Raises ValueError naming the line of any row without a source,
    a date, a positive price or a known unit. Prices change: read them as of
    their date. Used in chapter 7.
    """
    import pandas as pd

    from bigmodel_utils.data.files import book_file

    table = pd.read_csv(book_file(PRICES_FILE, PRICES_SHA256), dtype={"as_of": str})
    _check_prices(table)
    table["accelerator"] = table["accelerator"].fillna("")
    return table


def api_prices():
    """Input and output price per million tokens of each hosted LLM in :func:`load_prices`, one row per model.

    Columns ``provider``, ``model``, ``input_usd_per_million``,
    ``output_usd_per_million``, ``as_of`` and ``source`` (of the input price).
    Used in chapter 7.
    """
    table = load_prices()
    tokens = table[table["unit"].str.startswith("usd_per_million_")].copy()
    tokens["model"] = tokens["item"].str.replace(r" (input|output)$", "", regex=True)
    tokens["side"] = tokens["unit"].map({"usd_per_million_input_tokens": "input_usd_per_million",
                                         "usd_per_million_output_tokens": "output_usd_per_million"})
    wide = tokens.pivot_table(index=["provider", "model"], columns="side", values="price_usd", aggfunc="first")
    dated = tokens[tokens["side"] == "input_usd_per_million"].set_index(["provider", "model"])[["as_of", "source"]]
    return wide.join(dated).reset_index()[
        ["provider", "model", "input_usd_per_million", "output_usd_per_million", "as_of", "source"]
    ]


# --------------------------------------------------------------------------------------
# The cost model
# --------------------------------------------------------------------------------------


def cost_per_million(throughput_per_second, price_per_hour, utilization=1.0) -> float:
    """US dollars per million tokens (or images) from one GPU at ``price_per_hour``.

    ``price_per_hour / (throughput_per_second * 3600 * utilization) * 1e6``:
    the GPU is paid for every hour but busy only ``utilization`` of them, so
    an idle half doubles the cost of what it does serve.

    >>> round(cost_per_million(1000, 3.6), 6)   # 3.6 million tokens an hour for $3.60
    1.0

    Used in chapter 7.
    """
    served_per_hour = positive("throughput_per_second", throughput_per_second) * SECONDS_PER_HOUR
    served_per_hour *= fraction("utilization", utilization, UTILIZATION_EXAMPLE)
    return positive("price_per_hour", price_per_hour) / served_per_hour * PER_MILLION


def self_hosted_monthly_cost(price_per_hour, num_gpus=1, hours_per_month=HOURS_PER_MONTH, volume=0.0,
                             marginal_usd_per_million=0.0) -> float:
    """US dollars a month for ``num_gpus`` GPUs kept on for ``hours_per_month``, plus any per-token cost.

    ``num_gpus * hours_per_month * price_per_hour + volume * marginal_usd_per_million / 1e6``.
    The first term is fixed: reserved or always-on GPUs cost the same busy or
    idle. ``marginal_usd_per_million`` is what each million served adds on top
    (egress, logging; 0 by default). Used in chapter 7.
    """
    fixed = positive_int("num_gpus", num_gpus) * positive("hours_per_month", hours_per_month)
    fixed *= positive("price_per_hour", price_per_hour)
    return fixed + non_negative("volume", volume) * non_negative("marginal_usd_per_million",
                                                                   marginal_usd_per_million) / PER_MILLION


def monthly_capacity(throughput_per_second, num_gpus=1, utilization=1.0, hours_per_month=HOURS_PER_MONTH) -> float:
    """Tokens (or images) ``num_gpus`` GPUs can serve in a month at ``throughput_per_second`` each.

    ``throughput_per_second * num_gpus * utilization * hours_per_month * 3600``;
    ``utilization`` below 1 leaves room for traffic peaks. Used in chapter 7.
    """
    per_gpu = positive("throughput_per_second", throughput_per_second)
    per_gpu *= fraction("utilization", utilization, UTILIZATION_EXAMPLE)
    seconds = positive("hours_per_month", hours_per_month) * SECONDS_PER_HOUR
    return per_gpu * positive_int("num_gpus", num_gpus) * seconds


@dataclass(frozen=True)
class BreakEven:
    """Where an always-on deployment starts to cost less than an API; see :func:`break_even_volume`."""

    volume_per_month: float  # tokens (or images); math.inf when the API is never dearer
    fixed_usd_per_month: float
    capacity_per_month: float | None  # None when no throughput was given
    self_hosting_can_win: bool | None  # break-even volume within capacity; None without a throughput

    def as_dict(self) -> dict:
        return asdict(self)


def break_even_volume(price_per_hour_fixed, num_gpus, api_price_per_million, self_hosted_marginal=0.0,
                      throughput_per_second=None, utilization=1.0,
                      hours_per_month=HOURS_PER_MONTH) -> BreakEven:
    """The monthly volume above which ``num_gpus`` always-on GPUs cost less than an API, and their capacity.

    Self-hosting costs a fixed ``F = num_gpus * hours_per_month *
    price_per_hour_fixed`` a month plus ``self_hosted_marginal`` US dollars per
    million served; the API costs ``api_price_per_million`` per million. They
    are equal at

        ``volume = F * 1e6 / (api_price_per_million - self_hosted_marginal)``

    (``math.inf`` when the marginal cost is not below the API price). With
    ``throughput_per_second`` (per GPU), the result also holds the
    deployment's :func:`monthly_capacity` and whether the break-even volume
    lies within it: if not, these GPUs run out of capacity before they pay
    for themselves, since at full load they cost more per token than the API.
    Returns a :class:`BreakEven`. Used in chapter 7.
    """
    fixed = self_hosted_monthly_cost(price_per_hour_fixed, num_gpus, hours_per_month)
    margin = positive("api_price_per_million", api_price_per_million)
    margin -= non_negative("self_hosted_marginal", self_hosted_marginal)
    volume = fixed * PER_MILLION / margin if margin > 0 else math.inf
    capacity = None
    if throughput_per_second is not None:
        capacity = monthly_capacity(throughput_per_second, num_gpus, utilization, hours_per_month)
    return BreakEven(
        volume_per_month=volume, fixed_usd_per_month=fixed, capacity_per_month=capacity,
        self_hosting_can_win=None if capacity is None else volume <= capacity,
    )


def break_even_figure(price_per_hour_fixed, api_price_per_million, throughput_per_second, num_gpus=1,
                      utilization=1.0, title="Self-hosting against an API"):
    """Monthly cost against monthly volume for an API and for ``num_gpus`` always-on GPUs; returns the figure.

    Log-log axes; the self-hosted line is flat up to the deployment's capacity
    (a dotted line marks it) and the API line rises with volume; where they
    cross is :func:`break_even_volume`. Used in chapter 7.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    from bigmodel_utils.book.plots import label

    result = break_even_volume(price_per_hour_fixed, num_gpus, api_price_per_million,
                               throughput_per_second=throughput_per_second, utilization=utilization)
    capacity = result.capacity_per_month
    volumes = np.logspace(math.log10(capacity) - 3, math.log10(capacity) + 1, 200)
    fig, ax = plt.subplots()
    api_label = f"API, ${api_price_per_million:g} per million"
    ax.plot(volumes, volumes * api_price_per_million / PER_MILLION, label=api_label)
    within = volumes <= capacity
    ax.plot(volumes[within], np.full(within.sum(), result.fixed_usd_per_month),
            label=f"{num_gpus} GPU(s) at ${price_per_hour_fixed:g}/h, always on")
    ax.axvline(capacity, linestyle=":", color="0.4", label="capacity of those GPUs")
    if math.isfinite(result.volume_per_month) and result.volume_per_month <= capacity:
        ax.plot([result.volume_per_month], [result.fixed_usd_per_month], "o", color="black", label="break-even")
    label(ax, title, "volume per month (tokens or images)", "cost per month (US dollars)", xlog=True, ylog=True)
    ax.legend()
    return fig
