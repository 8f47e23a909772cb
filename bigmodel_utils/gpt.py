"""A GPT (decoder-only transformer) from its pieces: attention in NumPy, the model in
Keras 3, its costs.

* **Attention from scratch** (NumPy, explicit shapes): :func:`softmax`,
  :func:`causal_mask`, :func:`scaled_dot_product_attention` and
  :func:`multi_head_attention`, whose weights are laid out as
  ``keras.layers.MultiHeadAttention`` stores them, so the two can be compared with the
  same weights.
* **The model** in backend-agnostic Keras 3 (``keras.ops`` only, no TensorFlow):
  :class:`CausalSelfAttention`, :class:`TransformerBlock` (pre-LayerNorm, residual
  connections, a 4x MLP, dropout) and :class:`GPT` (token and position embeddings, a
  stack of blocks, a final LayerNorm and an output layer tied to the token embedding),
  built by :func:`build_gpt`.
* **Costs**: :func:`parameter_count` (about ``12 L d**2`` plus embeddings and norms) and
  :func:`flops_per_token` (Kaplan et al. 2020's ``2N + 2 L T d`` per token forward, with
  the output layer).
* **Training**: :func:`train_language_model` (AdamW with decoupled weight decay, warm-up
  and cosine decay, gradient clipping), resumable from a checkpoint; **generation**:
  :func:`generate`, with or without a KV cache.

Used in chapter 6 (and by chapter 7, which adapts and serves the trained model).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops

from bigmodel_utils.data import text

# --------------------------------------------------------------------------------------
# Attention from scratch, in NumPy
# --------------------------------------------------------------------------------------


def softmax(scores: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax along ``axis``, shifted by the maximum so that large scores do not
    overflow.
    """
    shifted = scores - scores.max(axis=axis, keepdims=True)
    weights = np.exp(shifted)
    return weights / weights.sum(axis=axis, keepdims=True)


def causal_mask(length: int) -> np.ndarray:
    """A ``(length, length)`` boolean mask, True where query ``i`` may look at key ``j``
    (that is, ``j <= i``).
    """
    return np.tril(np.ones((length, length), dtype=bool))


def scaled_dot_product_attention(q, k, v, mask=None):
    """``softmax(q k^T / sqrt(d_k)) v`` for q ``(..., T_q, d_k)``, k ``(..., T_k,
    d_k)``, v ``(..., T_k, d_v)``.

    ``mask`` (broadcastable to ``(..., T_q, T_k)``) is True where attention is allowed.
    Returns the output ``(..., T_q, d_v)`` and the attention weights ``(..., T_q,
    T_k)``, each row summing to 1.
    """
    d_k = q.shape[-1]
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(d_k)  # (..., T_q, T_k)
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    weights = softmax(scores)
    return weights @ v, weights


def multi_head_attention(x, weights, causal=True):
    """Multi-head self-attention of ``x`` ``(B, T, d)``, with weights in
    ``keras.layers.MultiHeadAttention``'s layout.

    ``weights`` holds ``query_kernel``, ``key_kernel``, ``value_kernel`` ``(d, H,
    d_head)``, their biases ``(H, d_head)``, ``output_kernel`` ``(H, d_head, d)`` and
    ``output_bias`` ``(d,)`` (:func:`mha_weights` reads them off a Keras layer). Returns
    ``(B, T, d)``.
    """

    def project(name):  # (B, T, d) x (d, H, d_head) -> (B, H, T, d_head)
        projected = np.einsum("btd,dhk->bhtk", x, weights[f"{name}_kernel"])
        return projected + weights[f"{name}_bias"][None, :, None, :]

    q, k, v = project("query"), project("key"), project("value")
    mask = causal_mask(x.shape[1]) if causal else None
    heads, _ = scaled_dot_product_attention(q, k, v, mask)  # (B, H, T, d_head)
    merged = np.einsum("bhtk,hkd->btd", heads, weights["output_kernel"])  # (B, T, d)
    return merged + weights["output_bias"]


MHA_WEIGHT_NAMES = (
    "query_kernel",
    "query_bias",
    "key_kernel",
    "key_bias",
    "value_kernel",
    "value_bias",
    "output_kernel",
    "output_bias",
)


