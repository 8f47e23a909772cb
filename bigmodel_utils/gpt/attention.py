"""Attention from scratch, in NumPy with explicit shapes: the causal mask, scaled dot-product attention and
multi-head attention with its weights laid out as ``keras.layers.MultiHeadAttention`` stores them, so the two
can be compared on the same weights. The softmax is chapter 3's (:func:`bigmodel_utils.scratch.softmax`).

Used in chapter 6.
"""

from __future__ import annotations

import numpy as np

from bigmodel_utils.scratch import softmax


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
"""The order in which ``keras.layers.MultiHeadAttention.get_weights()`` returns its weights."""


def mha_weights(layer) -> dict[str, np.ndarray]:
    """The weights of a built ``keras.layers.MultiHeadAttention`` (with biases) as a
    dict of NumPy arrays, keyed by :data:`MHA_WEIGHT_NAMES`.
    """
    values = [np.asarray(w) for w in layer.get_weights()]
    if len(values) != len(MHA_WEIGHT_NAMES):
        raise ValueError(
            f"layer must be a built MultiHeadAttention with biases (8 weights), got {len(values)}"
        )
    return dict(zip(MHA_WEIGHT_NAMES, values))
