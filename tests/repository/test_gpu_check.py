"""tools/gpu_check.py: its CPU dry run with TensorFlow blocked, its refusal without a GPU, its arithmetic, and its
configurations against the chapters' parameters cells."""

from __future__ import annotations

import ast
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import gpu_check  # tools/ is on sys.path (conftest.py)
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "gpu_check.py"
# TensorFlow is installed here; the GPU machine has none: block it, so that any import of it fails
BLOCKED = ("import runpy, sys; sys.modules['tensorflow'] = None; sys.argv = ['gpu_check.py'] + sys.argv[1:]; "
           f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')")


def run_script(*arguments, tmp_path, timeout=300):
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "KERAS_HOME": str(tmp_path / "keras"),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-c", BLOCKED, *arguments], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def improved_cnn_forward_flops(width: int, dense_units: int = 128, classes: int = 10) -> int:
    """models.build_improved_cnn's forward FLOPs per 28x28x1 image by hand: 3x3 'same' convolutions, two per
    stage at 28, 14 and 7 pixels, then Dense 4w -> 128 -> 10."""
    flops, channels = 0, 1
    for stage, size in enumerate((28, 14, 7)):
        filters = width * 2**stage
        for _ in range(2):
            flops += 2 * size * size * 9 * channels * filters
            channels = filters
    return flops + 2 * channels * dense_units + 2 * dense_units * classes


def gpt_training_flops(vocab: int, context: int, layers: int, width: int) -> float:
    """Chapter 6's training FLOPs per token by hand: 3 x (2N + 2 L T d + 2 d V), N = L (12 d^2 + 13 d) + 2 d."""
    n = layers * (12 * width * width + 13 * width) + 2 * width
    return 3.0 * (2 * n + 2 * layers * context * width + 2 * width * vocab)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("gpu_check")
    report_path = tmp_path / "report.json"
    start = time.perf_counter()
    done = run_script("--dry-run", "--json", str(report_path), tmp_path=tmp_path)
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads(report_path.read_text()), done.stdout, seconds


def test_dry_run_trains_both_models_without_tensorflow(dry_run):
    report, stdout, seconds = dry_run
    assert report["dry_run"] is True and report["platform"] == "cpu"
    assert report["tensorflow_imported"] is False
    assert report["keras_backend"] == "jax"
    cnn, gpt = report["rows"]
    [smollm2] = report["inference"]  # chapter 8's tiny model in a dry run: the path, not the figures
    assert smollm2["model"].startswith("SmolLM2") and "tiny randomly initialised" in smollm2["weights"]
    assert smollm2["decode_tokens_per_second"] > 0 and smollm2["new_tokens"] == 8 and smollm2["questions"] == 8
    assert smollm2["bandwidth_bound"] is None  # a CPU has no datasheet row
    assert smollm2["perplexity"] > 1000  # random weights over a 49,152-token vocabulary
    assert cnn["model"].startswith("CNN ch. 4") and cnn["unit"] == "images/s"
    assert gpt["model"].startswith("GPT ch. 6") and gpt["unit"] == "tokens/s"
    items_per_step = {"cnn": gpu_check.DRY["cnn"]["BATCH_SIZE"],  # images, and tokens, a step
                      "gpt": gpu_check.DRY["gpt"]["BATCH_SIZE"] * gpu_check.DRY["gpt"]["CONTEXT"]}
    for name, row in (("cnn", cnn), ("gpt", gpt)):
        assert row["precision"] == report["precision"] in ("float32", "mixed_bfloat16")
        # three 2-step windows: the first (compile) is left out of the median
        assert row["steps"] == 6 and row["timed_windows"] == 2 and row["window_steps"] == [2, 2, 2]
        # the throughput is the median rate of the two timed windows, as recorded; the training time their sum
        rates = [items_per_step[name] * 2 / seconds for seconds in row["window_seconds"][1:]]
        assert row["throughput"] == pytest.approx(sum(rates) / 2)
        assert row["train_seconds"] == pytest.approx(sum(row["window_seconds"]))
        assert row["compile_window_seconds"] == row["window_seconds"][0]
        assert row["achieved_tflops"] == pytest.approx(row["flops_per_item"] * row["throughput"] / 1e12)
        assert row["mfu"] is None and row["peak_tflops"] is None  # a CPU has no datasheet peak
        assert row["jit_compile"] is True
    assert cnn["metric"] == "test accuracy"
    # an accuracy over the dry run's 256 test images is a whole number of right answers (chance is about 26;
    # six steps of a width-4 model need not beat it)
    correct = cnn["value"] * gpu_check.DRY["cnn"]["NUM_TEST"]
    assert correct == pytest.approx(round(correct), abs=1e-3) and 0 <= round(correct) <= 256
    assert gpt["metric"] == "validation loss" and math.isfinite(gpt["value"])
    assert gpt["value"] < math.log(gpt["vocab_size"]) + 1
    # FLOPs per item from the package's counts, checked against the formulas by hand
    width = gpu_check.DRY["cnn"]["WIDTH"]
    assert cnn["flops_per_item"] == 3 * improved_cnn_forward_flops(width)
    shape = gpu_check.DRY["gpt"]
    assert gpt["flops_per_item"] == gpt_training_flops(gpt["vocab_size"], shape["CONTEXT"], shape["NUM_LAYERS"],
                                                       shape["WIDTH"])
    # one plain-text table with both rows, MFU marked as not available
    table = [line for line in stdout.splitlines() if " | " in line]
    assert len(table) == 3 and table[0].startswith("model")
    assert table[1].startswith("CNN ch. 4") and table[2].startswith("GPT ch. 6")
    assert all("n/a (no peak)" in line for line in table[1:])
    print(f"dry run: {seconds:.0f} s")


def test_refuses_without_a_gpu(tmp_path):
    done = run_script(tmp_path=tmp_path, timeout=120)
    assert done.returncode == gpu_check.EXIT_NO_GPU
    assert done.stdout == ""
    message = done.stderr.strip().splitlines()
    assert len(message) == 1 and "no GPU visible" in message[0] and "--dry-run" in message[0]


def test_refuses_another_backend(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    done = subprocess.run([sys.executable, str(SCRIPT), "--dry-run"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == gpu_check.EXIT_NO_GPU
    assert "KERAS_BACKEND='torch'" in done.stderr


def test_mfu_arithmetic():
    # 1 GFLOP per image at 50,000 images/s is 50 TFLOP/s: half of a 100 TFLOP/s peak
    assert gpu_check.achieved_tflops(1e9, 5e4) == pytest.approx(50.0)
    assert gpu_check.model_flops_utilization(1e9, 5e4, 100.0) == pytest.approx(0.5)
    # chapter 6's GPU GPT: 6 layers, width 384, context 256, 65 characters
    flops = gpt_training_flops(65, 256, 6, 384)
    assert gpu_check.model_flops_utilization(flops, 1e6, 989.5) == pytest.approx(flops * 1e6 / 989.5e12)
    assert gpu_check.model_flops_utilization(1e9, 5e4, None) is None
    with pytest.raises(ValueError, match="peak_tflops must be positive, got 0"):
        gpu_check.model_flops_utilization(1e9, 5e4, 0)


@pytest.mark.parametrize(
    ("device", "policy", "peak"),
    [
        ("NVIDIA H200", "mixed_bfloat16", 989.5),
        ("NVIDIA H200 NVL", "mixed_bfloat16", 835.5),
        ("NVIDIA H100 80GB HBM3", "mixed_bfloat16", 989.5),
        ("NVIDIA H100 PCIe", "mixed_bfloat16", 756.5),
        ("NVIDIA A100-SXM4-80GB", "mixed_bfloat16", 312.0),
        ("NVIDIA A100-SXM4-80GB", "float32", 156.0),  # TF32, JAX's default for float32 on Ampere
        ("NVIDIA L4", "mixed_bfloat16", 121.0),
        ("Tesla T4", "mixed_float16", 65.0),
        ("Tesla T4", "float32", 8.1),  # no TF32 on Turing: plain FP32
        ("Tesla T4", "mixed_bfloat16", None),  # no bfloat16 on Turing
        ("NVIDIA L40S", "mixed_bfloat16", None),  # not an L4
        ("cpu", "float32", None),
    ],
)
def test_datasheet_peaks(device, policy, peak):
    assert gpu_check.datasheet_peak(device, policy)[0] == peak


def test_datasheet_peaks_agree_with_the_cost_calculator():
    from bigmodel_utils.calculators import costs

    for short, policy in (("T4", "mixed_float16"), ("A100", "mixed_bfloat16"), ("H100", "mixed_bfloat16")):
        spec = costs.ACCELERATORS[short]
        assert gpu_check.datasheet_peak(spec.name, policy)[0] * 1e12 == pytest.approx(spec.peak_flops, rel=1e-3)
    with pytest.raises(ValueError, match="policy must be one of"):
        gpu_check.datasheet_peak("NVIDIA H200", "float8")


def test_windows_leave_out_the_compile_window_and_respect_the_bounds():
    windows = gpu_check.Windows(steps=[1, 10, 10, 10], seconds=[5.0, 1.0, 2.0, 4.0])
    assert windows.items_per_second(2) == pytest.approx(10.0)  # median of 20, 10 and 5
    assert gpu_check.Windows(steps=[3], seconds=[1.0]).items_per_second(2) is None
    prepared, trained = [], []

    def prepare(start, steps):
        prepared.append((start, steps))
        return steps

    done = gpu_check.run_windows(prepare, trained.append, max_steps=7, budget_seconds=1e9, first_window=3,
                                 fixed_window=True)
    assert prepared == [(0, 3), (3, 3), (6, 1)] and trained == [3, 3, 1] and done.total_steps == 7
    # windows grow towards budget / 40 seconds, but never past max_window steps
    capped = gpu_check.run_windows(prepare, trained.append, max_steps=20, budget_seconds=1e9, first_window=1,
                                   max_window=4)
    assert capped.steps == [1, 1, 4, 4, 4, 4, 2]  # resized from the second (compiled) window on



def test_windows_stop_before_the_budget_on_a_simulated_clock(monkeypatch):
    # A clock that only the training moves, 2 ms a step, makes the budget's arithmetic exact (no wall time):
    # two 5-step windows (10 ms each), then windows sized to budget / 40 = 0.5 s at least, i.e. 250 steps. After
    # the third window 0.52 s have passed and another would end at 1.02 s, past the 0.6 s budget: it stops.
    clock = [0.0]
    monkeypatch.setattr(gpu_check, "time", SimpleNamespace(perf_counter=lambda: clock[0]))

    def train(steps):
        clock[0] += 0.002 * steps

    bounded = gpu_check.run_windows(lambda start, steps: steps, train, max_steps=10_000, budget_seconds=0.6,
                                    first_window=5)
    assert bounded.steps == [5, 5, 250] and bounded.total_steps == 260
    assert bounded.seconds == pytest.approx([0.01, 0.01, 0.5])
    assert clock[0] == pytest.approx(0.52) and clock[0] <= 0.6
    # a budget that leaves room for the first two windows only still runs both (they always run)
    clock[0] = 0.0
    assert gpu_check.run_windows(lambda start, steps: steps, train, max_steps=10_000, budget_seconds=0.001,
                                 first_window=5).steps == [5, 5]


def _full_values(notebook: Path) -> dict:
    """The `full` value of every parameter in a chapter's parameters cell (by_profile's full=, or the constant)."""
    cells = json.loads(notebook.read_text())["cells"]
    cell = next(c for c in cells if "parameters" in c.get("metadata", {}).get("tags", []))
    values = {}
    for node in ast.parse("".join(cell["source"])).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            value = node.value
            if isinstance(value, ast.Call) and getattr(value.func, "id", "") == "by_profile":
                value = next(k.value for k in value.keywords if k.arg == "full")
            try:
                values[node.targets[0].id] = ast.literal_eval(value)
            except ValueError:
                pass
    return values


@pytest.mark.parametrize(("model", "notebook"), [("cnn", "04_cnn_on_gpu"), ("gpt", "06_language_models")])
def test_full_configurations_are_the_chapters(model, notebook):
    chapter = _full_values(ROOT / "chapters" / f"{notebook}.ipynb")
    assert {name: chapter[name] for name in gpu_check.FULL[model]} == gpu_check.FULL[model]
    assert set(gpu_check.DRY[model]) == set(gpu_check.FULL[model])
