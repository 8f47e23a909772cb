"""The book's one table of accelerator datasheet figures, ``data/accelerators.csv``.

One row per accelerator: its dense peak throughput at each precision (TFLOP/s), its memory (GB), memory
bandwidth (GB/s) and board power (W), the month of the figures and the datasheet they come from. Three
places read it: :mod:`~bigmodel_utils.calculators.costs` prices training runs with the peaks and the power
(chapter 9), :mod:`~bigmodel_utils.techniques.decoding` predicts decoding speed from the bandwidths
(chapter 7), and ``tools/gpu_check.py`` divides measured FLOP/s by the peaks (model FLOP utilisation),
matching a GPU's name against ``device_pattern``. ``data/README.md`` says how the figures were read.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass

from bigmodel_utils.data.files import book_file
from bigmodel_utils.validation import check_choice

ACCELERATORS_FILE = "accelerators.csv"
ACCELERATORS_SHA256 = "2a15670b09c03be5e2530f267e2636cc979024bef9bdf33987528aaf445990f3"
"""SHA-256 of ``data/accelerators.csv``: a copy downloaded in Colab (no ``data/`` there) must match."""

PRECISIONS = ("bfloat16", "float16", "tf32", "float32")
"""The precisions the table gives dense peaks for, one ``<precision>_tflops`` column each."""


@dataclass(frozen=True)
class Datasheet:
    """One row of ``data/accelerators.csv``; a figure the datasheet does not give (or the book does not use) is
    None, and left out of ``peak_tflops``."""

    key: str  # the short name the book uses: "T4", "A100-80GB", "H100"
    name: str  # e.g. "NVIDIA H100 SXM5"
    device_pattern: str  # regular expression for the names GPUs report ("" for none); the first row matching wins
    peak_tflops: dict[str, float]  # dense peak in TFLOP/s per precision of PRECISIONS (no 2:4 sparsity)
    memory_bytes: float | None  # decimal: 80 GB = 80e9 bytes
    memory_bandwidth: float | None  # bytes per second, decimal (1 TB/s = 1e12 B/s), the datasheet's peak
    power_watts: float | None  # thermal design power of one board
    as_of: str  # YYYY-MM of the datasheet or announcement ("" where not recorded)
    source: str


def _number(text: str, scale: float = 1.0) -> float | None:
    return float(text) * scale if text else None


@functools.cache
def datasheets() -> dict[str, Datasheet]:
    """Every row of ``data/accelerators.csv`` by its ``key``, in the file's order (read once)."""
    with open(book_file(ACCELERATORS_FILE, ACCELERATORS_SHA256), newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return {
        row["key"]: Datasheet(
            key=row["key"], name=row["name"], device_pattern=row["device_pattern"],
            peak_tflops={p: float(row[f"{p}_tflops"]) for p in PRECISIONS if row[f"{p}_tflops"]},
            memory_bytes=_number(row["memory_gb"], 1e9),
            memory_bandwidth=_number(row["memory_bandwidth_gb_per_s"], 1e9),
            power_watts=_number(row["power_watts"]),
            as_of=row["as_of"], source=row["source"],
        )
        for row in rows
    }


def datasheet(key: str) -> Datasheet:
    """The :class:`Datasheet` of the accelerator called ``key`` (``"H100"``); a ValueError lists the keys."""
    return datasheets()[check_choice("accelerator", key, datasheets())]
