"""Run profiles, seeding, device detection and the environment report.

It imports only the layers below the book's (device detection from
:mod:`~bigmodel_utils.backend.devices`, :mod:`~bigmodel_utils.backend.tensorflow_only` inside the
branch taken under TensorFlow, the atomic JSON write of :mod:`~bigmodel_utils.data.files`) and does
not import Keras until a function needs it, so a chapter can set the profile before the framework starts. It
never chooses the Keras backend: that stays the reader's (``KERAS_BACKEND``,
else Keras's default), and :func:`environment_report` says which one runs.

Used in every chapter.
"""

from __future__ import annotations

import ast
import math
import os
import platform
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bigmodel_utils.backend import devices
from bigmodel_utils.data.files import write_json_atomically
from bigmodel_utils.validation import check_int

# Keep TensorFlow's start-up chatter (CUDA stubs, CPU-instruction notices,
# oneDNN banners) out of the rendered pages. These only take effect if they
# are set before TensorFlow is imported, which is why they live here.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


PROFILES = ("smoke", "quick", "full", "auto")
"""Valid values of ``BOOK_PROFILE``."""

PROFILE_DESCRIPTIONS = {
    "smoke": "tests: tiny data and budgets, seconds per chapter",
    "quick": "CPU default: bundled data, at most three minutes a chapter, meaningful results",
    "full": "GPU: full datasets, classic input sizes, real epoch counts",
    "auto": "full when a GPU or TPU is visible, otherwise quick",
}


class ProfileError(ValueError):
    """Raised for a ``BOOK_PROFILE`` value that is not one of :data:`PROFILES`."""


def in_colab() -> bool:
    """Return True when running inside Google Colab."""
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


def list_accelerators() -> list[str]:
    """Return the visible GPUs and TPUs, for example ``["GPU:0"]``; empty on a CPU-only machine.

    The Keras backend's devices (:func:`bigmodel_utils.backend.devices.accelerators`), or Colab's TPU
    when the backend sees none but ``COLAB_TPU_ADDR`` names one.
    """
    found = [str(accelerator) for accelerator in devices.accelerators()]
    if not found and os.environ.get("COLAB_TPU_ADDR"):
        found = ["TPU:0"]
    return found


def resolve_profile(name: str | None = None) -> str:
    """Return the concrete run profile: ``"smoke"``, ``"quick"`` or ``"full"``.

    ``name`` defaults to the ``BOOK_PROFILE`` environment variable, then to
    ``"auto"``, which becomes ``"full"`` when a GPU or TPU is visible and
    ``"quick"`` otherwise. Any other value raises :class:`ProfileError` with a
    one-line message naming the bad value and the valid ones.
    """
    raw = os.environ.get("BOOK_PROFILE", "auto") if name is None else name
    value = str(raw).strip().lower()
    if value not in PROFILES:
        raise ProfileError(f"BOOK_PROFILE must be one of {', '.join(PROFILES)}; got {raw!r}")
    if value == "auto":
        return "full" if list_accelerators() else "quick"
    return value


def by_profile(profile: str, *, smoke: Any, quick: Any, full: Any) -> Any:
    """Pick the default for ``profile`` out of three values; used in every parameters cell.

    >>> by_profile("quick", smoke=1, quick=5, full=30)
    5
    """
    choices = {"smoke": smoke, "quick": quick, "full": full}
    if profile not in choices:
        raise ProfileError(
            f"profile must be one of smoke, quick, full (resolve 'auto' first); got {profile!r}"
        )
    return choices[profile]


def set_seed(seed: int) -> int:
    """Seed Python, NumPy and the Keras backend from one integer and return it.

    Keras's ``set_random_seed`` covers Python's ``random``, NumPy and the
    backend (TensorFlow, JAX or PyTorch), so one call makes a chapter repeatable.
    """
    seed = check_int("seed", seed, minimum=0)
    random.seed(seed)
    import numpy as np

    np.random.seed(seed)
    import keras

    keras.utils.set_random_seed(seed)
    return seed


def gpu_advice(accelerators: list[str] | None = None) -> str:
    """Return one sentence about the accelerator: what was found, or how to get a GPU in Colab."""
    accelerators = list_accelerators() if accelerators is None else accelerators
    if accelerators:
        return f"Accelerator found: {', '.join(accelerators)}."
    if in_colab():
        return (
            "No GPU found. In Colab choose Runtime > Change runtime type > T4 GPU, "
            "then Runtime > Run all; the chapter also runs on the CPU, only slower."
        )
    return "No GPU found: running on the CPU (set BOOK_PROFILE=quick or smoke for short runs)."


@dataclass(frozen=True)
class EnvironmentReport:
    """What a chapter ran on; printed near the top of every chapter."""

    items: dict[str, str]

    def __str__(self) -> str:
        width = max(len(k) for k in self.items)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in self.items.items())

    def _repr_pretty_(self, printer, cycle) -> None:  # IPython display hook
        printer.text(str(self))


def environment_report(profile: str, data_source: str | None = None) -> EnvironmentReport:
    """Return versions, devices, profile and data source as an :class:`EnvironmentReport`."""
    import keras
    import numpy as np

    items = {
        "profile": f"{profile} ({PROFILE_DESCRIPTIONS.get(profile, '?')})",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
    }
    if keras.backend.backend() == "tensorflow":
        from bigmodel_utils.backend import tensorflow_only

        items["tensorflow"] = tensorflow_only.version()
    elif keras.backend.backend() == "jax":
        import jax

        items["jax"] = jax.__version__
    accelerators = list_accelerators()
    items["devices"] = ", ".join(accelerators) if accelerators else f"CPU only ({os.cpu_count()} cores)"
    items["advice"] = gpu_advice(accelerators)
    if data_source is not None:
        items["data"] = data_source
    return EnvironmentReport(items)


