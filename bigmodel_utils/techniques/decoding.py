"""What generating a token costs: the KV cache, memory bandwidth and decode speed.

Generating text one token at a time (decoding) does little arithmetic per byte
it reads: every step multiplies a handful of new vectors by *all* the weights
and attends over *all* the keys and values cached so far. On a GPU that makes
decoding memory-bandwidth-bound, and a roofline estimate is

* ``kv_cache_bytes_per_token = 2 * layers * kv_heads * head_size * bytes_per_value``
  (the 2 is K and V), :func:`kv_cache_bytes_per_token`;
* ``bytes_per_step = weight_bytes + batch * context_length * kv_cache_bytes_per_token``,
  :func:`decode_bytes_per_step`;
* ``tokens_per_second = batch * bandwidth / bytes_per_step``,
  :func:`predicted_decode_tokens_per_second`.

:func:`model_configs` loads the published shapes of a few real models
(``data/model_configs.csv``, each row with its source), :data:`GPUS` holds
datasheet memory bandwidths with their sources (from ``data/accelerators.csv``), and the ``measure_*`` functions
time this machine: :func:`measure_memory_bandwidth` (a NumPy copy),
:func:`measure_decode_speed` (chapter 6's one-token step through its
``KVCache``) and :func:`prefill_vs_decode` (the prompt in one pass against one
token per pass). Used in chapter 7.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from bigmodel_utils.calculators.accelerators import datasheet
from bigmodel_utils.validation import check_choice, positive, positive_int

if TYPE_CHECKING:  # the gpt module imports Keras; the formulas here must not need it
    from bigmodel_utils.gpt import GPT, GPTConfig

MODEL_CONFIGS_FILE = "model_configs.csv"
MODEL_CONFIGS_SHA256 = "84fe5c87c3f39fba114062ac528f5cea3b799d54c40c34f75483ab34c0a46968"
"""SHA-256 of ``data/model_configs.csv``: a copy downloaded in Colab (no ``data/`` there) must match."""

MODEL_CONFIG_COLUMNS = (
    "name", "organization", "released", "attention", "num_layers", "hidden_size", "num_heads",
    "num_kv_heads", "head_size", "intermediate_size", "mlp", "qkv_bias", "vocab_size", "max_context",
    "parameters", "source", "notes",
)
_INTEGER_COLUMNS = (
    "num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_size", "intermediate_size",
    "vocab_size", "max_context", "parameters",
)


@dataclass(frozen=True)
class GPUSpec:
    """One accelerator's memory: datasheet peak bandwidth and capacity, with where the figures come from."""

    name: str
    memory_bandwidth: float  # bytes per second, decimal (1 TB/s = 1e12 B/s), the datasheet's peak
    memory_bytes: float  # decimal gigabytes as the datasheet states them (80 GB = 80e9 bytes)
    source: str
    as_of: str  # YYYY-MM of the datasheet or announcement


def _memory_figures(key: str) -> GPUSpec:
    """The accelerator's memory figures, from :mod:`bigmodel_utils.calculators.accelerators`."""
    sheet = datasheet(key)
    return GPUSpec(sheet.name, sheet.memory_bandwidth, sheet.memory_bytes, sheet.source, sheet.as_of)


GPUS = {key: _memory_figures(key) for key in ("T4", "L4", "A100-80GB", "H100", "H200")}
"""Datasheet memory bandwidth and capacity of the GPUs chapter 7 prices, keyed like ``serving_prices.csv``."""


# --------------------------------------------------------------------------------------
# Looking up a GPU
# --------------------------------------------------------------------------------------


def gpu(name_or_spec: str | GPUSpec) -> GPUSpec:
    """Return the :class:`GPUSpec` for a short name such as ``"H100"`` (or pass one through). Used in chapter 7."""
    if isinstance(name_or_spec, GPUSpec):
        return name_or_spec
    return GPUS[check_choice("gpu", name_or_spec, GPUS)]


# --------------------------------------------------------------------------------------
# The KV cache and the published models
# --------------------------------------------------------------------------------------


def kv_cache_bytes_per_token(num_layers, num_kv_heads, head_size, bytes_per_value=2) -> int:
    """Bytes the KV cache holds for one token: ``2 * num_layers * num_kv_heads * head_size * bytes_per_value``.

    The 2 counts the key and the value vector that every layer keeps for each
    of its ``num_kv_heads`` key/value heads. Multi-head attention has as many
    KV heads as query heads; grouped-query attention (GQA) shares each KV head
    among several query heads, which shrinks this figure by that factor.
    ``bytes_per_value`` is 2 for bfloat16 or float16 (the default), 4 for
    float32, 1 for an 8-bit cache.

    >>> kv_cache_bytes_per_token(32, 8, 128)   # Llama 3 8B in bfloat16
    131072

    Used in chapter 7.
    """
    values = 2 * positive_int("num_layers", num_layers) * positive_int("num_kv_heads", num_kv_heads)
    values *= positive_int("head_size", head_size)
    per_value = positive("bytes_per_value", bytes_per_value)
    total = values * per_value
    return int(total) if total.is_integer() else total


def gpt_kv_cache_bytes_per_token(config: GPTConfig, bytes_per_value=4) -> int:
    """KV-cache bytes per token of chapter 6's GPT (:class:`bigmodel_utils.gpt.GPTConfig`).

    That model is multi-head (its KV heads are its heads) and keeps its cache
    in float32, hence the default of 4 bytes a value. A :class:`GPT` model is
    accepted too (its ``config`` is used). Used in chapter 7.
    """
    config = getattr(config, "config", config)
    if not all(hasattr(config, field) for field in ("num_layers", "num_heads", "head_size")):
        raise ValueError(f"config must be a gpt.GPTConfig (or a gpt.GPT), got {type(config).__name__}")
    return kv_cache_bytes_per_token(config.num_layers, config.num_heads, config.head_size, bytes_per_value)


def kv_cache_bytes(kv_bytes_per_token, context_length, batch=1) -> float:
    """Bytes of KV cache for ``batch`` sequences of ``context_length`` tokens each. Used in chapter 7."""
    per_token = positive("kv_bytes_per_token", kv_bytes_per_token)
    return per_token * positive_int("context_length", context_length) * positive_int("batch", batch)


def llama_parameter_count(vocab_size, hidden_size, num_layers, num_heads, num_kv_heads, head_size,
                          intermediate_size, qkv_bias=False, tied_embeddings=False) -> int:
    """Parameters of a Llama-style decoder, counted from its config: the number a checkpoint holds.

    Token embedding and a separate (untied) output layer, ``2 V d``; per layer
    the query and output projections ``2 d H h``, the key and value
    projections ``2 d H_kv h`` (plus their biases and the query's when
    ``qkv_bias``, as in Qwen2.5), a gated (SwiGLU) MLP ``3 d d_ff`` and two
    RMSNorm scales ``2 d``; and the final norm ``d``. Chapter 7 checks it
    against ``data/model_configs.csv`` (Llama 3 8B: 8,030,261,248). With ``tied_embeddings`` the output
    layer reuses the embedding, ``V d`` instead of ``2 V d`` (SmolLM2, chapter 8: 134,515,008).
    """
    d, layers = positive_int("hidden_size", hidden_size), positive_int("num_layers", num_layers)
    heads, kv_heads = positive_int("num_heads", num_heads), positive_int("num_kv_heads", num_kv_heads)
    h, ffn = positive_int("head_size", head_size), positive_int("intermediate_size", intermediate_size)
    attention = 2 * d * heads * h + 2 * d * kv_heads * h + (heads * h + 2 * kv_heads * h) * bool(qkv_bias)
    per_layer = attention + 3 * d * ffn + 2 * d
    embeddings = (1 if tied_embeddings else 2) * positive_int("vocab_size", vocab_size) * d
    return embeddings + layers * per_layer + d


def model_configs():
    """The published shapes of a few real language models as a DataFrame, one row per model.

    Columns as in ``data/model_configs.csv`` (see its ``source`` and ``notes``
    for where every number comes from): ``name``, ``organization``,
    ``released`` (YYYY-MM), ``attention`` (``"MHA"`` or ``"GQA"``), the
    integer shapes ``num_layers``, ``hidden_size``, ``num_heads``,
    ``num_kv_heads``, ``head_size``, ``intermediate_size``, ``vocab_size``,
    ``max_context`` (tokens), ``parameters``, then ``mlp``, ``qkv_bias``,
    ``source`` and ``notes``; and two derived columns for 16-bit serving,
    ``kv_cache_bytes_per_token`` and ``weight_bytes`` (``2 * parameters``).
    Raises ValueError if the file breaks its own rules (a missing source, KV
    heads that do not divide the heads, MHA with fewer KV heads). Used in
    chapter 7.
    """
    import pandas as pd

    from bigmodel_utils.data.files import book_file

    table = pd.read_csv(book_file(MODEL_CONFIGS_FILE, MODEL_CONFIGS_SHA256))
    missing = [c for c in MODEL_CONFIG_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{MODEL_CONFIGS_FILE} lacks the columns {missing}")
    for column in _INTEGER_COLUMNS:
        table[column] = table[column].astype("int64")
        if (table[column] < 1).any():
            raise ValueError(f"{MODEL_CONFIGS_FILE}: {column} must be positive in every row")
    for row in table.itertuples():
        if not isinstance(row.source, str) or not row.source.strip():
            raise ValueError(f"{MODEL_CONFIGS_FILE}: {row.name} has no source")
        if not re.fullmatch(r"\d{4}-\d{2}", str(row.released)):
            raise ValueError(f"{MODEL_CONFIGS_FILE}: released must be YYYY-MM, got {row.released!r} for {row.name}")
        if row.num_heads % row.num_kv_heads or row.num_heads * row.head_size != row.hidden_size:
            raise ValueError(f"{MODEL_CONFIGS_FILE}: {row.name} has inconsistent heads, KV heads and head size")
        if (row.attention == "MHA") != (row.num_kv_heads == row.num_heads):
            raise ValueError(f"{MODEL_CONFIGS_FILE}: {row.name} is {row.attention} with {row.num_kv_heads} KV heads "
                             f"for {row.num_heads} heads")
    table["kv_cache_bytes_per_token"] = [
        kv_cache_bytes_per_token(r.num_layers, r.num_kv_heads, r.head_size, 2) for r in table.itertuples()
    ]
    table["weight_bytes"] = 2 * table["parameters"]
    return table


# --------------------------------------------------------------------------------------
# The roofline prediction
# --------------------------------------------------------------------------------------


def decode_bytes_per_step(weight_bytes, kv_bytes_per_token, context_length, batch=1) -> float:
    """Bytes one decode step reads: all the weights once, plus the KV cache of every row of the batch.

    ``weight_bytes + batch * context_length * kv_bytes_per_token``. The weights
    are read once per step whatever the batch, which is why batching raises
    throughput; the cache grows with both. Used in chapter 7.
    """
    weights = positive("weight_bytes", weight_bytes)
    return weights + kv_cache_bytes(kv_bytes_per_token, context_length, batch)


def predicted_decode_tokens_per_second(weight_bytes, kv_bytes_per_token, context_length, batch, bandwidth) -> float:
    """Tokens per second a memory-bound decoder reaches: ``batch * bandwidth / bytes_per_step``.

    Each step produces one token for each of the ``batch`` sequences and reads
    :func:`decode_bytes_per_step` bytes (``weight_bytes``, plus
    ``kv_bytes_per_token`` for each of ``context_length`` cached tokens of each
    row) at ``bandwidth`` bytes per second. This is an upper bound that
    assumes memory traffic is the only cost: it ignores the arithmetic (which
    takes over at large batches, when ``2 * parameters * batch`` FLOP a step
    outlasts the reads), activations, the overlap of compute with loads,
    kernel launch overhead and kernel efficiency (real kernels reach only part
    of the datasheet bandwidth), and it takes every row at the same context
    length. Used in chapter 7.
    """
    step_bytes = decode_bytes_per_step(weight_bytes, kv_bytes_per_token, context_length, batch)
    return batch * positive("bandwidth", bandwidth) / step_bytes


# --------------------------------------------------------------------------------------
# Measurements on this machine
# --------------------------------------------------------------------------------------


def measure_memory_bandwidth(num_bytes: int = 256 * 2**20, repeats: int = 5) -> float:
    """This machine's memory bandwidth in bytes per second, measured by copying a NumPy array.

    It copies a float64 array of ``num_bytes`` into another (``np.copyto``)
    ``repeats`` times after one warm-up copy (which also makes the operating
    system map the destination's pages) and returns ``2 * num_bytes`` divided
    by the median time: every copy reads ``num_bytes`` and writes
    ``num_bytes``. Keep ``num_bytes`` far above the CPU's last-level cache
    (tens of MB) so that the copy goes to main memory. What it leaves out: a
    cache that allocates on write may read the destination before writing it
    (3 bytes moved for every 2 counted here), and the copy runs on one core, which
    on a large server cannot saturate every memory channel, so this is the
    bandwidth one thread sees. The default (two arrays of 256 MiB) takes
    about a second. Used in chapter 7.
    """
    num_bytes = positive_int("num_bytes", num_bytes)
    if num_bytes < 2**20:
        raise ValueError(f"num_bytes must be at least 1 MiB (2**20), far above the CPU caches, got {num_bytes!r}")
    repeats = positive_int("repeats", repeats)
    source = np.ones(num_bytes // 8, dtype=np.float64)
    target = np.empty_like(source)
    np.copyto(target, source)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(target, source)
        seconds.append(time.perf_counter() - start)
    return 2 * source.nbytes / float(np.median(seconds))


@dataclass(frozen=True)
class DecodeMeasurement:
    """What :func:`measure_decode_speed` timed, with the bytes each step reads by the roofline's count."""

    batch: int
    num_tokens: int
    context_length: int  # positions in the model's fixed-size cache, all of which each step reads
    seconds_per_step: float  # median over the timed steps
    tokens_per_second: float  # batch / seconds_per_step
    weight_bytes: int
    kv_cache_bytes: int  # the whole cache, batch x context_length x per-token bytes
    bytes_read_per_step: int  # weight_bytes + kv_cache_bytes
    achieved_bytes_per_second: float  # bytes_read_per_step / seconds_per_step

    def predicted_tokens_per_second(self, bandwidth) -> float:
        """The roofline's tokens per second for this model and batch at ``bandwidth`` bytes per second."""
        return self.batch * positive("bandwidth", bandwidth) / self.bytes_read_per_step

    def as_dict(self) -> dict:
        return asdict(self)


def _check_gpt(model) -> None:
    from bigmodel_utils.gpt import GPT

    if not isinstance(model, GPT):
        raise ValueError(f"model must be a gpt.GPT (build one with gpt.build_gpt), got {type(model).__name__}")


def _feed_timed(cache, tokens: np.ndarray) -> float:
    start = time.perf_counter()
    cache.feed(tokens)  # returns NumPy logits, so the step has finished when this returns
    return time.perf_counter() - start


def measure_decode_speed(model: GPT, batch: int = 1, num_tokens: int = 32, warmup: int = 2) -> DecodeMeasurement:
    """Tokens per second of chapter 6's one-token step (``gpt.KVCache(model, batch).feed``), measured.

    Feeds ``warmup`` tokens (the first one compiles the step for this batch
    size), then times ``num_tokens`` more steps one by one and takes the
    median; ``warmup + num_tokens`` must fit in the model's context. Returns a
    :class:`DecodeMeasurement`. Its byte counts follow chapter 6's cache,
    which has a fixed size of ``context`` positions that every step reads in
    full (and writes back), so ``bytes_read_per_step`` is the float32 weights
    (``4 * count_params()``; the tied output layer reads the whole embedding)
    plus the whole cache. On a CPU with a tiny model both fit in the caches
    and the fixed cost of each call dominates, so ``achieved_bytes_per_second``
    falls far below :func:`measure_memory_bandwidth`: that gap is what
    chapter 7 explains. Used in chapter 7.
    """
    from bigmodel_utils import gpt

    _check_gpt(model)
    batch, num_tokens = positive_int("batch", batch), positive_int("num_tokens", num_tokens)
    warmup = positive_int("warmup", warmup)
    context = model.config.context
    if warmup + num_tokens > context:
        raise ValueError(f"num_tokens must be at most the context ({context}) minus warmup ({warmup}), "
                         f"got {num_tokens}")
    tokens = np.random.default_rng(0).integers(0, model.config.vocab_size, size=(warmup + num_tokens, batch))
    cache = gpt.KVCache(model, batch)
    for column in tokens[:warmup]:
        cache.feed(column)
    seconds = float(np.median([_feed_timed(cache, column) for column in tokens[warmup:]]))
    weight_bytes = 4 * int(model.count_params())
    cache_bytes = int(kv_cache_bytes(gpt_kv_cache_bytes_per_token(model.config), context, batch))
    step_bytes = weight_bytes + cache_bytes
    return DecodeMeasurement(
        batch=batch, num_tokens=num_tokens, context_length=context, seconds_per_step=seconds,
        tokens_per_second=batch / seconds, weight_bytes=weight_bytes, kv_cache_bytes=cache_bytes,
        bytes_read_per_step=step_bytes, achieved_bytes_per_second=step_bytes / seconds,
    )


@dataclass(frozen=True)
class PrefillDecode:
    """The prompt in one forward pass against one new token per pass; see :func:`prefill_vs_decode`."""

    prompt_length: int
    batch: int
    prefill_seconds: float  # one full forward pass over batch x prompt_length tokens
    prefill_tokens_per_second: float
    decode_seconds_per_token: float  # one KV-cache step, which makes one token per row
    decode_tokens_per_second: float

    @property
    def speedup(self) -> float:
        """How many times more tokens per second the prompt pass processes than decoding makes."""
        return self.prefill_tokens_per_second / self.decode_tokens_per_second

    def as_dict(self) -> dict:
        return {**asdict(self), "speedup": self.speedup}


def prefill_vs_decode(model: GPT, prompt_length: int, batch: int = 1, repeats: int = 3) -> PrefillDecode:
    """Seconds and tokens per second for a prompt in one pass (prefill) and per generated token (decode).

    Prefill runs chapter 6's compiled full forward pass
    (``gpt.compiled_forward(model)``) on ``batch`` x ``prompt_length``
    tokens; decode runs its compiled one-token ``KVCache`` step. Both are
    compiled by a first call that is not timed, then each is timed
    ``max(repeats, 3)`` times (decode: that many steps) and the medians are
    kept. The forward pass compiles once per ``prompt_length`` and ``batch``,
    so keep those few. Prefill handles every prompt token in parallel, so its
    tokens per second are far higher; decode makes one token per row per pass.
    Returns a :class:`PrefillDecode`. Used in chapter 7.
    """
    from bigmodel_utils import gpt

    _check_gpt(model)
    prompt_length, batch = positive_int("prompt_length", prompt_length), positive_int("batch", batch)
    repeats = max(3, positive_int("repeats", repeats))
    if prompt_length > model.config.context:
        raise ValueError(f"prompt_length must be at most the context {model.config.context}, got {prompt_length}")
    if repeats + 1 > model.config.context:
        raise ValueError(f"repeats must be below the context {model.config.context}, got {repeats}")
    from keras import ops

    forward = gpt.compiled_forward(model)
    prompt = np.random.default_rng(0).integers(0, model.config.vocab_size, size=(batch, prompt_length))
    prompt = prompt.astype("int32")
    ops.convert_to_numpy(forward([prompt])[0])  # compile
    prefill = []
    for _ in range(repeats):
        start = time.perf_counter()
        ops.convert_to_numpy(forward([prompt])[0])
        prefill.append(time.perf_counter() - start)
    cache = gpt.KVCache(model, batch)
    cache.feed(prompt[:, 0])  # compile
    decode = [_feed_timed(cache, prompt[:, (i + 1) % prompt_length]) for i in range(repeats)]
    prefill_seconds, decode_seconds = float(np.median(prefill)), float(np.median(decode))
    return PrefillDecode(
        prompt_length=prompt_length, batch=batch, prefill_seconds=prefill_seconds,
        prefill_tokens_per_second=batch * prompt_length / prefill_seconds,
        decode_seconds_per_token=decode_seconds, decode_tokens_per_second=batch / decode_seconds,
    )
