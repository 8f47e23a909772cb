"""What a training run costs: accelerator-hours, wall-clock days, money and energy.

The calculator turns a training budget in FLOP into resources with four
numbers a reader can look up or choose:

* ``gpu_hours = training_flop / (peak_flops * utilization) / 3600``, where
  ``peak_flops`` is the accelerator's dense peak in FLOP per second at the
  training precision and ``utilization`` is the model FLOP utilisation (MFU):
  the fraction of that peak the run really achieved (large runs report
  0.3 to 0.5);
* ``days = gpu_hours / num_gpus / 24``;
* ``cost = gpu_hours * price_per_gpu_hour`` (a price the reader states);
* ``energy = gpu_hours * power_watts * pue`` (board power times the data
  centre's power usage effectiveness, PUE >= 1).

:data:`PUBLISHED_RUNS` holds two runs whose papers or model cards report both
the FLOP and the accelerator time, so the calculator can be checked against
them (chapter 9 does). Used in chapter 9; chapter 2 computes the FLOP
(``bigmodel_utils.calculators.footprint.training_flops``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from bigmodel_utils.calculators.accelerators import datasheet
from bigmodel_utils.validation import check_choice, check_int, check_number, fraction, positive

SECONDS_PER_HOUR = 3600.0
HOURS_PER_DAY = 24.0


@dataclass(frozen=True)
class Accelerator:
    """One accelerator: its dense peak throughput at the usual training precision and its board power."""

    name: str
    peak_flops: float  # FLOP per second, dense (no structured sparsity)
    precision: str
    power_watts: float  # thermal design power of one board, in watts
    source: str


def _training_figures(key: str) -> Accelerator:
    """The accelerator's bfloat16 peak (its float16 peak where it has no bfloat16) and power, from
    ``data/accelerators.csv`` (:mod:`bigmodel_utils.calculators.accelerators`)."""
    sheet = datasheet(key)
    precision = "bfloat16" if "bfloat16" in sheet.peak_tflops else "float16"
    return Accelerator(sheet.name, sheet.peak_tflops[precision] * 1e12, f"{precision} dense", sheet.power_watts,
                       sheet.source)


ACCELERATORS = {key: _training_figures(key) for key in ("T4", "V100", "A100", "H100")}
"""Accelerators the book uses in examples, keyed by short name. NVIDIA's datasheets quote tensor-core peaks
"with sparsity" (2:4 structured sparsity) from Ampere on; a dense matrix product gets half of that, which is
what the table holds (the H100's 1,979 bfloat16 TFLOP/s are 989.5 dense)."""


@dataclass(frozen=True)
class PublishedRun:
    """A training run whose compute and accelerator time were both published."""

    name: str
    training_flop: float
    accelerator: str  # a key of ACCELERATORS
    num_gpus: int
    gpu_hours: float
    energy_mwh: float | None
    source: str


PUBLISHED_RUNS = {
    "GPT-3 175B": PublishedRun(
        "GPT-3 175B", 3.14e23, "V100", 10_000, 10_000 * 14.8 * HOURS_PER_DAY, 1287.0,
        "FLOP: Brown et al. 2020 (Table D.1); 10,000 V100 GPUs for 14.8 days and 1,287 MWh: "
        "Patterson et al. 2021 (Table 4)",
    ),
    "Llama 3.1 405B": PublishedRun(
        "Llama 3.1 405B", 3.8e25, "H100", 16_384, 30.84e6, None,
        "FLOP and up to 16,384 H100 GPUs: Llama Team 2024; 30.84M H100 GPU-hours for the 405B model "
        "(39.3M for the 8B, 70B and 405B models together): Llama 3.1 model card",
    ),
}
"""Two published runs for checking the calculator (both FLOP figures match notable_models_checked.csv)."""


def accelerator(name_or_spec: str | Accelerator) -> Accelerator:
    """Return the :class:`Accelerator` for a short name such as ``"H100"`` (or pass one through)."""
    if isinstance(name_or_spec, Accelerator):
        return name_or_spec
    return ACCELERATORS[check_choice("accelerator", name_or_spec, ACCELERATORS)]


def gpu_hours(training_flop, peak_flops, utilization) -> float:
    """Accelerator-hours to do ``training_flop`` FLOP at ``utilization`` x ``peak_flops`` FLOP/s.

    >>> round(gpu_hours(3.6e18, 1e15, 1.0), 6)   # one PFLOP/s for an hour
    1.0
    """
    flop = positive("training_flop", training_flop)
    utilization = fraction("utilization", utilization, "0.4 means 40% of peak")
    return flop / (positive("peak_flops", peak_flops) * utilization) / SECONDS_PER_HOUR


def implied_utilization(training_flop, gpu_hours_used, peak_flops) -> float:
    """The utilisation (MFU) a run achieved: FLOP done over FLOP the accelerators could have done.

    The inverse of :func:`gpu_hours`. Published accelerator-hours include
    restarts, evaluation and idle time, so this is a lower bound on the MFU
    of the steady training loop.
    """
    capacity = positive("gpu_hours_used", gpu_hours_used) * SECONDS_PER_HOUR * positive("peak_flops", peak_flops)
    return positive("training_flop", training_flop) / capacity


def training_days(gpu_hours_needed, num_gpus) -> float:
    """Wall-clock days for ``gpu_hours_needed`` spread evenly over ``num_gpus`` accelerators."""
    num_gpus = check_int("num_gpus", num_gpus, minimum=1)
    return positive("gpu_hours_needed", gpu_hours_needed) / num_gpus / HOURS_PER_DAY


def training_cost(gpu_hours_needed, price_per_gpu_hour) -> float:
    """Money for ``gpu_hours_needed`` at ``price_per_gpu_hour`` (in the price's currency, e.g. US dollars)."""
    return positive("gpu_hours_needed", gpu_hours_needed) * positive("price_per_gpu_hour", price_per_gpu_hour)


def energy_mwh(gpu_hours_needed, power_watts, pue=1.0) -> float:
    """Electrical energy in megawatt-hours: accelerator-hours x board power x PUE (data-centre overhead).

    Board power alone leaves out the host CPUs, memory and network, so even
    with a PUE this is an estimate from below.
    """
    pue = check_number("pue", pue, minimum=1)
    return positive("gpu_hours_needed", gpu_hours_needed) * positive("power_watts", power_watts) * pue / 1e6


@dataclass(frozen=True)
class TrainingEstimate:
    """The resources for one training run; see :func:`estimate_training_run`."""

    training_flop: float
    accelerator: str
    utilization: float
    num_gpus: int
    gpu_hours: float
    days: float
    price_per_gpu_hour: float
    cost: float
    pue: float
    energy_mwh: float

    def as_dict(self) -> dict:
        return asdict(self)


def estimate_training_run(
    training_flop,
    accelerator_name: str | Accelerator = "H100",
    utilization: float = 0.4,
    num_gpus: int = 1024,
    price_per_gpu_hour: float = 2.0,
    pue: float = 1.1,
) -> TrainingEstimate:
    """Accelerator-hours, days, cost and energy of a run of ``training_flop`` FLOP.

    ``utilization`` is the fraction of the accelerator's dense peak the run
    achieves (MFU), ``price_per_gpu_hour`` a price per accelerator-hour that
    the caller states (the default, 2.0, is only an example), ``pue`` the data
    centre's power usage effectiveness. Used in chapter 9.
    """
    spec = accelerator(accelerator_name)
    hours = gpu_hours(training_flop, spec.peak_flops, utilization)
    days = training_days(hours, num_gpus)
    cost = training_cost(hours, price_per_gpu_hour)
    energy = energy_mwh(hours, spec.power_watts, pue)  # the arguments are checked: now they can be converted
    return TrainingEstimate(
        training_flop=float(training_flop), accelerator=spec.name, utilization=float(utilization),
        num_gpus=int(num_gpus), gpu_hours=hours, days=days, price_per_gpu_hour=float(price_per_gpu_hour),
        cost=cost, pue=float(pue), energy_mwh=energy,
    )