def mha_weights(layer) -> dict[str, np.ndarray]:
    """The weights of a built ``keras.layers.MultiHeadAttention`` (with biases) as a
    dict of NumPy arrays.
    """
    values = [np.asarray(w) for w in layer.get_weights()]
    if len(values) != len(MHA_WEIGHT_NAMES):
        raise ValueError(
            f"layer must be a built MultiHeadAttention with biases (8 weights), got {len(values)}"
        )
    return dict(zip(MHA_WEIGHT_NAMES, values))


# --------------------------------------------------------------------------------------
# The model, in Keras 3 (keras.ops only)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GPTConfig:
    """The shape of a GPT: vocabulary, context length, layers, heads, width and dropout.
    """

    vocab_size: int
    context: int
    num_layers: int = 4
    num_heads: int = 4
    width: int = 128
    dropout: float = 0.0

    def __post_init__(self):
        for name in ("vocab_size", "context", "num_layers", "num_heads", "width"):
            value = getattr(self, name)
            if (
                not isinstance(value, (int, np.integer))
                or isinstance(value, bool)
                or value < 1
            ):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.width % self.num_heads:
            raise ValueError(
                f"width must be divisible by num_heads ({self.num_heads}), got {self.width}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")

    @property
    def head_size(self) -> int:
        return self.width // self.num_heads


def _block_arguments(layer) -> dict:
    """The constructor arguments an attention layer and a block share (for get_config)."""
    return {"num_heads": layer.num_heads, "width": layer.width, "dropout": layer.dropout_rate}


@keras.saving.register_keras_serializable(package="bigmodel_utils")
class CausalSelfAttention(keras.layers.Layer):
    """Multi-head causal self-attention: one Dense makes Q, K and V, another mixes the
    heads.

    ``call(x)`` maps ``(B, T, d)`` to ``(B, T, d)``. ``call_cached(x, cache,
    positions)`` is the KV cache of generation: it takes one new token per row, ``x``
    ``(B, 1, d)`` at ``positions`` ``(B, 1)``, writes its key and value into ``cache``
    (a pair of ``(B, H, T_max, d_head)`` tensors) and attends over the cache up to that
    position.
    """

    def __init__(self, num_heads: int, width: int, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_heads, self.width, self.dropout_rate = num_heads, width, dropout
        self.head_size = width // num_heads
        self.qkv = keras.layers.Dense(3 * width, name="qkv")
        self.out = keras.layers.Dense(width, name="out")
        self.attention_dropout = keras.layers.Dropout(dropout)

    def build(self, input_shape):
        self.qkv.build(input_shape)
        self.out.build((*input_shape[:-1], self.width))
        self.built = True

    def _heads(self, x):  # (B, t, 3d) -> Q, K, V, each (B, H, t, d_head)
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        x = ops.reshape(x, (batch, length, 3, self.num_heads, self.head_size))
        x = ops.transpose(x, (2, 0, 3, 1, 4))
        return x[0], x[1], x[2]

    def _attend(self, q, k, v, query_positions, training=None):
        """Queries at ``query_positions`` (``(B or 1, t)``) attend to keys at 0, 1, ...

        A key is visible when its position is at most the query's: the causal mask.
        """
        scale = 1 / math.sqrt(self.head_size)
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) * scale  # (B, H, t, T_k)
        keys_at = ops.arange(ops.shape(k)[2])[None, None, None, :]
        visible = keys_at <= query_positions[:, None, :, None]
        scores = ops.where(visible, scores, ops.cast(-1e9, scores.dtype))
        # softmax written out: ops.softmax warns about rows of length one
        weights = ops.exp(scores - ops.max(scores, axis=-1, keepdims=True))
        weights = weights / ops.sum(weights, axis=-1, keepdims=True)
        heads = ops.matmul(self.attention_dropout(weights, training=training), v)
        batch, length = ops.shape(heads)[0], ops.shape(heads)[2]
        heads = ops.transpose(heads, (0, 2, 1, 3))  # (B, t, H, d_head)
        return self.out(ops.reshape(heads, (batch, length, self.width)))

    def call(self, x, training=None):
        q, k, v = self._heads(self.qkv(x))
        positions = ops.arange(ops.shape(x)[1])[None, :]
        return self._attend(q, k, v, positions, training=training)

    def call_cached(self, x, cache, positions):
        q, k, v = self._heads(self.qkv(x))  # each (B, H, 1, d_head)
        slots = ops.arange(ops.shape(cache[0])[2])[None, :] == positions  # (B, T_max)
        slots = ops.cast(slots, k.dtype)[:, None, :, None]
        # write this token's key and value into its slot of the cache
        keys = cache[0] * (1 - slots) + k * slots
        values = cache[1] * (1 - slots) + v * slots
        return self._attend(q, keys, values, positions), (keys, values)

    def get_config(self):
        return {**super().get_config(), **_block_arguments(self)}


