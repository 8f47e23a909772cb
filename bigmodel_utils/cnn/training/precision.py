"""Devices and numeric precision: which accelerator trains, which dtype policy it should use, the
linear learning-rate scaling rule, and float32 copies of mixed-precision models. Used in chapters 4 and 7.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

import keras

from bigmodel_utils.backend import devices
from bigmodel_utils.validation import check_choice, check_int, check_number

PRECISION_POLICIES = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
"""Values accepted by :func:`resolve_precision_policy`."""


@dataclass(frozen=True)
class DeviceInfo:
    """The accelerator training will use: ``kind`` is "GPU", "TPU" or "CPU".

    ``compute_capability`` is a (major, minor) tuple for NVIDIA GPUs (7.5 for a
    T4, 8.0 for an A100, 9.0 for an H100) and None otherwise. ``cpu_bfloat16``
    says whether a CPU has native bfloat16 instructions (x86 AVX512-BF16 or
    AMX-BF16, Arm BF16), which TensorFlow's oneDNN kernels use.
    """

    kind: str
    name: str
    compute_capability: tuple[int, int] | None = None
    cpu_bfloat16: bool = False

    def __str__(self) -> str:
        extra = ""
        if self.compute_capability:
            extra = f", compute capability {self.compute_capability[0]}.{self.compute_capability[1]}"
        elif self.cpu_bfloat16:
            extra = ", native bfloat16"
        return f"{self.kind}: {self.name}{extra}"


CPU_BFLOAT16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}
"""CPU feature flags (as /proc/cpuinfo spells them) of native bfloat16 arithmetic."""


def cpu_info() -> DeviceInfo:
    """Describe the CPU: its model name and whether it has native bfloat16 instructions (Linux; else False)."""
    name, flags = f"{os.cpu_count()} cores", set()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key == "model name" and name.endswith("cores"):
                    name = f"{value.strip()}, {os.cpu_count()} cores"
                elif key in ("flags", "features"):
                    flags.update(value.split())
    except OSError:  # not Linux: report no native bfloat16 rather than guess
        pass
    return DeviceInfo("CPU", name, cpu_bfloat16=bool(flags & CPU_BFLOAT16_FLAGS))


def device_info() -> DeviceInfo:
    """Describe the first accelerator the Keras backend sees
    (:func:`bigmodel_utils.backend.devices.accelerators`), or the CPU when there is none.

    Used in chapter 4 to pick the mixed-precision policy.
    """
    found = devices.accelerators()
    if not found:
        return cpu_info()
    first = found[0]
    return DeviceInfo(first.kind, first.name, first.compute_capability)


def resolve_precision_policy(policy: str = "auto", device: DeviceInfo | None = None) -> str:
    """Turn ``policy`` into a concrete Keras dtype policy name.

    ``"auto"`` picks ``mixed_bfloat16`` on TPUs, on GPUs of compute capability
    8.0 or more (A100, L4, H100) and on CPUs with native bfloat16 instructions;
    ``mixed_float16`` on GPUs of 7.x (V100, T4: fp16 tensor cores but no bf16);
    and ``float32`` everywhere else (older GPUs, CPUs without bfloat16, where
    16-bit arithmetic is emulated and slower).
    """
    check_choice("policy", policy, PRECISION_POLICIES)
    if policy != "auto":
        return policy
    device = device_info() if device is None else device
    if device.kind == "TPU" or (device.kind == "CPU" and device.cpu_bfloat16):
        return "mixed_bfloat16"
    if device.kind == "GPU" and device.compute_capability is not None:
        if device.compute_capability >= (8, 0):
            return "mixed_bfloat16"
        if device.compute_capability >= (7, 0):
            return "mixed_float16"
    return "float32"


def set_precision_policy(policy: str = "auto") -> str:
    """Set Keras's global dtype policy (see :func:`resolve_precision_policy`) and return its name.

    Models built afterwards compute in the policy's dtype and keep float32
    weights; build the output layer with ``dtype="float32"`` (the book's
    builders do) so the softmax and the loss stay in float32.
    """
    name = resolve_precision_policy(policy)
    keras.mixed_precision.set_global_policy(name)
    return name


@contextmanager
def precision_policy(policy: str = "auto"):
    """Use a dtype policy inside a ``with`` block and restore the previous one afterwards."""
    previous = keras.mixed_precision.global_policy().name
    try:
        yield set_precision_policy(policy)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def scaled_learning_rate(base_learning_rate: float, batch_size: int, base_batch_size: int = 32) -> float:
    """The linear scaling rule of Goyal et al. (2017): multiply the learning rate by batch_size / base_batch_size.

    >>> scaled_learning_rate(1e-3, 256)
    0.008
    """
    batch_size = check_int("batch_size", batch_size, minimum=1)
    base_batch_size = check_int("base_batch_size", base_batch_size, minimum=1)
    base_learning_rate = check_number("base_learning_rate", base_learning_rate, 0, 10, include_minimum=False,
                                      include_maximum=False)
    return base_learning_rate * batch_size / base_batch_size


def _float32_policies(config):
    """``config`` (a model's nested config) with every layer's dtype policy set to float32."""
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy" and "config" in config:
            return {**config, "config": {**config["config"], "name": "float32"}}
        return {key: _float32_policies(value) for key, value in config.items()}
    if isinstance(config, list):
        return [_float32_policies(value) for value in config]
    return config


def float32_copy(model: keras.Model) -> keras.Model:
    """A copy of a functional or sequential ``model`` that computes in float32, with the same weights.

    Chapter 4 may train under mixed precision (bfloat16 or float16 computation, float32 weights); export
    runtimes and ONNX Runtime's quantiser want float32 graphs, so chapter 7 serves this copy. Used in
    chapter 7.
    """
    copy = model.__class__.from_config(_float32_policies(model.get_config()))
    copy.set_weights(model.get_weights())
    return copy
