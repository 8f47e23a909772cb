"""Batches: the batching settings, and both models run on batches padded to a few compiled sizes.

* **Settings**: how large a batch may grow (``max_batch_size``, 1 is unbatched) and how long it waits for
  more requests after its first (``batch_wait_timeout_s``, per endpoint). :func:`batching_settings` checks
  them once, where they come in (:func:`~bigmodel_utils.serving.app.serve_config`,
  :meth:`~bigmodel_utils.serving.service.Service.reconfigure`); the replica applies them as they come.
* **Batched generation**: :func:`generate_batch` runs many prompts, each with its own length, sampling
  settings and seed, through chapter 6's compiled one-token step together, and gives every request the
  tokens :func:`bigmodel_utils.gpt.generate` would give it alone.
* **Batched classification**: :func:`predict_padded` runs the CNN's compiled forward pass
  (:func:`bigmodel_utils.backend.compile.predictor`) on padded batches.

Keras loads only inside the functions that run a model. Used in chapter 7.
"""

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from bigmodel_utils.serving.requests import GenerationJob
from bigmodel_utils.validation import check_int, check_number

BATCH_SIZES = (1, 4, 16, 64)
"""The batch sizes the models are compiled for: a batch is padded up to the next one (and split above 64),
so that a few compiled shapes serve every batch."""

ENDPOINTS = ("classify", "generate")
"""The batched endpoints; batching settings may differ between them."""

DEFAULT_MAX_BATCH_SIZE = 16
BATCH_WAIT_TIMEOUT_S = {"classify": 0.02, "generate": 0.1}
"""Seconds a batch waits for more requests after its first, per endpoint. Serve forms the next batch while the
model still runs the last one, so under load a batch holds what arrived in one such wait: it must be about as
long as a batch takes to run for batches to fill. A batch of 32 images takes about 20 ms here, a batch of
generations (30 steps of chapter 6's GPT) about 100 ms."""

MAX_BATCH_SIZE_LIMIT = 256
"""The largest ``max_batch_size`` accepted; the replica's ``max_ongoing_requests`` must be at least this."""

MAX_BATCH_WAIT_S = 10.0
"""The longest ``batch_wait_timeout_s`` accepted, in seconds."""


def batching_settings(max_batch_size=None, batch_wait_timeout_s=None) -> dict[str, Any]:
    """Checked batching settings as (part of) the deployment's ``user_config``; None leaves a setting out.

    ``max_batch_size``: an integer from 1 (unbatched) to :data:`MAX_BATCH_SIZE_LIMIT`.
    ``batch_wait_timeout_s``: seconds from 0 to :data:`MAX_BATCH_WAIT_S`, one number for both endpoints or a
    dict for some of :data:`ENDPOINTS`; it comes back as a dict. Used in chapter 7.
    """
    settings: dict[str, Any] = {}
    if max_batch_size is not None:
        settings["max_batch_size"] = check_int("max_batch_size", max_batch_size, 1, MAX_BATCH_SIZE_LIMIT)
    if batch_wait_timeout_s is not None:
        waits = (dict(batch_wait_timeout_s) if isinstance(batch_wait_timeout_s, dict)
                 else dict.fromkeys(ENDPOINTS, batch_wait_timeout_s))
        unknown = sorted(set(waits) - set(ENDPOINTS))
        if unknown:
            raise ValueError(f"batch_wait_timeout_s has unknown endpoints {unknown}; known: {', '.join(ENDPOINTS)}")
        settings["batch_wait_timeout_s"] = {
            endpoint: check_number(f"batch_wait_timeout_s[{endpoint!r}]", wait, 0, MAX_BATCH_WAIT_S)
            for endpoint, wait in waits.items()}
    return settings


def merge_settings(current: dict, change: dict) -> dict:
    """``current`` batching settings with the checked ``change`` applied (waits merged per endpoint)."""
    merged = {**current, **change}
    merged["batch_wait_timeout_s"] = {**current.get("batch_wait_timeout_s", {}),
                                      **change.get("batch_wait_timeout_s", {})}
    return merged


