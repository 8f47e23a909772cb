"""Small additions to the HTML that Jupyter Book 1 writes, as a local Sphinx extension.

- sphinx-thebe registers its inline configuration script twice under Jupyter Book 1.0.4, and the second
  copy throws "Identifier 'THEBE_JS_URL' has already been declared" in every page's console. Identical
  scripts are kept once.
- Every page of the book links to the same page in the other edition (English and Chinese), at the top of
  the article and as a ``<link rel="alternate" hreflang>``. The config value ``book_edition_link`` says
  where the other edition's root is, relative to this one's, and how to label the link.
"""

from html import escape


def _unique_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        # An inline script has filename None or "" depending on who added it; compare bodies.
        key = (getattr(script, "filename", None) or "", repr(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique


def edition_href(pagename: str, prefix: str) -> str:
    """The other edition's page, relative to this page: ``chapters/06_x`` with prefix ``zh/`` gives
    ``../zh/chapters/06_x.html``."""
    return "../" * pagename.count("/") + prefix + pagename + ".html"


def _edition_link(app, pagename, templatename, context, doctree):
    link = app.config.book_edition_link
    if not link or doctree is None or "body" not in context:
        return  # generated pages (search, index) have no counterpart to link to
    href = escape(edition_href(pagename, link["prefix"]), quote=True)
    lang = escape(link["lang"], quote=True)
    context["body"] = (
        f'<p class="book-edition-link" style="text-align:right;margin:0 0 .5rem">'
        f'<a href="{href}" hreflang="{lang}" lang="{lang}">{escape(link["label"])}</a></p>\n'
        + context["body"]
    )
    context["metatags"] = context.get("metatags", "") + (
        f'\n<link rel="alternate" hreflang="{lang}" href="{href}" />'
    )


def setup(app):
    app.add_config_value("book_edition_link", None, "html")
    app.connect("html-page-context", _unique_scripts, priority=900)
    app.connect("html-page-context", _edition_link)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
