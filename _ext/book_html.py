"""Small fixes to the HTML that Jupyter Book 1 writes, as a local Sphinx extension.

- sphinx-thebe registers its inline configuration script twice under Jupyter Book 1.0.4, and the second
  copy throws "Identifier 'THEBE_JS_URL' has already been declared" in every page's console. Identical
  scripts are kept once.
"""


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


def setup(app):
    app.connect("html-page-context", _unique_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
