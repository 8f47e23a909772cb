"""tools/make_corpora.py, which builds chapter 6's two corpora in data/ from their sources (a repository tool: it
needs opencc, which only the maintainers' environment installs, so this runs once, in `make test`)."""

from __future__ import annotations

import importlib.util
import sys

import pytest
from conftest import ROOT

SHARED = ROOT.parent / "shared" / "corpora"
FIXTURE = ROOT / "tests" / "fixtures" / "corpora"  # a few lines of each source (tests/fixtures/README.md)


def test_corpora_build_from_a_few_source_lines(tmp_path):
    # tools/make_corpora.py on an excerpt of each source: Shakespeare copied unchanged, and of eight Tang poems the
    # four quatrains kept in the source's order, in simplified characters, as the bundled file holds them
    sys.path.insert(0, str(ROOT / "tools"))
    from make_corpora import build

    shakespeare, tang = build(FIXTURE, tmp_path)
    assert shakespeare.read_bytes() == (FIXTURE / "tinyshakespeare.txt").read_bytes()
    assert (ROOT / "data" / "tinyshakespeare.txt").read_bytes().startswith(shakespeare.read_bytes())
    lines = tang.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "author\ttitle\tbody" and len(lines) == 5  # not the 8-line poem, nor 4 lines of 4, 6 or 5+7
    # the source's 於太原召侍臣賜宴守歲 and 四時運灰琯，一夕變冬春。送寒餘雪盡，迎歲早梅新。 converted
    assert lines[1] == "太宗皇帝\t于太原召侍臣赐宴守岁\t四时运灰琯，一夕变冬春。送寒余雪尽，迎岁早梅新。"
    assert [line.split("\t")[0] for line in lines[1:]] == ["太宗皇帝", "太宗皇帝", "明皇帝", "崔国辅"]
    assert lines[-1].endswith("何时得见汉朝使？为妾传书斩画师。")  # a line may end with a question mark
    bundled = (ROOT / "data" / "tang_quatrains.tsv").read_text(encoding="utf-8").splitlines()
    positions = [bundled.index(line) for line in lines]  # every row is the bundled file's, in the same order
    assert positions == sorted(positions) and positions[:3] == [0, 1, 2]


@pytest.mark.skipif(
    not SHARED.is_dir() or importlib.util.find_spec("opencc") is None,
    reason="needs ../shared/corpora and opencc",
)
def test_bundled_corpora_rebuild_from_the_shared_sources(tmp_path):
    sys.path.insert(0, str(ROOT / "tools"))
    from make_corpora import build

    for path in build(SHARED, tmp_path):
        assert path.read_bytes() == (ROOT / "data" / path.name).read_bytes(), (
            f"data/{path.name} is out of date"
        )
