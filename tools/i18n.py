"""Translations of the book's prose, kept in sync with the English source.

The English pages (``_toc.yml``) are the source of every code cell and every computed number. Their prose is cut
into *units*: a notebook's markdown cells (keyed by cell id), the caption and alt text of its figures (the code
cell's id with ``.caption`` or ``.alt``), and a Markdown page's sections (cut at its headings, keyed by the
heading's slug). A translation of a page lives in ``locales/<lang>/<page>.md``: each unit
starts with a marker line that names the unit and the fingerprint of the English text it translates,

    <!-- i18n unit=lm-04 en=3fa9c1d2e4b5 -->
    ## 文本与词元
    ...

so that an edit of the English text makes its translation *stale* (the fingerprints differ), and a test names
the page and the unit (``tests/repository/test_i18n.py``).

    python tools/i18n.py skeleton chapters/06_language_models   # add new units (English text), drop removed ones
    python tools/i18n.py status                                  # what is missing, stale or untranslated
    python tools/i18n.py accept chapters/06_language_models lm-04  # after revising a stale unit's translation
    python tools/i18n.py show chapters/06_language_models lm-04    # a unit's current English text
    python tools/i18n.py check [PAGE...]   # status, plus glue, citations, links, formulas and code kept

A stale unit keeps the fingerprint of the English it was translated from; ``git log -p`` on the English page
shows what changed. Revise the translation, then ``accept`` records the current English fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from book import ROOT, toc_files

LANGUAGES = ("zh",)
LOCALES = ROOT / "locales"
MARKER = re.compile(r"^<!-- i18n unit=(?P<unit>\S+) en=(?P<en>[0-9a-f]{12}) -->$")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(`{3,}|:{3,})")


def fingerprint(text: str) -> str:
    """The first 12 hex digits of the SHA-256 of ``text`` with surrounding whitespace removed."""
    return hashlib.sha256(text.strip().encode("utf-8")).hexdigest()[:12]


def source_path(page: str) -> Path:
    """The English file of a ``_toc.yml`` entry (``chapters/06_language_models`` -> its ``.ipynb``)."""
    for suffix in (".ipynb", ".md"):
        path = ROOT / f"{page}{suffix}"
        if path.is_file():
            return path
    raise FileNotFoundError(f"page {page!r} of _toc.yml has no .ipynb or .md file")


def translation_path(page: str, language: str = "zh") -> Path:
    return LOCALES / language / f"{page}.md"


def _slug(text: str) -> str:
    text = re.sub(r"[`*_{}\[\]()]", "", text.lower())
    return re.sub(r"[^0-9a-z]+", "-", text).strip("-") or "section"


def markdown_units(text: str) -> list[tuple[str, str]]:
    """Cut a Markdown page at its headings (outside code and directive fences): ``[(slug, text)]``.

    Text before the first heading is the unit ``top``; a repeated slug gets ``-2``, ``-3``... appended.
    """
    units: list[tuple[str, list[str]]] = [("top", [])]
    fence = None
    for line in text.splitlines():
        opened = FENCE.match(line)
        if fence is None and opened:
            fence = opened.group(1)[0] * 3
        elif fence is not None and line.strip().startswith(fence) and line.strip().strip(fence[0]) == "":
            fence = None
        heading = HEADING.match(line) if fence is None else None
        if heading:
            units.append((_slug(heading.group(2)), [line]))
        else:
            units[-1][1].append(line)
    seen: dict[str, int] = {}
    result = []
    for slug, lines in units:
        body = "\n".join(lines).strip()
        if not body:
            continue
        seen[slug] = seen.get(slug, 0) + 1
        result.append((slug if seen[slug] == 1 else f"{slug}-{seen[slug]}", body))
    return result


FIGURE_TEXT = (("caption", ("figure", "caption")), ("alt", ("image", "alt")))


def notebook_units(cells: list[dict]) -> list[tuple[str, str]]:
    """A notebook's units: each markdown cell (its id), and the caption and alt text of each figure
    a code cell makes (``<id>.caption``, ``<id>.alt``, from the cell's ``mystnb`` metadata)."""
    found = []
    for cell in cells:
        if cell["cell_type"] == "markdown":
            found.append((cell["id"], "".join(cell["source"]).strip()))
            continue
        mystnb = cell.get("metadata", {}).get("mystnb", {})
        for suffix, (group, key) in FIGURE_TEXT:
            value = mystnb.get(group, {}).get(key)
            if value:
                found.append((f"{cell['id']}.{suffix}", value.strip()))
    return found


def units(page: str) -> list[tuple[str, str]]:
    """The English units of a page, in order: ``[(unit id, English text)]``."""
    path = source_path(page)
    if path.suffix == ".ipynb":
        return notebook_units(json.loads(path.read_text())["cells"])
    return markdown_units(path.read_text())


@dataclass
class Unit:
    unit: str
    en: str  # the fingerprint of the English text it translates
    text: str


def read_translations(path: Path) -> list[Unit]:
    """The units of a translation file, in file order."""
    found: list[Unit] = []
    lines: list[str] = []
    for line in path.read_text().splitlines():
        marker = MARKER.match(line)
        if marker:
            if found:
                found[-1].text = "\n".join(lines).strip()
            found.append(Unit(marker["unit"], marker["en"], ""))
            lines = []
        elif found:
            lines.append(line)
    if found:
        found[-1].text = "\n".join(lines).strip()
    return found


def write_translations(path: Path, translated: list[Unit]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "\n\n".join(f"<!-- i18n unit={u.unit} en={u.en} -->\n{u.text}" for u in translated) + "\n"
    )


def skeleton(page: str, language: str = "zh") -> Path:
    """Write (or complete) a page's translation file: units already there are kept as they are, new units
    get the English text to translate, in the page's order."""
    path = translation_path(page, language)
    existing = {u.unit: u for u in read_translations(path)} if path.is_file() else {}
    merged = [existing.get(unit) or Unit(unit, fingerprint(text), text) for unit, text in units(page)]
    write_translations(path, merged)
    return path


def accept(page: str, unit_ids: list[str], language: str = "zh") -> list[str]:
    """Record the current English fingerprint for ``unit_ids`` of a page's translation (after revising
    them); returns the units whose fingerprint changed."""
    path = translation_path(page, language)
    english = dict(units(page))
    translated = read_translations(path)
    known = {u.unit for u in translated}
    for unit in unit_ids:
        if unit not in english or unit not in known:
            raise ValueError(f"unit must be a unit of both {page} and its translation, got {unit!r}")
    changed = []
    for u in translated:
        if u.unit in unit_ids and u.en != fingerprint(english[u.unit]):
            u.en = fingerprint(english[u.unit])
            changed.append(u.unit)
    write_translations(path, translated)
    return changed


def has_cjk(text: str) -> bool:
    return re.search(r"[\u4e00-\u9fff]", text) is not None


def problems(page: str, language: str = "zh") -> list[str]:
    """What keeps a page's translation from being complete: one line per missing, stale or untranslated
    unit, naming the page and the unit."""
    path = translation_path(page, language)
    if not path.is_file():
        return [f"{page}: no translation ({path.relative_to(ROOT)} is missing)"]
    translated = {u.unit: u for u in read_translations(path)}
    found = []
    english = units(page)
    for unit, text in english:
        if unit not in translated:
            found.append(f"{page}: unit {unit} has no translation")
        elif translated[unit].en != fingerprint(text):
            found.append(f"{page}: unit {unit} is stale (its English text changed)")
        elif translated[unit].text.strip() == text.strip() or not has_cjk(translated[unit].text):
            found.append(f"{page}: unit {unit} is not translated")
    known = {unit for unit, _ in english}
    found += [f"{page}: unit {u} is not in the English page" for u in translated if u not in known]
    return found


# What a translation must carry over from the English unit unchanged: computed values, citations,
# cross-references, link targets, the targets of glossary links, labels, formulas, code and directives.
KEPT = {
    "glued value": re.compile(r"\{glue(?::\w+)?\}`[^`]*`"),
    "citation": re.compile(r"\{cite(?::\w+)?\}`[^`]*`"),
    "cross-reference": re.compile(r"\{(?:numref|ref|doc|eq)\}`(?:[^`<]*<)?([^`>]+)>?`"),
    "link target": re.compile(r"\]\(([^)\s]+)\)"),
    "glossary target": re.compile(r"\{term\}`(?:[^`<]*<)?([^`>]+)>?`"),
    "label": re.compile(r"^\([\w-]+\)=\s*$", re.M),
    "display formula": re.compile(r"\$\$"),
    "inline code": re.compile(r"``.+?``|`(?:[^`\n]|\n(?!\s*\n))+`"),  # a span may wrap a line
    "directive": re.compile(r"^\s*(?:`{3,}|:{3,})\{[\w-]+\}", re.M),
}
ROLE = re.compile(r"\{[\w:-]+\}`[^`]*`")


def _kept(text: str, kind: str) -> list[str]:
    text = re.sub(r"(?<![}`])`\{[\w:-]+\}`(?!`)", "`role`", text)  # a role's name quoted as code
    if kind == "inline code":  # code spans other than the roles' arguments
        text = re.sub(r"^\s*`{3,}.*$", "", text, flags=re.M)  # fence lines are not spans
        text = re.sub(r"``.+?``", lambda m: m.group(0).replace("`", "\x00"), text)
        found = KEPT[kind].findall(ROLE.sub("", text.replace("\x00\x00", "``")))
        found = [re.sub(r"\s*\n\s*", " ", f.replace("\x00", "`")) for f in found]
    else:
        found = KEPT[kind].findall(re.sub(r"``.+?``", "", text))
    if kind == "glued value":  # a glued string of words may be replaced by its twin in Chinese, name_zh
        found = [re.sub(r"_zh(?=[:`])", "", f) for f in found]
    if kind == "glossary target":
        return [t.strip().lower() for t in found]
    return [t.strip() for t in found]


def structure_problems(page: str, language: str = "zh") -> list[str]:
    """Units whose translation lost something that must stay as in English (see ``KEPT``): every glued
    value, citation, link, code span... of the English unit must be in its translation, as often.
    (A translation may add some, as the Chinese "Running this book" adds mirrors.)"""
    path = translation_path(page, language)
    if not path.is_file():
        return []
    english = dict(units(page))
    found = []
    for u in read_translations(path):
        if u.unit not in english:
            continue
        for kind in KEPT:
            got = _kept(u.text, kind)
            lost = [item for item in _kept(english[u.unit], kind) if item not in got or got.remove(item)]
            if lost:
                found.append(f"{page}: unit {u.unit}: {kind} missing from the translation: {lost[:4]}")
    return found


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "show":
        english = dict(units(argv[1]))
        for unit in argv[2:] or english:
            print(f"--- {unit}\n{english[unit]}\n")
        return 0
    if len(argv) >= 1 and argv[0] == "check":
        pages = argv[1:] or toc_files()
        found = [line for page in pages for line in problems(page) + structure_problems(page)]
        print("\n".join(found) or "every unit is translated, current and keeps the English structure")
        return 1 if found else 0
    if len(argv) >= 1 and argv[0] == "skeleton":
        for page in argv[1:] or toc_files():
            print(skeleton(page).relative_to(ROOT))
        return 0
    if len(argv) >= 3 and argv[0] == "accept":
        print("accepted:", " ".join(accept(argv[1], argv[2:])) or "nothing (already current)")
        return 0
    if argv == ["status"]:
        found = [line for page in toc_files() for line in problems(page)]
        print("\n".join(found) or "every unit of every page is translated and current")
        return 1 if found else 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
