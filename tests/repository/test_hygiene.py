"""Notebook hygiene: what is committed is clean, valid and follows the chapter contract."""

from __future__ import annotations

import json
import re

import nbformat
import pytest
import yaml
from conftest import ROOT, toc_files, toc_notebooks

NOTEBOOKS = sorted((ROOT / "chapters").rglob("*.ipynb")) + sorted((ROOT / "templates").glob("*.ipynb"))
NOTEBOOKS = [p for p in NOTEBOOKS if ".ipynb_checkpoints" not in p.parts]
IDS = [str(p.relative_to(ROOT)) for p in NOTEBOOKS]
MARKER = "NBVAL_CHECK_OUTPUT"
REPO_URL = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"].rstrip("/")
REPO_SLUG = REPO_URL.removeprefix("https://github.com/")


def code_cells(path):
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_valid_notebook_json(path):
    json.loads(path.read_text())  # plain JSON first, for a clear message
    nbformat.validate(nbformat.read(path, as_version=4))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_no_stray_outputs_or_execution_counts(path):
    """Only nbval expectations keep outputs; they are numbered 1, 2, 3 (nbval needs a count), others have none."""
    expected_count = 0
    for index, cell in enumerate(code_cells(path)):
        if cell.outputs:
            assert MARKER in cell.source, f"{path.name} code cell {index} has outputs but is not an nbval check"
            expected_count += 1
            assert cell.execution_count == expected_count, (
                f"{path.name} code cell {index}: run `python tools/notebooks.py clean` to renumber nbval cells"
            )
        else:
            assert cell.execution_count is None, f"{path.name} code cell {index} has an execution count"
        for output in cell.outputs:
            assert output.get("execution_count") in (None, cell.execution_count), f"{path.name} cell {index}"
            assert output.get("name") != "stderr", f"{path.name} code cell {index} stores stderr"


def test_every_chapter_is_in_the_toc():
    listed = set(toc_files())
    for path in (ROOT / "chapters").rglob("*"):
        if path.suffix in (".ipynb", ".md") and ".ipynb_checkpoints" not in path.parts:
            stem = str(path.relative_to(ROOT).with_suffix(""))
            assert stem in listed, f"{stem} is not listed in _toc.yml, so the book never shows it"


def test_every_toc_entry_exists():
    for entry in toc_files():
        assert any((ROOT / f"{entry}{s}").is_file() for s in (".md", ".ipynb")), f"_toc.yml lists missing {entry}"


@pytest.mark.parametrize("path", toc_notebooks(), ids=[p.stem for p in toc_notebooks()])
def test_chapter_contract(path):
    nb = nbformat.read(path, as_version=4)
    first_markdown = next(c for c in nb.cells if c.cell_type == "markdown")
    assert first_markdown.source.startswith("# "), f"{path.name} must open with its title"
    badge = f"https://colab.research.google.com/github/{REPO_SLUG}/blob/main/{path.relative_to(ROOT)}"
    assert badge in first_markdown.source, f"{path.name}: Colab badge must point to {badge}"
    install, parameters = code_cells(path)[:2]
    assert 'if "google.colab" in sys.modules:' in install.source, f"{path.name}: first code cell is the Colab install"
    assert f"git+{REPO_URL}@main" in install.source, f"{path.name}: install cell must use {REPO_URL}"
    assert not re.search(r"==\d", install.source), f"{path.name}: the Colab install cell must not pin exact versions"
    assert "parameters" in parameters.metadata.get("tags", []), f"{path.name}: second code cell must be tagged"
    assert re.search(r"^RESULTS_PATH = None", parameters.source, re.M), f"{path.name}: RESULTS_PATH = None missing"
    assigned = re.findall(r"^([A-Za-z_]\w*)\s*=", parameters.source, re.M)
    assert assigned and all(name.isupper() for name in assigned), f"{path.name}: parameters must be UPPER_CASE"
    assert "write_results(RESULTS_PATH" in code_cells(path)[-1].source, f"{path.name}: last cell writes results"
    assert "tf.keras" not in "".join(c.source for c in code_cells(path)), f"{path.name} uses tf.keras"


def test_repository_url_is_set_once():
    from bigmodel_utils.data import files

    assert files.REPOSITORY_URL == REPO_URL, "files.REPOSITORY_URL must equal repository.url in _config.yml"


def test_no_tf_keras_in_package():
    for path in (ROOT / "bigmodel_utils").rglob("*.py"):
        assert "tf.keras" not in path.read_text(), f"{path.name} uses tf.keras; use Keras 3 (import keras)"


@pytest.mark.parametrize("path", toc_notebooks(), ids=[p.stem for p in toc_notebooks()])
def test_every_figure_has_alt_text_or_caption(path):
    for index, cell in enumerate(code_cells(path)):
        if "plt.show()" not in cell.source:
            continue
        meta = cell.metadata.get("mystnb", {})
        described = meta.get("image", {}).get("alt") or meta.get("figure", {}).get("caption")
        assert described, f"{path.name} code cell {index} draws a figure without alt text or caption (mystnb metadata)"


def test_every_module_a_chapter_runs_with_python_m_exists():
    """A chapter that starts ``python -m <module>`` (as a command line shown or run in a cell) names a module with a
    ``__main__``: some of those cells run only under quick, which no test executes (chapter 4's command line once
    named the package's old entry point and only `make book` failed)."""
    import importlib.util

    modules = set()
    for path in toc_notebooks():
        for cell in nbformat.read(path, as_version=4).cells:
            modules.update(re.findall(r'"-m",\s*"([\w.]+)"', cell.source))
            modules.update(re.findall(r"python -m ([\w.]+)", cell.source))
    modules = {m for m in modules if m.startswith("bigmodel_utils")}
    assert modules, "no chapter runs the package's command line any more: update this test"
    missing = sorted(m for m in modules if importlib.util.find_spec(f"{m}.__main__") is None)
    assert missing == [], f"python -m {missing} has no __main__ module"
