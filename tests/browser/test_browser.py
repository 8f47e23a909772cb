"""The built book in a real browser: headless Debian Chromium over a local HTTP server.

Run by `make browser` (part of `make test`) against the book built under the smoke profile
(`BOOK_HTML`, default `_build/html`), both editions: English at the root and Chinese under zh/. All
network access except 127.0.0.1 is cut inside the browser, so this also proves that formulas typeset
offline. A screenshot of every page goes to _build/screenshots/ (the Chinese ones to _build/screenshots/zh/).
"""

from __future__ import annotations

import functools
import http.server
import os
import sys
import threading
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import pytest
from conftest import ROOT, toc_files

sys.path.insert(0, str(ROOT / "tools"))
from translated_book import EDITIONS as _editions  # noqa: E402

BOOK_HTML = ROOT / os.environ.get("BOOK_HTML", "_build/html")  # absolute paths win over ROOT
SCREENSHOTS = ROOT / "_build" / "screenshots"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
PAGES = toc_files()
EDITIONS = {"": "zh/", "zh/": "../"}  # each edition's folder, and where the other one is from there
IN_PROGRESS = _editions["zh"]["in_progress"]  # Chinese pages still shown partly in English
EDITION_PAGES = [(edition, page) for edition in EDITIONS for page in PAGES]
EDITION_IDS = [f"{edition or 'en/'}{page}" for edition, page in EDITION_PAGES]

# Text left in the page (outside code) that means a formula was not typeset.
RAW_MATH = ("$$", "\\(", "\\[", "\\begin{")
# MyST markup that would show in the text if a translation broke a role or a directive.
RAW_MARKUP = ("{glue", "{term}", "{cite", "{doc}", "{numref}", ":::", "```", "<!-- i18n")


