"""Shared fixtures: run a chapter once per test session (smoke under TensorFlow, or its shrunk full run under JAX)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from book import toc_files, toc_notebooks  # noqa: E402,F401  (re-exported for the tests)

CHAPTERS = ROOT / "chapters"
EXECUTED = Path(os.environ.get("BOOK_EXECUTED_DIR") or ROOT / "_build" / "executed")
"""Executed copies of the chapters (default parameters), which tools/build_smoke_book.py renders."""
KERAS_BACKENDS = ("tensorflow", "jax", "torch")
SESSION_BACKEND = os.environ.get("KERAS_BACKEND") or "tensorflow"
"""The backend chapters run under unless a test names another: this session's, else Keras's default."""


@pytest.fixture(scope="session")
def run_chapter(tmp_path_factory):
    """Return a function that executes a chapter with papermill and returns its results JSON.

    The profile is ``smoke`` unless ``profile=`` says otherwise (``full`` with shrinking parameters runs the
    branches only the GPU profile takes). The Keras backend is this session's (``KERAS_BACKEND``, else Keras's
    default, TensorFlow) unless ``backend=`` names another: the kernel inherits ``os.environ``, so the chapter
    runs under it. Each (chapter, profile, backend, parameters) runs once per session, in a fresh kernel, with
    ``BOOK_ARTIFACTS_DIR`` pointed at a temporary folder. The executed copy for the smoke book is kept when a test
    asks for the chapter with no backend, profile or parameters of its own: a JAX leg that names
    ``backend="jax"`` leaves the book's copies alone, even in a session started with ``KERAS_BACKEND=jax``.
    """
    import papermill

    cache: dict = {}
    workdir = tmp_path_factory.mktemp("chapters")

    def run(stem: str, profile: str = "smoke", backend: str | None = None, **parameters):
        for_the_book = backend is None and profile == "smoke" and not parameters
        backend = backend or SESSION_BACKEND
        if backend not in KERAS_BACKENDS:
            raise ValueError(f"backend must be one of {KERAS_BACKENDS}, got {backend!r}")
        key = (stem, profile, backend, repr(sorted(parameters.items())))  # parameters may hold lists
        if key not in cache:
            notebook = CHAPTERS / f"{stem}.ipynb"
            tag = f"{stem}-{len(cache)}"
            results_path = workdir / f"{tag}.json"
            previous = {k: os.environ.get(k) for k in ("BOOK_PROFILE", "BOOK_ARTIFACTS_DIR", "KERAS_BACKEND")}
            os.environ["BOOK_PROFILE"] = profile
            os.environ["BOOK_ARTIFACTS_DIR"] = str(workdir / f"{tag}-artifacts")
            os.environ["KERAS_BACKEND"] = backend
            try:
                papermill.execute_notebook(
                    str(notebook), str(workdir / f"{tag}.ipynb"),
                    parameters={"RESULTS_PATH": str(results_path), **parameters},
                    cwd=str(notebook.parent), kernel_name="python3", progress_bar=False,
                )
            finally:
                for k, v in previous.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
            cache[key] = {"results": json.loads(results_path.read_text()), "executed": workdir / f"{tag}.ipynb",
                          "kept": False}
        if for_the_book and not cache[key]["kept"]:
            notebook = CHAPTERS / f"{stem}.ipynb"
            _keep_executed_copy(cache[key]["executed"], EXECUTED / notebook.relative_to(ROOT))
            cache[key]["kept"] = True
        return cache[key]["results"]

    return run


def _keep_executed_copy(executed: Path, target: Path) -> None:
    """Save an executed chapter for the smoke book, hiding papermill's injected-parameters cell."""
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            cell.metadata["tags"] = [*tags, "remove-cell"]
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)


def pytest_collection_modifyitems(items):
    """Mark the tests that read a chapter's second run (tests/chapters/conftest.py), so the TensorFlow and JAX legs
    of `make test` can take one run each."""
    for item in items:
        if "run_jax_full" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.jax_full)