@keras.saving.register_keras_serializable(package="bigmodel_utils")
class TransformerBlock(keras.layers.Layer):
    """One GPT block, pre-LayerNorm: ``x + attention(norm(x))``, then
    ``x + mlp(norm(x))``, with an MLP four times as wide as the block."""

    def __init__(self, num_heads: int, width: int, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_heads, self.width, self.dropout_rate = num_heads, width, dropout
        self.norm_1 = keras.layers.LayerNormalization(epsilon=1e-5, name="norm_1")
        self.attention = CausalSelfAttention(num_heads, width, dropout, name="attention")
        self.norm_2 = keras.layers.LayerNormalization(epsilon=1e-5, name="norm_2")
        self.mlp_in = keras.layers.Dense(4 * width, activation="gelu", name="mlp_in")
        self.mlp_out = keras.layers.Dense(width, name="mlp_out")
        self.dropout_1 = keras.layers.Dropout(dropout)
        self.dropout_2 = keras.layers.Dropout(dropout)

    def build(self, input_shape):
        for layer in (self.norm_1, self.attention, self.norm_2, self.mlp_in):
            layer.build(input_shape)
        self.mlp_out.build((*input_shape[:-1], 4 * self.width))
        self.built = True

    def _mlp(self, x, training=None):
        hidden = self.mlp_in(self.norm_2(x))
        return self.dropout_2(self.mlp_out(hidden), training=training)

    def call(self, x, training=None):
        attended = self.attention(self.norm_1(x), training=training)
        x = x + self.dropout_1(attended, training=training)
        return x + self._mlp(x, training=training)

    def call_cached(self, x, cache, positions):
        attended, cache = self.attention.call_cached(self.norm_1(x), cache, positions)
        x = x + attended
        return x + self._mlp(x), cache

    def get_config(self):
        return {**super().get_config(), **_block_arguments(self)}


@keras.saving.register_keras_serializable(package="bigmodel_utils")
class GPT(keras.Model):
    """A decoder-only transformer: token ids ``(B, T)`` to next-token logits ``(B, T,
    V)``.

    The output layer reuses the token embedding (weight tying, as in GPT-2), so it adds
    only a bias.
    """

    def __init__(
        self,
        vocab_size: int,
        context: int,
        num_layers: int = 4,
        num_heads: int = 4,
        width: int = 128,
        dropout: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.config = GPTConfig(
            vocab_size, context, num_layers, num_heads, width, dropout
        )
        # ReversibleEmbedding(tie_weights=True) is an Embedding that can also project
        # back to the vocabulary with its own (transposed) table: the tied output layer.
        # Doing the projection inside the layer keeps it correct when the layer is
        # quantised (chapter 7), where the stored table is int8 with a scale.
        self.token_embedding = keras.layers.ReversibleEmbedding(
            vocab_size,
            width,
            tie_weights=True,
            name="token_embedding",
            embeddings_initializer=keras.initializers.RandomNormal(0, 0.02),
        )
        self.position_embedding = keras.layers.Embedding(
            context,
            width,
            name="position_embedding",
            embeddings_initializer=keras.initializers.RandomNormal(0, 0.02),
        )
        self.embedding_dropout = keras.layers.Dropout(dropout)
        self.blocks = [
            TransformerBlock(num_heads, width, dropout, name=f"block_{i}")
            for i in range(num_layers)
        ]
        self.final_norm = keras.layers.LayerNormalization(
            epsilon=1e-5, name="final_norm"
        )
        self.output_bias = self.add_weight(
            shape=(vocab_size,), initializer="zeros", name="output_bias"
        )

    def build(self, input_shape=None):
        shape = (None, self.config.context, self.config.width)
        self.token_embedding.build((None, self.config.context))
        self.position_embedding.build((None, self.config.context))
        for block in self.blocks:
            block.build(shape)
        self.final_norm.build(shape)
        self.built = True

    def _embed(self, tokens, positions, training=None):
        x = self.token_embedding(tokens) + self.position_embedding(positions)
        return self.embedding_dropout(x, training=training)

    def _logits(self, x):
        return self.token_embedding(self.final_norm(x), reverse=True) + self.output_bias

    def call(self, tokens, training=None):
        x = self._embed(
            tokens, ops.arange(ops.shape(tokens)[1])[None, :], training=training
        )
        for block in self.blocks:
            x = block(x, training=training)
        return self._logits(x)

    def call_cached(self, tokens, positions, caches):
        """Logits ``(B, 1, V)`` for one new token per row, ``tokens`` ``(B, 1)`` at
        ``positions`` ``(B, 1)``, and the per-layer caches with its keys and values
        written in.
        """
        x = self._embed(tokens, positions)
        new_caches = []
        for block, cache in zip(self.blocks, caches):
            x, cache = block.call_cached(x, cache, positions)
            new_caches.append(cache)
        return self._logits(x), new_caches

    def get_config(self):
        return {**super().get_config(), **asdict(self.config)}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def build_gpt(config: GPTConfig, seed: int | None = None) -> GPT:
    """Build (and initialise) a :class:`GPT` of shape ``config``; ``seed`` makes its
    initial weights repeat.
    """
    if seed is not None:
        keras.utils.set_random_seed(seed)
    model = GPT(**asdict(config))
    model.build((None, config.context))
    return model


# --------------------------------------------------------------------------------------
# Costs
# --------------------------------------------------------------------------------------


def parameter_count(config: GPTConfig) -> dict[str, int]:
    """Parameters of :func:`build_gpt`'s model, derived by hand; ``total`` equals
    ``count_params()``.

    Per block: Q, K, V and the output projection ``4 d^2 + 4 d``, the MLP ``8 d^2 + 5
    d``, two LayerNorms ``4 d``: ``12 d^2 + 13 d``. Plus token and position embeddings
    ``(V + T) d``, the final LayerNorm ``2 d`` and the output bias ``V`` (the output
    matrix is the token embedding, tied). ``non_embedding`` is Kaplan et al.'s ``N``:
    everything but the embeddings and the output layer.
    """
    d, layers = config.width, config.num_layers
    per_block = 12 * d * d + 13 * d
    embedding = (config.vocab_size + config.context) * d
    non_embedding = layers * per_block + 2 * d
    return {
        "per_block": per_block,
        "blocks": layers * per_block,
        "embedding": embedding,
        "non_embedding": non_embedding,
        "output_bias": config.vocab_size,
        "total": embedding + non_embedding + config.vocab_size,
        "approximation_12_L_d2": 12 * layers * d * d,
    }


def flops_per_token(config: GPTConfig, context: int | None = None) -> dict[str, float]:
    """Forward and training FLOPs per token (multiply-adds count 2), after Kaplan et al.
    (2020), table 1.

    ``forward = 2 N + 2 L T d + 2 d V``: the weight matrices (``N`` non-embedding
    parameters), attention over a context of ``T`` (``context``, default
    ``config.context``) and the output layer. Attention's scores and weighted sum each
    cost ``2 T d`` per token and layer when computed in full; a causal model needs only
    the earlier half, ``2 L T d`` for both together, which is Kaplan's term and the
    *model* FLOPs that an MFU counts (our layer computes the full square and masks it).
    Training (forward and backward) is three times the forward.
    """
    context = config.context if context is None else context
    n = parameter_count(config)["non_embedding"]
    forward = (
        2 * n
        + 2 * config.num_layers * context * config.width
        + 2 * config.width * config.vocab_size
    )
    return {
        "forward": float(forward),
        "training": 3.0 * forward,
        "attention_share": 2 * config.num_layers * context * config.width / forward,
    }


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------


def make_optimizer(
    learning_rate: float,
    total_steps: int,
    warmup_steps: int,
    weight_decay: float = 0.1,
    clipnorm: float = 1.0,
    final_fraction: float = 0.1,
) -> keras.optimizers.Optimizer:
    """AdamW (decoupled weight decay) with linear warm-up, cosine decay to
    ``final_fraction`` of the peak, and gradient clipping at global norm ``clipnorm``.
    Biases and LayerNorm scales are not decayed.
    """
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be positive, got {learning_rate!r}")
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(
            f"warmup_steps must be in [0, total_steps={total_steps}), got {warmup_steps!r}"
        )
    # Keras's CosineDecay warms up linearly from its initial rate to warmup_target
    start = learning_rate / warmup_steps if warmup_steps else learning_rate
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=start,
        decay_steps=total_steps - warmup_steps,
        alpha=final_fraction,
        warmup_target=learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps,
    )
    optimizer = keras.optimizers.AdamW(
        learning_rate=schedule,
        weight_decay=weight_decay,
        beta_2=0.99,
        global_clipnorm=clipnorm,
    )
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer


def _jit() -> bool:
    """The backend's default for XLA: on under TensorFlow and JAX, off under PyTorch."""
    return keras.backend.backend() != "torch"


def compile_language_model(model: GPT, optimizer, jit_compile=None) -> GPT:
    """Compile ``model`` for next-token prediction with ``optimizer``; returns it.

    ``jit_compile=None`` means XLA under TensorFlow and JAX and none under PyTorch, where
    ``torch.compile`` breaks Keras's graph into dozens of pieces and runs slower than
    eager (``benchmarks/README.md``).
    """
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=_jit() if jit_compile is None else jit_compile,
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


def _checkpoint_paths(directory: Path, name: str) -> tuple[Path, Path]:
    return directory / f"{name}-checkpoint.keras", directory / f"{name}-checkpoint.json"


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
    the newline before each poem (:func:`text.windows`).
    """
    context = model.config.context
    for label, value in (("steps", steps), ("batch_size", batch_size),
                         ("eval_every", eval_every)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{label} must be a positive integer, got {value!r}")
    x_val, y_val = text.windows(val_tokens, context, eval_windows, seed=10_000 + seed,
                                start=window_start)
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
    checkpoint = (
        _checkpoint_paths(Path(checkpoint_dir), name)
        if checkpoint_dir is not None
        else None
    )
    if checkpoint and checkpoint[0].is_file() and checkpoint[1].is_file():
        saved = json.loads(checkpoint[1].read_text())
        if saved["settings"] == settings:
            model = keras.saving.load_model(checkpoint[0], safe_mode=True)
            run = TrainingRun(**saved["run"])
            run.resumed_from_step = run.steps[-1]
            print(
                f"Resuming {name} from its checkpoint at step {run.resumed_from_step} of {steps}."
            )
        else:
            print(
                f"Ignoring the checkpoint of {name}: it was made with other settings."
            )
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
        history = model.fit(
            x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0
        )
        elapsed += time.perf_counter() - start
        done += interval
        run.steps.append(done)
        run.train_loss.append(float(history.history["loss"][-1]))
        run.val_loss.append(
            float(model.evaluate(x_val, y_val, batch_size=eval_windows, verbose=0))
        )
        run.seconds.append(elapsed)
        if checkpoint:
            model.save(checkpoint[0])
            checkpoint[1].write_text(
                json.dumps({"settings": settings, "run": asdict(run)})
            )
    if checkpoint:
        for path in checkpoint:
            path.unlink(missing_ok=True)
    run.model = (
        model  # the trained model (the one loaded from the checkpoint, when resumed)
    )
    return run


# --------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------


def check_sampling(temperature: float, top_k: int | None, vocab_size: int) -> None:
    """Raise a one-line ValueError for a temperature that is not positive or a top-k
    outside 1..V.
    """
    if (
        not isinstance(temperature, (int, float))
        or isinstance(temperature, bool)
        or not temperature > 0
    ):
        raise ValueError(
            f"temperature must be a number greater than 0, got {temperature!r}"
        )
    if top_k is not None and (
        not isinstance(top_k, (int, np.integer))
        or isinstance(top_k, bool)
        or not 1 <= top_k <= vocab_size
    ):
        raise ValueError(
            f"top_k must be an integer from 1 to the vocabulary size {vocab_size} or None, "
            f"got {top_k!r}"
        )


def sample_next(
    logits: np.ndarray, temperature: float, top_k: int | None, rng: np.random.Generator
):
    """Sample one token id per row of ``logits`` ``(B, V)`` at ``temperature``, from the
    ``top_k`` likeliest.
    """
    logits = np.asarray(logits, dtype=np.float64) / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = np.sort(logits, axis=-1)[:, -top_k][:, None]
        logits = np.where(logits < kth, -np.inf, logits)
    probabilities = softmax(logits)
    return np.array([rng.choice(len(p), p=p) for p in probabilities], dtype=np.int32)


class _DecodeStep(keras.Model):
    """One compiled generation step of a GPT: (tokens, positions, *caches) -> (logits,
    *caches).
    """

    def __init__(self, model: GPT):
        super().__init__(name="decode_step")
        self.model = model

    def call(self, inputs):
        tokens, positions, *flat = inputs
        logits, caches = self.model.call_cached(
            tokens, positions, list(zip(flat[0::2], flat[1::2]))
        )
        return [logits[:, -1], *[tensor for pair in caches for tensor in pair]]


def _jit_function(wrapper: keras.Model):
    """``wrapper``'s forward pass compiled by the backend's own compiler: a function from a
    list of arrays to a list of the backend's tensors.

    TensorFlow: ``tf.function`` with XLA; JAX: ``jax.jit`` of the stateless call, given
    the current weights at every call (so a model trained further is never stale);
    PyTorch: eager, without gradients. Calling these directly costs a few times less per
    call than ``predict_on_batch``, which matters for one-token steps. This is the one
    place where ``gpt`` uses backend-specific code.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        from bigmodel_utils.backend import tensorflow_only

        function = tensorflow_only.compile_function(lambda x: wrapper(x, training=False), jit_compile=True)
    elif backend == "jax":
        import jax

        # the wrapper adds no variables of its own and its model is built, so it is
        # built too; stateless_call refuses an unbuilt model
        wrapper.built = True

        def stateless(trainable, non_trainable, inputs):
            return wrapper.stateless_call(trainable, non_trainable, inputs)[0]

        compiled = jax.jit(stateless)

        def function(inputs):
            trainable = [v.value for v in wrapper.trainable_variables]
            non_trainable = [v.value for v in wrapper.non_trainable_variables]
            return compiled(trainable, non_trainable, inputs)
    else:
        import torch

        def function(inputs):
            with torch.no_grad():
                return wrapper([keras.ops.convert_to_tensor(x) for x in inputs])

    def run(inputs):  # returns the backend's tensors: a KV cache stays where it is
        outputs = function(list(inputs))
        return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]

    return run