@pytest.fixture(scope="module")
def server():
    if not (BOOK_HTML / "index.html").is_file():
        pytest.fail(f"no built book at {BOOK_HTML}; run `make smoke-book` (or `make book`) first")
    handler = functools.partial(_QuietHandler, directory=str(BOOK_HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("Debian's chromium and chromium-driver are needed: `make system-deps` installs them")
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager try to download a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--window-size=1280,1600", f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
        # Cut the network: every host but the local server fails to resolve.
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


def _wait_for_mathjax(driver) -> None:
    driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        if (!window.MathJax) { done(false); return; }
        const ready = () => MathJax.startup.promise.then(() => done(true)).catch(() => done(false));
        if (MathJax.startup && MathJax.startup.promise) { ready(); } else { setTimeout(ready, 500); }
        """
    )


PROSE_TEXT = """
const article = document.querySelector('article') || document.body;
const copy = article.cloneNode(true);
copy.querySelectorAll('pre, code, script, style, mjx-container, .highlight').forEach(e => e.remove());
return copy.innerText;
"""


@pytest.mark.parametrize(("edition", "page"), EDITION_PAGES, ids=EDITION_IDS)
def test_page_renders(server, browser, edition, page):
    browser.get_log("browser")  # drop messages from earlier pages
    browser.get(urljoin(server, f"{edition}{page}.html"))
    _wait_for_mathjax(browser)

    math_nodes = browser.execute_script("return document.querySelectorAll('.math, div.math, span.math').length")
    typeset = browser.execute_script("return document.querySelectorAll('mjx-container').length")
    errors = browser.execute_script("return document.querySelectorAll('mjx-merror').length")
    assert typeset >= math_nodes, f"{page}: {math_nodes} formulas but only {typeset} typeset"
    assert errors == 0, f"{page}: {errors} formulas failed to typeset"
    prose = browser.execute_script(PROSE_TEXT)
    leftovers = [token for token in RAW_MATH if token in prose]
    assert not leftovers, f"{page}: raw math left in the text: {leftovers}"
    markup = [token for token in RAW_MARKUP if token in prose]
    assert not markup, f"{edition}{page}: raw markup left in the text: {markup}"
    if edition and page not in IN_PROGRESS:
        cjk = browser.execute_script("return (document.querySelector('article') || document.body).innerText")
        assert sum("\u4e00" <= ch <= "\u9fff" for ch in cjk) > 50, f"{edition}{page}: hardly any Chinese"

    # The book's own images must load. External ones (the Colab badge) cannot load with the network cut,
    # so they must at least carry alt text that says what they are.
    broken = browser.execute_script(
        "return Array.from(document.images).filter(i => i.src.startsWith(location.origin))"
        ".filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)"
    )
    assert not broken, f"{page}: images that did not load: {broken}"
    external_without_alt = browser.execute_script(
        "return Array.from(document.images).filter(i => !i.src.startsWith(location.origin))"
        ".filter(i => !(i.getAttribute('alt') || '').trim()).map(i => i.src)"
    )
    assert not external_without_alt, f"{page}: external images without alt text: {external_without_alt}"
    unlabelled = browser.execute_script(
        "return Array.from(document.querySelectorAll('.cell_output img, figure img'))"
        ".filter(i => !(i.getAttribute('alt') || '').trim())"
        ".filter(i => !(i.closest('figure') || {}).querySelector?.('figcaption'))"
        ".map(i => i.src)"
    )
    assert not unlabelled, f"{page}: figures without alt text: {unlabelled}"

    (SCREENSHOTS / edition).mkdir(parents=True, exist_ok=True)
    height = browser.execute_script("return Math.min(document.body.scrollHeight, 12000)")
    browser.set_window_size(1280, max(height, 800))
    browser.save_screenshot(str(SCREENSHOTS / edition / f"{page.replace('/', '__')}.png"))
    browser.set_window_size(1280, 1600)

    # External resources fail to resolve because the test cuts the network; anything else is an error.
    offline = ("https://", "ERR_NAME_NOT_RESOLVED")
    console = [
        e for e in browser.get_log("browser")
        if e["level"] == "SEVERE" and not (e["message"].startswith(offline[0]) and offline[1] in e["message"])
    ]
    assert not console, f"{page}: console errors: {[e['message'] for e in console]}"


@pytest.mark.parametrize(("edition", "page"), EDITION_PAGES, ids=EDITION_IDS)
def test_internal_links_resolve(edition, page):
    from html.parser import HTMLParser

    class Links(HTMLParser):
        def __init__(self):
            super().__init__()
            self.hrefs, self.ids = [], set()

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if attrs.get("id"):
                self.ids.add(attrs["id"])
            if tag == "a" and attrs.get("href"):
                self.hrefs.append(attrs["href"])

    source = BOOK_HTML / f"{edition}{page}.html"
    parser = Links()
    parser.feed(source.read_text())
    # The link to the same page in the other edition (_ext/book_html.py), which must exist.
    other = (BOOK_HTML / edition / EDITIONS[edition] / f"{page}.html").resolve()
    to_other = [h for h in parser.hrefs if (source.parent / unquote(urlparse(h).path)).resolve() == other]
    assert to_other, f"{edition}{page}: no link to {other.relative_to(BOOK_HTML.resolve())}"
    missing = []
    for href in parser.hrefs:
        url = urlparse(href)
        if url.scheme or href.startswith(("//", "mailto:", "javascript:")):
            continue
        target = source if not url.path else (source.parent / unquote(url.path)).resolve()
        if target.is_dir():
            target = target / "index.html"
        if not target.exists():
            missing.append(href)
        elif url.fragment and target == source and url.fragment not in parser.ids:
            missing.append(href)
    assert not missing, f"{page}: links to nothing: {missing}"


def test_search_finds_a_known_term(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(urljoin(server, "search.html?q=dropout"))
    # Sphinx's search fills the list page by page, then writes a summary line when it has finished.
    WebDriverWait(browser, 60).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#search-results p.search-summary")
        and "Searching" not in d.find_element(By.CSS_SELECTOR, "#search-results h2").text
    )
    hits = [a.get_attribute("href") or "" for a in browser.find_elements(By.CSS_SELECTOR, "#search-results li a")]
    assert any("04_cnn_on_gpu" in href for href in hits), f"search for 'dropout' missed chapter 4: {hits}"


def test_chinese_search_finds_a_known_term(server, browser):
    """Sphinx's Chinese search (words cut by jieba) finds chapter 6 for 注意力 (attention)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(urljoin(server, "zh/search.html?q=注意力"))
    WebDriverWait(browser, 60).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#search-results p.search-summary")
        and "Searching" not in d.find_element(By.CSS_SELECTOR, "#search-results h2").text
        and "搜索中" not in d.find_element(By.CSS_SELECTOR, "#search-results h2").text
    )
    hits = [a.get_attribute("href") or "" for a in browser.find_elements(By.CSS_SELECTOR, "#search-results li a")]
    # Chapter 6 is where attention is taught; while its translation is unfinished, the glossary's entry.
    page = "glossary" if "chapters/06_language_models" in IN_PROGRESS else "06_language_models"
    assert any(page in href for href in hits), f"search for 注意力 missed {page}: {hits}"
