"""The constraint files of `make test-compat`: Colab's versions and the lowest ones pyproject.toml admits.

    python tools/compat.py colab PIP_FREEZE [--commit SHA]   print compat/colab.txt's pins
    python tools/compat.py lowest [--check]                  print (or check) compat/lowest.txt's pins

`colab`: PIP_FREEZE is ``pip-freeze.gpu.txt`` from github.com/googlecolab/backend-info (what Colab's GPU runtime has
installed). The packages kept are those of ``uv pip compile`` on the package with all its extras (the book's
own install, not the test tools), so pip keeps each of them at Colab's version, as it does in Colab when a
chapter's install cell finds a version that satisfies it. Packages Colab does not have (Ray, ONNX, keras-tuner,
dp-accounting, ...) stay free: pip resolves them as it would in Colab, within pyproject.toml's ranges.

`lowest`: ``name==floor`` for every ``>=`` bound of ``[project] dependencies`` and of each optional extra, the
resolution `uv pip compile --resolution lowest-direct` picks; what those packages pull in stays free (pip takes
its newest), as a reader's fresh install would. `--check` fails when compat/lowest.txt no longer matches.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
EXTRAS = "tensorflow,tuning,privacy,serving,export,jax"
# Test tools and build tools are ours, not the reader's: `make test-compat` pins the test tools as
# requirements.txt does, and setuptools/wheel come from the build backend's own requirements.
HARNESS = {"pytest", "pytest-timeout", "papermill", "nbformat", "ipykernel", "pluggy", "iniconfig", "setuptools",
           "wheel"}

# Colab has these, but a chapter's install cell makes pip replace Colab's version, so they stay free here too.
REPLACED = {
    "attrs": "dp-accounting (chapter 9's install cell) needs attrs<24 from 0.5 on (0.4.x: numpy<2), so pip "
             "downgrades Colab's attrs",
}


def normalize(name: str) -> str:
    """PEP 503 name: lower case, runs of -_. become one dash."""
    return re.sub(r"[-_.]+", "-", name).lower()


def freeze_pins(text: str) -> dict[str, str]:
    """``name==version`` lines of a pip freeze, by normalised name (URL installs are skipped)."""
    pins = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "==" in line:
            name, version = line.split("==", 1)
            pins[normalize(name)] = version
    return pins


def closure() -> set[str]:
    """Names of every package `pip install -e ".[EXTRAS]"` installs on Python 3.11 (resolved by uv)."""
    uv = Path(sys.executable).with_name("uv")
    out = subprocess.run(
        [str(uv), "pip", "compile", "-", "--python-version", "3.11", "--no-header", "--no-annotate", "-q"],
        input=f"-e {ROOT}[{EXTRAS}]\n", capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout
    return {normalize(line.split("==")[0]) for line in out.splitlines() if "==" in line}


def floors(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, str]:
    """Each ``>=`` lower bound of the project's dependencies and extras, by normalised name (extras dropped:
    pip refuses them in constraints)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        specs += extra
    found: dict[str, str] = {}
    for spec in specs:
        match = re.match(r"\s*([A-Za-z0-9_.-]+)(\[[^]]*\])?\s*([^;]*)", spec)
        name, bounds = normalize(match.group(1)), match.group(3)
        floor = re.search(r">=\s*([^,\s]+)", bounds)
        if floor is None:
            raise SystemExit(f"pyproject.toml: {spec!r} has no >= lower bound")
        if found.get(name, floor.group(1)) != floor.group(1):
            raise SystemExit(f"pyproject.toml: {name} has two lower bounds, {found[name]} and {floor.group(1)}")
        found[name] = floor.group(1)
    return dict(sorted(found.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    colab = sub.add_parser("colab", help="print compat/colab.txt's pins from Colab's pip freeze")
    colab.add_argument("freeze", type=Path)
    colab.add_argument("--commit", default="?", help="backend-info commit the freeze comes from")
    lowest = sub.add_parser("lowest", help="print compat/lowest.txt's pins from pyproject.toml's lower bounds")
    lowest.add_argument("--check", action="store_true", help="exit 1 if compat/lowest.txt's pins differ")
    args = parser.parse_args(argv)
    if args.command == "lowest":
        wanted = [f"{name}=={version}" for name, version in floors().items()]
        if not args.check:
            print("\n".join(wanted))
            return 0
        path = ROOT / "compat" / "lowest.txt"
        have = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
        if have != wanted:
            print(f"{path.relative_to(ROOT)} does not match pyproject.toml's lower bounds; expected:", *wanted,
                  sep="\n", file=sys.stderr)
            return 1
        return 0
    pins = freeze_pins(args.freeze.read_text())
    names = sorted((closure() & pins.keys()) - HARNESS)
    print(f"# generated by tools/compat.py from googlecolab/backend-info@{args.commit} pip-freeze.gpu.txt")
    for name in names:
        if name in REPLACED:
            print(f"# {name}=={pins[name]} in Colab, left free: {REPLACED[name]}")
        else:
            print(f"{name}=={pins[name]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