def to_jsonable(value: Any) -> Any:
    """``value`` with NumPy scalars and arrays turned into Python numbers and lists, paths into strings,
    tuples into lists, dict keys into strings and NaN or infinite floats into None (JSON has no NaN).

    What :func:`write_results` writes; ``benchmarks/throughput.py`` uses it for its report.
    """
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # NumPy scalars and arrays
        return to_jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_results(path: str | os.PathLike | None, results: dict[str, Any]) -> dict[str, Any] | None:
    """Write a chapter's key results as JSON to ``path`` (the chapter's ``RESULTS_PATH``).

    Does nothing and returns None when ``path`` is None, so the last cell of a
    chapter can always call it. The file is written atomically
    (:func:`bigmodel_utils.data.files.write_json_atomically`). Returns the JSON-ready
    dict that was written (:func:`to_jsonable`).
    """
    if path is None:
        return None
    if not isinstance(results, dict):
        raise TypeError(f"results must be a dict, got {type(results).__name__}")
    clean = to_jsonable(results)
    write_json_atomically(path, clean)
    return clean


def artifact_dir(name: str) -> Path:
    """Return (and create) the folder where a chapter keeps what it trains: checkpoints, logs, tuner trials.

    It is ``$BOOK_ARTIFACTS_DIR/<name>`` when that variable is set (the tests
    point it at a temporary folder), else ``./artifacts/<name>`` beside the
    notebook. In Colab, point ``BOOK_ARTIFACTS_DIR`` at a mounted Google Drive
    folder to keep checkpoints across disconnects.
    """
    if not name or any(sep in name for sep in ("/", "\\")) or name in (".", ".."):
        raise ValueError(f"name must be a plain folder name such as '04_cnn_on_gpu', got {name!r}")
    root = Path(os.environ.get("BOOK_ARTIFACTS_DIR", "artifacts"))
    path = root / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def glue(name: str, value: Any, display: bool = False) -> None:
    """Store ``value`` under ``name`` for the book's prose ({glue:text}`name`).

    Returns None, so a cell that ends with a glue call shows no extra output. NumPy scalars are
    turned into plain Python numbers first: myst-nb formats ``{glue:text}`x:.1f``` from the stored
    text, and ``np.float64(0.5)`` would not parse as a number.

    Jupyter Book's ``myst_nb.glue`` does the work when it is installed (``make book``); in Colab, where
    myst-nb is absent and nothing renders the prose, it does nothing, so chapters need not install Sphinx.
    """
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        return None
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        value = value.item()
    myst_glue(name, value, display=display)
    return None


ARGUMENT_CHECKS = ("check_int", "check_number", "check_choice", "positive", "positive_int", "non_negative",
                   "fraction")
"""The functions of :mod:`bigmodel_utils.validation`: :func:`show_source` folds the statements that call them."""


FOLDED_CHECKS = "# (argument checks left out: bigmodel_utils.validation)"


def _argument_checks(body: list) -> list:
    """The statements at the start of a function's body (after its docstring) that only check arguments."""
    checks = []
    for statement in body:
        value = getattr(statement, "value", None)
        call = value if isinstance(statement, (ast.Expr, ast.Assign)) else None
        name = getattr(getattr(call, "func", None), "id", None) or getattr(getattr(call, "func", None), "attr", None)
        if isinstance(call, ast.Call) and name in ARGUMENT_CHECKS:
            checks.append(statement)
        elif not (isinstance(statement, ast.Expr) and isinstance(value, ast.Constant)):  # a docstring
            break
    return checks


def show_source(*objects, docstrings: bool = False) -> None:
    """Print the source code of functions or classes of the package: exactly the code the next cells run.

    Chapters use it where the code is the lesson, instead of retyping a helper's body. Docstrings are left
    out unless ``docstrings=True``: the chapter's prose says what the code is for. So are the argument checks
    a public function starts with (calls to :mod:`bigmodel_utils.validation`), folded into one comment.
    """
    import inspect
    import textwrap

    if not objects:
        raise ValueError("show_source needs at least one function or class")
    shown = []
    for item in objects:
        lines = textwrap.dedent(inspect.getsource(item)).splitlines()
        if not docstrings:
            drop, notes = set(), {}
            for node in ast.walk(ast.parse("\n".join(lines))):
                body = getattr(node, "body", None)
                if not isinstance(node, (ast.FunctionDef, ast.ClassDef)) or not body:
                    continue
                if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                        and isinstance(body[0].value.value, str):
                    drop.update(range(body[0].lineno - 1, body[0].end_lineno))
                checks = _argument_checks(body) if isinstance(node, ast.FunctionDef) else []
                if checks:
                    for check in checks:
                        drop.update(range(check.lineno - 1, check.end_lineno))
                    notes[checks[0].lineno - 1] = " " * checks[0].col_offset + FOLDED_CHECKS
            kept = [notes.get(number, line) for number, line in enumerate(lines)
                    if number not in drop or number in notes]
            # no blank line between a class's header and its first method
            lines = [line for i, line in enumerate(kept)
                     if line.strip() or not (i and kept[i - 1].rstrip().endswith(":"))]
        shown.append("\n".join(lines).rstrip())
    print("\n\n".join(shown))
