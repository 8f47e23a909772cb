"""Which accelerators the Keras backend sees: the package's one answer, under TensorFlow or JAX.

:func:`accelerators` lists the visible GPUs and TPUs with their names and, for NVIDIA GPUs, their
compute capability. :mod:`bigmodel_utils.book.runtime` prints them in every chapter's environment
report and picks the ``full`` profile when there is one; :func:`bigmodel_utils.cnn.training.device_info`
reads the first one to choose chapter 4's mixed-precision policy. Keras is imported when the function
runs, never at import time, so a chapter can set its profile before the framework starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bigmodel_utils import backend as backend_seam


@dataclass(frozen=True)
class Accelerator:
    """One GPU or TPU: ``kind`` is "GPU" or "TPU", ``index`` its number among the backend's devices.

    ``compute_capability`` is (major, minor) for NVIDIA GPUs (7.5 for a T4, 8.0 for an A100, 9.0 for
    an H100) and None otherwise. ``str()`` gives the short form the environment report prints, "GPU:0".
    """

    kind: str
    index: int
    name: str
    compute_capability: tuple[int, int] | None = None

    def __str__(self) -> str:
        return f"{self.kind}:{self.index}"


def _capability(value: Any) -> tuple[int, int] | None:
    """A compute capability as (major, minor), from a pair or a "8.0" string as the backends report it."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return int(value[0]), int(value[1])
    parts = str(value).split(".")
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        return int(parts[0]), int(parts[1])
    return None


def accelerators() -> list[Accelerator]:
    """The GPUs and TPUs the Keras backend sees, in the backend's order; empty on a CPU-only machine.

    A backend that fails to list its devices (a broken CUDA install, say) counts as seeing none: the book
    then runs on the CPU instead of stopping.
    """
    backend = backend_seam.name()
    try:
        if backend == "tensorflow":
            from bigmodel_utils.backend import tensorflow_only  # a dispatch point to TensorFlow (see .importlinter)

            found = tensorflow_only.accelerators()
        else:
            import jax

            found = [(d.platform.upper(), d.id, getattr(d, "device_kind", str(d)),
                      getattr(d, "compute_capability", None)) for d in jax.devices() if d.platform in ("gpu", "tpu")]
    except Exception:  # a broken driver must not stop a chapter: report no accelerator
        return []
    return [Accelerator(kind, int(index), str(name), _capability(capability))
            for kind, index, name, capability in found]
