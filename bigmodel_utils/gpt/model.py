"""The GPT in backend-agnostic Keras 3 (``keras.ops`` only, no TensorFlow): its shape (:class:`GPTConfig`),
:class:`CausalSelfAttention`, :class:`TransformerBlock` (pre-LayerNorm, residual connections, a 4x MLP,
dropout) and :class:`GPT` (token and position embeddings, a stack of blocks, a final LayerNorm and an output
layer tied to the token embedding), built by :func:`build_gpt`.

The layers are registered under ``bigmodel_utils``, so a saved model loads back in Keras's safe mode.
Generation with a KV cache reuses these layers through :mod:`bigmodel_utils.gpt.cache`. Used in chapter 6
(and by chapter 7, which adapts and serves the trained model).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import keras
from keras import ops

from bigmodel_utils.validation import check_number, positive_int


@dataclass(frozen=True)
class GPTConfig:
    """The shape of a GPT: vocabulary, context length (tokens), layers, heads, width and dropout."""

    vocab_size: int
    context: int
    num_layers: int = 4
    num_heads: int = 4
    width: int = 128
    dropout: float = 0.0

    def __post_init__(self):
        for name in ("vocab_size", "context", "num_layers", "num_heads", "width"):
            positive_int(name, getattr(self, name))
        if self.width % self.num_heads:
            raise ValueError(f"width must be divisible by num_heads ({self.num_heads}), got {self.width}")
        check_number("dropout", self.dropout, 0, 1, include_maximum=False)

    @property
    def head_size(self) -> int:
        """The width of one head, ``d_head = width / num_heads``."""
        return self.width // self.num_heads


@keras.saving.register_keras_serializable(package="bigmodel_utils")
class CausalSelfAttention(keras.layers.Layer):
    """Multi-head causal self-attention, ``(B, T, d)`` to ``(B, T, d)``: one Dense makes Q, K and V,
    another mixes the heads.

    ``split_heads`` and ``attend`` are the two halves of ``call``; the KV cache of generation
    (:func:`bigmodel_utils.gpt.cache.attention_step`) calls them with keys and values from its cache.
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

    def split_heads(self, qkv):  # (B, T, 3d) -> Q, K, V, each (B, H, T, d_head)
        batch, length = ops.shape(qkv)[0], ops.shape(qkv)[1]
        qkv = ops.reshape(qkv, (batch, length, 3, self.num_heads, self.head_size))
        qkv = ops.transpose(qkv, (2, 0, 3, 1, 4))
        return qkv[0], qkv[1], qkv[2]

    def attend(self, q, k, v, visible, training=None):
        """softmax(q k^T / sqrt(d_head)) v where ``visible`` (broadcast to (B, H, T_q, T_k)) is True,
        then the heads merged and mixed: (B, T_q, d)."""
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) / math.sqrt(self.head_size)
        scores = ops.where(visible, scores, ops.cast(-1e9, scores.dtype))  # (B, H, T_q, T_k)
        # softmax written out: ops.softmax warns about rows of length one
        weights = ops.exp(scores - ops.max(scores, axis=-1, keepdims=True))
        weights = weights / ops.sum(weights, axis=-1, keepdims=True)
        heads = ops.matmul(self.attention_dropout(weights, training=training), v)
        batch, length = ops.shape(heads)[0], ops.shape(heads)[2]
        heads = ops.transpose(heads, (0, 2, 1, 3))  # (B, T_q, H, d_head)
        return self.out(ops.reshape(heads, (batch, length, self.width)))

    def call(self, x, training=None):
        q, k, v = self.split_heads(self.qkv(x))
        positions = ops.arange(ops.shape(x)[1])
        causal = positions[None, :] <= positions[:, None]  # (T, T): query i sees keys j <= i
        return self.attend(q, k, v, causal, training=training)

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "width": self.width,
                "dropout": self.dropout_rate}


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

    def call(self, x, training=None):
        attended = self.attention(self.norm_1(x), training=training)
        x = x + self.dropout_1(attended, training=training)
        hidden = self.mlp_in(self.norm_2(x))
        return x + self.dropout_2(self.mlp_out(hidden), training=training)

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "width": self.width,
                "dropout": self.dropout_rate}


@keras.saving.register_keras_serializable(package="bigmodel_utils")
class GPT(keras.Model):
    """A decoder-only transformer: token ids ``(B, T)`` to next-token logits ``(B, T, V)``.

    The output layer reuses the token embedding (weight tying, as in GPT-2), so it adds only a bias.
    :meth:`embed` and :meth:`logits` are the two ends of ``call``, shared with the KV cache.
    """

    def __init__(self, vocab_size: int, context: int, num_layers: int = 4, num_heads: int = 4,
                 width: int = 128, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.config = GPTConfig(vocab_size, context, num_layers, num_heads, width, dropout)
        # ReversibleEmbedding(tie_weights=True) is an Embedding that can also project
        # back to the vocabulary with its own (transposed) table: the tied output layer.
        # Doing the projection inside the layer keeps it correct when the layer is
        # quantised (chapter 7), where the stored table is int8 with a scale.
        self.token_embedding = keras.layers.ReversibleEmbedding(
            vocab_size, width, tie_weights=True, name="token_embedding",
            embeddings_initializer=keras.initializers.RandomNormal(0, 0.02),
        )
        self.position_embedding = keras.layers.Embedding(
            context, width, name="position_embedding",
            embeddings_initializer=keras.initializers.RandomNormal(0, 0.02),
        )
        self.embedding_dropout = keras.layers.Dropout(dropout)
        self.blocks = [TransformerBlock(num_heads, width, dropout, name=f"block_{i}") for i in range(num_layers)]
        self.final_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")
        self.output_bias = self.add_weight(shape=(vocab_size,), initializer="zeros", name="output_bias")

    def build(self, input_shape=None):
        shape = (None, self.config.context, self.config.width)
        self.token_embedding.build((None, self.config.context))
        self.position_embedding.build((None, self.config.context))
        for block in self.blocks:
            block.build(shape)
        self.final_norm.build(shape)
        self.built = True

    def embed(self, tokens, positions, training=None):
        """Token plus position embeddings, ``(B, T)`` ids at ``(B or 1, T)`` positions to ``(B, T, d)``."""
        x = self.token_embedding(tokens) + self.position_embedding(positions)
        return self.embedding_dropout(x, training=training)

    def logits(self, x):
        """The final LayerNorm and the tied output layer: ``(B, T, d)`` to logits ``(B, T, V)``."""
        return self.token_embedding(self.final_norm(x), reverse=True) + self.output_bias

    def call(self, tokens, training=None):
        x = self.embed(tokens, ops.arange(ops.shape(tokens)[1])[None, :], training=training)
        for block in self.blocks:
            x = block(x, training=training)
        return self.logits(x)

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
