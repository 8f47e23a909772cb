"""The book's one learning-rate schedule and its one AdamW recipe, shared by the CNN and the GPT.

* :func:`warmup_cosine`: the rate rises linearly from 0 to its peak over ``warmup_steps``, then falls
  along a cosine to ``final_fraction`` of the peak at ``total_steps``. The warm-up is what lets a large
  batch use a linearly scaled rate (Goyal et al. 2017); chapters 4, 5 and 6 use it.
* :func:`adamw`: AdamW (decoupled weight decay, Loshchilov and Hutter 2019) with ``beta_2 = 0.99``,
  gradient clipping at global norm ``clipnorm``, and no decay of biases and normalisation scales, as
  GPT-style training does (chapters 6 and 9).
"""

from __future__ import annotations

import keras

from bigmodel_utils.validation import check_int, check_number


def warmup_cosine(
    peak_learning_rate: float, total_steps: int, warmup_steps: int = 0, final_fraction: float = 0.0
) -> keras.optimizers.schedules.LearningRateSchedule:
    """Linear warm-up from 0 to ``peak_learning_rate``, then cosine decay to
    ``final_fraction * peak_learning_rate`` at step ``total_steps``."""
    check_number("peak_learning_rate", peak_learning_rate, 0, 10,
                 include_minimum=False, include_maximum=False)
    total_steps = check_int("total_steps", total_steps, minimum=1)
    warmup_steps = check_int("warmup_steps", warmup_steps, minimum=0, maximum=total_steps - 1)
    check_number("final_fraction", final_fraction, 0, 1)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else peak_learning_rate,
        decay_steps=total_steps - warmup_steps,
        alpha=final_fraction,
        warmup_target=peak_learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps,
    )


def adamw(
    learning_rate, weight_decay: float = 0.1, clipnorm: float | None = 1.0
) -> keras.optimizers.AdamW:
    """AdamW with ``beta_2 = 0.99`` and clipping at global norm ``clipnorm`` (None: no clipping);
    biases and LayerNorm scales and offsets are not decayed. ``learning_rate`` is a number, a
    schedule (:func:`warmup_cosine`) or a callable."""
    optimizer = keras.optimizers.AdamW(
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        beta_2=0.99,
        global_clipnorm=clipnorm,
    )
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer
