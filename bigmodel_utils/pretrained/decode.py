"""Generating text with a KerasHub causal language model: the book's own decoding loop.

KerasHub's ``generate`` compiles its whole loop again for every new ``max_length`` and every sampler. This
loop compiles two small programs instead, once per model: a *prefill* of the prompt (padded to a power of
two, so a few shapes cover every prompt) and a one-token *step*; both read and write a key/value cache of a
fixed size, ``(batch, layers, 2, max_length, kv_heads, head_dim)``, KerasHub's own layout. The next token is
chosen on the host in NumPy by :func:`choose_next` (greedy, temperature, top-k, top-p), so changing the
strategy compiles nothing. Used in chapter 8.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import keras
import numpy as np
from keras import ops

from bigmodel_utils.backend.compile import compiled
from bigmodel_utils.pretrained import evaluate
from bigmodel_utils.scratch import softmax
from bigmodel_utils.validation import check_int, check_number, positive, positive_int


def check_strategy(vocabulary_size: int, temperature=1.0, top_k=None, top_p=None) -> None:
    """One-line errors for a temperature that is not above 0, a top-k outside 1..V, a top-p outside (0, 1]."""
    positive("temperature", temperature)
    if top_k is not None:
        check_int("top_k", top_k, 1, vocabulary_size)
    if top_p is not None:
        check_number("top_p", top_p, 0, 1, include_minimum=False)


def choose_next(logits, rng=None, greedy=False, temperature=1.0, top_k=None, top_p=None) -> int:
    """The next token from ``logits`` ``(V,)``: the likeliest when ``greedy``; else a sample at
    ``temperature`` from the ``top_k`` likeliest tokens and, of those, the smallest set whose probability
    reaches ``top_p`` (nucleus sampling)."""
    logits = np.asarray(logits, dtype=np.float64)
    if greedy:
        return int(np.argmax(logits))
    probabilities = softmax(logits / temperature)
    order = np.argsort(-probabilities)[: top_k or len(logits)]
    kept = probabilities[order]
    if top_p is not None:
        kept = kept[: int(np.searchsorted(np.cumsum(kept), top_p)) + 1]
    return int(order[rng.choice(len(kept), p=kept / kept.sum())])


class CachedStep(keras.Model):
    """``[token_ids (B, T), cache, index]`` to ``[logits (B, T, V), cache]`` through KerasHub's
    ``call_with_cache``: ``T`` tokens written into the cache from position ``index``."""

    def __init__(self, model):
        super().__init__(name="cached_step")
        self.model = model

    def call(self, inputs):
        token_ids, cache, index = inputs
        logits, _, cache = self.model.call_with_cache(token_ids, cache, index[0])
        return [logits, cache]


@dataclass
class Generation:
    """What :meth:`Decoder.generate` returns: the new token ids and text, and how long each phase took."""

    token_ids: list[int]
    text: str
    prompt_tokens: int
    prefill_seconds: float
    decode_seconds: float
    stopped: bool = field(default=False)

    @property
    def decode_tokens_per_second(self) -> float:
        """New tokens after the first, per second of decoding (the first comes from the prefill)."""
        return (len(self.token_ids) - 1) / self.decode_seconds if len(self.token_ids) > 1 else float("nan")


class Decoder:
    """Prefill and decode for one KerasHub causal LM with a cache of ``max_length`` positions (batch 1)."""

    def __init__(self, model, max_length: int = 512):
        self.model = model
        self.max_length = positive_int("max_length", max_length)
        self.step = compiled(model, CachedStep)
        backbone = model.backbone
        self.cache_shape = (1, backbone.num_layers, 2, self.max_length, backbone.num_key_value_heads,
                            backbone.hidden_dim // backbone.num_query_heads)
        self.tokenizer = model.preprocessor.tokenizer
        self.vocabulary_size = backbone.vocabulary_size

    def encode(self, prompt: str) -> list[int]:
        """The prompt's token ids; a one-line error for an empty prompt or one that leaves no room."""
        if not isinstance(prompt, str) or not prompt:
            raise ValueError(f"prompt must be a non-empty string, got {prompt!r:.40}")
        ids = evaluate.encode(self.model, prompt)
        if len(ids) >= self.max_length:
            raise ValueError(f"prompt has {len(ids)} tokens; at most {self.max_length - 1} fit this decoder's "
                             f"max_length={self.max_length}")
        return ids

    def prefill(self, ids: list[int]):
        """Run the prompt through the model at once: the cache and the logits after its last token."""
        padded = min(self.max_length, max(16, 1 << (len(ids) - 1).bit_length()))
        tokens = np.zeros((1, padded), "int32")
        tokens[0, : len(ids)] = ids
        cache = np.zeros(self.cache_shape, "float32")
        logits, cache = self.step([tokens, cache, np.zeros(1, "int32")])
        return cache, ops.convert_to_numpy(logits)[0, len(ids) - 1]

    def generate(self, prompt: str, max_new_tokens: int = 64, greedy: bool = True, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, seed: int = 0,
                 stop_at_end: bool = True) -> Generation:
        """Continue ``prompt`` by up to ``max_new_tokens`` tokens (stopping at the end-of-turn token when
        ``stop_at_end``), choosing each with :func:`choose_next`."""
        check_strategy(self.vocabulary_size, temperature, top_k, top_p)
        ids = self.encode(prompt)
        room = self.max_length - len(ids)
        max_new_tokens = check_int("max_new_tokens", max_new_tokens, 1, room)
        rng = np.random.default_rng(seed)
        start = time.perf_counter()
        cache, logits = self.prefill(ids)
        new = [choose_next(logits, rng, greedy, temperature, top_k, top_p)]
        prefill_seconds = time.perf_counter() - start
        start, stopped = time.perf_counter(), False
        end_id = self.tokenizer.end_token_id
        while len(new) < max_new_tokens and not (stopped := stop_at_end and new[-1] == end_id):
            index = np.array([len(ids) + len(new) - 1], "int32")
            logits, cache = self.step([np.array([[new[-1]]], "int32"), cache, index])
            new.append(choose_next(ops.convert_to_numpy(logits)[0, -1], rng, greedy, temperature, top_k, top_p))
        decode_seconds = time.perf_counter() - start
        kept = new[:-1] if stop_at_end and new[-1] == end_id else new
        text = evaluate.decode(self.model, kept) if kept else ""
        return Generation(new, text, len(ids), prefill_seconds, decode_seconds, stopped or new[-1] == end_id)
