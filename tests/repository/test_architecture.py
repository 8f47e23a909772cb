"""The package's architecture: layers that import only downwards, TensorFlow in one module, a core that imports
without it, and a package that leaves the reader's choice of Keras backend alone."""

from __future__ import annotations

import os
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import bigmodel_utils

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
MODULES = sorted(m.name for m in pkgutil.walk_packages(bigmodel_utils.__path__, "bigmodel_utils.")
                 if not m.name.endswith("__main__"))
CORE = [m for m in MODULES if m != "bigmodel_utils.backend.tensorflow_only"]


def lint_imports(package_root: Path) -> subprocess.CompletedProcess:
    """Run import-linter with the repository's contract on the package found under ``package_root``."""
    if not LINT_IMPORTS.exists():
        pytest.fail("lint-imports is missing: run `make install` (import-linter is in requirements.txt)")
    env = {**os.environ, "PYTHONPATH": str(package_root)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--config", str(package_root / ".importlinter")],
                          cwd=package_root, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def package_copy(tmp_path):
    """A copy of the package and its contract, to break on purpose."""
    shutil.copytree(ROOT / "bigmodel_utils", tmp_path / "bigmodel_utils",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    return tmp_path


def test_the_contract_holds_for_the_package():
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "4 kept, 0 broken" in done.stdout


def contract_section(name: str) -> str:
    text = (ROOT / ".importlinter").read_text()
    return text.split(f"[importlinter:contract:{name}]")[1].split("\n[")[0]


def test_every_top_level_module_is_in_a_layer_and_under_the_tensorflow_contract():
    top_level = {m.split(".")[1] for m in MODULES}
    layers = {name.strip().split(".")[1] for line in contract_section("layers").split("layers =")[1].splitlines()
              if line.startswith("    bigmodel_utils.") for name in line.split("|")}
    assert top_level == layers, f"in the package but in no layer: {top_level - layers}; gone: {layers - top_level}"
    guarded = {line.strip() for line in contract_section("tensorflow-only-in-one-module").split("forbidden_modules")[0]
               .splitlines() if line.startswith("    bigmodel_utils.")}
    backend = {m for m in MODULES if m.startswith("bigmodel_utils.backend.")}
    backend.discard("bigmodel_utils.backend.tensorflow_only")
    expected = {f"bigmodel_utils.{name}" for name in top_level - {"backend"}} | backend
    assert guarded == expected, f"missing from the TensorFlow contract: {expected - guarded}"


@pytest.mark.parametrize("module, line, broken", [
    # a direct import, and one through the TensorFlow module
    ("cnn/models.py", "import tensorflow as tf  # noqa\n", "Only bigmodel_utils.backend.tensorflow_only"),
    ("cnn/training/fitting.py", "from bigmodel_utils.backend import tensorflow_only  # noqa\n",
     "Only bigmodel_utils.backend.tensorflow_only"),
    # an import upwards: the data layer reaching for the book's plumbing
    ("data/text.py", "from bigmodel_utils.book import runtime  # noqa\n", "Each layer imports only the layers below"),
    # one technique building on another
    ("techniques/adapt.py", "from bigmodel_utils.techniques import export  # noqa\n", "independent of one another"),
    # a calculator that needs Keras
    ("calculators/costs.py", "import keras  # noqa\n", "import no deep-learning framework"),
])
def test_each_contract_breaks_when_its_rule_is_broken(package_copy, module, line, broken):
    path = package_copy / "bigmodel_utils" / module
    path.write_text(line + path.read_text())
    done = lint_imports(package_copy)
    assert done.returncode != 0
    assert f"{broken}" in done.stdout and "BROKEN" in done.stdout.split(broken)[1].splitlines()[0]
    assert module.replace("/", ".").removesuffix(".py") in done.stdout


def test_every_core_module_imports_with_tensorflow_blocked_and_the_tensorflow_one_does_not():
    script = (
        "import importlib, os, sys\n"
        "sys.modules['tensorflow'] = None\n"
        f"for name in {CORE!r}:\n"
        "    importlib.import_module(name)\n"
        "try:\n"
        "    importlib.import_module('bigmodel_utils.backend.tensorflow_only')\n"
        "except ImportError:\n"
        "    print('tensorflow_only refused')\n"
        "from bigmodel_utils.book import runtime\n"
        "print('backend', runtime.environment_report('smoke').items['backend'])\n"
    )
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "tensorflow_only refused" in done.stdout
    assert "backend jax" in done.stdout
    assert len(CORE) >= 25  # the walk found the modules, subpackages included


def test_importing_the_package_leaves_keras_backend_unset():
    script = (
        "import os, importlib\n"
        "import bigmodel_utils, bigmodel_utils.cnn.models, bigmodel_utils.cnn.training, bigmodel_utils.book.runtime\n"
        "print('KERAS_BACKEND' in os.environ)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "False"
