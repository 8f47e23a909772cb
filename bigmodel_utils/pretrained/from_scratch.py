"""A Llama-architecture decoder from scratch in NumPy: what changed since chapter 6's GPT, one piece per
function, and a forward pass over real weights that chapter 8 compares with KerasHub's model.

* :func:`rms_norm`: scale by the root mean square; no mean subtracted, no bias (GPT: LayerNorm).
* :func:`rotary_tables` and :func:`apply_rotary`: positions enter as rotations of query and key pairs
  (GPT: a learned position embedding added to the input).
* :func:`swiglu`: a gated MLP, ``down(silu(gate x) * up x)`` (GPT: ``W2 gelu(W1 x)``).
* :func:`grouped_query_attention`: several query heads share one key/value head (GPT: one each).
* No biases anywhere, and the output layer reuses the token embedding (tied).

The tensors are named as in a GGUF file (:mod:`.weights`), each laid out ``(out_features, in_features)``.
Nothing here imports a deep-learning framework. Used in chapter 8.
"""

from __future__ import annotations

import numpy as np

from bigmodel_utils.pretrained.weights import LlamaConfig
from bigmodel_utils.scratch import softmax


def rms_norm(x, scale, epsilon):
    """``x / sqrt(mean(x**2) + epsilon) * scale`` over the last axis."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + epsilon) * scale


def rotary_tables(num_positions: int, head_dim: int, base: float):
    """Cosines and sines ``(num_positions, head_dim)`` of the angles ``position / base ** (2i / head_dim)``,
    each frequency written twice (once per half of a head)."""
    frequencies = base ** (-np.arange(0, head_dim, 2) / head_dim)
    angles = np.arange(num_positions)[:, None] * frequencies[None, :]
    angles = np.concatenate([angles, angles], axis=-1)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def apply_rotary(x, cos, sin):
    """Rotate each pair ``(x[i], x[i + h/2])`` of every head of ``x`` ``(..., T, h)`` by its position's
    angle: ``x cos + rotate_half(x) sin``."""
    first, second = np.split(x, 2, axis=-1)
    return x * cos + np.concatenate([-second, first], axis=-1) * sin


def silu(x):
    """``x * sigmoid(x)``, the gate's activation."""
    return x / (1.0 + np.exp(-x))


def swiglu(x, gate, up, down):
    """The gated MLP: ``down @ (silu(gate @ x) * (up @ x))``."""
    return (silu(x @ gate.T) * (x @ up.T)) @ down.T


def grouped_query_attention(x, wq, wk, wv, wo, num_heads, num_kv_heads, cos, sin):
    """Causal self-attention of ``x`` ``(T, d)`` where every ``num_heads // num_kv_heads`` query heads
    share one key and value head; queries and keys are rotated by position first."""
    length, head_dim = len(x), wq.shape[0] // num_heads
    q = (x @ wq.T).reshape(length, num_heads, head_dim).transpose(1, 0, 2)
    k = (x @ wk.T).reshape(length, num_kv_heads, head_dim).transpose(1, 0, 2)
    v = (x @ wv.T).reshape(length, num_kv_heads, head_dim).transpose(1, 0, 2)
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    group = num_heads // num_kv_heads
    k, v = np.repeat(k, group, axis=0), np.repeat(v, group, axis=0)
    scores = q @ k.transpose(0, 2, 1) / np.sqrt(head_dim)
    scores = np.where(np.tril(np.ones((length, length), bool)), scores, -np.inf)
    heads = softmax(scores) @ v
    return heads.transpose(1, 0, 2).reshape(length, -1) @ wo.T


def forward(tensors: dict, config: LlamaConfig, token_ids) -> np.ndarray:
    """Logits ``(T, V)`` for one sequence of ``token_ids``: embed, ``num_layers`` pre-norm blocks of
    attention and MLP each added to the residual stream, a final norm, and the tied output layer."""
    embedding = tensors["token_embd.weight"]
    x = embedding[np.asarray(token_ids)]
    cos, sin = rotary_tables(len(x), config.head_dim, config.rope_max_wavelength)
    eps = config.layer_norm_epsilon
    for i in range(config.num_layers):
        w = {name.split(".", 2)[2]: value for name, value in tensors.items() if name.startswith(f"blk.{i}.")}
        h = rms_norm(x, w["attn_norm.weight"], eps)
        x = x + grouped_query_attention(h, w["attn_q.weight"], w["attn_k.weight"], w["attn_v.weight"],
                                        w["attn_output.weight"], config.num_query_heads,
                                        config.num_key_value_heads, cos, sin)
        h = rms_norm(x, w["ffn_norm.weight"], eps)
        x = x + swiglu(h, w["ffn_gate.weight"], w["ffn_up.weight"], w["ffn_down.weight"])
    return rms_norm(x, tensors["output_norm.weight"], eps) @ embedding.T
