"""Training throughput: the classic setup against the optimised one, on the same model and data.

    python benchmarks/throughput.py                      # CPU or GPU, TensorFlow backend
    KERAS_BACKEND=jax python benchmarks/throughput.py    # JAX; TensorFlow need not be installed

Prints images per second for both setups (median of several timed passes
after warm-up) and their ratio, and writes them as JSON to
``benchmarks/results/throughput-<backend>-<device>.json`` (or ``--output``).
The setups are defined in ``bigmodel_utils.cnn.training`` (``classic_setup`` and
``optimised_setup``); chapter 4 runs the same measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the package

from bigmodel_utils.book import runtime  # noqa: E402  (after the path fix)
from bigmodel_utils.cnn import models, training  # noqa: E402
from bigmodel_utils.data import image_data  # noqa: E402


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("improved", "classic"), default="improved")
    parser.add_argument("--width", type=positive_int, default=16, help="first-stage filters of the improved model")
    parser.add_argument("--image-size", type=positive_int, default=None, help="resize to this many pixels square")
    parser.add_argument("--num-images", type=positive_int, default=4096, help="training images per timed pass")
    parser.add_argument("--runs", type=positive_int, default=5, help="timed passes per setup (median reported)")
    parser.add_argument("--warmup-runs", type=positive_int, default=1)
    parser.add_argument("--classic-batch", type=positive_int, default=32)
    parser.add_argument("--optimised-batch", type=positive_int, default=256)
    parser.add_argument("--output", type=Path, default=None, help="JSON file for the results")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import keras

    runtime.set_seed(0)
    dataset = image_data.load_dataset("fashion_mnist", "quick")
    images, labels = dataset.x_train[: args.num_images], dataset.y_train[: args.num_images]
    size = args.image_size or images.shape[1]
    channels = 3 if args.model == "classic" and args.image_size else 1
    shape = (size, size, channels)

    def build():
        if args.model == "classic":
            return models.build_classic_cnn(shape, dataset.num_classes)
        return models.build_improved_cnn(shape, dataset.num_classes, width=args.width)

    device = training.device_info()
    setups = [training.classic_setup(args.classic_batch),
              training.optimised_setup(args.optimised_batch, device=device)]
    start = time.perf_counter()
    results = training.measure_throughput(build, images, labels, setups, runs=args.runs,
                                          warmup_runs=args.warmup_runs, image_size=size, channels=channels)
    ratio = results["optimised"].images_per_second / results["classic"].images_per_second
    for name, result in results.items():
        s = result.setup
        print(f"{name:>9}: {result.images_per_second:8.0f} images/s  (batch {s.batch_size}, {s.pipeline}, "
              f"{s.precision}, XLA {result.jit_compile}, median of {len(result.run_seconds)} passes "
              f"of {result.images_per_run} images)")
    best_ratio = results["optimised"].best_images_per_second / results["classic"].best_images_per_second
    print(f"    ratio: {ratio:.2f}x  optimised / classic (medians; fastest passes: {best_ratio:.2f}x)")
    report = {
        "ratio": ratio, "ratio_of_fastest_passes": best_ratio, "setups": {k: v.as_dict() for k, v in results.items()},
        "model": args.model, "input_shape": list(shape), "parameters": build().count_params(),
        "backend": keras.backend.backend(), "keras": keras.__version__, "device": str(device),
        "cpu_count": os.cpu_count(), "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(), "seconds": time.perf_counter() - start,
    }
    output = args.output or ROOT / "benchmarks" / "results" / (
        f"throughput-{keras.backend.backend()}-{device.kind.lower()}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(runtime.to_jsonable(report), indent=2, sort_keys=True))
    print(f"results written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
