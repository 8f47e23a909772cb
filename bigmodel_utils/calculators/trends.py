"""Growth trends: exponential fits over time and power-law fits between quantities.

Chapter 1 fits how fast training compute and parameter counts grew (a
doubling time); chapter 9 fits power laws (loss against parameters or
compute). Both are straight lines on log axes, fitted by least squares on
log10 of the values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bigmodel_utils.validation import check_int, check_number


def _clean_xy(x, y, name_y: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and {name_y} must have the same length, got {x.size} and {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    if np.any(y[keep] <= 0):
        raise ValueError(f"{name_y} must be positive to be fitted on a log scale")
    if keep.sum() < 3:
        raise ValueError(f"need at least 3 finite points to fit a trend, got {int(keep.sum())}")
    return x[keep], y[keep]


@dataclass(frozen=True)
class ExponentialTrend:
    """log10(value) = intercept + slope * year, fitted by least squares."""

    slope: float  # orders of magnitude per year
    intercept: float
    r2: float
    n: int

    @property
    def doubling_time_months(self) -> float:
        """Months for the value to double: 12 * log10(2) / slope."""
        return 12.0 * np.log10(2.0) / self.slope

    @property
    def growth_per_year(self) -> float:
        """Multiplicative growth per year, 10 ** slope."""
        return 10.0**self.slope

    def predict(self, years) -> np.ndarray:
        return 10.0 ** (self.intercept + self.slope * np.asarray(years, dtype=float))


def _least_squares(x: np.ndarray, log_y: np.ndarray) -> tuple[float, float, float]:
    slope, intercept = np.polyfit(x, log_y, 1)
    residual = log_y - (intercept + slope * x)
    total = log_y - log_y.mean()
    r2 = 1.0 - float(residual @ residual) / float(total @ total) if total.any() else 1.0
    return float(slope), float(intercept), r2


def fit_exponential_trend(years, values) -> ExponentialTrend:
    """Fit values growing exponentially in time (for example FLOP against publication year).

    Returns an :class:`ExponentialTrend` whose ``doubling_time_months`` is the
    headline number. Non-finite pairs are dropped; values must be positive.
    Used in chapters 1 and 9.
    """
    x, y = _clean_xy(years, values, "values")
    return ExponentialTrend(*_least_squares(x, np.log10(y)), n=int(x.size))


def bootstrap_doubling_time(years, values, num_samples: int = 1000, seed: int = 0, level: float = 0.95):
    """Confidence interval of the doubling time (months) by refitting on resampled points.

    Draws ``num_samples`` samples of the (year, value) pairs with replacement,
    fits :func:`fit_exponential_trend` to each and returns the
    ``(low, high)`` percentiles for the confidence ``level``. Used in chapter 1.
    """
    x, y = _clean_xy(years, values, "values")
    num_samples = check_int("num_samples", num_samples, minimum=10)
    check_number("level", level, 0.5, 1, include_maximum=False)
    rng = np.random.default_rng(seed)
    months = []
    for _ in range(num_samples):
        pick = rng.integers(0, x.size, x.size)
        if np.ptp(x[pick]) > 0:
            slope = _least_squares(x[pick], np.log10(y[pick]))[0]
            months.append(12.0 * np.log10(2.0) / slope)
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(months, [tail, 100.0 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class PowerLaw:
    """y = coefficient * x ** exponent, fitted as a line on log-log axes."""

    exponent: float
    coefficient: float
    r2: float
    n: int

    def predict(self, x) -> np.ndarray:
        return self.coefficient * np.asarray(x, dtype=float) ** self.exponent


def fit_power_law(x, y) -> PowerLaw:
    """Fit y = a * x**b by least squares on log10(x), log10(y); both must be positive. Used in chapter 9."""
    x, y = _clean_xy(x, y, "y")
    if np.any(x <= 0):
        raise ValueError("x must be positive to be fitted on a log scale")
    slope, intercept, r2 = _least_squares(np.log10(x), np.log10(y))
    return PowerLaw(exponent=slope, coefficient=10.0**intercept, r2=r2, n=int(x.size))


# ---------------------------------------------------------------------------
# Data loaders: the landmark table and Epoch AI's notable-models table
# ---------------------------------------------------------------------------

LANDMARK_FILE = "landmark_models.csv"
EPOCH_FILE = "epoch_notable_models.csv"
DATA_SHA256 = {
    LANDMARK_FILE: "f78921c88ec7a184d53701c7db200ae821a616e83b30fbc7e3c5fa19f3468684",
    EPOCH_FILE: "a5af4653d1c13d463952880b29190ad514842e7f5b4a3dabbfac4d32aad07a6c",
}
"""SHA-256 of the bundled CSVs: a copy downloaded in Colab (no ``data/`` there) must match."""

LANDMARK_COLUMNS = (
    "name", "year", "organization", "domain", "parameters", "active_parameters",
    "training_flop", "flop_kind", "training_data", "source", "notes",
)
EPOCH_COLUMNS = (
    "model", "domain", "domains", "organization", "publication_date", "year",
    "parameters", "training_flop", "training_data_size", "confidence", "notes",
)
FLOP_KINDS = ("reported", "estimated")
DOMAINS = ("vision", "language", "speech", "image generation", "multimodal", "games", "biology", "other")
"""Domain labels used by both tables (lower case); Epoch's finer labels are folded into these."""


