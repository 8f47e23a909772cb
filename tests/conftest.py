"""Shared fixtures: run a chapter once per test session under the smoke profile and read its results."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from book import toc_files, toc_notebooks  # noqa: E402,F401  (re-exported for the tests)

CHAPTERS = ROOT / "chapters"
EXECUTED = Path(os.environ.get("BOOK_EXECUTED_DIR") or ROOT / "_build" / "executed")
"""Executed copies of the chapters (default parameters), which tools/build_smoke_book.py renders."""
KERAS_BACKENDS = ("tensorflow", "jax", "torch")
SESSION_BACKEND = os.environ.get("KERAS_BACKEND") or "tensorflow"
"""The backend chapters run under unless a test names another: this session's, else Keras's default."""


@pytest.fixture(scope="session")
def run_chapter(tmp_path_factory):
    """Return a function that executes a chapter with papermill and returns its results JSON.

    The profile is ``smoke`` unless ``profile=`` says otherwise (``full`` with shrinking parameters runs the
    branches only the GPU profile takes). The Keras backend is this session's (``KERAS_BACKEND``, else Keras's
    default, TensorFlow) unless ``backend=`` names another: the kernel inherits ``os.environ``, so the chapter
    runs under it. Each (chapter, profile, backend, parameters) runs once per session, in a fresh kernel, with
    ``BOOK_ARTIFACTS_DIR`` pointed at a temporary folder. The executed copy for the smoke book is kept when a test
    asks for the chapter with no backend, profile or parameters of its own: a JAX leg that names
    ``backend="jax"`` leaves the book's copies alone, even in a session started with ``KERAS_BACKEND=jax``.
    """
    import papermill

    cache: dict = {}
    workdir = tmp_path_factory.mktemp("chapters")

    def run(stem: str, profile: str = "smoke", backend: str | None = None, **parameters):
        for_the_book = backend is None and profile == "smoke" and not parameters
        backend = backend or SESSION_BACKEND
        if backend not in KERAS_BACKENDS:
            raise ValueError(f"backend must be one of {KERAS_BACKENDS}, got {backend!r}")
        key = (stem, profile, backend, repr(sorted(parameters.items())))  # parameters may hold lists
        if key not in cache:
            notebook = CHAPTERS / f"{stem}.ipynb"
            tag = f"{stem}-{len(cache)}"
            results_path = workdir / f"{tag}.json"
            previous = {k: os.environ.get(k) for k in ("BOOK_PROFILE", "BOOK_ARTIFACTS_DIR", "KERAS_BACKEND")}
            os.environ["BOOK_PROFILE"] = profile
            os.environ["BOOK_ARTIFACTS_DIR"] = str(workdir / f"{tag}-artifacts")
            os.environ["KERAS_BACKEND"] = backend
            try:
                papermill.execute_notebook(
                    str(notebook), str(workdir / f"{tag}.ipynb"),
                    parameters={"RESULTS_PATH": str(results_path), **parameters},
                    cwd=str(notebook.parent), kernel_name="python3", progress_bar=False,
                )
            finally:
                for k, v in previous.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
            cache[key] = {"results": json.loads(results_path.read_text()), "executed": workdir / f"{tag}.ipynb",
                          "kept": False}
        if for_the_book and not cache[key]["kept"]:
            notebook = CHAPTERS / f"{stem}.ipynb"
            _keep_executed_copy(cache[key]["executed"], EXECUTED / notebook.relative_to(ROOT))
            cache[key]["kept"] = True
        return cache[key]["results"]

    return run


def _keep_executed_copy(executed: Path, target: Path) -> None:
    """Save an executed chapter for the smoke book, hiding papermill's injected-parameters cell."""
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            cell.metadata["tags"] = [*tags, "remove-cell"]
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)


def pytest_collection_modifyitems(items):
    """Tests that execute a chapter are slow: mark them so `make unit` and `make notebooks` can split."""
    for item in items:
        if "run_chapter" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.notebooks)
