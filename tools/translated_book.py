"""The Chinese edition, built from the English source and the translations in locales/ (tools/i18n.py).

Code cells, their outputs and every glued number are the English edition's: a chapter is not executed a
second time. Its executed English notebook is taken from where the English build left it (the jupyter-cache
of `make book`, or the papermill copies that `make test`'s TensorFlow leg saves), its prose is replaced unit by unit
with the translation, and the Chinese book is built with execution off into a folder of the English one:

    python tools/translated_book.py notebooks            # write zh/chapters/*.ipynb (committed, for Colab)
    python tools/translated_book.py build --cache _build/.jupyter_cache --html _build/html/zh
    python tools/translated_book.py build --executed _build/executed --html _build/smoke/_build/html/zh

A unit with no current translation (missing, or stale after an English edit) is shown in English and
named in the build's output; `tests/repository/test_i18n.py` fails on it, so none is left on `main`.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import i18n
import yaml
from book import ROOT, fresh_copy, toc_files

EDITIONS = {
    "zh": {
        "title": "大模型实践",
        "author": "《大模型实践》作者团队",
        "sphinx_language": "zh_CN",
        "captions": {
            "Getting started": "入门",
            "Foundations": "基础",
            "Training and tuning": "训练与调优",
            "Large language models": "大语言模型",
            "Large models in practice": "大模型实战",
            "Looking ahead": "展望",
            "Appendix": "附录",
        },
        # The toggles of hidden code cells (myst-nb's labels are English).
        "sphinx": {"nb_code_prompt_show": "显示代码单元格", "nb_code_prompt_hide": "隐藏代码单元格"},
        # Pages whose translation is still being written: they are published in English under a note
        # saying so, and tests/repository/test_i18n.py checks that each is really unfinished (so the list shrinks).
        "in_progress": set(),
        "in_progress_note": "```{note}\n本章的中文翻译尚在进行中，下文中未译的段落暂以英文原文显示。"
                            "代码与运行结果和英文版完全相同。\n```",
        # The link each page of this edition carries to the same page in English.
        "edition_link": {"prefix": "../", "label": "English edition", "lang": "en"},
    }
}
BOOK_FILES = ("references.bib", "logo.svg")
BOOK_DIRS = ("_ext", "_vendor")


def notebook_dir(language: str) -> Path:
    """Where the committed translated notebooks live (Colab opens them from GitHub)."""
    return ROOT / language


def translations(page: str, language: str) -> tuple[dict[str, str], list[str]]:
    """The current translation of each unit of a page, and the units that fall back to English."""
    english = dict(i18n.units(page))
    path = i18n.translation_path(page, language)
    found = {u.unit: u for u in i18n.read_translations(path)} if path.is_file() else {}
    current = {
        unit: found[unit].text for unit, text in english.items()
        if unit in found and found[unit].en == i18n.fingerprint(text)
    }
    return current, [unit for unit in english if unit not in current]


def _source_lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def translate_notebook(nb: dict, page: str, language: str) -> tuple[dict, list[str]]:
    """A copy of the English notebook ``nb`` (with or without outputs) with its prose translated: markdown
    cells, figure captions and alt text. Returns it and the units left in English."""
    current, fallback = translations(page, language)
    nb = copy.deepcopy(nb)
    repository = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    branch = repository.get("branch", "main")
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            text = current.get(cell["id"])
            if text is not None:
                cell["source"] = _source_lines(text)
            # Colab badges open the notebook of this edition.
            cell["source"] = _source_lines("".join(cell["source"]).replace(
                f"/blob/{branch}/chapters/", f"/blob/{branch}/{language}/chapters/"))
            continue
        mystnb = cell.get("metadata", {}).get("mystnb", {})
        for suffix, (group, key) in i18n.FIGURE_TEXT:
            unit = f"{cell['id']}.{suffix}"
            if key in mystnb.get(group, {}) and unit in current:
                mystnb[group][key] = current[unit]
    if page in EDITIONS[language]["in_progress"]:
        first = nb["cells"][0]
        title, _, rest = "".join(first["source"]).partition("\n")
        first["source"] = _source_lines(f"{title}\n\n{EDITIONS[language]['in_progress_note']}\n{rest}")
    nb.setdefault("metadata", {})["book_translation"] = {"language": language, "source": f"{page}.ipynb"}
    return nb, fallback


def translate_markdown(page: str, language: str) -> tuple[str, list[str]]:
    current, fallback = translations(page, language)
    return "\n\n".join(current.get(unit, text) for unit, text in i18n.units(page)) + "\n", fallback


def _dump(nb: dict) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def committed_notebooks(language: str) -> dict[Path, str]:
    """The translated notebooks as they must be committed: from the English sources (which carry no outputs
    but the nbval expectations), one per chapter, as text."""
    result = {}
    for page in toc_files():
        source = ROOT / f"{page}.ipynb"
        if source.is_file():
            nb, _ = translate_notebook(json.loads(source.read_text()), page, language)
            result[notebook_dir(language) / f"{page}.ipynb"] = _dump(nb)
    return result


def write_notebooks(language: str) -> list[Path]:
    written = []
    for path, text in committed_notebooks(language).items():
        if not path.is_file() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            written.append(path)
    return written


def executed_english(page: str, executed: Path | None, cache: Path | None) -> dict:
    """The executed English notebook of a chapter: from a folder of executed copies, or from a jupyter-cache
    (matched by its code cells, as Jupyter Book matches it)."""
    source = ROOT / f"{page}.ipynb"
    if executed is not None:
        path = executed / f"{page}.ipynb"
        if not path.is_file():
            raise SystemExit(f"translated_book: no executed copy of {page} in {executed}; build English first")
        return json.loads(path.read_text())
    import nbformat
    from jupyter_cache import get_cache

    try:
        _, merged = get_cache(str(cache)).merge_match_into_notebook(nbformat.read(source, as_version=4))
    except KeyError as error:
        raise SystemExit(
            f"translated_book: {page} is not in the jupyter-cache {cache} ({error}); build the English book "
            "first (`make book`), since the Chinese edition shows its outputs"
        ) from None
    return json.loads(nbformat.writes(merged))


def write_source(language: str, target: Path, executed: Path | None, cache: Path | None) -> list[str]:
    """Write the translated book's source folder; returns one line per page with units left in English."""
    edition = EDITIONS[language]
    fresh_copy(target, BOOK_FILES, BOOK_DIRS)

    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["title"], config["author"] = edition["title"], edition["author"]
    config["execute"]["execute_notebooks"] = "off"
    config["repository"]["path_to_book"] = language  # launch buttons open zh/chapters/*.ipynb
    config["html"]["use_edit_page_button"] = False  # the page is generated; edits go to locales/
    sphinx = config["sphinx"]["config"]
    sphinx["language"] = edition["sphinx_language"]
    sphinx["book_edition_link"] = edition["edition_link"]
    sphinx.update(edition.get("sphinx", {}))
    (target / "_config.yml").write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False))

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    for part in toc.get("parts", []):
        part["caption"] = edition["captions"].get(part["caption"], part["caption"])
    (target / "_toc.yml").write_text(yaml.safe_dump(toc, allow_unicode=True, sort_keys=False))

    report = []
    for page in toc_files():
        path = target / page
        path.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / f"{page}.ipynb").is_file():
            nb, fallback = translate_notebook(executed_english(page, executed, cache), page, language)
            path.with_suffix(".ipynb").write_text(_dump(nb))
        else:
            text, fallback = translate_markdown(page, language)
            path.with_suffix(".md").write_text(text)
        if fallback:
            report.append(f"{page}: {len(fallback)} units shown in English (untranslated or stale): "
                          + " ".join(fallback[:8]) + (" ..." if len(fallback) > 8 else ""))
    return report