# The chapters' second run: each chapter under KERAS_BACKEND=jax in the `full` profile, shrunk.
# `make test` executes every chapter twice: under TensorFlow in the smoke profile (the `results` fixture of each
# test_chapter_NN.py, with the recorded-output check and the smoke book's copy), and here, under JAX in the `full`
# profile with the parameters below, which shrink the data and budgets while keeping every branch only the GPU profile
# takes. So each backend and each profile's branches run once, and no chapter runs a third time.
SHRUNK_FULL = {
    # The full profile differs from smoke only in BOOTSTRAP_SAMPLES (5,000 instead of 100), and the whole chapter
    # takes seconds, so it runs unshrunk. SEED=7 shows that papermill's injected parameters win over the profile's.
    "01_background": dict(SEED=7),
    # The full profile reads the whole Fashion-MNIST and trains its MLPs on 60,000 images for 5 epochs, at four data
    # fractions (1/64, 1/16, 1/4, all), and times the forward pass on batches of 64. Shrunk: 19,200 images (more than
    # the bundled 18,000-image subset holds, so only the full set can give them), one epoch, one timed batch of two.
    "02_core_concepts": dict(NUM_TRAIN=19200, NUM_EPOCHS=1, TIMING_BATCH_SIZE=2, TIMING_REPEATS=1),
    # The full profile reads the whole Fashion-MNIST (60,000 + 10,000 images; the bundled subset has 18,000 + 2,000)
    # and trains on all of it for 10 epochs; shrunk, it trains on 19,200 images (more than the subset holds) for one
    # epoch, still against the full test split.
    "03_math_from_scratch": dict(NUM_TRAIN=19200, NUM_EPOCHS=1),
    # The full profile reads the whole Fashion-MNIST and trains the classic model on 224x224x3 images, resized and
    # repeated to three channels one batch at a time in the input pipeline. Shrunk: the first 40 training images (36
    # to train, every class among them, which the per-class figure needs; 4 to validate) and 20 test images (every
    # class again, which the classification report needs), one epoch of each model, small timing and distribution
    # runs. Batches stay even: MirroredStrategy on two CPU replicas fails on a batch of odd size (AddN of 15 and 14
    # images), which no profile's own sizes make. The command-line demo (a second TensorFlow process, run by quick
    # too and by tests/programs/test_cli.py) stays off, and so does CIFAR-10, which needs the network.
    "04_cnn_on_gpu": dict(
        NUM_TRAIN=40,
        NUM_TEST=20,
        CLASSIC_EPOCHS=1,
        EPOCHS=1,
        BENCH_IMAGES=64,
        BENCH_RUNS=1,
        MIRRORED_IMAGES=32,
        MIRRORED_EPOCHS=1,
        RUN_CLI_DEMO=False,
        RUN_CIFAR10=False,
    ),
    # The full profile searches 50,000 images of the whole Fashion-MNIST (validated on 10,000 more, tested on its
    # 10,000 test images): 25 random trials, Hyperband up to 9 epochs (three brackets, later rounds continuing the best
    # trials from their checkpoints) and 8 Bayesian trials. Shrunk: 64 + 64 images and one epoch a trial, one random
    # and one Bayesian trial (smoke runs two of each), Hyperband up to 2 epochs with factor 2 (two brackets and one
    # continued trial, as against smoke's single bracket); the test split stays the full one, and the narrowest
    # baseline keeps its passes over it cheap. The distributed demo (three more processes, run by quick too) is left
    # to tests/programs/test_tuning.py.
    "05_tuning": dict(
        NUM_SEARCH_TRAIN=64,
        NUM_VAL=64,
        RANDOM_TRIALS=1,
        RANDOM_EPOCHS=1,
        HYPERBAND_MAX_EPOCHS=2,
        HYPERBAND_FACTOR=2,
        BAYES_TRIALS=1,
        BAYES_EPOCHS=1,
        BAYES_INITIAL_POINTS=1,
        FINAL_EPOCHS=1,
        BASELINE_WIDTH=8,
        RUN_DISTRIBUTED_DEMO=False,
    ),
    "06_language_models": dict(
        NUM_LAYERS=1,
        NUM_HEADS=2,
        WIDTH=32,
        CONTEXT=32,
        BATCH_SIZE=4,
        TRAIN_STEPS=4,
        WARMUP_STEPS=1,
        EVAL_EVERY=2,
        EVAL_WINDOWS=4,
        TANG_STEPS=4,
        NUM_POEMS=4,
        BPE_VOCAB=280,
        BPE_TRAIN_CHARS=5000,
        KV_NEW_TOKENS=16,
        JIT_COMPILE=False,
        SHARD_WIDTH=32,
        SHARD_STEPS=2,
    ),
    # Everything at its smallest, so that what the run adds to smoke's is the full profile's own branch: float8 in
    # QUANT_MODES (and full's learning rates and LoRA rank, which change only numbers). The base GPT and the CNN are
    # trained here as a fresh build does (their fallbacks), for 2 steps and one epoch.
    "07_model_to_product": dict(
        BASE_FALLBACK_STEPS=2,
        ADAPT_STEPS=2,
        ADAPT_BATCH=4,
        NUM_SAMPLES=2,
        CNN_WIDTH=8,
        CNN_FALLBACK_EPOCHS=1,
        CALIBRATION_IMAGES=16,
        LATENCY_REPEATS=1,
        LOAD_CONCURRENCY=[1, 2],
        LOAD_REQUESTS=2,
        LOAD_SECONDS=0.5,
        LOAD_WARMUP=1,
        GENERATED_TOKENS=2,
        DECODE_BATCHES=[1, 2],
    ),
    # The full profile loads SmolLM2 in full precision from the Hugging Face hub; the tests' machines cannot reach
    # it, so this run also checks the fallback to the offline 4-bit weights, announced (the probe fails at once).
    # Shrunk: 16 new tokens, 4 windows of 256 tokens, 8 arithmetic and 8 cloze items and 30 of the 60 questions
    # (enough for the accuracy check), and one quantised copy (int8), measured without timing its decoding: each copy
    # compiles the model again, about 15 s with JAX's cache cold.
    "08_pretrained_model": dict(
        NEW_TOKENS=16,
        EVAL_WINDOWS=4,
        NUM_ARITHMETIC=8,
        NUM_CLOZE=8,
        NUM_QUESTIONS=30,
        BOOTSTRAP=500,
        QUANT_MODES=["int8"],
        MEASURE_COPIES_FULLY=False,
    ),
    "09_future_challenges": dict(
        SCALING_WIDTHS=[4, 8, 16],
        SCALING_STEPS=4,
        SCALING_CONTEXT=16,
        SCALING_BATCH=4,
        SCALING_LAYERS=1,
        ISOFLOP_BUDGETS=[2e6],
        ISOFLOP_WIDTHS=[4, 8, 16],
        ISOFLOP_STEPS=[1, 100],
        EXPLAIN_TRAIN=500,
        EXPLAIN_EPOCHS=1,
        NOISE_MULTIPLIERS=[0.0, 1.0],
        DP_TRAIN=500,
        DP_EPOCHS=1,
        DP_BATCH_SIZE=100,
        MI_MEMBERS=100,
        MI_EPOCHS=1,
        MI_DP_EPOCHS=1,
        IG_STEPS=16,
    ),
}


@pytest.fixture(scope="session")
def run_jax_full(run_chapter):
    """Return ``run(stem)``: the chapter's results under JAX in the shrunk full profile (run once a session)."""

    def run(stem: str) -> dict:
        return run_chapter(stem, profile="full", backend="jax", **SHRUNK_FULL[stem])

    return run


@pytest.fixture(scope="module")
def results(run_chapter, request):
    """The chapter's run under TensorFlow in the smoke profile; the test module names it in ``CHAPTER``."""
    return run_chapter(request.module.CHAPTER)


@pytest.fixture(scope="module")
def jax_full(run_jax_full, request):
    """The chapter's second run, under JAX in the shrunk full profile; the module names it in ``CHAPTER``."""
    return run_jax_full(request.module.CHAPTER)