def _data_path(filename: str):
    """Local ``data/<filename>`` if present, else a verified download from the book's repository."""
    from bigmodel_utils.data.files import book_file

    return book_file(filename, DATA_SHA256[filename])


def load_landmark_models(include_tokens: bool = False):
    """Return the hand-checked table of about 40 landmark models (LeNet-5, 1998, to 2025) as a DataFrame.

    Columns: ``name``, ``year`` (int), ``organization``, ``domain`` (one of
    :data:`DOMAINS`), ``parameters`` (total, float; NaN if undisclosed),
    ``active_parameters`` (parameters used per token, NaN unless the model is a
    sparse mixture of experts), ``training_flop`` (total training compute in FLOP,
    NaN if neither published nor estimated), ``flop_kind`` (``"reported"`` by the
    developers or ``"estimated"`` by others, NaN where there is no figure),
    ``training_data``, ``source`` and ``notes`` (where each number comes from).
    With ``include_tokens=True`` a last column ``training_tokens`` gives the
    tokens seen in pre-training where the source states them (NaN elsewhere).
    See ``data/README.md``. Used in chapters 1, 2 and 9.
    """
    import pandas as pd

    table = pd.read_csv(_data_path(LANDMARK_FILE))
    missing = [c for c in LANDMARK_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{LANDMARK_FILE} lacks the columns {missing}")
    bad = set(table["flop_kind"].dropna()) - set(FLOP_KINDS)
    if bad:
        raise ValueError(f"flop_kind must be one of {FLOP_KINDS}, found {sorted(bad)}")
    for column in ("parameters", "active_parameters", "training_flop", "training_tokens"):
        table[column] = table[column].astype(float)
    table["year"] = table["year"].astype(int)
    return table[list(LANDMARK_COLUMNS) + (["training_tokens"] if include_tokens else [])]


def _fractional_year(dates):
    """Publication dates as fractional years: 2020-07-02 -> about 2020.5."""
    start = dates.dt.to_period("Y").dt.start_time
    days = 365.0 + dates.dt.is_leap_year.astype(float)
    return dates.dt.year + (dates - start).dt.days / days


def load_epoch_models():
    """Return Epoch AI's "Notable AI Models" table (snapshot 2025-03, trimmed) as a DataFrame.

    One row per model, with columns ``model``, ``domain`` (the main domain,
    one of :data:`DOMAINS`), ``domains`` (Epoch's original list), ``organization``,
    ``publication_date`` (datetime64), ``year`` (fractional year, float),
    ``parameters``, ``training_flop`` (FLOP), ``training_data_size``
    (datapoints, as Epoch counts them), ``confidence`` (Epoch's rating of the
    compute figure) and ``notes`` (corrections this book made). NaN where
    Epoch has no value. Data: Epoch AI, CC BY 4.0; credit it under every
    figure. Used in chapters 1 and 9.
    """
    import pandas as pd

    table = pd.read_csv(_data_path(EPOCH_FILE), parse_dates=["publication_date"])
    missing = [c for c in EPOCH_COLUMNS if c not in table.columns and c != "year"]
    if missing:
        raise ValueError(f"{EPOCH_FILE} lacks the columns {missing}")
    table["year"] = _fractional_year(table["publication_date"]).astype(float)
    for column in ("parameters", "training_flop", "training_data_size"):
        table[column] = table[column].astype(float)
    table["notes"] = table["notes"].fillna("")
    return table[list(EPOCH_COLUMNS)]


EPOCH_RAW_COLUMNS = {
    "Model": "model",
    "Domain": "domains",
    "Organization": "organization",
    "Publication date": "publication_date",
    "Parameters": "parameters",
    "Training compute (FLOP)": "training_flop",
    "Training dataset size (datapoints)": "training_data_size",
    "Confidence": "confidence",
}
"""Columns kept from Epoch AI's CSV, and the names the book gives them."""

EPOCH_CORRECTIONS = {
    ("Llama 2-7B", "parameters"): (
        7.0e9,
        "parameters corrected from 7e10 to 7e9 (Touvron et al. 2023, arXiv:2307.09288, Table 1)",
    ),
}
"""Rows of the Epoch snapshot known to be wrong: (model, column) -> (right value, note with the source)."""


def main_domain(domains: str) -> str:
    """Fold Epoch's domain list (for example ``"Multimodal,Language,Vision"``) into one of :data:`DOMAINS`."""
    if not isinstance(domains, str) or not domains.strip():
        return "other"
    parts = [p.strip().lower() for p in domains.split(",")]
    if "multimodal" in parts or ("language" in parts and "vision" in parts):
        return "multimodal"
    for part in parts:
        if part in DOMAINS and part != "other":
            return part
    return "speech" if "audio" in parts else "other"


def trim_epoch_table(raw_csv):
    """Build ``data/epoch_notable_models.csv`` from Epoch AI's full CSV: keep the columns the book uses,
    fold domains, apply :data:`EPOCH_CORRECTIONS` and record each in ``notes``. Returns the DataFrame."""
    import pandas as pd

    raw = pd.read_csv(raw_csv)
    missing = [c for c in EPOCH_RAW_COLUMNS if c not in raw.columns]
    if missing:
        raise ValueError(f"raw_csv lacks Epoch's columns {missing}")
    table = raw[list(EPOCH_RAW_COLUMNS)].rename(columns=EPOCH_RAW_COLUMNS)
    table = table.dropna(subset=["publication_date"]).reset_index(drop=True)
    table["domain"] = table["domains"].map(main_domain)
    table["notes"] = ""
    for (model, column), (value, note) in EPOCH_CORRECTIONS.items():
        rows = table["model"] == model
        if rows.sum() != 1:
            raise ValueError(f"correction for {model!r} matches {int(rows.sum())} rows, expected 1")
        table.loc[rows, column] = value
        table.loc[rows, "notes"] = note
    return table[[c for c in EPOCH_COLUMNS if c != "year"]]


EPOCH_NAMES = {
    "LeNet-5": "LeNet-5", "AlexNet": "AlexNet", "VGG-16": "VGG16",
    "GoogLeNet (Inception v1)": "GoogLeNet / InceptionV1",
    "Seq2Seq LSTM": "Seq2Seq LSTM", "ResNet-152": "ResNet-152 (ImageNet)", "Transformer (big)": "Transformer",
    "BERT-Large": "BERT-Large", "GPT-2 (1.5B)": "GPT-2 (1.5B)", "Megatron-LM (8.3B)": "Megatron-LM (8.3B)",
    "T5-11B": "T5-11B", "GPT-3 (175B)": "GPT-3 175B (davinci)", "ViT-H/14": "ViT-Huge/14", "Switch-C": "Switch",
    "DALL-E": "DALL-E", "CLIP (ViT-L/14@336px)": "CLIP (ViT L/14@336px)",
    "Megatron-Turing NLG 530B": "Megatron-Turing NLG 530B", "Gopher": "Gopher (280B)", "Chinchilla": "Chinchilla",
    "PaLM (540B)": "PaLM (540B)", "OPT-175B": "OPT-175B", "BLOOM (176B)": "BLOOM-176B",
    "Stable Diffusion v1": "Stable Diffusion (LDM-KL-8-G)", "Whisper large": "Whisper", "ViT-22B": "ViT-22B",
    "LLaMA-65B": "LLaMA-65B", "GPT-4": "GPT-4", "Llama 2 70B": "Llama 2-70B", "Falcon-180B": "Falcon-180B",
    "Mixtral 8x7B": "Mixtral 8x7B", "Llama 3.1 405B": "Llama 3.1-405B", "Qwen2.5-72B": "Qwen2.5-72B",
    "DeepSeek-V3": "DeepSeek-V3",
}
"""Landmark name -> the same model's name in Epoch AI's table (models after March 2025 are not in it)."""


def compare_with_epoch(landmarks, epoch):
    """Line up each landmark model with its row in Epoch AI's table.

    Returns a DataFrame indexed by landmark name with the parameters and
    training FLOP from both tables and their ratios (landmark / Epoch); a ratio
    far from 1 is a disagreement the landmark table's ``notes`` should explain.
    Used in chapter 1.
    """
    import pandas as pd

    epoch_rows = epoch.drop_duplicates("model").set_index("model")
    rows = []
    for name, epoch_name in EPOCH_NAMES.items():
        if name not in set(landmarks["name"]) or epoch_name not in epoch_rows.index:
            continue
        mine = landmarks.loc[landmarks["name"] == name].iloc[0]
        theirs = epoch_rows.loc[epoch_name]
        rows.append({
            "name": name, "epoch_model": epoch_name,
            "parameters": mine["parameters"], "epoch_parameters": theirs["parameters"],
            "training_flop": mine["training_flop"], "epoch_training_flop": theirs["training_flop"],
        })
    table = pd.DataFrame(rows).set_index("name")
    table["parameter_ratio"] = table["parameters"] / table["epoch_parameters"]
    table["flop_ratio"] = table["training_flop"] / table["epoch_training_flop"]
    return table
