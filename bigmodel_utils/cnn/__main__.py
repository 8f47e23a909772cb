"""Command line for the book's training job (chapter 4), resumable after a kill.

    python -m bigmodel_utils.cnn train --dataset fashion_mnist --model improved --epochs 5 --output runs/demo

It loads the data, builds and trains the model with a progress bar, prints a
final metrics line and leaves in ``--output``: ``model.keras`` (the final
model), ``best.keras`` (the best epoch by validation accuracy),
``metrics.json`` (final metrics), ``history.json`` (per-epoch metrics),
``config.json`` (the settings) and TensorBoard ``logs/``. Killed and started
again with the same ``--output``, it resumes at the last finished epoch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bigmodel_utils.book import runtime
from bigmodel_utils.data.files import write_json_atomically
from bigmodel_utils.validation import check_int, check_number

MODELS = ("improved", "classic")
MIXED_PRECISION = {"auto": "auto", "off": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}
PROFILE_SIZES = {"smoke": (2000, 500), "quick": (None, None), "full": (None, None)}
"""(num_train, num_test) per profile; None keeps the whole split the profile loads."""
VALIDATION_FRACTION = 0.1
BASE_LEARNING_RATE, BASE_BATCH_SIZE = 1e-3, 32
# Settings that must match for a run to resume in the same folder.
RESUME_KEYS = ("dataset", "model", "batch_size", "learning_rate", "image_size", "channels", "profile", "seed",
               "mixed_precision", "width", "num_train", "num_test", "augment")


def _bounded_int(name: str, low: int, high: int):
    """An argparse type: the text as an integer from ``low`` to ``high`` (``validation.check_int``'s message)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = text  # not an integer: check_int says so, naming the text
        try:
            return check_int(name, value, minimum=low, maximum=high)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parse.__name__ = name  # argparse names the type in its messages
    return parse


def _learning_rate(text: str) -> float:
    """An argparse type: the text as a number above 0 and below 10 (``validation.check_number``'s message)."""
    try:
        value = float(text)
    except ValueError:
        value = text
    try:
        return check_number("learning rate", value, 0, 10, include_minimum=False, include_maximum=False)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m bigmodel_utils.cnn``: one sub-command, ``train`` (its parser is ``args.parser``)."""
    parser = argparse.ArgumentParser(prog="python -m bigmodel_utils.cnn", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    train = commands.add_parser("train", help="train a CNN image classifier (resumable)",
                                description="Train a CNN image classifier; rerun with the same --output to resume.")
    train.add_argument("--dataset", choices=("fashion_mnist", "digits", "cifar10"), default="fashion_mnist")
    train.add_argument("--model", choices=MODELS, default="improved")
    train.add_argument("--epochs", type=_bounded_int("epochs", 1, 1000), default=5)
    train.add_argument("--output", type=Path, required=True, help="folder for the model, metrics and backups")
    train.add_argument("--batch-size", type=_bounded_int("batch size", 1, 65536), default=128)
    train.add_argument("--learning-rate", type=_learning_rate, default=None,
                       help=f"peak learning rate (default: {BASE_LEARNING_RATE:g} x batch size / {BASE_BATCH_SIZE})")
    train.add_argument("--image-size", type=_bounded_int("image size", 8, 1024), default=None,
                       help="resize images to this many pixels square (default: native size)")
    train.add_argument("--channels", type=int, choices=(1, 3), default=None,
                       help="colour channels fed to the model (default: the dataset's)")
    train.add_argument("--profile", choices=runtime.PROFILES, default=None,
                       help="data size: smoke (2,000 images), quick (bundled subset), full (default: $BOOK_PROFILE)")
    train.add_argument("--seed", type=_bounded_int("seed", 0, 2**31 - 1), default=0)
    train.add_argument("--mixed-precision", choices=tuple(MIXED_PRECISION), default="auto",
                       help="auto: float16 on T4-class GPUs, bfloat16 on A100 and newer, off on CPUs")
    train.add_argument("--width", type=_bounded_int("width", 1, 512), default=16,
                       help="filters in the improved model's first stage")
    train.add_argument("--num-train", type=_bounded_int("num train", 10, 10**7), default=None)
    train.add_argument("--num-test", type=_bounded_int("num test", 10, 10**7), default=None)
    train.add_argument("--patience", type=_bounded_int("patience", 1, 1000), default=5,
                       help="early stopping: epochs without a better validation accuracy")
    train.add_argument("--no-augment", dest="augment", action="store_false",
                       help="no random flips and shifts in the input pipeline")
    train.add_argument("--quiet", action="store_true", help="one line per epoch instead of a progress bar")
    train.set_defaults(parser=train)
    return parser


def _load(args):
    """Load the dataset for the profile and cut it to --num-train / --num-test."""
    from bigmodel_utils.data import image_data

    default_train, default_test = PROFILE_SIZES[args.profile]
    dataset = image_data.load_dataset(args.dataset, args.profile)
    num_train = args.num_train or default_train or len(dataset.y_train)
    num_test = args.num_test or default_test or len(dataset.y_test)
    dataset.x_train, dataset.y_train = dataset.x_train[:num_train], dataset.y_train[:num_train]
    dataset.x_test, dataset.y_test = dataset.x_test[:num_test], dataset.y_test[:num_test]
    return dataset


def _final_line(metrics: dict) -> str:
    return (f"final: test_accuracy={metrics['test_accuracy']:.4f} test_loss={metrics['test_loss']:.4f} "
            f"epochs={metrics['epochs_completed']} resumed_from_epoch={metrics['resumed_from_epoch']} "
            f"train_seconds={metrics['train_seconds']:.1f} output={metrics['output']}")


def run_train(args, parser: argparse.ArgumentParser) -> int:
    """The ``train`` sub-command; returns the exit status."""
    output: Path = args.output
    if output.exists() and not output.is_dir():
        parser.error(f"argument --output: {output} exists and is not a folder")
    try:  # before anything slow loads: a folder we cannot write to fails now, in one line
        output.mkdir(parents=True, exist_ok=True)
        probe = output / ".write-check"
        probe.touch()
        probe.unlink()
    except OSError as error:
        parser.error(f"argument --output: cannot write to {output} ({error.strerror or error})")
    args.profile = runtime.resolve_profile(args.profile)
    config = {key: getattr(args, key) for key in RESUME_KEYS}
    config["learning_rate"] = args.learning_rate or BASE_LEARNING_RATE * args.batch_size / BASE_BATCH_SIZE
    config["epochs"] = args.epochs
    metrics_path, config_path = output / "metrics.json", output / "config.json"
    if config_path.is_file():
        saved = json.loads(config_path.read_text())
        changed = [k for k in RESUME_KEYS if saved.get(k) != config[k]]
        if changed:
            detail = ", ".join(f"--{k.replace('_', '-')} {saved.get(k)} -> {config[k]}" for k in changed)
            parser.error(f"argument --output: {output} holds a run with other settings ({detail}); "
                         "use a new folder or the same settings")
        if metrics_path.is_file() and saved.get("epochs") == args.epochs:
            metrics = json.loads(metrics_path.read_text())
            print(f"The run in {output} has already finished; nothing to do.")
            print(_final_line(metrics))
            return 0

    from bigmodel_utils import optimizers  # Keras loads here, after the flags were checked
    from bigmodel_utils.cnn import models, training

    runtime.set_seed(args.seed)
    dataset = _load(args)
    channels = args.channels or (1 if dataset.x_train.ndim == 3 else dataset.x_train.shape[-1])
    size = args.image_size or dataset.x_train.shape[1]
    if args.model == "classic" and size < models.classic_min_image_size():
        parser.error(f"argument --image-size: the classic model needs at least "
                     f"{models.classic_min_image_size()} pixels, got {size}")
    policy = training.set_precision_policy(MIXED_PRECISION[args.mixed_precision])
    write_json_atomically(config_path, config)

    n_val = max(1, int(len(dataset.y_train) * VALIDATION_FRACTION))
    x_train, y_train = dataset.x_train[:-n_val], dataset.y_train[:-n_val]
    x_val, y_val = dataset.x_train[-n_val:], dataset.y_train[-n_val:]
    image_args = {"image_size": size, "channels": channels}
    augment = training.augmentation(seed=args.seed) if args.augment else None
    train_ds = training.make_pipeline(x_train, y_train, args.batch_size, shuffle=True, augment=augment,
                                      seed=args.seed, **image_args)
    val_ds = training.make_pipeline(x_val, y_val, 512, **image_args)
    test_ds = training.make_pipeline(dataset.x_test, dataset.y_test, 512, **image_args)

    input_shape = (size, size, channels)
    if args.model == "classic":
        model = models.build_classic_cnn(input_shape, dataset.num_classes)
    else:
        model = models.build_improved_cnn(input_shape, dataset.num_classes, width=args.width)
    steps = len(train_ds) * args.epochs
    schedule = optimizers.warmup_cosine(config["learning_rate"], steps, warmup_steps=min(len(train_ds), steps - 1))
    training.compile_classifier(model, schedule)
    print(f"Training {model.name} ({model.count_params():,} parameters) on {len(y_train):,} {dataset.name} images "
          f"of {size}x{size}x{channels}; precision {policy}, batch {args.batch_size}, "
          f"peak learning rate {config['learning_rate']:g}.", flush=True)

    run = training.train(model, train_ds, validation_data=val_ds, epochs=args.epochs, output_dir=output,
                         patience=args.patience, verbose=2 if args.quiet else 1)
    start = time.perf_counter()
    test_loss, test_accuracy = model.evaluate(test_ds, verbose=0)
    model.save(output / "model.keras")
    metrics = {
        "test_accuracy": float(test_accuracy), "test_loss": float(test_loss),
        "epochs_completed": run.epochs_completed, "resumed_from_epoch": run.resumed_from_epoch,
        "epochs_run_this_time": run.epochs_run, "train_seconds": sum(run.history.get("epoch_seconds", [])),
        "evaluate_seconds": time.perf_counter() - start, "optimizer_steps": int(model.optimizer.iterations),
        "steps_per_epoch": len(train_ds), "parameters": model.count_params(), "precision": policy,
        "num_train": len(y_train), "num_validation": n_val, "num_test": len(dataset.y_test),
        "data_source": dataset.source, "output": str(output), "finished": True,
    }
    if run.history.get("val_accuracy"):
        metrics["best_val_accuracy"] = max(run.history["val_accuracy"])
    write_json_atomically(metrics_path, metrics)
    print(_final_line(metrics), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bigmodel_utils.cnn`` and the ``bigmodel-utils`` script; returns the exit status.

    Bad flags and bad values exit with status 2 and an argparse message that names them.
    """
    args = build_parser().parse_args(argv)
    try:
        return run_train(args, args.parser)
    except runtime.ProfileError as error:
        args.parser.error(f"argument --profile: {error}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