def padded_size(count: int, batch_sizes: Sequence[int] = BATCH_SIZES) -> int:
    """The smallest of ``batch_sizes`` that holds ``count`` rows (``count`` is at most the largest)."""
    return next(size for size in sorted(batch_sizes) if size >= count)


def generate_batch(model, jobs: Sequence[GenerationJob], batch_sizes: Sequence[int] = BATCH_SIZES
                   ) -> list[np.ndarray]:
    """The new tokens of every job, ``(job.num_new_tokens,)`` int32 each, run through the model together.

    All rows go through chapter 6's compiled one-token step (:class:`bigmodel_utils.gpt.KVCache`) at the
    same step ``t``: a row still inside its prompt feeds its prompt token ``t``, a row past it feeds the token
    it sampled last, a finished row (or a padding row) feeds a dummy token nobody reads. A row samples from
    the logits at its own position with its own temperature, top-k and random generator
    (``numpy.random.default_rng(job.seed)``, drawn once per new token, as :func:`bigmodel_utils.gpt.generate`
    draws for one prompt), so each job gets the tokens it would get alone. Batches are padded to the next of
    ``batch_sizes`` (and split above the largest) so that a few compiled shapes serve all.

    The jobs are taken as :func:`~bigmodel_utils.serving.requests.check_generate` makes them (a prompt plus new
    tokens within ``model.config.context``, valid sampling settings): nothing is checked again here. Used in
    chapter 7.
    """
    jobs, largest = list(jobs), max(batch_sizes)
    results = []
    for start in range(0, len(jobs), largest):
        results.extend(_decode_together(model, jobs[start:start + largest], batch_sizes))
    return results


def _decode_together(model, jobs: list[GenerationJob], batch_sizes: Sequence[int]) -> list[np.ndarray]:
    """:func:`generate_batch` for at most ``max(batch_sizes)`` jobs: one padded batch, one KV cache."""
    from bigmodel_utils import gpt

    size = padded_size(len(jobs), batch_sizes)
    cache = gpt.KVCache(model, size)  # zero keys and values for `size` rows, and the compiled step
    rngs = [np.random.default_rng(job.seed) for job in jobs]
    new_tokens: list[list[int]] = [[] for _ in jobs]
    tokens = np.zeros(size, dtype=np.int32)
    num_steps = max(len(job.prompt) + job.num_new_tokens - 1 for job in jobs)
    for step in range(num_steps):
        for row, (job, generated) in enumerate(zip(jobs, new_tokens)):
            tokens[row] = job.prompt[step] if step < len(job.prompt) else (generated[-1] if generated else 0)
        logits = cache.feed(tokens)  # (size, vocabulary) at position `step` of every row
        for row, (job, generated) in enumerate(zip(jobs, new_tokens)):
            if step >= len(job.prompt) - 1 and len(generated) < job.num_new_tokens:
                choice = gpt.sample_next(logits[row:row + 1], job.temperature, job.top_k, rngs[row])
                generated.append(int(choice[0]))
    return [np.array(generated, dtype=np.int32) for generated in new_tokens]


def predict_padded(function: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
                   batch_sizes: Sequence[int] = BATCH_SIZES) -> np.ndarray:
    """``function`` (a compiled forward pass) applied to ``images`` ``(N, ...)`` padded to the next of
    ``batch_sizes`` (split above the largest); returns its outputs for the N real rows. Used in chapter 7.
    """
    largest, outputs = max(batch_sizes), []
    for start in range(0, len(images), largest):
        chunk = images[start:start + largest]
        padded = np.zeros((padded_size(len(chunk), batch_sizes), *chunk.shape[1:]), dtype=chunk.dtype)
        padded[: len(chunk)] = chunk
        outputs.append(np.asarray(function(padded))[: len(chunk)])
    return np.concatenate(outputs)