class KVCache:
    """The keys and values of every layer for ``batch`` sequences of up to ``context``
    tokens, and a compiled function that feeds one token per sequence through the model
    and writes them in.
    """

    def __init__(self, model: GPT, batch: int):
        config = model.config
        shape = (batch, config.num_heads, config.context, config.head_size)
        self.tensors = [
            np.zeros(shape, dtype="float32") for _ in range(2 * config.num_layers)
        ]
        self.length = 0
        self.step = _compiled(model, _DecodeStep)

    def feed(self, tokens: np.ndarray) -> np.ndarray:
        """Run ``tokens`` ``(B,)`` at the next position; returns the next-token logits
        ``(B, V)``.
        """
        positions = np.full((len(tokens), 1), self.length, dtype="int32")
        tokens = np.asarray(tokens, dtype="int32")[:, None]
        logits, *self.tensors = self.step([tokens, positions, *self.tensors])
        self.length += 1
        return ops.convert_to_numpy(logits)


class _Forward(keras.Model):
    """A compiled full forward pass of a GPT, ``(B, T) -> (B, T, V)``, kept apart from
    the model itself so that compiling it leaves the model's own optimizer and settings
    alone.
    """

    def __init__(self, model: GPT):
        super().__init__(name="forward")
        self.model = model

    def call(self, inputs):
        return self.model(inputs[0], training=False)


