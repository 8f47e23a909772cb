"""Build the book under the smoke profile into _build/smoke, for the browser test.

`make test` has already executed every chapter under smoke with papermill (its TensorFlow leg, which saves
the executed notebooks under _build/executed/). When those are complete and newer than their sources,
this script renders them as they are (execution off) instead of running every chapter a third time;
otherwise it builds normally, executing each chapter under smoke. Warnings are errors either way.
The Chinese edition follows into _build/smoke/_build/html/zh/, with the same outputs
(tools/translated_book.py).

    python tools/build_smoke_book.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import translated_book
import yaml
from book import ROOT, fresh_copy, toc_notebooks

EXECUTED = ROOT / "_build" / "executed"
SOURCE_COPY = ROOT / "_build" / "smoke-src"
OUTPUT = ROOT / "_build" / "smoke"
BOOK_FILES = ("_config.yml", "_toc.yml", "intro.md", "running.md", "references.bib", "logo.svg")
BOOK_DIRS = ("_ext", "_vendor", "chapters")


def executed_copies_are_fresh() -> bool:
    newest_code = max(p.stat().st_mtime for p in (ROOT / "bigmodel_utils").glob("*.py"))
    for notebook in toc_notebooks():
        copy = EXECUTED / notebook.relative_to(ROOT)
        if not copy.is_file() or copy.stat().st_mtime < max(notebook.stat().st_mtime, newest_code):
            return False
    return True


def jupyter_book(source: Path) -> int:
    command = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(source), "--builder", "html",
               "-W", "-n", "--keep-going", "--path-output", str(OUTPUT)]
    return subprocess.call(command, env={**os.environ, "BOOK_PROFILE": "smoke"})


def main() -> int:
    code = build_english()
    if code != 0:
        return code
    executed = EXECUTED if executed_copies_are_fresh() else None
    cache = None if executed else OUTPUT / "_build" / ".jupyter_cache"
    return translated_book.build("zh", OUTPUT / "_build" / "html" / "zh", executed, cache, work=OUTPUT / "zh")


def build_english() -> int:
    if not executed_copies_are_fresh():
        print("build_smoke_book: no fresh executed chapters in _build/executed; executing every chapter (smoke)")
        return jupyter_book(ROOT)
    print("build_smoke_book: rendering the chapters `make test` executed (_build/executed), execution off")
    fresh_copy(SOURCE_COPY, BOOK_FILES, BOOK_DIRS)
    for notebook in EXECUTED.rglob("*.ipynb"):
        shutil.copy2(notebook, SOURCE_COPY / notebook.relative_to(EXECUTED))
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"
    (SOURCE_COPY / "_config.yml").write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False))
    return jupyter_book(SOURCE_COPY)


if __name__ == "__main__":
    sys.exit(main())
