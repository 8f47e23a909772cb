"""Training a GPT for next-token prediction: the optimiser (the book's AdamW with warm-up and cosine decay,
:mod:`bigmodel_utils.optimizers`), compiling, and a training loop on random windows of a token stream that
records its curve and its time and resumes from a checkpoint. Used in chapter 6 (and by chapters 7 and 9).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from bigmodel_utils import optimizers
from bigmodel_utils.backend.compile import default_jit_compile
from bigmodel_utils.data import text
from bigmodel_utils.gpt.model import GPT
from bigmodel_utils.validation import positive_int


def make_optimizer(learning_rate: float, total_steps: int, warmup_steps: int, weight_decay: float = 0.1,
                   clipnorm: float = 1.0, final_fraction: float = 0.1) -> keras.optimizers.Optimizer:
    """AdamW (decoupled weight decay, ``beta_2 = 0.99``, no decay of biases and LayerNorm scales) with a
    linear warm-up from 0 to ``learning_rate`` over ``warmup_steps``, cosine decay to ``final_fraction`` of
    it at ``total_steps``, and gradient clipping at global norm ``clipnorm``: :func:`optimizers.adamw` of
    :func:`optimizers.warmup_cosine`, which check the arguments.
    """
    schedule = optimizers.warmup_cosine(learning_rate, total_steps, warmup_steps, final_fraction)
    return optimizers.adamw(schedule, weight_decay=weight_decay, clipnorm=clipnorm)


def compile_language_model(model: GPT, optimizer, jit_compile=None) -> GPT:
    """Compile ``model`` for next-token prediction (cross-entropy on the logits) with ``optimizer``;
    returns it.

    ``jit_compile=None`` means the backend's default
    (:func:`bigmodel_utils.backend.compile.default_jit_compile`): XLA under TensorFlow and JAX, none
    under PyTorch.
    """
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=default_jit_compile() if jit_compile is None else jit_compile,
    )
    return model


@dataclass
class TrainingRun:
    """What :func:`train_language_model` did: the curve, the time, the tokens and where
    the model is.
    """

    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    batch_size: int = 0
    context: int = 0
    resumed_from_step: int = 0

    @property
    def final_val_loss(self) -> float:
        return self.val_loss[-1]

    @property
    def tokens_seen(self) -> int:
        return self.steps[-1] * self.batch_size * self.context if self.steps else 0

    @property
    def train_seconds(self) -> float:
        return self.seconds[-1] if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "final_val_loss": self.final_val_loss,
            "tokens_seen": self.tokens_seen,
            "train_seconds": self.train_seconds,
        }


def train_language_model(
    model: GPT,
    train_tokens: np.ndarray,
    val_tokens: np.ndarray,
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    warmup_steps: int,
    eval_every: int,
    eval_windows: int = 64,
    seed: int = 0,
    weight_decay: float = 0.1,
    checkpoint_dir: str | Path | None = None,
    name: str = "gpt",
    jit_compile=None,
    window_start: int | None = None,
) -> TrainingRun:
    """Train ``model`` on random windows of ``train_tokens`` for ``steps`` steps; return
    a :class:`TrainingRun`.

    Every ``eval_every`` steps it records the mean training loss, the validation loss on
    ``eval_windows`` fixed windows of ``val_tokens``, and the seconds spent training so
    far (evaluation excluded). With ``checkpoint_dir``, the model and the curve are
    saved after each interval, and a run interrupted with the same settings resumes
    where it stopped (announced); the checkpoint is removed when the run ends.
    ``jit_compile`` (default: the backend's choice, see :func:`compile_language_model`)
    compiles the training step with XLA, which pays for its compile time after a few
    dozen steps on a CPU; ``False`` suits runs of a handful of steps (the tests).
    ``window_start`` (a token id) makes every window start at that token, for example
    the newline before each poem (:func:`bigmodel_utils.data.text.windows`).
    """
    steps, batch_size = positive_int("steps", steps), positive_int("batch_size", batch_size)
    eval_every = positive_int("eval_every", eval_every)
    context = model.config.context
    x_val, y_val = text.windows(val_tokens, context, eval_windows, seed=10_000 + seed, start=window_start)
    run = TrainingRun(batch_size=batch_size, context=context)
    settings = {
        "config": asdict(model.config),
        "steps": steps,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "warmup_steps": warmup_steps,
        "seed": seed,
        "weight_decay": weight_decay,
        "eval_every": eval_every,
        "train_tokens": int(len(train_tokens)),
        "window_start": window_start,
    }
    checkpoint = None
    if checkpoint_dir is not None:
        folder = Path(checkpoint_dir)
        checkpoint = folder / f"{name}-checkpoint.keras", folder / f"{name}-checkpoint.json"
    if checkpoint and checkpoint[0].is_file() and checkpoint[1].is_file():
        saved = json.loads(checkpoint[1].read_text())
        if saved["settings"] == settings:
            model = keras.saving.load_model(checkpoint[0], safe_mode=True)
            run = TrainingRun(**saved["run"])
            run.resumed_from_step = run.steps[-1]
            print(f"Resuming {name} from its checkpoint at step {run.resumed_from_step} of {steps}.")
        else:
            print(f"Ignoring the checkpoint of {name}: it was made with other settings.")
    if not run.steps:  # a fresh run; a resumed one keeps its saved optimiser state
        optimizer = make_optimizer(learning_rate, steps, warmup_steps, weight_decay)
        compile_language_model(model, optimizer, jit_compile=jit_compile)
    done = run.steps[-1] if run.steps else 0
    elapsed = run.seconds[-1] if run.seconds else 0.0
    while done < steps:
        interval = min(eval_every, steps - done)
        x, y = text.windows(train_tokens, context, interval * batch_size,
                            seed=seed * 1_000_003 + done, start=window_start)
        start = time.perf_counter()
        history = model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
        elapsed += time.perf_counter() - start
        done += interval
        run.steps.append(done)
        run.train_loss.append(float(history.history["loss"][-1]))
        run.val_loss.append(float(model.evaluate(x_val, y_val, batch_size=eval_windows, verbose=0)))
        run.seconds.append(elapsed)
        if checkpoint:
            model.save(checkpoint[0])
            checkpoint[1].write_text(json.dumps({"settings": settings, "run": asdict(run)}))
    if checkpoint:
        for path in checkpoint:
            path.unlink(missing_ok=True)
    run.model = model  # the trained model (the one loaded from the checkpoint, when resumed)
    return run