def _compiled(model: GPT, kind: type[keras.Model]):
    """The compiled :class:`_DecodeStep` or :class:`_Forward` of ``model`` (see
    :func:`_jit_function`), made once and kept on the model."""
    attribute = f"_compiled_{kind.__name__.lower()}"
    function = getattr(model, attribute, None)
    if function is None:
        function = _jit_function(kind(model))
        # kept outside Keras's tracking: the compiled step is not part of the model
        object.__setattr__(model, attribute, function)
    return function


def _padded_length(length: int, context: int) -> int:
    """The next power of two at least ``length`` (and 16), capped at ``context``: few
    compiled shapes.
    """
    return min(context, max(16, 1 << (length - 1).bit_length()))


def compile_generation(model: GPT, batch: int = 1) -> float:
    """Compile :func:`generate`'s steps for ``batch`` sequences ahead of time; returns
    the seconds it took.

    That is the cached one-token step and the full forward pass at every padded length
    (16, 32, ... up to the context), so that timing generation afterwards measures
    running, not compiling.
    """
    start = time.perf_counter()
    KVCache(model, batch).feed(np.zeros(batch, dtype="int32"))
    length = 16
    while True:
        padded = min(length, model.config.context)
        _compiled(model, _Forward)([np.zeros((batch, padded), dtype="int32")])
        if padded == model.config.context:
            return time.perf_counter() - start
        length *= 2