def build(language: str, html: Path, executed: Path | None, cache: Path | None, work: Path | None = None) -> int:
    """Build the translated edition into ``html``; its source and Sphinx output go under ``work``
    (default ``_build/<language>``). Returns Jupyter Book's exit code."""
    work = work or ROOT / "_build" / language
    source, output = work / "src", work / "out"
    for line in write_source(language, source, executed, cache):
        print(f"translated_book: {line}")
    command = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(source), "--builder", "html",
               "-W", "-n", "--keep-going", "--path-output", str(output)]
    code = subprocess.call(command)
    if code == 0:
        shutil.rmtree(html, ignore_errors=True)
        shutil.copytree(output / "_build" / "html", html)
        print(f"translated_book: the {language} edition is in {html.relative_to(ROOT)}")
    return code


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("notebooks", "build"))
    parser.add_argument("--language", default="zh", choices=sorted(EDITIONS))
    parser.add_argument("--executed", type=Path, help="folder of executed English chapters (papermill copies)")
    parser.add_argument("--cache", type=Path, help="the English build's jupyter-cache folder")
    parser.add_argument("--html", type=Path, help="where the translated HTML goes")
    args = parser.parse_args(argv)
    if args.command == "notebooks":
        for path in write_notebooks(args.language):
            print(f"wrote {path.relative_to(ROOT)}")
        return 0
    if (args.executed is None) == (args.cache is None) or args.html is None:
        parser.error("build needs --html and exactly one of --executed or --cache")
    def absolute(path: Path | None) -> Path | None:
        return path if path is None or path.is_absolute() else ROOT / path

    return build(args.language, absolute(args.html), absolute(args.executed), absolute(args.cache))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
