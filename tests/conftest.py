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
EXECUTED = ROOT / "_build" / "executed"
"""Executed copies of the chapters (default parameters), which tools/build_smoke_book.py renders."""


@pytest.fixture(scope="session")
def run_chapter(tmp_path_factory):
    """Return a function that executes a chapter with papermill and returns its results JSON.

    The profile is ``smoke`` unless ``profile=`` says otherwise (``full`` with shrinking parameters runs the
    branches only the GPU profile takes). Each (chapter, profile, parameters) runs once per session, in a fresh kernel,
    with ``BOOK_ARTIFACTS_DIR`` pointed at a temporary folder.
    """
    import papermill

    cache: dict = {}
    workdir = tmp_path_factory.mktemp("chapters")

    def run(stem: str, profile: str = "smoke", **parameters):
        key = (stem, profile, repr(sorted(parameters.items())))  # parameters may hold lists
        if key not in cache:
            notebook = CHAPTERS / f"{stem}.ipynb"
            tag = f"{stem}-{len(cache)}"
            results_path = workdir / f"{tag}.json"
            previous = {k: os.environ.get(k) for k in ("BOOK_PROFILE", "BOOK_ARTIFACTS_DIR")}
            os.environ["BOOK_PROFILE"] = profile
            os.environ["BOOK_ARTIFACTS_DIR"] = str(workdir / f"{tag}-artifacts")
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
            cache[key] = json.loads(results_path.read_text())
            if not parameters and profile == "smoke":
                _keep_executed_copy(workdir / f"{tag}.ipynb", EXECUTED / notebook.relative_to(ROOT))
        return cache[key]

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
