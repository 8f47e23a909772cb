"""Rebuild the two text corpora of chapter 6 in data/ from the raw sources in ../shared/corpora.

- ``data/tinyshakespeare.txt``: the char-rnn file, copied unchanged.
- ``data/tang_quatrains.tsv``: every quatrain (绝句: four lines of five or of seven characters) of the
  Complete Tang Poems, in the source's order, converted from traditional to simplified characters
  with OpenCC's ``t2s`` table; columns ``author``, ``title``, ``body``.

The selection and the conversion are deterministic, so ``tests/repository/test_make_corpora.py`` rebuilds both
files where ``../shared`` exists and checks they equal the bundled ones. Run: ``python tools/make_corpora.py``.
"""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT.parent / "shared" / "corpora"
sys.path.insert(0, str(ROOT))
from bigmodel_utils.data.text import is_quatrain  # noqa: E402


def build(sources: Path = SOURCES, target: Path = ROOT / "data") -> list[Path]:
    """Write both corpora into ``target`` and return their paths."""
    import opencc

    to_simplified = opencc.OpenCC("t2s")
    shakespeare = target / "tinyshakespeare.txt"
    shutil.copyfile(sources / "tinyshakespeare.txt", shakespeare)
    csv.field_size_limit(sys.maxsize)
    with open(sources / "quan_tang_shi.tsv", encoding="utf-8", newline="") as handle:
        rows = [row for row in csv.DictReader(handle, delimiter="\t")
                if is_quatrain(row["body"], 5) or is_quatrain(row["body"], 7)]
    tang = target / "tang_quatrains.tsv"
    with open(tang, "w", encoding="utf-8", newline="") as handle:
        handle.write("author\ttitle\tbody\n")
        for row in rows:
            fields = [to_simplified.convert(row[k]).replace("\t", " ") for k in ("author", "title", "body")]
            handle.write("\t".join(fields) + "\n")
    return [shakespeare, tang]


if __name__ == "__main__":
    for path in build():
        print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size:,} bytes)")
