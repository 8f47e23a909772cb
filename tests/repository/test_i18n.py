"""The Chinese edition keeps up with the English source (tools/i18n.py, tools/translated_book.py).

Every unit of prose of every page (a markdown cell, a figure's caption or alt text, a section of a Markdown
page) must have a translation made from its current English text, keeping the English unit's glued values,
citations, links and code; and the committed Chinese notebooks (zh/chapters/, which Colab opens) must be the
ones the translations make today.
"""

from __future__ import annotations

import json
import sys

import pytest
from conftest import ROOT, toc_files

sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "_ext"))

import book_html  # noqa: E402
import i18n  # noqa: E402
import translated_book  # noqa: E402

PAGES = toc_files()
IN_PROGRESS = translated_book.EDITIONS["zh"]["in_progress"]


@pytest.mark.parametrize("page", [p for p in PAGES if p not in IN_PROGRESS])
def test_every_unit_is_translated_current_and_keeps_the_english_structure(page):
    found = i18n.problems(page) + i18n.structure_problems(page)
    assert not found, (
        f"{len(found)} problems; translate or revise them in {i18n.translation_path(page).relative_to(ROOT)} "
        "(`python tools/i18n.py show PAGE UNIT` prints the English, `accept` records a revision):\n"
        + "\n".join(found)
    )


@pytest.mark.parametrize("page", sorted(IN_PROGRESS))
def test_a_page_declared_in_progress_is_unfinished_and_says_so(page):
    """A page published in English under a note must really lack translations: once it is complete,
    it leaves EDITIONS["zh"]["in_progress"] and the test above holds it to every unit."""
    assert page in PAGES, f"{page} is declared in progress but is not in _toc.yml"
    assert i18n.problems(page), f"{page} is fully translated: remove it from EDITIONS['zh']['in_progress']"
    source = ROOT / f"{page}.ipynb"
    nb, _ = translated_book.translate_notebook(json.loads(source.read_text()), page, "zh")
    assert "本章的中文翻译尚在进行中" in "".join(nb["cells"][0]["source"])


def test_committed_chinese_notebooks_are_up_to_date():
    expected = translated_book.committed_notebooks("zh")
    assert expected, "no chapter notebooks found in _toc.yml"
    outdated = [str(path.relative_to(ROOT)) for path, text in expected.items()
                if not path.is_file() or path.read_text() != text]
    assert not outdated, f"run `python tools/translated_book.py notebooks` and commit: {outdated}"
    extra = set((ROOT / "zh").rglob("*.ipynb")) - set(expected)
    assert not extra, f"Chinese notebooks of no English chapter: {sorted(map(str, extra))}"


@pytest.fixture
def fake_page(tmp_path, monkeypatch):
    """A one-page book with a notebook-like English source held in memory, its translation in tmp_path."""
    english = {"md-1": "The loss is {glue:text}`loss:.2f` nats [chapter 6](06_language_models.ipynb).",
               "fig.caption": "What to see: the loss falls."}
    monkeypatch.setattr(i18n, "units", lambda page: list(english.items()))
    monkeypatch.setattr(i18n, "translation_path", lambda page, language="zh": tmp_path / f"{page}.md")
    return english


def test_an_english_edit_marks_the_translation_stale_and_a_new_unit_missing(fake_page, tmp_path):
    i18n.write_translations(tmp_path / "p.md", [
        i18n.Unit("md-1", i18n.fingerprint(fake_page["md-1"]),
                  "损失为 {glue:text}`loss:.2f` 奈特（[第 6 章](06_language_models.ipynb)）。"),
        i18n.Unit("fig.caption", i18n.fingerprint(fake_page["fig.caption"]), "看点：损失在下降。"),
    ])
    assert i18n.problems("p") == [] and i18n.structure_problems("p") == []
    fake_page["md-1"] = fake_page["md-1"].replace("nats", "nats per character")
    fake_page["new"] = "A new paragraph."
    assert i18n.problems("p") == ["p: unit md-1 is stale (its English text changed)",
                                  "p: unit new has no translation"]
    assert i18n.accept("p", ["md-1"]) == ["md-1"]
    assert i18n.problems("p") == ["p: unit new has no translation"]


