"""Adapting and compressing a trained GPT: LoRA and post-training quantisation.

LoRA (Hu et al. 2021) freezes a trained weight matrix ``W`` (``d_in x d_out``) and
learns a low-rank update beside it: ``y = x W + b + (alpha / r) x A B`` with ``A``
``(d_in, r)`` and ``B`` ``(r, d_out)``, ``B`` starting at zero so that training starts
from the trained model. Keras has it built in (``Dense.enable_lora``); this module
applies it to the attention and MLP layers of :class:`bigmodel_utils.gpt.GPT`, freezes
everything else, and saves and reattaches the small factors on their own.

Post-training quantisation stores a kernel as 8-bit (or 4-bit) integers with one float
scale per output channel: ``q = round(w * 127 / max|w|)``. :func:`absmax_quantize` is
that rule in NumPy, which chapter 7 checks against the kernel Keras's
``Model.quantize("int8")`` stores. Used in chapter 7.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from bigmodel_utils import gpt as gpt_module
from bigmodel_utils.calculators import footprint
from bigmodel_utils.validation import check_choice, positive_int

LORA_TARGETS = ("qkv", "out", "mlp_in", "mlp_out")
"""The Dense layers of each GPT block that LoRA adapts by default: the attention's
query-key-value and output projections and both MLP layers."""

ADAPTATION_METHODS = ("frozen", "full", "lora")


# --------------------------------------------------------------------------------------
# LoRA from scratch, and with Keras
# --------------------------------------------------------------------------------------


def lora_dense(x, kernel, bias, a, b, alpha: float):
    """A LoRA-adapted dense layer in NumPy: ``x W + b + (alpha / r) (x A) B``.

    ``x`` ``(..., d_in)``, ``kernel`` ``(d_in, d_out)``, ``bias`` ``(d_out,)``, ``a``
    ``(d_in, r)``, ``b`` ``(r, d_out)``; returns ``(..., d_out)``. The update is applied
    as two thin matrix products, never as the full ``d_in x d_out`` matrix ``A B``.
    """
    rank = a.shape[1]
    return x @ kernel + bias + (alpha / rank) * ((x @ a) @ b)


def lora_layers(model: gpt_module.GPT, targets=LORA_TARGETS) -> dict[str, keras.layers.Dense]:
    """The Dense layers of ``model``'s blocks named in ``targets``, keyed by their path
    (for example ``"gpt/block_0/attention/qkv"``)."""
    targets = tuple(targets)
    unknown = sorted(set(targets) - set(LORA_TARGETS))
    if not targets or unknown:
        raise ValueError(
            f"targets must be a non-empty subset of {LORA_TARGETS}, got {targets!r}"
        )
    layers = {}
    for block in model.blocks:
        for layer in (block.attention.qkv, block.attention.out, block.mlp_in, block.mlp_out):
            if layer.name in targets:
                layers[layer.path] = layer
    return layers


def enable_lora(model: gpt_module.GPT, rank: int, targets=LORA_TARGETS, alpha=None,
                seed: int = 0) -> gpt_module.GPT:
    """Add LoRA factors of ``rank`` to the ``targets`` layers of ``model`` (in place)
    and freeze every other variable, biases and LayerNorms included, as Hu et al. do.

    Uses Keras's ``Dense.enable_lora`` (``alpha`` defaults to ``rank``, so the update is
    scaled by 1). Returns ``model``; compile it afterwards. The frozen flags live on the
    variables, not in the saved model: save the factors with :func:`save_lora_weights`.
    """
    rank = positive_int("rank", rank)
    layers = lora_layers(model, targets)
    keras.utils.set_random_seed(seed)
    for layer in layers.values():
        layer.enable_lora(rank, lora_alpha=alpha)
    for variable in model.variables:
        variable.trainable = "lora_kernel" in variable.path
    return model


def parameter_counts(model: keras.Model) -> dict[str, int]:
    """``{"total", "trainable", "trainable_share"}`` of ``model``: the counts of all its
    weights and of those an optimizer would update (LoRA factors included in both)."""
    total = int(sum(np.prod(v.shape) for v in model.weights))
    trainable = int(sum(np.prod(v.shape) for v in model.trainable_weights))
    return {"total": total, "trainable": trainable, "trainable_share": trainable / total}


def training_memory_bytes(model: keras.Model) -> dict[str, float]:
    """Bytes of float32 weights (all of them), and of gradients and AdamW state (two
    moments) for the trainable ones: chapter 2's calculator applied to what trains."""
    counts = parameter_counts(model)
    trainable = footprint.training_memory(max(counts["trainable"], 1))
    return {
        "weights": counts["total"] * 4.0,
        "gradients": trainable.gradients if counts["trainable"] else 0.0,
        "optimizer_state": trainable.optimizer_state if counts["trainable"] else 0.0,
    }


def lora_weights(model: gpt_module.GPT) -> dict[str, np.ndarray]:
    """The LoRA factors of ``model`` as NumPy arrays keyed by variable path
    relative to the model (``"block_0/attention/qkv/lora_kernel_a"``); empty when LoRA is not enabled."""
    return {
        _relative(v.path): keras.ops.convert_to_numpy(v)
        for v in model.weights
        if "lora_kernel" in v.path
    }


def _relative(path: str) -> str:
    """A variable's path without the model's own name, which Keras numbers per copy."""
    return path.split("/", 1)[1]


def save_lora_weights(model: gpt_module.GPT, path: str | Path) -> Path:
    """Save only the LoRA factors of ``model`` (an ``.npz`` with the rank and alpha);
    returns the path. A few hundred kilobytes for chapter 7's model, against megabytes
    for the whole model."""
    factors = lora_weights(model)
    if not factors:
        raise ValueError("model has no LoRA factors to save: call enable_lora first")
    adapted = [layer for layer in lora_layers(model).values() if layer.lora_enabled]
    meta = {"rank": adapted[0].lora_rank, "alpha": adapted[0].lora_alpha,
            "targets": sorted({layer.name for layer in adapted})}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:  # a file object: np.savez would append ".npz"
        np.savez(handle, __meta__=np.array(json.dumps(meta)), **factors)
    return path


def load_lora_weights(model: gpt_module.GPT, path: str | Path) -> gpt_module.GPT:
    """Attach LoRA factors saved by :func:`save_lora_weights` to ``model``, a fresh copy
    of the base model they were trained on; returns it (frozen but the factors).

    Raises a ValueError naming the variable when the factors do not fit the model.
    """
    with np.load(Path(path)) as stored:
        meta = json.loads(str(stored["__meta__"]))
        factors = {key: stored[key] for key in stored.files if key != "__meta__"}
    enable_lora(model, meta["rank"], targets=meta["targets"], alpha=meta["alpha"])
    variables = {_relative(v.path): v for v in model.weights if "lora_kernel" in v.path}
    if set(variables) != set(factors):
        missing = sorted(set(factors) ^ set(variables))
        raise ValueError(f"the LoRA factors in {path} do not fit this model: {missing[:3]} ...")
    for name, value in factors.items():
        if tuple(variables[name].shape) != value.shape:
            raise ValueError(
                f"{name} has shape {value.shape} in {path}, the model expects "
                f"{tuple(variables[name].shape)}"
            )
        variables[name].assign(value)
    return model


def copy_model(model: gpt_module.GPT) -> gpt_module.GPT:
    """A fresh GPT with ``model``'s configuration and weights (no optimizer, no LoRA)."""
    fresh = gpt_module.build_gpt(model.config)
    fresh.set_weights(model.get_weights())
    return fresh


@dataclass
class Adaptation:
    """One way of adapting a model: its trainable share, memory, time and loss."""

    method: str
    trainable: int
    total: int
    optimizer_state_bytes: float
    train_seconds: float
    val_loss: float
    curve: dict

    @property
    def trainable_share(self) -> float:
        return self.trainable / self.total


