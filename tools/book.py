"""What the book contains, read from _toc.yml: used by the tests, the Makefile and build_smoke_book.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def toc_files() -> list[str]:
    """Every ``file:`` entry of _toc.yml (without suffix), root first."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))
            walk(entry.get("chapters"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    return files


def toc_notebooks() -> list[Path]:
    """The executable chapters listed in _toc.yml, as paths to their .ipynb files."""
    return [ROOT / f"{f}.ipynb" for f in toc_files() if (ROOT / f"{f}.ipynb").is_file()]


def fresh_copy(target: Path, files: tuple[str, ...], dirs: tuple[str, ...]) -> None:
    """Empty ``target`` and copy the book's ``files`` and ``dirs`` (paths relative to the repository) into it:
    the start of a book source folder that a build renders instead of the repository."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for name in files:
        shutil.copy2(ROOT / name, target / name)
    for name in dirs:
        shutil.copytree(ROOT / name, target / name)


if __name__ == "__main__":  # `python tools/book.py` prints the chapters, for the Makefile
    print(" ".join(str(p.relative_to(ROOT)) for p in toc_notebooks()))