def _logits_by_recomputing(model: GPT, sequence: np.ndarray) -> np.ndarray:
    """Next-token logits ``(B, V)`` from one full pass over the last ``context`` tokens,
    padded to the next power of two (the causal mask keeps the padding out of sight)."""
    context = model.config.context
    window = sequence[:, -context:]
    padded = np.zeros((len(window), _padded_length(window.shape[1], context)), "int32")
    padded[:, : window.shape[1]] = window
    (logits,) = _compiled(model, _Forward)([padded])
    return ops.convert_to_numpy(logits)[:, window.shape[1] - 1]


def generate(
    model: GPT,
    prompt: np.ndarray,
    num_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
    use_cache: bool = True,
    stop_token: int | None = None,
) -> np.ndarray:
    """Continue ``prompt`` (token ids, ``(T,)`` or ``(B, T)``) by ``num_new_tokens``
    sampled tokens.

    Returns the new tokens only, ``(B, num_new_tokens)`` (or ``(num_new_tokens,)`` for a
    1-D prompt). With ``use_cache`` the keys and values of earlier positions are kept
    (:class:`KVCache`), so each step runs the model on one new token; without it, each
    step reruns the model on the whole prefix (its last ``context`` tokens), padded to
    the next power of two so that a few compiled shapes serve every step. When a cache
    is full (``context`` positions) it is rebuilt from the last ``context // 2`` tokens;
    until then both ways give the same tokens. A row that emits ``stop_token`` keeps
    emitting it.
    """
    prompt = np.asarray(prompt)
    single = prompt.ndim == 1
    tokens = np.atleast_2d(prompt).astype("int32")
    config = model.config
    if tokens.shape[1] == 0:
        raise ValueError("prompt must hold at least one token, got an empty prompt")
    whole = isinstance(num_new_tokens, (int, np.integer)) and not isinstance(num_new_tokens, bool)
    if not whole or num_new_tokens < 1:
        raise ValueError(f"num_new_tokens must be a positive integer, got {num_new_tokens!r}")
    if tokens.shape[1] > config.context:
        raise ValueError(f"prompt length must be at most the context {config.context}, "
                         f"got {tokens.shape[1]}")
    check_sampling(temperature, top_k, config.vocab_size)
    rng = np.random.default_rng(seed)
    sequence, cache = tokens, None
    for step in range(num_new_tokens):
        if not use_cache:
            logits = _logits_by_recomputing(model, sequence)
        elif cache is None or cache.length == config.context:  # the start, or full
            keep = config.context // 2 if step else config.context
            cache = KVCache(model, len(tokens))
            for column in sequence[:, -keep:].T:
                logits = cache.feed(column)
        else:
            logits = cache.feed(sequence[:, -1])
        choice = sample_next(logits, temperature, top_k, rng)
        if stop_token is not None and step:
            choice = np.where(sequence[:, -1] == stop_token, stop_token, choice)
        sequence = np.concatenate([sequence, choice[:, None]], axis=1)
    new = sequence[:, tokens.shape[1] :]
    return new[0] if single else new


