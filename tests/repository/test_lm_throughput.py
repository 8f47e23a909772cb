"""benchmarks/lm_throughput.py in a tiny configuration: every installed implementation trains and is timed."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "lm_throughput.py"
TINY = ["--layers", "2", "--heads", "2", "--width", "32", "--context", "16", "--batch-size", "8",
        "--steps", "3", "--warmup-steps", "2", "--repeats", "1", "--warmup-timeout", "60", "--single-thread"]
"""A model of 28k parameters, one timed repeat of three steps; one thread each, so a busy machine
(or one with many cores) does not slow the tiny operations down with thread synchronisation."""

# torch.compile takes minutes on a CPU, and Keras's PyTorch backend with jit_compile=True longer still:
# the test runs the Keras backends with jit_compile="auto" (XLA for JAX, a graph for TensorFlow, eager for
# PyTorch) and plain PyTorch eagerly.
IMPLEMENTATIONS = ["tensorflow", "jax", "torch", "plain-torch"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    output = tmp_path_factory.mktemp("lm_throughput") / "report.json"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    completed = subprocess.run([sys.executable, str(SCRIPT), *TINY, "--jit", "auto", "--only",
                                ",".join(IMPLEMENTATIONS), "--json", str(output)],
                               capture_output=True, text=True, env=env, timeout=85, cwd=ROOT)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-3000:]
    return json.loads(output.read_text()), completed.stdout


def installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


PACKAGES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch", "plain-torch": "torch"}
TOKENS_PER_REPEAT = 3 * 8 * 16  # --steps 3 of --batch-size 8 windows of --context 16 tokens
# chapter 6's training FLOPs per token at this size, by hand: 3 x (2N + 2 L T d + 2 d V), with
# N = 2 (12 x 32^2 + 13 x 32) + 2 x 32 = 25,472, L = 2, T = 16, d = 32 and V = 65
FLOPS_PER_TOKEN = 3 * (2 * 25_472 + 2 * 2 * 16 * 32 + 2 * 32 * 65)  # 171,456


@pytest.mark.timeout(90)
def test_every_installed_implementation_is_timed(report):
    data, stdout = report
    rows = {row["implementation"]: row for row in data["rows"]}
    assert list(rows) == IMPLEMENTATIONS
    for name, package in PACKAGES.items():
        row = rows[name]
        if installed(package):
            assert row["status"] == "ok" and len(row["repeat_seconds"]) == 1, row  # --repeats 1
            # the rate is the repeat's tokens over its recorded seconds; its training FLOPs per token are the
            # formula's for this model
            assert row["tokens_per_second"] == pytest.approx(TOKENS_PER_REPEAT / row["repeat_seconds"][0])
            assert row["training_flops_per_token"] == pytest.approx(FLOPS_PER_TOKEN)
            assert math.isfinite(row["final_loss"])
            assert row["label"] in stdout  # the table is printed
        else:
            assert row["status"] == f"skipped: {package} is not installed"
            assert "tokens_per_second" not in row


@pytest.mark.perf
@pytest.mark.timeout(90)
def test_perf_no_implementation_beats_this_machines_matmul(report):
    # MFU here is the model's FLOPs per second over NumPy's float32 matmul rate, both measured in the same run
    # (the script's parent process times the matmul): a tiny model cannot run faster than the machine's best
    # matmul, and more would mean a miscount of its FLOPs
    data, _ = report
    timed = [row for row in data["rows"] if "tokens_per_second" in row]
    assert timed, "no implementation was timed"
    for row in timed:
        print(f"{row['implementation']}: {row['tokens_per_second']:,.0f} tokens/s, MFU {row['mfu']:.2%}")
        assert 0 < row["mfu"] < 1, row


@pytest.mark.timeout(90)
def test_every_timed_model_has_the_parameter_count_of_the_formula(report):
    timed = [row for row in report[0]["rows"] if "tokens_per_second" in row]
    assert timed, "no implementation was timed"
    for row in timed:
        assert row["parameters"] == row["expected_parameters"], row


@pytest.mark.timeout(90)
@pytest.mark.skipif(not installed("torch"), reason="torch is not installed: no plain-PyTorch model to compare")
def test_plain_pytorch_gpt_has_the_keras_models_parameter_count(report):
    rows = {row["implementation"]: row for row in report[0]["rows"]}
    # 2 blocks of 12 d^2 + 13 d, (65 + 16) d of embeddings, 2 d of the final norm and a bias of 65, d = 32
    assert rows["plain-torch"]["parameters"] == 28_129
    keras_rows = [row for name, row in rows.items() if name in ("tensorflow", "jax", "torch") and "parameters" in row]
    assert keras_rows, "no Keras backend was timed"
    for row in keras_rows:
        assert row["parameters"] == rows["plain-torch"]["parameters"], row
    assert rows["plain-torch"]["ratio_to_plain_torch"] == pytest.approx(1.0)
