"""The KV cache of generation: one new token per sequence through a GPT, with the keys and values of the
earlier positions kept instead of recomputed.

:func:`attention_step`, :func:`block_step` and :func:`model_step` are the cached twins of the layers'
``call``: they use the same sublayers and weights (``split_heads`` and ``attend`` of
:class:`~bigmodel_utils.gpt.model.CausalSelfAttention`, ``embed`` and ``logits`` of
:class:`~bigmodel_utils.gpt.model.GPT`), write the new token's key and value into a fixed-size cache and
attend over the cache up to the token's position. :class:`KVCache` holds the caches of every layer and a
compiled step (:class:`DecodeStep`). Used in chapter 6 (and by chapter 7's server).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from bigmodel_utils.backend.compile import compiled
from bigmodel_utils.gpt.model import GPT, CausalSelfAttention, TransformerBlock


def attention_step(layer: CausalSelfAttention, x, cache, positions):
    """``layer`` on one new token per row, ``x`` ``(B, 1, d)`` at ``positions`` ``(B, 1)``: writes its
    key and value into ``cache`` (a pair of ``(B, H, T_max, d_head)`` tensors) at that position and
    attends over the cache up to it. Returns the output ``(B, 1, d)`` and the new cache."""
    q, k, v = layer.split_heads(layer.qkv(x))  # each (B, H, 1, d_head)
    slots = ops.arange(ops.shape(cache[0])[2])  # (T_max,)
    written = ops.cast(slots[None, :] == positions, k.dtype)[:, None, :, None]  # (B, 1, T_max, 1)
    keys = cache[0] * (1 - written) + k * written
    values = cache[1] * (1 - written) + v * written
    visible = slots[None, None, None, :] <= positions[:, None, :, None]  # (B, 1, 1, T_max)
    return layer.attend(q, keys, values, visible), (keys, values)


def block_step(block: TransformerBlock, x, cache, positions):
    """``block`` on one new token per row (see :func:`attention_step`), in inference mode: its ``call``
    without dropout, with the cached attention. Returns ``(B, 1, d)`` and the new cache."""
    attended, cache = attention_step(block.attention, block.norm_1(x), cache, positions)
    x = x + attended
    return x + block.mlp_out(block.mlp_in(block.norm_2(x))), cache


def model_step(model: GPT, tokens, positions, caches):
    """Logits ``(B, 1, V)`` for one new token per row, ``tokens`` ``(B, 1)`` at ``positions`` ``(B, 1)``,
    and the per-layer caches with its keys and values written in."""
    x = model.embed(tokens, positions)
    new_caches = []
    for block, cache in zip(model.blocks, caches):
        x, cache = block_step(block, x, cache, positions)
        new_caches.append(cache)
    return model.logits(x), new_caches


class DecodeStep(keras.Model):
    """One generation step of a GPT as a model to compile: ``[tokens, positions, *caches]`` to
    ``[logits (B, V), *caches]``, the caches flat (keys and values of layer 0, then layer 1, ...)."""

    def __init__(self, model: GPT):
        super().__init__(name="decode_step")
        self.model = model

    def call(self, inputs):
        tokens, positions, *flat = inputs
        logits, caches = model_step(self.model, tokens, positions, list(zip(flat[0::2], flat[1::2])))
        return [logits[:, -1], *[tensor for pair in caches for tensor in pair]]


class KVCache:
    """The keys and values of every layer for ``batch`` sequences of up to ``context``
    tokens, and a compiled function that feeds one token per sequence through the model
    and writes them in.

    ``tensors`` are the flat caches (zeros at first), ``length`` the positions filled and ``step`` the
    compiled :class:`DecodeStep` (compiled once per model, on the first cache).
    """

    def __init__(self, model: GPT, batch: int):
        config = model.config
        shape = (batch, config.num_heads, config.context, config.head_size)
        self.tensors = [np.zeros(shape, dtype="float32") for _ in range(2 * config.num_layers)]
        self.length = 0
        self.step = compiled(model, DecodeStep)

    def feed(self, tokens: np.ndarray) -> np.ndarray:
        """Run ``tokens`` ``(B,)`` at the next position; returns the next-token logits
        ``(B, V)``.
        """
        positions = np.full((len(tokens), 1), self.length, dtype="int32")
        tokens = np.asarray(tokens, dtype="int32")[:, None]
        logits, *self.tensors = self.step([tokens, positions, *self.tensors])
        self.length += 1
        return ops.convert_to_numpy(logits)