def next_token_logits(model: GPT, tokens: np.ndarray, use_cache: bool) -> np.ndarray:
    """Logits ``(B, V)`` for the token after ``tokens`` ``(B, T)``: by one full pass, or
    token by token through the KV cache. The two must agree (chapter 6 prints their
    difference).
    """
    tokens = np.atleast_2d(np.asarray(tokens, dtype="int32"))
    if not use_cache:
        return ops.convert_to_numpy(model(tokens, training=False))[:, -1]
    cache = KVCache(model, len(tokens))
    for column in tokens.T:
        logits = cache.feed(column)
    return logits


# --------------------------------------------------------------------------------------
# Keeping a model, and the speed of this machine
# --------------------------------------------------------------------------------------


def save_language_model(
    model: GPT, tokenizer, directory: str | Path, name: str
) -> Path:
    """Save ``model`` as ``<directory>/<name>.keras`` and its tokeniser beside it;
    returns the model's path.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.keras"
    model.save(path)
    (directory / f"{name}.tokenizer.json").write_text(
        json.dumps(text.tokenizer_to_dict(tokenizer))
    )
    return path


def load_language_model(directory: str | Path, name: str):
    """Load ``(model, tokenizer)`` saved by :func:`save_language_model`, in Keras's safe
    mode.

    Raises FileNotFoundError, naming the folder, when no model of that name is there.
    """
    directory = Path(directory)
    path, tokenizer_path = (
        directory / f"{name}.keras",
        directory / f"{name}.tokenizer.json",
    )
    if not (path.is_file() and tokenizer_path.is_file()):
        raise FileNotFoundError(
            f"no language model {name!r} in {directory} (expected {path.name} and "
            f"{tokenizer_path.name}); run chapter 6 or use load_or_train"
        )
    model = keras.saving.load_model(path, safe_mode=True)
    return model, text.tokenizer_from_dict(json.loads(tokenizer_path.read_text()))


SMALL_MODEL = {"num_layers": 2, "num_heads": 4, "width": 64, "context": 64}
"""The shape of the small model :func:`load_or_train` trains when chapter 6's is not
there.
"""


def load_or_train(directory: str | Path, name: str = "shakespeare", steps: int = 300,
                  seed: int = 0, jit_compile=None):
    """Return ``(model, tokenizer)``: chapter 6's saved model ``name``, or, when there
    is none (a fresh build, Colab), a small character-level one trained now for
    ``steps`` steps on the bundled corpus ``name`` and saved there for next time. Which
    of the two happened is printed. Used in chapter 7.
    """
    try:
        model, tokenizer = load_language_model(directory, name)
        print(f"Loaded chapter 6's model {name!r} from {directory}.")
        return model, tokenizer
    except FileNotFoundError:
        pass
    except Exception as error:  # a file from an older version of this code, or a damaged one
        print(f"Could not load the saved model {name!r} from {directory} "
              f"({type(error).__name__}: {str(error).splitlines()[0][:120]}).")
    corpus = text.load_corpus(name)
    train_text, val_text, window_start = corpus.train, corpus.validation, None
    if name == "tang":  # as chapter 6 does: the five-character quatrains, one a line
        train_text, val_text = (
            "\n".join(text.quatrains(part, 5)) + "\n" for part in (train_text, val_text)
        )
    tokenizer = text.CharTokenizer.train(train_text + val_text)
    if name == "tang":
        window_start = int(tokenizer.encode("\n")[0])
    config = GPTConfig(vocab_size=tokenizer.vocab_size, **SMALL_MODEL)
    print(f"No saved model {name!r} in {directory}: training a small one "
          f"({steps} steps) instead.")
    run = train_language_model(
        build_gpt(config, seed=seed),
        tokenizer.encode(train_text),
        tokenizer.encode(val_text),
        steps=steps,
        batch_size=32,
        learning_rate=3e-3,
        warmup_steps=min(50, steps // 5),
        eval_every=steps,
        seed=seed,
        jit_compile=jit_compile,
        window_start=window_start,
    )
    save_language_model(run.model, tokenizer, directory, name)
    return run.model, tokenizer


def matmul_flops_per_second(
    size: int = 1024, repeats: int = 5, dtype: str = "float32"
) -> float:
    """This machine's dense float32 matrix-multiply speed in FLOP/s (median of
    ``repeats``), with the backend.

    On a CPU there is no datasheet peak to compare with, so chapter 6 divides a run's
    achieved FLOP/s by this measured rate: the model FLOPs utilisation (MFU) against
    what the hardware does on its best kernel.
    """
    a = keras.ops.convert_to_tensor(
        np.random.default_rng(0).normal(size=(size, size)).astype(dtype)
    )
    keras.ops.convert_to_numpy(keras.ops.matmul(a, a))  # warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        keras.ops.convert_to_numpy(keras.ops.matmul(a, a))
        times.append(time.perf_counter() - start)
    return 2 * size**3 / float(np.median(times))
