"""The package's architecture: TensorFlow lives in one module, the core imports without it, and importing the
package leaves the reader's choice of Keras backend alone."""

from __future__ import annotations

import os
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import bigmodel_utils

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
MODULES = sorted(m.name for m in pkgutil.walk_packages(bigmodel_utils.__path__, "bigmodel_utils.")
                 if not m.name.endswith("__main__"))
CORE = [m for m in MODULES if m != "bigmodel_utils.tensorflow_only"]


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
    assert "1 kept, 0 broken" in done.stdout


def test_the_contract_lists_every_module_but_the_tensorflow_one():
    contract = (ROOT / ".importlinter").read_text()
    top_level = {m.split(".")[1] for m in CORE}
    listed = {line.strip().split(".")[1] for line in contract.splitlines()
              if line.startswith("    bigmodel_utils.") and "->" not in line}
    assert top_level - {"tensorflow_only"} <= listed, f"modules outside the contract: {top_level - listed}"


@pytest.mark.parametrize("module, line", [
    ("models.py", "import tensorflow as tf  # noqa\n"),  # a direct import
    ("training/fitting.py", "from .. import tensorflow_only  # noqa\n"),  # through the TensorFlow module
])
def test_the_contract_breaks_when_the_core_imports_tensorflow(package_copy, module, line):
    path = package_copy / "bigmodel_utils" / module
    path.write_text(line + path.read_text())
    done = lint_imports(package_copy)
    assert done.returncode != 0
    assert "BROKEN" in done.stdout and module.replace("/", ".").removesuffix(".py") in done.stdout


def test_every_core_module_imports_with_tensorflow_blocked_and_the_tensorflow_one_does_not():
    script = (
        "import importlib, os, sys\n"
        "sys.modules['tensorflow'] = None\n"
        f"for name in {CORE!r}:\n"
        "    importlib.import_module(name)\n"
        "try:\n"
        "    importlib.import_module('bigmodel_utils.tensorflow_only')\n"
        "except ImportError:\n"
        "    print('tensorflow_only refused')\n"
        "from bigmodel_utils import runtime\n"
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
        "import bigmodel_utils, bigmodel_utils.models, bigmodel_utils.training, bigmodel_utils.runtime\n"
        "print('KERAS_BACKEND' in os.environ)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "False"
