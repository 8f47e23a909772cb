"""Generating text with a GPT: sampling the next token (temperature, top-k), and continuing a prompt either
through the KV cache (:mod:`bigmodel_utils.gpt.cache`) or by recomputing the whole prefix, both compiled.
Used in chapter 6 (and by chapter 7's server, which samples as :func:`generate` does).
"""

from __future__ import annotations

import time

import keras
import numpy as np
from keras import ops

from bigmodel_utils.backend.compile import compiled
from bigmodel_utils.gpt.cache import KVCache
from bigmodel_utils.gpt.model import GPT
from bigmodel_utils.scratch import softmax
from bigmodel_utils.validation import check_int, positive, positive_int


def check_sampling(temperature: float, top_k: int | None, vocab_size: int) -> None:
    """Raise a one-line ValueError for a temperature that is not a positive number or a top-k that is
    neither None nor an integer from 1 to ``vocab_size``."""
    positive("temperature", temperature)
    if top_k is not None:
        check_int("top_k", top_k, 1, vocab_size)


def sample_next(logits: np.ndarray, temperature: float, top_k: int | None, rng: np.random.Generator):
    """Sample one token id per row of ``logits`` ``(B, V)`` at ``temperature``, from the
    ``top_k`` likeliest (all when None); returns ``(B,)`` int32.
    """
    logits = np.asarray(logits, dtype=np.float64) / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = np.sort(logits, axis=-1)[:, -top_k][:, None]
        logits = np.where(logits < kth, -np.inf, logits)
    probabilities = softmax(logits)
    return np.array([rng.choice(len(p), p=p) for p in probabilities], dtype=np.int32)


class Forward(keras.Model):
    """A full forward pass of a GPT as a model to compile, ``[tokens (B, T)]`` to ``logits (B, T, V)``,
    kept apart from the model itself so that compiling it leaves the model's own optimizer and settings
    alone.
    """

    def __init__(self, model: GPT):
        super().__init__(name="forward")
        self.model = model

    def call(self, inputs):
        return self.model(inputs[0], training=False)


def compiled_forward(model: GPT):
    """``model``'s compiled :class:`Forward`, a function of ``[tokens]`` to ``[logits]`` (the backend's
    tensors), compiled once per model and once per input shape."""
    return compiled(model, Forward)


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
    batch = positive_int("batch", batch)
    start = time.perf_counter()
    KVCache(model, batch).feed(np.zeros(batch, dtype="int32"))
    length = 16
    while True:
        padded = min(length, model.config.context)
        compiled_forward(model)([np.zeros((batch, padded), dtype="int32")])
        if padded == model.config.context:
            return time.perf_counter() - start
        length *= 2


def _logits_by_recomputing(model: GPT, sequence: np.ndarray) -> np.ndarray:
    """Next-token logits ``(B, V)`` from one full pass over the last ``context`` tokens of ``sequence``
    ``(B, T)``, padded to the next power of two (the causal mask keeps the padding out of sight)."""
    context = model.config.context
    window = sequence[:, -context:]
    padded = np.zeros((len(window), _padded_length(window.shape[1], context)), "int32")
    padded[:, : window.shape[1]] = window
    (logits,) = compiled_forward(model)([padded])
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
    (:class:`~bigmodel_utils.gpt.cache.KVCache`), so each step runs the model on one new token; without
    it, each step reruns the model on the whole prefix (its last ``context`` tokens), padded to
    the next power of two so that a few compiled shapes serve every step. When a cache
    is full (``context`` positions) it is rebuilt from the last ``context // 2`` tokens;
    until then both ways give the same tokens. A row that emits ``stop_token`` keeps
    emitting it.
    """
    prompt = np.asarray(prompt)
    single = prompt.ndim == 1
    tokens = np.atleast_2d(prompt).astype("int32")
    config = model.config
    check_int("prompt length", tokens.shape[1], 1, config.context)
    positive_int("num_new_tokens", num_new_tokens)
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
