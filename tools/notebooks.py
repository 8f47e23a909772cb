"""Keep the book's notebooks clean and record their nbval expectations.

    python tools/notebooks.py clean  [NOTEBOOK ...]   # strip outputs except nbval expectations
    python tools/notebooks.py record NOTEBOOK ...     # run under smoke, keep outputs of NBVAL cells

Committed notebooks carry no outputs and no execution counts, except the
outputs of cells marked ``# NBVAL_CHECK_OUTPUT``: those are the expected
values that ``pytest --nbval-lax`` compares against a fresh run (numbered
1, 2, 3, ... because nbval needs an execution count on a reference cell). Only mark
cells whose output does not depend on the run profile or the machine.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import nbformat

MARKER = "NBVAL_CHECK_OUTPUT"
ROOT = Path(__file__).resolve().parent.parent


def is_checked(cell) -> bool:
    return cell.cell_type == "code" and MARKER in cell.source


def clean(nb, keep_checked: bool = True):
    """Drop outputs (except checked cells'), execution counts and volatile metadata, in place.

    nbval refuses a reference cell that has outputs but no execution count, so the checked cells are
    numbered 1, 2, 3, ... in order; every other cell has none.
    """
    number = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        keep = keep_checked and is_checked(cell) and bool(cell.outputs)
        if keep:
            number += 1
        cell.execution_count = number if keep else None
        if not keep:
            cell.outputs = []
        for output in cell.get("outputs", []):
            if "execution_count" in output:
                output["execution_count"] = cell.execution_count
        for key in ("execution", "collapsed", "scrolled"):
            cell.metadata.pop(key, None)
    nb.metadata.pop("papermill", None)
    nb.metadata.pop("widgets", None)
    return nb


def chapter_paths() -> list[Path]:
    return sorted(p for p in (ROOT / "chapters").glob("*.ipynb"))


def record(path: Path, timeout: int = 900) -> None:
    """Execute a notebook under the smoke profile and store only its checked outputs."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    os.environ["BOOK_PROFILE"] = "smoke"
    resources = {"metadata": {"path": str(path.parent)}}
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources=resources)
    client.execute()
    for cell in nb.cells:  # stderr is machine noise, never an expectation
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if o.get("name") != "stderr"]
    nbformat.write(clean(nb), path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["clean", "record"])
    parser.add_argument("notebooks", nargs="*", type=Path)
    args = parser.parse_args(argv)
    paths = args.notebooks or chapter_paths()
    for path in paths:
        if args.command == "clean":
            nbformat.write(clean(nbformat.read(path, as_version=4)), path)
        else:
            record(path)
        print(f"{args.command}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
