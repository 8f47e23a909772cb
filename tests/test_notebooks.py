"""Every chapter in _toc.yml runs top to bottom in a fresh kernel under the smoke profile.

Chapter-specific assertions on the results live in tests/test_chapter_NN.py; this file checks the
contract every chapter shares.
"""

from __future__ import annotations

import pytest
from conftest import toc_notebooks

CHAPTERS = toc_notebooks()


@pytest.mark.notebooks
@pytest.mark.parametrize("notebook", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_runs_and_reports(run_chapter, notebook):
    results = run_chapter(notebook.stem)
    assert isinstance(results, dict) and results, f"{notebook.name} wrote no results"
    assert results.get("profile") == "smoke", f"{notebook.name} must record the profile it ran under"


@pytest.mark.notebooks
def test_papermill_overrides_a_parameter(run_chapter):
    """Papermill's injected cell comes after the parameters cell, so an override wins over the profile default."""
    results = run_chapter(CHAPTERS[0].stem, SEED=7)
    assert results["seed"] == 7
