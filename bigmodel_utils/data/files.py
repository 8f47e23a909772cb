"""Files the book ships in the repository's ``data/`` folder, verified by SHA-256, and the atomic JSON write
that every results and history file goes through.

In Colab the package is installed from git without ``data/``: :func:`book_file` then fetches a file from
the book's repository and checks it before use. Used by every module that reads bundled data.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

REPOSITORY_URL = "https://github.com/large-models-in-practice/large-models-in-practice"
"""The book's repository; must equal ``repository.url`` in _config.yml (tests/repository/test_hygiene.py checks)."""


class DataUnavailableError(RuntimeError):
    """Raised when no source of a dataset can be read (no cache, no package, no network)."""


def data_dir() -> Path:
    """Return the book's ``data/`` folder (``BOOK_DATA_DIR`` overrides it)."""
    override = os.environ.get("BOOK_DATA_DIR")
    return Path(override) if override else Path(__file__).resolve().parents[2] / "data"


def book_file(filename: str, sha256: str) -> Path:
    """Return the path of ``data/<filename>``, downloading it from the book's repository if it is absent.

    In Colab the package is installed from git without ``data/``; the file is then fetched from the
    repository's ``main`` branch into the Keras cache, checked against ``sha256``, and the download is
    announced. A file that does not match is never used. Used in chapters 1, 2 and 9.
    """
    local = data_dir() / filename
    if local.is_file():
        return local
    from urllib.request import urlopen

    url = REPOSITORY_URL.replace("https://github.com/", "https://raw.githubusercontent.com/") + f"/main/data/{filename}"
    target = keras_cache_dir() / "large-models-in-practice" / filename
    if not (target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == sha256):
        try:
            with urlopen(url, timeout=30) as response:
                payload = response.read()
        except OSError as error:
            message = f"{filename} is not in {data_dir()} and {url} could not be read: {error}"
            raise DataUnavailableError(message) from error
        if hashlib.sha256(payload).hexdigest() != sha256:
            raise DataUnavailableError(f"{url} does not match the SHA-256 this version of the book expects")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(payload)
        print(f"Downloaded {filename} from the book's repository (SHA-256 verified) to {target}")
    return target


def write_json_atomically(path: str | os.PathLike, content: Any) -> None:
    """Write ``content`` as JSON (2-space indents, sorted keys) to ``path``, creating its folder.

    The text goes to ``<path>.tmp`` first and is then renamed over ``path`` (``os.replace``, atomic on one
    file system), so a process killed mid-write leaves the old file or the new one, never half of one. Used
    for resumable training's history (chapter 4), every chapter's results file and the serving demo's records.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(content, indent=2, sort_keys=True))
    os.replace(temporary, path)


def keras_cache_dir() -> Path:
    """Return the folder where Keras keeps downloaded datasets (``$KERAS_HOME/datasets``)."""
    home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return Path(home) / "datasets"