def test_a_translation_that_drops_a_glued_value_or_keeps_english_is_caught(fake_page, tmp_path):
    i18n.write_translations(tmp_path / "p.md", [
        i18n.Unit("md-1", i18n.fingerprint(fake_page["md-1"]), "损失很小（见第 6 章）。"),
        i18n.Unit("fig.caption", i18n.fingerprint(fake_page["fig.caption"]), fake_page["fig.caption"]),
    ])
    assert i18n.problems("p") == ["p: unit fig.caption is not translated"]
    lost = i18n.structure_problems("p")
    assert any("glued value missing" in line and "loss:.2f" in line for line in lost), lost
    assert any("link target missing" in line and "06_language_models.ipynb" in line for line in lost), lost


def test_a_translated_notebook_keeps_code_and_outputs_and_opens_in_colab_as_chinese():
    page = "chapters/03_math_from_scratch"
    english = json.loads((ROOT / f"{page}.ipynb").read_text())
    code = next(cell for cell in english["cells"] if cell["cell_type"] == "code")
    code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["val loss 1.87\n"]}]
    chinese, fallback = translated_book.translate_notebook(english, page, "zh")
    assert len(chinese["cells"]) == len(english["cells"])
    for en, zh in zip(english["cells"], chinese["cells"]):
        assert en["cell_type"] == zh["cell_type"] and en["id"] == zh["id"]
        if en["cell_type"] == "code":
            assert (en["source"], en.get("outputs")) == (zh["source"], zh.get("outputs"))
    translated = [zh for en, zh in zip(english["cells"], chinese["cells"])
                  if en["cell_type"] == "markdown" and en["id"] not in fallback]
    assert translated and all(i18n.has_cjk("".join(cell["source"])) for cell in translated)
    badge = "".join(chinese["cells"][0]["source"])
    assert f"/blob/main/zh/{page}.ipynb" in badge, badge
    assert chinese["metadata"]["book_translation"] == {"language": "zh", "source": f"{page}.ipynb"}


def test_edition_links_point_to_the_same_page_both_ways():
    assert book_html.edition_href("intro", "zh/") == "zh/intro.html"
    assert book_html.edition_href("chapters/appendix/faq", "zh/") == "../../zh/chapters/appendix/faq.html"
    # From zh/chapters/06_language_models.html back to chapters/06_language_models.html:
    assert book_html.edition_href("chapters/06_language_models", "../") == "../../chapters/06_language_models.html"


def test_executed_english_chapters_come_from_the_english_builds_jupyter_cache(tmp_path):
    """`make book` hands the Chinese build the outputs Jupyter Book cached for the English chapter, found by
    its code (as Jupyter Book finds them); a chapter the cache lacks stops the build with a clear message."""
    import nbformat
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    page = "chapters/02_core_concepts"
    executed = nbformat.read(ROOT / f"{page}.ipynb", as_version=4)
    code = next(cell for cell in executed.cells if cell.cell_type == "code")
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="ran in the English build\n")]
    cache = tmp_path / "cache"
    get_cache(str(cache)).cache_notebook_bundle(CacheBundleIn(executed, uri="x.ipynb"), check_validity=False)
    found = translated_book.executed_english(page, None, cache)
    first = next(cell for cell in found["cells"] if cell["cell_type"] == "code")
    assert "".join(first["outputs"][0]["text"]) == "ran in the English build\n"
    with pytest.raises(SystemExit, match="chapters/03_math_from_scratch is not in the jupyter-cache"):
        translated_book.executed_english("chapters/03_math_from_scratch", None, cache)
