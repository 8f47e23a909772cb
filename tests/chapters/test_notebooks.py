"""Every chapter in _toc.yml runs top to bottom in a fresh kernel: under TensorFlow in the smoke profile, and under
JAX in the full profile, shrunk.

Chapter-specific assertions on the results live in tests/chapters/test_chapter_NN.py; this file checks the
contract every chapter shares.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest
from conftest import EXECUTED, ROOT, SESSION_BACKEND, toc_notebooks

CHAPTERS = toc_notebooks()


@pytest.mark.parametrize("notebook", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_runs_and_reports(run_chapter, notebook):
    results = run_chapter(notebook.stem)
    assert isinstance(results, dict) and results, f"{notebook.name} wrote no results"
    assert results.get("profile") == "smoke", f"{notebook.name} must record the profile it ran under"
    assert results.get("backend") == SESSION_BACKEND, f"{notebook.name} must record the Keras backend it ran under"


@pytest.mark.parametrize("notebook", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_runs_under_jax_in_the_full_profile(run_jax_full, notebook):
    """Every chapter runs top to bottom with KERAS_BACKEND=jax in the full profile, shrunk (TensorFlow may still be
    installed: the sections that need it check the backend), and says which backend and profile it ran under."""
    results = run_jax_full(notebook.stem)
    assert results.get("profile") == "full", f"{notebook.name} must record the profile it ran under"
    assert results.get("backend") == "jax", f"{notebook.name} must record the Keras backend it ran under"


def test_papermill_overrides_a_parameter(run_jax_full):
    """Papermill's injected cell comes after the parameters cell, so an override wins over the profile default
    (chapter 1's second run passes SEED=7; its default is 42)."""
    assert run_jax_full(CHAPTERS[0].stem)["seed"] == 7


def _sanitizers() -> list[tuple[re.Pattern, str]]:
    """The regex/replace pairs of tests/chapters/nbval_sanitize.cfg (nbval's format), in order."""
    parser = configparser.ConfigParser()
    parser.read(Path(__file__).with_name("nbval_sanitize.cfg"))
    return [(re.compile(parser[s]["regex"]), parser[s]["replace"]) for s in parser.sections()]


def _checked_text(cell, sanitizers) -> list[str]:
    """What nbval --nbval-lax compares for a checked cell, as text: each stream's text and each result's
    text/plain, sanitised."""
    streams: dict[str, str] = {}  # nbval joins a cell's stream outputs by name: the chunks depend on timing
    texts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            name = output.get("name", "stdout")
            streams[name] = streams.get(name, "") + output.get("text", "")
        elif "data" in output and "text/plain" in output["data"]:
            texts.append(f"{output['output_type']}: {output['data']['text/plain']}")
    texts = [f"{name}: {text}" for name, text in sorted(streams.items())] + texts
    for pattern, replacement in sanitizers:
        texts = [pattern.sub(replacement, text) for text in texts]
    return texts


@pytest.mark.parametrize("notebook", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_checked_outputs_match_the_recorded_ones(run_chapter, notebook):
    """nbval's regression check (`make nbval`), on the smoke run this session already made: every cell marked
    NBVAL_CHECK_OUTPUT prints what the committed notebook recorded (after the same sanitising regexes). The
    chapters are not executed a second time, which keeps `make test` within its budget."""
    import nbformat

    run_chapter(notebook.stem)
    executed = nbformat.read(EXECUTED / notebook.relative_to(ROOT), as_version=4)
    recorded = nbformat.read(notebook, as_version=4)
    sanitizers = _sanitizers()
    ran = {cell.get("id"): cell for cell in executed.cells}
    checked = [cell for cell in recorded.cells if cell.cell_type == "code" and "NBVAL_CHECK_OUTPUT" in cell.source]
    for cell in checked:
        assert cell.get("id") in ran, f"{notebook.name}: checked cell {cell.get('id')} did not run"
        expected = _checked_text(cell, sanitizers)
        assert expected, f"{notebook.name}: checked cell {cell.get('id')} has no recorded output"
        assert _checked_text(ran[cell.get("id")], sanitizers) == expected, f"{notebook.name}, cell {cell.get('id')}"
