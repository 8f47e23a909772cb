"""One model on several devices: ZeRO's memory arithmetic, and the chapter-6 GPT sharded with
``keras.distribution``.

* **Memory per device** under data parallelism and ZeRO stages 1, 2 and 3 (Rajbhandari et al.
  2020): :func:`zero_memory` splits chapter 2's :func:`bigmodel_utils.calculators.footprint.training_memory`
  over ``devices``, and :func:`devices_needed` says how many accelerators of a given memory hold
  the training state.
* **Sharding the GPT**: :func:`gpt_layout_map` maps each of its variables to a
  ``keras.distribution.TensorLayout`` (Megatron-style: the first matrix of each pair split by its
  columns, the second by its rows), and :func:`run_on_virtual_devices` trains the same GPT on one
  device, with ``DataParallel`` and with ``ModelParallel``, on JAX's virtual CPU devices in a
  subprocess (JAX must see the device count before it starts, and the subprocess does not care
  which backend the caller's Keras uses). ``keras.distribution`` is implemented for JAX only.

Used in chapter 6 ("Beyond one device").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass

from bigmodel_utils import validation
from bigmodel_utils.calculators import footprint

ZERO_STAGES = (0, 1, 2, 3)
"""0 is plain data parallelism (everything replicated); 1 partitions the optimizer states (with
the float32 master weights), 2 the gradients too, 3 the weights too."""


@dataclass(frozen=True)
class DeviceMemory:
    """Bytes of training state on each device (activations excluded)."""

    weights: float
    gradients: float
    optimizer_states: float  # the float32 master copy plus Adam's two moments

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer_states

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "total": self.total}


def zero_memory(num_params, devices: int, stage: int, recipe: str = "mixed bf16 + Adam") -> DeviceMemory:
    """Bytes of weights, gradients and optimizer states per device for data parallelism over
    ``devices`` with ZeRO ``stage`` (0 = none), storing the model as chapter 2's ``recipe``.

    With mixed-precision Adam (2 + 2 + 12 bytes per parameter, Rajbhandari et al.'s K = 12) and
    ``P`` parameters: stage 0 keeps 16P on every device, stage 1 ``4P + 12P/devices``, stage 2
    ``2P + 14P/devices``, stage 3 ``16P/devices``.
    """
    devices = validation.positive_int("devices", devices)
    validation.check_choice("stage", stage, ZERO_STAGES)
    validation.check_choice("recipe", recipe, footprint.TRAINING_RECIPES)
    full = footprint.training_memory(num_params, **footprint.TRAINING_RECIPES[recipe])
    optimizer_states = full.master_weights + full.optimizer_state
    return DeviceMemory(
        weights=full.weights / (devices if stage >= 3 else 1),
        gradients=full.gradients / (devices if stage >= 2 else 1),
        optimizer_states=optimizer_states / (devices if stage >= 1 else 1),
    )


def devices_needed(num_params, stage: int, device_bytes: float = 80e9,
                   recipe: str = "mixed bf16 + Adam", max_devices: int = 1 << 20) -> int | None:
    """The fewest devices of ``device_bytes`` each whose share of the training state fits, under
    ZeRO ``stage``; None when no number does (the replicated part alone is too large)."""
    device_bytes = validation.positive("device_bytes", device_bytes)
    if zero_memory(num_params, max_devices, stage, recipe).total > device_bytes:
        return None
    low, high = 1, max_devices  # the memory per device falls as devices grow: bisect
    while low < high:
        middle = (low + high) // 2
        if zero_memory(num_params, middle, stage, recipe).total <= device_bytes:
            high = middle
        else:
            low = middle + 1
    return low


# --------------------------------------------------------------------------------------
# Sharding the GPT with keras.distribution
# --------------------------------------------------------------------------------------

GPT_LAYOUT = {
    # token and position embeddings: split along the width
    r".*/token_embedding/embeddings": (None, "model"),
    r".*/position_embedding/embeddings": (None, "model"),
    # attention: Q, K and V by their output columns, the output projection by its input rows
    r".*/attention/qkv/kernel": (None, "model"),
    r".*/attention/qkv/bias": ("model",),
    r".*/attention/out/kernel": ("model", None),
    # MLP: the expanding layer by columns, the contracting layer by rows
    r".*/mlp_in/kernel": (None, "model"),
    r".*/mlp_in/bias": ("model",),
    r".*/mlp_out/kernel": ("model", None),
}
"""Variable path (a regular expression that must match the whole path) to its layout over the
mesh axes; variables not listed (LayerNorms, the biases added after a row-split matrix, the output
bias) are replicated."""


def gpt_layout_map(device_mesh):
    """A ``keras.distribution.LayoutMap`` that shards the chapter-6 GPT's embeddings and dense
    kernels over the ``"model"`` axis of ``device_mesh`` (:data:`GPT_LAYOUT`)."""
    import keras

    layout_map = keras.distribution.LayoutMap(device_mesh)
    for path, axes in GPT_LAYOUT.items():
        layout_map[path] = axes
    return layout_map


def _train_on_virtual_devices(settings: dict) -> dict:  # runs in the subprocess, under JAX
    import time

    import jax
    import keras
    import numpy as np

    from bigmodel_utils import gpt, optimizers
    from bigmodel_utils.data import text

    config = gpt.GPTConfig(**settings["config"])
    tokens = np.random.default_rng(settings["seed"]).integers(
        0, config.vocab_size, settings["tokens"]
    ) if settings.get("tokens_path") is None else np.load(settings["tokens_path"])
    steps, batch = settings["steps"], settings["batch_size"]
    x, y = text.windows(tokens, config.context, steps * batch, seed=settings["seed"])
    devices = keras.distribution.list_devices("cpu")
    initial = gpt.build_gpt(config, seed=settings["seed"]).get_weights()

    def train(distribution):
        keras.distribution.set_distribution(distribution)
        try:
            model = gpt.build_gpt(config)
            model.set_weights(initial)
            optimizer = optimizers.adamw(settings["learning_rate"])
            gpt.compile_language_model(model, optimizer, jit_compile=True)
            start = time.perf_counter()
            recorder = _step_loss_recorder()
            model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0,
                      callbacks=[recorder])
            seconds = time.perf_counter() - start
            per_device = {str(device): 0 for device in jax.devices()}
            for variable in model.weights:
                for shard in variable.value.addressable_shards:
                    per_device[str(shard.device)] += shard.data.nbytes
            layouts = {
                variable.path: [str(a) for a in variable.value.sharding.spec]
                if hasattr(variable.value.sharding, "spec") else []
                for variable in model.weights
            }
            return {
                "losses": recorder.losses,
                "seconds": seconds,
                "param_bytes_per_device": list(per_device.values()),
                "param_bytes": int(sum(int(np.prod(v.shape)) * 4 for v in model.weights)),
                "layouts": layouts,
            }
        finally:
            keras.distribution.set_distribution(None)

    mesh = keras.distribution.DeviceMesh((1, len(devices)), ("batch", "model"), devices)
    return {
        "backend": keras.backend.backend(),
        "devices": [str(d) for d in devices],
        "single_device": train(None),
        "data_parallel": train(keras.distribution.DataParallel(devices=devices)),
        "model_parallel": train(
            keras.distribution.ModelParallel(layout_map=gpt_layout_map(mesh), batch_dim_name="batch")
        ),
    }


def _step_loss_recorder():
    """A Keras callback that keeps the loss of every training step (Keras logs the running mean
    over the epoch; the recorder undoes it)."""
    import keras

    class StepLosses(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.means, self.losses = [], []

        def on_train_batch_end(self, batch, logs=None):
            self.means.append(float(logs["loss"]))
            i = len(self.means) - 1
            self.losses.append((i + 1) * self.means[i] - i * (self.means[i - 1] if i else 0.0))

    return StepLosses()


def run_on_virtual_devices(config, *, steps: int = 20, batch_size: int = 16, devices: int = 2,
                           learning_rate: float = 1e-3, seed: int = 0, tokens=None,
                           timeout: float = 600.0) -> dict:
    """Train the GPT of shape ``config`` (a ``gpt.GPTConfig``) for ``steps`` steps with the book's AdamW
    (:func:`bigmodel_utils.optimizers.adamw`) from the same initial weights on the same batches three
    ways, on ``devices`` virtual CPU devices of JAX in a subprocess: on one device, with ``DataParallel``
    (the batch split) and with ``ModelParallel`` (the weights split by :func:`gpt_layout_map`).

    ``tokens`` (an int array; default random tokens) is the text to train on. Returns, for each
    way, the per-step losses, the seconds, the parameter bytes on each device and each variable's
    layout. Needs JAX (``pip install "jax[cpu]"``); runs whatever backend this process uses.
    """
    import tempfile

    import numpy as np

    devices = validation.check_int("devices", devices, minimum=2)
    if config.width % devices:
        raise ValueError(f"config.width must be divisible by devices ({devices}), got {config.width}")
    settings = {
        "config": asdict(config),
        "steps": validation.positive_int("steps", steps),
        "batch_size": validation.positive_int("batch_size", batch_size),
        "learning_rate": validation.positive("learning_rate", learning_rate),
        "seed": seed,
        "tokens": 20_000,
        "tokens_path": None,
    }
    if batch_size % devices:
        raise ValueError(f"batch_size must be divisible by devices ({devices}), got {batch_size}")
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    with tempfile.TemporaryDirectory() as folder:
        if tokens is not None:
            settings["tokens_path"] = os.path.join(folder, "tokens.npy")
            np.save(settings["tokens_path"], np.asarray(tokens, dtype=np.int32))
        completed = subprocess.run(
            [sys.executable, "-m", "bigmodel_utils.techniques.parallel", json.dumps(settings)],
            env=env, capture_output=True, text=True, timeout=timeout,
        )
    if completed.returncode != 0:
        tail = "\n".join(completed.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"the sharded run failed (exit {completed.returncode}):\n{tail}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


if __name__ == "__main__":  # the subprocess of run_on_virtual_devices
    print(json.dumps(_train_on_virtual_devices(json.loads(sys.argv[1]))))
