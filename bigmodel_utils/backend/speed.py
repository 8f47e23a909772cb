"""How fast this machine multiplies matrices: the yardstick of a model FLOPs utilisation (MFU) where there is
no datasheet peak to compare with, as on a CPU.

Used in chapter 6 (with the Keras backend) and by ``benchmarks/lm_throughput.py`` (with NumPy, in a process
that loads no deep-learning framework).
"""

from __future__ import annotations

import time

import numpy as np

from bigmodel_utils.validation import check_choice, positive_int


def matmul_flops_per_second(size: int = 1024, repeats: int = 5, library: str = "keras") -> float:
    """This machine's dense float32 matrix-multiply speed in FLOP/s: ``2 size**3`` over the median seconds
    of ``repeats`` products of two ``(size, size)`` matrices, after one untimed product (warm-up).

    ``library`` is ``"keras"`` (``keras.ops.matmul`` on the current backend, the result brought back to
    NumPy so that the product has finished) or ``"numpy"``. A run's achieved FLOP/s divided by this rate is
    its MFU against what the hardware does on its best kernel.
    """
    size, repeats = positive_int("size", size), positive_int("repeats", repeats)
    check_choice("library", library, ("keras", "numpy"))
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((size, size), dtype=np.float32) for _ in range(2))
    if library == "keras":
        import keras

        a, b = keras.ops.convert_to_tensor(a), keras.ops.convert_to_tensor(b)

        def multiply():
            keras.ops.convert_to_numpy(keras.ops.matmul(a, b))
    else:

        def multiply():
            a @ b

    multiply()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        multiply()
        times.append(time.perf_counter() - start)
    return 2 * size**3 / float(np.median(times))