def adapt(base: gpt_module.GPT, method: str, train_tokens, val_tokens, *, steps: int,
          batch_size: int, learning_rate: float, rank: int = 8, seed: int = 0,
          window_start: int | None = None, jit_compile=None):
    """Adapt a copy of ``base`` to new text by ``method``: ``"frozen"`` (no training,
    the baseline), ``"full"`` (every weight) or ``"lora"`` (rank-``rank`` factors only),
    for ``steps`` steps. Returns ``(model, Adaptation)``; ``base`` is left unchanged.
    """
    check_choice("method", method, ADAPTATION_METHODS)
    model = copy_model(base)
    if method == "lora":
        enable_lora(model, rank, seed=seed)
    counts = parameter_counts(model)
    if method == "frozen":
        x_val, y_val = _validation_windows(model, val_tokens, seed, window_start)
        model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        loss = float(model.evaluate(x_val, y_val, batch_size=64, verbose=0))
        return model, Adaptation(method, 0, counts["total"], 0.0, 0.0, loss, {})
    run = gpt_module.train_language_model(
        model, train_tokens, val_tokens, steps=steps, batch_size=batch_size,
        learning_rate=learning_rate, warmup_steps=max(1, steps // 10),
        eval_every=max(1, steps // 4), seed=seed, weight_decay=0.0 if method == "lora" else 0.1,
        window_start=window_start, jit_compile=jit_compile,
    )
    memory = training_memory_bytes(model)
    return run.model, Adaptation(
        method, counts["trainable"], counts["total"], memory["optimizer_state"],
        run.train_seconds, run.final_val_loss,
        {"steps": run.steps, "val_loss": run.val_loss},
    )


def _validation_windows(model, val_tokens, seed, window_start):
    # the same fixed windows train_language_model evaluates on (its eval_windows=64)
    from bigmodel_utils.data import text

    return text.windows(val_tokens, model.config.context, 64, seed=10_000 + seed,
                        start=window_start)


def validation_loss(model: gpt_module.GPT, val_tokens, seed: int = 0,
                    window_start: int | None = None) -> float:
    """Mean next-token cross-entropy (nats per token) of ``model`` on the same 64 fixed
    validation windows that :func:`adapt` and ``gpt.train_language_model`` use."""
    x_val, y_val = _validation_windows(model, val_tokens, seed, window_start)
    logits = keras.ops.convert_to_numpy(model(x_val, training=False))
    logits = logits - logits.max(axis=-1, keepdims=True)
    picked = np.take_along_axis(logits, y_val[..., None], axis=-1)[..., 0]
    # -log softmax of the true token, accumulated in float64
    return float((np.log(np.exp(logits).sum(axis=-1, dtype="float64")) - picked).mean())


# --------------------------------------------------------------------------------------
# Post-training quantisation
# --------------------------------------------------------------------------------------


def absmax_quantize(weights: np.ndarray, axis: int = 0, bits: int = 8):
    """Symmetric per-channel quantisation in NumPy: returns ``(q, scale)`` with ``q``
    integers in ``[-(2^(bits-1) - 1), 2^(bits-1) - 1]`` and ``weights ~ q / scale``.

    ``axis`` is the axis reduced to find each channel's largest magnitude: ``0`` for a
    Dense kernel ``(d_in, d_out)`` gives one scale per output unit, as Keras does.
    """
    check_choice("bits", bits, (4, 8))
    top = 2 ** (bits - 1) - 1
    scale = top / (np.max(np.abs(weights), axis=axis, keepdims=True) + keras.config.epsilon())
    q = np.clip(np.round(weights * scale), -top, top).astype("int8")
    return q, scale.astype("float32")


def quantized_copy(model: gpt_module.GPT, mode: str) -> gpt_module.GPT:
    """A copy of ``model`` quantised by Keras's ``Model.quantize(mode)``: ``"int8"``,
    ``"int4"`` or ``"float8"`` (Dense layers only; Embedding has no float8 mode).
    ``"float32"`` returns an unquantised copy."""
    check_choice("mode", mode, ("float32", "int8", "int4", "float8"))
    copy = copy_model(model)
    if mode != "float32":
        import warnings

        with warnings.catch_warnings():  # "LayerNormalization has no quantize method"
            warnings.simplefilter("ignore", UserWarning)
            if mode == "float8":
                for layer in lora_layers(copy).values():  # every Dense layer of the GPT
                    layer.quantize(mode)
            else:
                copy.quantize(mode)
    return copy
