"""Serving two models over HTTP with Ray Serve, with dynamic batching, and load-testing the service.

* **Requests** are JSON bodies checked in two steps: their shape by the pydantic models
  :class:`ClassifyRequest` and :class:`GenerateRequest`, their meaning by :func:`check_classify` and
  :func:`check_generate`. Every bad request becomes a :class:`RequestError`, answered as
  ``{"error": "<one line>", "field": "<name>"}`` with a 4xx status (:func:`error_from_validation` turns
  pydantic's errors into one).
* **Batched generation**: :func:`generate_batch` runs many prompts, each with its own length, sampling
  settings and seed, through chapter 6's compiled one-token step together, and gives every request the
  tokens :func:`bigmodel_utils.gpt.generate` would give it alone.
* **The service**: :class:`ModelServer`, one Ray Serve deployment with a FastAPI ingress holding the CNN and
  the GPT (``GET /health``, ``POST /classify``, ``POST /generate``), both endpoints batched with
  ``@serve.batch``; the batch size changes at run time through the deployment's ``user_config`` (its
  ``reconfigure`` method), without restarting the replica. ``python -m bigmodel_utils.serving`` starts it
  (:func:`main`); :func:`running_service` runs that command for a notebook and always tears the whole
  process tree down afterwards (:func:`leftover_processes` checks).
* **Load test**: :func:`load_test` (a closed loop of ``concurrency`` clients) and :func:`batching_sweep`
  (unbatched against batched at several concurrencies), summarised by :func:`batching_gain`;
  :func:`probe_bad_requests` sends one bad request of each kind and reports the answers.

Ray, FastAPI and pydantic load with this module; Keras and TensorFlow only inside the functions and the
replica that need them, so the command-line process that starts Ray never imports TensorFlow.

Used in chapter 7.
"""

import argparse
import asyncio
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from bigmodel_utils.validation import check_int

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
"""The largest ``max_batch_size`` accepted; :data:`MAX_ONGOING_REQUESTS` must be at least this."""

MAX_ONGOING_REQUESTS = 256
"""Requests one replica takes at once: at least the largest batch, so that concurrency 64 reaches it."""

MAX_TEMPERATURE = 5.0
CONCURRENCY_LEVELS = (1, 4, 16, 64)
APP_NAME = "models"
READY_PREFIX = "READY "
"""The command line prints this, then a JSON object with the URL and the startup times, once serving."""

# --------------------------------------------------------------------------------------
# Requests and their errors
# --------------------------------------------------------------------------------------


class RequestError(ValueError):
    """A bad request: the HTTP ``status`` (4xx), the request ``field`` at fault and a one-line ``message``.
    Used in chapter 7."""

    def __init__(self, field: str, message: str, status: int = 422):
        super().__init__(message)
        self.field, self.message, self.status = field, message, status

    def body(self) -> dict[str, str]:
        """The JSON body the service answers with: ``{"error": message, "field": field}``."""
        return {"error": self.message, "field": self.field}


class ClassifyRequest(BaseModel):
    """``POST /classify``: one image as nested lists, H x W or H x W x C, uint8 0-255 or floats in [0, 1].

    Strict: no other fields, no type coercion (the values are checked by :func:`check_classify`). Used in
    chapter 7.
    """

    model_config = ConfigDict(extra="forbid", strict=True)
    image: list[Any]


class GenerateRequest(BaseModel):
    """``POST /generate``: a prompt and how to continue it (limits: :func:`check_generate`).

    Strict: no other fields; integer fields take neither ``"3"`` nor ``3.0``, float fields take integers. Used in
    chapter 7.
    """

    model_config = ConfigDict(extra="forbid", strict=True)
    prompt: str
    max_new_tokens: int = 32
    temperature: float = 1.0
    top_k: int | None = None
    seed: int = 0


def _shorten(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def error_from_validation(errors: Sequence[dict]) -> RequestError:
    """The :class:`RequestError` for pydantic's (or FastAPI's) list of validation ``errors``: the first one.

    Its field is the top-level key of the body (``"body"`` for the body as a whole); malformed JSON is a 400,
    everything else a 422. Used in chapter 7.
    """
    if not errors:
        return RequestError("body", "the request body is not valid", 422)
    error = errors[0]
    location = [part for part in error.get("loc", ()) if part != "body"]
    field_name = str(location[0]) if location and isinstance(location[0], str) else "body"
    kind = error.get("type", "")
    if kind == "json_invalid":
        reason = (error.get("ctx") or {}).get("error", "")
        return RequestError("body", f"the request body is not valid JSON: {reason or error.get('msg')}", 400)
    if kind == "missing":
        return RequestError(field_name, f"{field_name} is required")
    if kind == "extra_forbidden":
        return RequestError(field_name, f"{field_name} is not a field of this request")
    if field_name == "body":
        return RequestError("body", f"the request body must be a JSON object, got {_shorten(error.get('input'))}")
    return RequestError(field_name, f"{field_name}: {error.get('msg', 'invalid value')}, got "
                                    f"{_shorten(error.get('input'))}")


def _parse(model: type[BaseModel], body) -> BaseModel:
    """``body`` (a dict, or already a ``model``) validated as ``model``; a RequestError names what is wrong."""
    if isinstance(body, model):
        return body
    try:
        return model.model_validate(body)
    except ValidationError as error:
        raise error_from_validation(error.errors()) from None


def check_classify(body, image_shape: tuple[int, int, int] = (28, 28, 1)) -> np.ndarray:
    """The image of a ``/classify`` body (a dict or a :class:`ClassifyRequest`) as float32 ``image_shape``
    in [0, 1].

    Accepts H x W or H x W x C nested lists, uint8 values 0-255 or floats in [0, 1]
    (:func:`bigmodel_utils.cnn.training.check_images` checks and scales them). Raises :class:`RequestError` naming
    the field otherwise. Used in chapter 7.
    """
    from bigmodel_utils.cnn.training import check_images

    request = _parse(ClassifyRequest, body)
    try:
        image = np.asarray(request.image)
    except ValueError:
        raise RequestError("image", "image must be nested lists of numbers with rows of equal length") from None
    if image.dtype == bool or image.dtype == object or not np.issubdtype(image.dtype, np.number):
        raise RequestError("image", f"image must hold numbers (uint8 0-255 or floats in [0, 1]), "
                                    f"got values of type {image.dtype}")
    if image.ndim not in (2, 3):
        raise RequestError("image", f"image must be one image, H x W or H x W x C nested lists, "
                                    f"got {image.ndim} level(s) of nesting, shape {image.shape}")
    try:
        return check_images(image, tuple(image_shape))[0]
    except ValueError as error:
        raise RequestError("image", f"image: {error}") from None


@dataclass(frozen=True)
class GenerationJob:
    """One generation request, checked: ``prompt`` token ids ``(T,)``, how many tokens to add, how to sample.
    Used in chapter 7."""

    prompt: np.ndarray
    num_new_tokens: int
    temperature: float = 1.0
    top_k: int | None = None
    seed: int = 0


def check_generate(body, tokenizer, context: int, max_new_tokens_limit: int | None = None) -> GenerationJob:
    """The :class:`GenerationJob` of a ``/generate`` body (a dict or a :class:`GenerateRequest`) for a model
    of ``context`` tokens.

    Limits: a non-empty prompt of characters ``tokenizer`` knows; ``max_new_tokens`` from 1 to
    ``max_new_tokens_limit`` (default ``context - 1``) with prompt plus new tokens at most ``context``;
    temperature in (0, 5]; ``top_k`` None or 1 to the vocabulary size; ``seed`` a non-negative integer.
    Raises :class:`RequestError` naming the field otherwise. Used in chapter 7.
    """
    request = _parse(GenerateRequest, body)
    limit = context - 1 if max_new_tokens_limit is None else min(max_new_tokens_limit, context - 1)
    if not request.prompt:
        raise RequestError("prompt", "prompt must hold at least one character, got an empty string")
    try:
        prompt = np.asarray(tokenizer.encode(request.prompt), dtype=np.int32)
    except ValueError as error:
        raise RequestError("prompt", f"prompt: {error}") from None
    if len(prompt) > context - 1:
        raise RequestError("prompt", f"prompt is {len(prompt)} tokens long; at most {context - 1} fit in the "
                                     f"model's context of {context} with one new token")
    if not 1 <= request.max_new_tokens <= limit:
        raise RequestError("max_new_tokens", f"max_new_tokens must be from 1 to {limit}, "
                                             f"got {request.max_new_tokens}")
    if len(prompt) + request.max_new_tokens > context:
        raise RequestError("max_new_tokens", f"prompt ({len(prompt)} tokens) plus max_new_tokens "
                                             f"({request.max_new_tokens}) exceeds the model's context of {context}; "
                                             f"ask for at most {context - len(prompt)}")
    if not (math.isfinite(request.temperature) and 0 < request.temperature <= MAX_TEMPERATURE):
        raise RequestError("temperature", f"temperature must be greater than 0 and at most {MAX_TEMPERATURE:g}, "
                                          f"got {request.temperature!r}")
    if request.top_k is not None and not 1 <= request.top_k <= tokenizer.vocab_size:
        raise RequestError("top_k", f"top_k must be null or from 1 to the vocabulary size {tokenizer.vocab_size}, "
                                    f"got {request.top_k}")
    if request.seed < 0:
        raise RequestError("seed", f"seed must be a non-negative integer, got {request.seed}")
    return GenerationJob(prompt, request.max_new_tokens, float(request.temperature), request.top_k, request.seed)


# --------------------------------------------------------------------------------------
# Batched models: padded to a few compiled shapes
# --------------------------------------------------------------------------------------


def _padded_size(count: int, batch_sizes: Sequence[int]) -> int:
    """The smallest of ``batch_sizes`` that holds ``count`` rows (``count`` is at most the largest)."""
    return next(size for size in sorted(batch_sizes) if size >= count)


def _check_batch_sizes(batch_sizes) -> tuple[int, ...]:
    sizes = tuple(batch_sizes)
    if not sizes or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in sizes):
        raise ValueError(f"batch_sizes must be a non-empty sequence of positive integers, got {batch_sizes!r}")
    return tuple(sorted(set(int(s) for s in sizes)))


def generate_batch(model, jobs: Sequence[GenerationJob], batch_sizes: Sequence[int] = BATCH_SIZES
                   ) -> list[np.ndarray]:
    """The new tokens of every job, ``(job.num_new_tokens,)`` each, run through the model together.

    All rows go through chapter 6's compiled one-token step (:class:`bigmodel_utils.gpt.KVCache`) at the
    same step ``t``: a row still inside its prompt feeds its prompt token ``t``, a row past it feeds the token
    it sampled last, a finished row (or a padding row) feeds a dummy token nobody reads. A row samples from
    the logits at its own position with its own temperature, top-k and random generator
    (``numpy.random.default_rng(job.seed)``, drawn once per new token, as :func:`bigmodel_utils.gpt.generate`
    draws for one prompt), so each job gets the tokens it would get alone. Batches are padded to the next of
    ``batch_sizes`` (and split above the largest) so that a few compiled shapes serve all. Every job must fit
    the context: prompt plus new tokens at most ``model.config.context``. Used in chapter 7.
    """
    from bigmodel_utils import gpt

    batch_sizes = _check_batch_sizes(batch_sizes)
    jobs = list(jobs)
    if not jobs:
        raise ValueError("jobs must hold at least one GenerationJob, got none")
    config = model.config
    for index, job in enumerate(jobs):
        if not isinstance(job, GenerationJob):
            raise ValueError(f"jobs[{index}] must be a GenerationJob, got {type(job).__name__}")
        whole = isinstance(job.num_new_tokens, (int, np.integer)) and not isinstance(job.num_new_tokens, bool)
        if not whole or job.num_new_tokens < 1:
            raise ValueError(f"jobs[{index}].num_new_tokens must be a positive integer, got {job.num_new_tokens!r}")
        length = np.asarray(job.prompt).size
        if np.asarray(job.prompt).ndim != 1 or length == 0:
            raise ValueError(f"jobs[{index}].prompt must be a non-empty 1-D array of token ids, "
                             f"got shape {np.shape(job.prompt)}")
        if length + job.num_new_tokens > config.context:
            raise ValueError(f"jobs[{index}]: prompt ({length} tokens) plus num_new_tokens "
                             f"({job.num_new_tokens}) must be at most the context {config.context}")
        gpt.check_sampling(job.temperature, job.top_k, config.vocab_size)
    largest = batch_sizes[-1]
    results = []
    for start in range(0, len(jobs), largest):
        results.extend(_decode_together(model, jobs[start:start + largest], batch_sizes))
    return results


def _decode_together(model, jobs: list[GenerationJob], batch_sizes: tuple[int, ...]) -> list[np.ndarray]:
    """:func:`generate_batch` for at most ``max(batch_sizes)`` jobs: one padded batch, one KV cache."""
    from keras import ops

    from bigmodel_utils import gpt

    size = _padded_size(len(jobs), batch_sizes)
    cache = gpt.KVCache(model, size)  # zero keys and values for `size` rows, and the compiled step
    prompts = [np.asarray(job.prompt, dtype=np.int32) for job in jobs]
    rngs = [np.random.default_rng(job.seed) for job in jobs]
    new_tokens: list[list[int]] = [[] for _ in jobs]
    tokens = np.zeros((size, 1), dtype=np.int32)
    num_steps = max(len(p) + job.num_new_tokens - 1 for p, job in zip(prompts, jobs))
    for step in range(num_steps):
        for row, (prompt, generated) in enumerate(zip(prompts, new_tokens)):
            tokens[row, 0] = prompt[step] if step < len(prompt) else (generated[-1] if generated else 0)
        positions = np.full((size, 1), step, dtype=np.int32)
        logits, *cache.tensors = cache.step([tokens, positions, *cache.tensors])
        logits = ops.convert_to_numpy(logits)
        for row, (prompt, job, generated) in enumerate(zip(prompts, jobs, new_tokens)):
            if step >= len(prompt) - 1 and len(generated) < job.num_new_tokens:
                choice = gpt.sample_next(logits[row:row + 1], job.temperature, job.top_k, rngs[row])
                generated.append(int(choice[0]))
    return [np.array(generated, dtype=np.int32) for generated in new_tokens]


def _predict_function(model) -> Callable[[np.ndarray], np.ndarray]:
    """``model``'s inference-mode forward pass, compiled, as a function of a float32 batch to a NumPy array.

    TensorFlow: ``tf.function`` without XLA (XLA's CPU convolutions ran slower than TensorFlow's own for
    this CNN at batch 16 and 64 on the book's 2-core machine); JAX and PyTorch: the compiled call
    :mod:`bigmodel_utils.gpt` uses for its steps. Several times cheaper per call than ``model.predict``,
    which builds a data pipeline and callbacks for every call.
    """
    import keras

    if keras.backend.backend() == "tensorflow":
        from bigmodel_utils.backend import tensorflow_only

        return tensorflow_only.compile_numpy_function(lambda x: model(x, training=False))
    from bigmodel_utils import gpt

    class _Predict(keras.Model):
        def __init__(self, inner):
            super().__init__(name="predict")
            self.inner = inner

        def call(self, inputs):
            return self.inner(inputs[0], training=False)

    wrapper = _Predict(model)
    wrapper([np.zeros((1, *model.input_shape[1:]), dtype="float32")])  # build it: JAX needs its variables
    compiled = gpt._jit_function(wrapper)
    return lambda batch: keras.ops.convert_to_numpy(compiled([batch])[0])


def predict_padded(function: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
                   batch_sizes: Sequence[int] = BATCH_SIZES) -> np.ndarray:
    """``function`` (a compiled forward pass) applied to ``images`` ``(N, ...)`` padded to the next of
    ``batch_sizes`` (split above the largest); returns its outputs for the N real rows. Used in chapter 7.
    """
    batch_sizes = _check_batch_sizes(batch_sizes)
    largest, outputs = batch_sizes[-1], []
    for start in range(0, len(images), largest):
        chunk = images[start:start + largest]
        padded = np.zeros((_padded_size(len(chunk), batch_sizes), *chunk.shape[1:]), dtype=chunk.dtype)
        padded[: len(chunk)] = chunk
        outputs.append(np.asarray(function(padded))[: len(chunk)])
    return np.concatenate(outputs)


# --------------------------------------------------------------------------------------
# The service: one Ray Serve deployment with a FastAPI ingress
# --------------------------------------------------------------------------------------


def _check_batching(max_batch_size, batch_wait_timeout_s) -> dict[str, Any]:
    """Checked batching settings as a ``user_config`` dict (None leaves a setting out). ``batch_wait_timeout_s``
    is one number for both endpoints or a dict for some of :data:`ENDPOINTS`; it comes back as a dict."""
    settings: dict[str, Any] = {}
    if max_batch_size is not None:
        if (isinstance(max_batch_size, bool) or not isinstance(max_batch_size, (int, np.integer))
                or not 1 <= max_batch_size <= MAX_BATCH_SIZE_LIMIT):
            raise ValueError(f"max_batch_size must be an integer from 1 (unbatched) to {MAX_BATCH_SIZE_LIMIT}, "
                             f"got {max_batch_size!r}")
        settings["max_batch_size"] = int(max_batch_size)
    if batch_wait_timeout_s is not None:
        waits = (dict(batch_wait_timeout_s) if isinstance(batch_wait_timeout_s, dict)
                 else dict.fromkeys(ENDPOINTS, batch_wait_timeout_s))
        unknown = sorted(set(waits) - set(ENDPOINTS))
        if unknown:
            raise ValueError(f"batch_wait_timeout_s has unknown endpoints {unknown}; known: {', '.join(ENDPOINTS)}")
        for endpoint, wait in waits.items():
            if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait <= 10:
                raise ValueError(f"batch_wait_timeout_s must be a number of seconds from 0 to 10 (or a dict of "
                                 f"them per endpoint), got {wait!r} for {endpoint}")
        settings["batch_wait_timeout_s"] = {endpoint: float(wait) for endpoint, wait in waits.items()}
    return settings


def _merge_batching(current: dict, change: dict) -> dict:
    """``current`` batching settings with the checked ``change`` applied (waits merged per endpoint)."""
    merged = {**current, **change}
    merged["batch_wait_timeout_s"] = {**current.get("batch_wait_timeout_s", {}),
                                      **change.get("batch_wait_timeout_s", {})}
    return merged


app = FastAPI(title="Large Models in Practice: model server",
              description="Chapter 7: a Fashion-MNIST CNN and a character-level GPT behind one HTTP service.")


@app.exception_handler(RequestValidationError)
async def _on_validation_error(request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's own answer to a body that fails its model is ``{"detail": [...]}``; ours is one line."""
    error = error_from_validation(exc.errors())
    return JSONResponse(error.body(), status_code=error.status)


@app.exception_handler(RequestError)
async def _on_request_error(request, exc: RequestError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


@app.exception_handler(StarletteHTTPException)
async def _on_http_error(request, exc: StarletteHTTPException) -> JSONResponse:
    field_name = {404: "path", 405: "method"}.get(exc.status_code, "request")
    return JSONResponse({"error": f"{exc.detail}: {request.method} {request.url.path}", "field": field_name},
                        status_code=exc.status_code)


@serve.deployment(
    max_ongoing_requests=MAX_ONGOING_REQUESTS,
    ray_actor_options={"num_cpus": 1},
    # A replica that cannot load its models will not load them on a second try either.
    max_constructor_retry_count=1,
    # Shutting down fast matters more here than draining: the load test has finished by then.
    graceful_shutdown_wait_loop_s=0.2,
    graceful_shutdown_timeout_s=3,
)
@serve.ingress(app)
class ModelServer:
    """One replica holding the Fashion-MNIST CNN (``cnn_path``) and chapter 6's GPT (``gpt_dir``/``gpt_name``).

    ``POST /classify`` and ``POST /generate`` each queue their request for a ``@serve.batch`` method, which
    runs everything that arrived within ``batch_wait_timeout_s`` of a batch's first request (up to
    ``max_batch_size`` requests) as one padded batch, on a worker thread so that the event loop keeps taking
    requests meanwhile; batches run one at a time, and Serve forms the next while the last still runs.
    ``reconfigure`` (Serve calls it with the deployment's ``user_config``) changes both settings in place, the
    waits per endpoint (:data:`BATCH_WAIT_TIMEOUT_S`), and compiles new padded batch sizes in the background;
    ``max_batch_size=1`` is the unbatched service. ``GET /health`` reports the settings, the startup times
    and, per endpoint, the batches and requests run so far, the largest batch, the busy milliseconds and the
    most requests the replica held at once. Used in chapter 7.
    """

    def __init__(self, cnn_path: str, gpt_dir: str, gpt_name: str):
        started = time.perf_counter()
        import keras

        from bigmodel_utils import gpt
        from bigmodel_utils.data.image_data import FASHION_MNIST_CLASSES

        imported = time.perf_counter()
        self.cnn = keras.saving.load_model(cnn_path, compile=False, safe_mode=True)
        self.gpt, self.tokenizer = gpt.load_language_model(gpt_dir, gpt_name)
        loaded = time.perf_counter()
        self.image_shape = tuple(int(d) for d in self.cnn.input_shape[1:])
        num_classes = int(self.cnn.output_shape[-1])
        self.class_names = (list(FASHION_MNIST_CLASSES) if num_classes == len(FASHION_MNIST_CLASSES)
                            else [str(i) for i in range(num_classes)])
        self.context = self.gpt.config.context
        self.example_prompt = self.tokenizer.decode([self.tokenizer.vocab_size // 2])  # one token it knows
        self._predict = _predict_function(self.cnn)
        # one thread per model: a long generation batch does not hold up classification
        self._cnn_thread = ThreadPoolExecutor(1, thread_name_prefix="cnn")
        self._gpt_thread = ThreadPoolExecutor(1, thread_name_prefix="gpt")
        self._warm_cnn: set[int] = set()
        self._warm_gpt: set[int] = set()
        self._warming: set[int] = {1}  # sizes compiled or being compiled
        self._warmer = ThreadPoolExecutor(1, thread_name_prefix="warm-up")
        self.stats = {name: Counter() for name in ("classify", "generate")}
        self.settings = {"max_batch_size": DEFAULT_MAX_BATCH_SIZE, "batch_wait_timeout_s": dict(BATCH_WAIT_TIMEOUT_S)}
        self.timings = {"import_s": imported - started, "load_s": loaded - imported}
        self._compile(1)  # before the replica reports ready: the first request must not wait for it
        self.timings["init_s"] = time.perf_counter() - started

    def _compile(self, size: int) -> None:
        """Compile both models for batches padded to ``size`` (once), so that no request waits for it later."""
        started = time.perf_counter()
        if size not in self._warm_cnn:
            self._predict(np.zeros((size, *self.image_shape), dtype=np.float32))
            self._warm_cnn.add(size)
        if size not in self._warm_gpt:
            generate_batch(self.gpt, [GenerationJob(np.zeros(1, dtype=np.int32), 1)] * size)
            self._warm_gpt.add(size)
        self.timings["warm_up_s"] = self.timings.get("warm_up_s", 0.0) + time.perf_counter() - started

    def _warm_up(self, max_batch_size: int) -> None:
        """Compile, in the background, every padded batch size up to ``max_batch_size`` not compiled yet.

        In the background because each size takes a second or two (XLA compiles the GPT's step anew for each
        batch shape) and startup matters more: a batch that needs a size still compiling waits for it.
        """
        largest = _padded_size(min(max_batch_size, BATCH_SIZES[-1]), BATCH_SIZES)
        for size in BATCH_SIZES:
            if size <= largest and size not in self._warming:
                self._warming.add(size)
                self._warmer.submit(self._compile, size)

    def reconfigure(self, user_config: dict) -> None:
        """Apply ``{"max_batch_size": n, "batch_wait_timeout_s": {"classify": s, "generate": t}}`` (any part may
        be left out; a single number of seconds is for both endpoints)."""
        unknown = set(user_config) - {"max_batch_size", "batch_wait_timeout_s"}
        if unknown:
            raise ValueError(f"user_config has unknown keys {sorted(unknown)}; "
                             f"known: max_batch_size, batch_wait_timeout_s")
        settings = _check_batching(user_config.get("max_batch_size"), user_config.get("batch_wait_timeout_s"))
        if "max_batch_size" in settings:
            self._warm_up(settings["max_batch_size"])
        waits = settings.get("batch_wait_timeout_s", {})
        for endpoint, method in (("classify", self._classify_batch), ("generate", self._generate_batch)):
            if "max_batch_size" in settings:
                method.set_max_batch_size(settings["max_batch_size"])
            if endpoint in waits:
                method.set_batch_wait_timeout_s(waits[endpoint])
        self.settings = _merge_batching(self.settings, settings)

    @app.get("/health")
    async def health(self) -> dict:
        """``{"status": "ok", "max_batch_size": n, "batch_wait_timeout_s": {endpoint: s}, ...}`` with this
        replica's process id, startup times, model facts, a prompt the tokenizer accepts, per-endpoint
        counters (see the class docstring) and the batch sizes compiled so far."""
        return {
            "status": "ok",
            **self.settings,
            "replica": serve.get_replica_context().replica_id.unique_id,
            "pid": os.getpid(),
            "timings": {name: round(value, 3) for name, value in self.timings.items()},
            "image_shape": list(self.image_shape),
            "classes": self.class_names,
            "context": self.context,
            "vocab_size": self.tokenizer.vocab_size,
            "example_prompt": self.example_prompt,
            "stats": {name: dict(counter) for name, counter in self.stats.items()},
            "compiled_batch_sizes": {"classify": sorted(self._warm_cnn), "generate": sorted(self._warm_gpt)},
        }

    @app.post("/classify")
    async def classify(self, request: ClassifyRequest) -> dict:
        """``{"label": name, "index": i, "probabilities": [p_0, ..., p_9]}`` for one image."""
        image = check_classify(request, self.image_shape)
        self._in_flight("classify", 1)
        try:
            probabilities = await self._classify_batch(image)
        finally:
            self._in_flight("classify", -1)
        index = int(np.argmax(probabilities))
        return {"label": self.class_names[index], "index": index, "probabilities": probabilities.tolist()}

    @app.post("/generate")
    async def generate(self, request: GenerateRequest) -> dict:
        """``{"text": continuation, "new_tokens": n, "prompt_tokens": m}``: the prompt's continuation only."""
        job = check_generate(request, self.tokenizer, self.context)
        self._in_flight("generate", 1)
        try:
            tokens = await self._generate_batch(job)
        finally:
            self._in_flight("generate", -1)
        return {"text": self.tokenizer.decode(tokens), "new_tokens": len(tokens), "prompt_tokens": len(job.prompt)}

    def _in_flight(self, name: str, change: int) -> None:
        counter = self.stats[name]
        counter["in_flight"] += change
        counter["most_in_flight"] = max(counter["most_in_flight"], counter["in_flight"])

    def _count(self, name: str, batch_size: int, seconds: float) -> None:
        counter = self.stats[name]
        counter["batches"] += 1
        counter["requests"] += batch_size
        counter["largest_batch"] = max(counter["largest_batch"], batch_size)
        counter["busy_ms"] += round(seconds * 1e3)

    @serve.batch(max_batch_size=DEFAULT_MAX_BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_TIMEOUT_S["classify"])
    async def _classify_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        started = time.perf_counter()
        probabilities = await asyncio.get_running_loop().run_in_executor(
            self._cnn_thread, predict_padded, self._predict, np.stack(images))
        self._count("classify", len(images), time.perf_counter() - started)
        return list(probabilities)

    @serve.batch(max_batch_size=DEFAULT_MAX_BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_TIMEOUT_S["generate"])
    async def _generate_batch(self, jobs: list[GenerationJob]) -> list[np.ndarray]:
        started = time.perf_counter()
        tokens = await asyncio.get_running_loop().run_in_executor(self._gpt_thread, generate_batch, self.gpt, jobs)
        self._count("generate", len(jobs), time.perf_counter() - started)
        return tokens


def build_app(args: dict):
    """The Serve application (Serve's ``import_path`` target): a :class:`ModelServer` bound to
    ``args["cnn_path"]``, ``args["gpt_dir"]`` and ``args["gpt_name"]``. Used in chapter 7.
    """
    return ModelServer.bind(str(args["cnn_path"]), str(args["gpt_dir"]), str(args["gpt_name"]))


def serve_config(cnn_path, gpt_dir, gpt_name, replicas: int = 1, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
                 batch_wait_timeout_s: float | dict | None = None) -> dict:
    """The declarative Serve config (what ``serve deploy`` reads from YAML) for the service, as a dict.

    ``batch_wait_timeout_s``: None for :data:`BATCH_WAIT_TIMEOUT_S`, one number for both endpoints, or a dict
    for some of them.

    Deploying it again with only ``user_config`` changed is a "lightweight update": Serve calls each
    running replica's ``reconfigure`` instead of replacing it. Used in chapter 7.
    """
    replicas = check_int("replicas", replicas, minimum=1, maximum=16)
    return {"applications": [{
        "name": APP_NAME,
        "route_prefix": "/",
        "import_path": "bigmodel_utils.serving:build_app",
        "args": {"cnn_path": str(cnn_path), "gpt_dir": str(gpt_dir), "gpt_name": str(gpt_name)},
        # one log line per request would flood the log under a load test
        "logging_config": {"enable_access_log": False},
        "deployments": [{
            "name": "ModelServer",
            "num_replicas": replicas,
            "user_config": _merge_batching({"batch_wait_timeout_s": dict(BATCH_WAIT_TIMEOUT_S)},
                                           _check_batching(max_batch_size, batch_wait_timeout_s)),
        }],
    }]}


# --------------------------------------------------------------------------------------
# The command line: start Ray and Serve, deploy, serve until SIGTERM or SIGINT
# --------------------------------------------------------------------------------------


class _Stop(BaseException):
    """Raised by the SIGTERM/SIGINT handler so that whatever the command line is doing stops, then cleans up."""


def _wait_argument(text: str):
    """``--batch-wait-timeout-s``: a number of seconds, or a JSON object of them per endpoint."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        value = json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number nor a JSON object: {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"not a number nor a JSON object: {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bigmodel_utils.serving",
        description="Serve the chapter-7 CNN and GPT over HTTP with Ray Serve until SIGTERM or SIGINT.")
    parser.add_argument("--cnn", required=True, help="the CNN's .keras file")
    parser.add_argument("--gpt-dir", required=True, help="folder holding <name>.keras and <name>.tokenizer.json")
    parser.add_argument("--gpt-name", required=True, help="the language model's name in that folder")
    parser.add_argument("--port", type=int, required=True, help="HTTP port on 127.0.0.1")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--replicas", type=int, default=1, help="number of replicas (default: 1)")
    parser.add_argument("--max-batch-size", type=int, default=DEFAULT_MAX_BATCH_SIZE,
                        help=f"largest batch, 1 = unbatched (default: {DEFAULT_MAX_BATCH_SIZE})")
    parser.add_argument("--batch-wait-timeout-s", type=_wait_argument, default=None,
                        help="longest wait for a batch to fill: seconds for both endpoints, or JSON such as "
                             f"'{json.dumps(BATCH_WAIT_TIMEOUT_S)}' (the default)")
    parser.add_argument("--control-file", help="a JSON file of new batching settings to watch (see Service)")
    return parser


def _write_json(path: Path, content: dict) -> None:
    """Write ``content`` to ``path`` atomically: a reader sees the old file or the new one, never half."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(content))
    os.replace(partial, path)


def _wait_until_running(timeout_s: float = 300.0) -> None:
    """Wait until the application runs; raise RuntimeError with Serve's message if it failed to deploy."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        application = serve.status().applications.get(APP_NAME)
        status = str(getattr(application, "status", ""))
        if status.endswith("RUNNING"):
            return
        if "FAIL" in status or "UNHEALTHY" in status:
            raise RuntimeError(f"the application failed to deploy ({status}): {application.message}")
        time.sleep(0.1)
    raise RuntimeError(f"the application was not running after {timeout_s:.0f} s")


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: start Ray (2 CPUs or all cores, no dashboard, no usage statistics, a 100 MB object
    store), start Serve on ``--host``:``--port``, deploy :func:`serve_config`, print :data:`READY_PREFIX` and a
    JSON line of startup times, then serve; applies new batching settings written to ``--control-file``;
    shuts Serve and Ray down on SIGTERM or SIGINT. Returns the exit status. Used in chapter 7.
    """
    args = _parser().parse_args(argv)
    for label, path in (("--cnn", Path(args.cnn)), ("--gpt-dir", Path(args.gpt_dir) / f"{args.gpt_name}.keras"),
                        ("--gpt-dir", Path(args.gpt_dir) / f"{args.gpt_name}.tokenizer.json")):
        if not path.is_file():
            print(f"error: {label}: no file {path}", file=sys.stderr)
            return 2
    if not 1 <= args.port <= 65535:
        print(f"error: --port must be from 1 to 65535, got {args.port}", file=sys.stderr)
        return 2
    try:
        config = serve_config(Path(args.cnn).resolve(), Path(args.gpt_dir).resolve(), args.gpt_name,
                              args.replicas, args.max_batch_size, args.batch_wait_timeout_s)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    # Before Ray starts: no usage statistics are reported, nothing is downloaded or uploaded.
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    def stop(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one stop is enough: let the clean-up finish
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise _Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    import ray
    from ray.serve.schema import ServeDeploySchema

    control = Path(args.control_file) if args.control_file else None
    status, started = 0, time.perf_counter()
    try:
        ray.init(num_cpus=max(2, os.cpu_count() or 1, args.replicas), include_dashboard=False,
                 object_store_memory=100 * 2**20, _node_ip_address="127.0.0.1", configure_logging=True,
                 logging_level="warning")
        ray_ready = time.perf_counter()
        serve.start(http_options={"host": args.host, "port": args.port},
                    logging_config={"enable_access_log": False})
        serve_ready = time.perf_counter()
        # the declarative path, as `serve deploy config.yaml` takes it: a later config that changes only the
        # user_config reconfigures the running replicas in place
        client = serve.context._get_global_client()
        client.deploy_apps(ServeDeploySchema.model_validate(config))
        _wait_until_running()
        deployed = time.perf_counter()
        timings = {"startup_s": deployed - started, "ray_init_s": ray_ready - started,
                   "serve_start_s": serve_ready - ray_ready, "deploy_s": deployed - serve_ready}
        url = f"http://{args.host}:{args.port}"
        # one write, so that Ray's log lines (the same file) cannot land between the line and its end
        sys.stdout.write(READY_PREFIX + json.dumps({"url": url, **{k: round(v, 2) for k, v in timings.items()}}) + "\n")
        sys.stdout.flush()
        last_seq = None
        while True:
            time.sleep(0.05)
            if control is None or not control.is_file():
                continue
            request = json.loads(control.read_text())
            if request.get("seq") == last_seq:
                continue
            last_seq, applied = request.get("seq"), time.perf_counter()
            deployment = config["applications"][0]["deployments"][0]
            try:
                user_config = _merge_batching(deployment["user_config"], _check_batching(
                    request.get("max_batch_size"), request.get("batch_wait_timeout_s")))
                # the same config with only the user_config changed: Serve reconfigures the replicas in place
                client.deploy_apps(ServeDeploySchema.model_validate(
                    {"applications": [{**config["applications"][0],
                                       "deployments": [{**deployment, "user_config": user_config}]}]}))
                _wait_until_running()
                deployment["user_config"] = user_config
                answer = {"seq": last_seq, "ok": True, "user_config": user_config}
            except (ValueError, RuntimeError) as error:
                answer = {"seq": last_seq, "ok": False, "error": str(error)}
            answer["seconds"] = round(time.perf_counter() - applied, 3)
            _write_json(control.with_name(control.name + ".ack"), answer)
            print(f"reconfigured: {json.dumps(answer)}", flush=True)
    except _Stop as reason:
        print(f"stopping on {reason}", flush=True)
    except Exception as error:  # noqa: BLE001  the message is all the caller sees in the log's tail
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        status = 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stopping = time.perf_counter()
        try:
            if ray.is_initialized():
                serve.shutdown()
        finally:
            ray.shutdown()
        print(f"stopped: Serve and Ray shut down in {time.perf_counter() - stopping:.1f} s", flush=True)
    return status


# --------------------------------------------------------------------------------------
# Running the service from a notebook, and tearing it down
# --------------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on now, from 20000 up to the start of the system's range for
    ephemeral ports (32768 on Linux). Ray's own processes (its daemons and workers) bind ports the system
    picks from the ephemeral range while the service starts, so none of them can take this one before the
    service binds it; ``ray start`` clusters give workers 10000-19999, below it. Used in chapter 7.
    """
    try:
        ephemeral_start = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_start = 32768
    candidates = list(range(20000, ephemeral_start)) or list(range(20000, 32768))
    for port in np.random.default_rng().permutation(candidates)[:200]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, int(port)))
            except OSError:
                continue
            return int(port)
    raise RuntimeError(f"no free port found on {host} between 20000 and {ephemeral_start}")


def port_is_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on ``host``:``port``. Used in chapter 7."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        return probe.connect_ex((host, port)) == 0


def process_tree(pid: int) -> list:
    """``pid``'s process, all its descendants and every process of the session ``pid`` leads (Ray's actors
    start process groups of their own and outlive their parent, but stay in the session), as
    ``psutil.Process`` objects. Works after ``pid`` has exited too (its session's members remain). Used in
    chapter 7.
    """
    import psutil

    found = {}
    try:
        root = psutil.Process(pid)
        found[root.pid] = root
        found.update((child.pid, child) for child in root.children(recursive=True))
    except psutil.NoSuchProcess:
        pass
    for candidate in psutil.process_iter():
        try:
            if candidate.pid not in found and os.getsid(candidate.pid) == pid:
                found[candidate.pid] = candidate
        except (OSError, psutil.Error):
            continue
    return list(found.values())


def leftover_processes(processes) -> list:
    """The processes of ``processes`` (``psutil.Process`` objects, or pids) still running; zombies waiting for
    their parent count as gone. A ``psutil.Process`` remembers its start time, so a recycled pid is not
    mistaken for a survivor. Used in chapter 7.
    """
    import psutil

    alive = []
    for process in processes:
        try:
            process = process if isinstance(process, psutil.Process) else psutil.Process(int(process))
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            continue
    return alive


def _tail(path: Path, lines: int | None = 30) -> str:
    """The last ``lines`` lines of the text file ``path`` (all of them for None)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines if lines else None:])
    except OSError:
        return "(no log)"


class Service:
    """A service started by :func:`running_service`: its ``url``, the command line's ``pid``, ``port``,
    ``log_path``, ``startup_s`` (wall seconds until ``/health`` answered) and ``timings`` (the command line's
    own: Ray, Serve, deploy). After it stops, ``processes`` holds the process tree it had. Used in chapter 7.
    """

    def __init__(self, process: subprocess.Popen, port: int, log_path: Path, control_path: Path):
        self.process, self.pid, self.port = process, process.pid, port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path, self._control = log_path, control_path
        self.startup_s: float | None = None
        self.timings: dict[str, float] = {}
        self.processes: list = []
        self.leftovers: list[str] | None = None  # set on leaving running_service's block: empty when clean
        self._seq = 0

    def __repr__(self) -> str:
        state = "running" if self.process.poll() is None else f"exited with {self.process.returncode}"
        return f"Service({self.url}, pid {self.pid}, {state})"

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the command line's log (Ray's and the replicas' messages included)."""
        return _tail(self.log_path, lines)

    def health(self, timeout_s: float = 10.0) -> dict:
        """The service's ``GET /health`` answer as a dict."""
        import httpx

        response = httpx.get(self.url + "/health", timeout=timeout_s)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict, timeout_s: float = 60.0) -> dict:
        """POST ``body`` as JSON to ``path``; returns the answer's JSON. RuntimeError for any status but 200."""
        import httpx

        response = httpx.post(self.url + path, json=body, timeout=timeout_s)
        if response.status_code != 200:
            raise RuntimeError(f"POST {path} answered {response.status_code}: {response.text[:300]}")
        return response.json()

    def _wait_until_ready(self, timeout_s: float) -> None:
        import httpx

        started, deadline = time.perf_counter(), time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited with status {self.process.returncode} before it answered "
                                   f"on {self.url}; the end of its log ({self.log_path}):\n{self.log_tail()}")
            ready = [line for line in _tail(self.log_path, None).splitlines() if line.startswith(READY_PREFIX)]
            if ready:
                try:
                    if httpx.get(self.url + "/health", timeout=5.0).status_code == 200:
                        self.startup_s = time.perf_counter() - started
                        self.timings = json.JSONDecoder().raw_decode(ready[-1][len(READY_PREFIX):])[0]
                        return
                except httpx.HTTPError:
                    pass
            time.sleep(0.2)
        raise RuntimeError(f"the service did not answer on {self.url} within startup_timeout={timeout_s:g} s; "
                           f"the end of its log ({self.log_path}):\n{self.log_tail()}")

    def reconfigure(self, max_batch_size: int | None = None, batch_wait_timeout_s: float | dict | None = None,
                    timeout_s: float = 60.0) -> dict:
        """Change the batching settings of every replica in place (no restart) through the deployment's
        ``user_config``; returns the settings now in force, ``{"max_batch_size": n, "batch_wait_timeout_s":
        {endpoint: s}}``. ``max_batch_size=1`` is unbatched; one wait is for both endpoints, a dict for some."""
        settings = _check_batching(max_batch_size, batch_wait_timeout_s)
        if not settings:
            raise ValueError("reconfigure needs max_batch_size or batch_wait_timeout_s, got neither")
        self._seq += 1
        ack = self._control.with_name(self._control.name + ".ack")
        _write_json(self._control, {"seq": self._seq, **settings})
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited with status {self.process.returncode}; the end of its "
                                   f"log:\n{self.log_tail()}")
            try:
                answer = json.loads(ack.read_text())
            except (OSError, ValueError):
                answer = {}
            if answer.get("seq") == self._seq:
                if not answer.get("ok"):
                    raise RuntimeError(f"the service could not apply {settings}: {answer.get('error')}")
                return answer["user_config"]
            time.sleep(0.05)
        raise RuntimeError(f"the service did not apply {settings} within {timeout_s:g} s; the end of its "
                           f"log:\n{self.log_tail()}")

    def stop(self, grace_s: float = 20.0) -> list:
        """SIGTERM the command line (it shuts Serve and Ray down), wait up to ``grace_s`` seconds, then
        SIGKILL every process of its tree still alive; returns the processes that survived even that."""
        import psutil

        # Collected before any signal: once the command line exits, Ray's processes are nobody's children.
        self.processes = process_tree(self.pid)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                pass
        _, alive = psutil.wait_procs(leftover_processes(self.processes), timeout=3.0)  # a moment to follow it out
        # whatever is left, and anything started in the session since the list was made
        known = {process.pid for process in self.processes}
        stragglers = [process for process in process_tree(self.pid) if process.pid not in known]
        self.processes.extend(stragglers)
        for process in [*alive, *stragglers]:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        try:
            self.process.wait(5.0)  # reap it, so that it is not left a zombie
        except subprocess.TimeoutExpired:
            pass
        psutil.wait_procs(leftover_processes(self.processes), timeout=5.0)
        deadline = time.monotonic() + 5.0
        while port_is_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)
        return leftover_processes(self.processes)


@contextmanager
def running_service(cnn_path, gpt_dir, gpt_name, port: int | None = None, replicas: int = 1,
                    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
                    batch_wait_timeout_s: float | dict | None = None, startup_timeout: float = 120.0,
                    log_path: str | os.PathLike | None = None) -> Iterator[Service]:
    """Run ``python -m bigmodel_utils.serving`` in a process of its own for the ``with`` block; yields a
    :class:`Service` once ``/health`` answers.

    ``port=None`` picks a free port (:func:`free_port`). The command line writes to ``log_path`` (default: a
    new temporary folder, removed after a clean exit, kept after a failure); if it exits or is not ready
    within ``startup_timeout`` seconds, RuntimeError carries the end of its log. On leaving the block, always
    (also when the block raised), the command line gets SIGTERM and the whole process tree (Ray's daemons
    and workers too) SIGKILL if anything is left; then the port must be closed and no process of the tree
    alive, or RuntimeError says which (a warning instead when the block is already raising); either way
    ``service.leftovers`` lists what was left (empty when nothing). The replicas run under the environment's
    ``KERAS_BACKEND``. Used in chapter 7.
    """
    for name, value in (("cnn_path", Path(cnn_path)), ("gpt_dir", Path(gpt_dir) / f"{gpt_name}.keras")):
        if not value.is_file():
            raise FileNotFoundError(f"{name}: no file {value}")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535):
        raise ValueError(f"port must be an integer from 1 to 65535 or None (pick a free one), got {port!r}")
    if isinstance(startup_timeout, bool) or not isinstance(startup_timeout, (int, float)) or not startup_timeout > 0:
        raise ValueError(f"startup_timeout must be a positive number of seconds, got {startup_timeout!r}")
    serve_config(cnn_path, gpt_dir, gpt_name, replicas, max_batch_size, batch_wait_timeout_s)  # checks them
    port = free_port() if port is None else port
    if port_is_open(port):
        raise ValueError(f"port {port} is already in use; pass another or port=None")
    folder = Path(tempfile.mkdtemp(prefix="bigmodel-serving-"))
    own_log = log_path is None
    log_path = folder / "service.log" if own_log else Path(log_path)
    control = folder / "batching.json"
    command = [sys.executable, "-m", "bigmodel_utils.serving", "--cnn", str(cnn_path), "--gpt-dir", str(gpt_dir),
               "--gpt-name", str(gpt_name), "--port", str(port), "--replicas", str(replicas),
               "--max-batch-size", str(max_batch_size), "--control-file", str(control)]
    if batch_wait_timeout_s is not None:
        command += ["--batch-wait-timeout-s", json.dumps(batch_wait_timeout_s)]
    environment = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "TF_CPP_MIN_LOG_LEVEL": "3",
                   "PYTHONUNBUFFERED": "1"}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, env=environment)
    service = Service(process, port, log_path, control)
    raised = False
    try:
        service._wait_until_ready(startup_timeout)
        yield service
    except BaseException:
        raised = True
        raise
    finally:
        leftovers = service.stop()
        problems = []
        if leftovers:
            problems.append(f"processes still alive: {[p.pid for p in leftovers]}")
        if port_is_open(port):
            problems.append(f"port {port} is still open")
        service.leftovers = problems
        if problems:
            message = f"the service did not stop cleanly: {'; '.join(problems)}"
            if raised:
                import warnings

                warnings.warn(message, RuntimeWarning, stacklevel=3)
            else:
                raise RuntimeError(message)
        if own_log is False or not (raised or problems):  # a failed run keeps its log there, nothing else does
            import shutil

            shutil.rmtree(folder, ignore_errors=True)


def probe_bad_requests(service, image_shape: Sequence[int] | None = None, context: int | None = None,
                       prompt: str | None = None) -> list[dict]:
    """Send the service one bad request of each kind it must refuse; returns one row per request: ``case``,
    ``path``, the answer's ``status`` and ``field``, the ``expected_field`` and the ``error`` message.

    The kinds: malformed JSON, missing and wrong-typed fields, an unknown field, an image of the wrong shape
    or range, an empty prompt or one with unknown characters, too many tokens, temperature and top-k out of
    range, a negative seed. ``image_shape`` (H, W[, C]), ``context`` and a valid ``prompt`` default to what
    ``/health`` reports. ``service`` is a :class:`Service` or anything with ``url`` and ``health()``. Used in
    chapter 7.
    """
    import httpx

    health = service.health()
    height, width = tuple(image_shape or health["image_shape"])[:2]
    context = int(context or health["context"])
    prompt = prompt or health["example_prompt"]
    blank = [[0] * width] * height
    cases = [  # (case, path, body: a dict sent as JSON or raw bytes, expected field)
        ("malformed JSON", "/classify", b'{"image": [[0, 1]', "body"),
        ("a form, not JSON", "/generate", b"prompt=hello", "body"),
        ("a JSON list, not an object", "/generate", b"[1, 2]", "body"),
        ("no image", "/classify", {}, "image"),
        ("an image that is not a list", "/classify", {"image": "a picture"}, "image"),
        ("an image of the wrong shape", "/classify", {"image": [[0] * (width - 1)] * height}, "image"),
        ("pixels above 255", "/classify", {"image": [[300] * width] * height}, "image"),
        ("float pixels above 1", "/classify", {"image": [[1.5] * width] * height}, "image"),
        ("an unknown field", "/classify", {"image": blank, "label": 3}, "label"),
        ("no prompt", "/generate", {"max_new_tokens": 3}, "prompt"),
        ("a prompt that is not a string", "/generate", {"prompt": 42}, "prompt"),
        ("an empty prompt", "/generate", {"prompt": ""}, "prompt"),
        ("characters the tokenizer does not know", "/generate", {"prompt": "\u2603\U0001f600"}, "prompt"),
        ("more tokens than the context", "/generate", {"prompt": prompt, "max_new_tokens": context}, "max_new_tokens"),
        ("max_new_tokens as a string", "/generate", {"prompt": prompt, "max_new_tokens": "3"}, "max_new_tokens"),
        ("temperature 0", "/generate", {"prompt": prompt, "temperature": 0}, "temperature"),
        ("temperature above 5", "/generate", {"prompt": prompt, "temperature": 9.0}, "temperature"),
        ("top_k 0", "/generate", {"prompt": prompt, "top_k": 0}, "top_k"),
        ("top_k above the vocabulary", "/generate", {"prompt": prompt, "top_k": health["vocab_size"] + 1}, "top_k"),
        ("a negative seed", "/generate", {"prompt": prompt, "seed": -1}, "seed"),
    ]
    rows = []
    with httpx.Client(base_url=service.url, timeout=60.0) as client:
        for case, path, body, expected in cases:
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            response = client.post(path, content=content, headers={"content-type": "application/json"})
            try:
                answer = response.json()
            except ValueError:
                answer = {}
            answer = answer if isinstance(answer, dict) else {}
            rows.append({"case": case, "path": path, "status": response.status_code, "field": answer.get("field"),
                         "expected_field": expected, "error": answer.get("error")})
    return rows


# --------------------------------------------------------------------------------------
# Load test: a closed loop of clients
# --------------------------------------------------------------------------------------


@dataclass
class LoadTestResult:
    """What :func:`load_test` measured: requests sent and answered (any HTTP status), ``errors`` by status
    code or exception name, throughput of successful answers per second, their latency percentiles in
    milliseconds and the wall seconds from the first request to the last answer. Used in chapter 7."""

    path: str
    concurrency: int
    sent: int
    answered: int
    ok: int
    errors: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    throughput_rps: float = 0.0
    mean_ms: float = math.nan
    p50_ms: float = math.nan
    p95_ms: float = math.nan
    p99_ms: float = math.nan

    def as_row(self) -> dict:
        """The result as a flat dict (one row of a table)."""
        return asdict(self)


def _run_coroutine(coroutine):
    """Run ``coroutine`` to its end, also from a Jupyter cell, where an event loop is already running: then
    in a worker thread with a loop of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(1, thread_name_prefix="load-test") as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def _closed_loop(url: str, path: str, bodies: list[bytes] | None, concurrency: int, num_requests: int,
                       timeout_s: float, client: str, request_timeout_s: float) -> LoadTestResult:
    latencies: list[float] = []
    outcomes: Counter = Counter()
    sent = 0
    headers, target = {"content-type": "application/json"}, url + path
    if client == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency),
                                        timeout=aiohttp.ClientTimeout(total=request_timeout_s))
        transport_errors: tuple = (aiohttp.ClientError, asyncio.TimeoutError)

        async def send(body: bytes | None) -> int:
            request = session.get(target) if body is None else session.post(target, data=body, headers=headers)
            async with request as response:
                await response.read()
                return response.status
    else:
        import httpx

        session = httpx.AsyncClient(timeout=httpx.Timeout(request_timeout_s),
                                    limits=httpx.Limits(max_connections=concurrency,
                                                        max_keepalive_connections=concurrency))
        transport_errors = (httpx.HTTPError,)

        async def send(body: bytes | None) -> int:
            request = session.get(target) if body is None else session.post(target, content=body, headers=headers)
            return (await request).status_code

    async with session:
        start = time.perf_counter()
        deadline = start + timeout_s

        async def client_loop():
            nonlocal sent
            while sent < num_requests and time.perf_counter() < deadline:
                index, sent = sent, sent + 1  # no await in between: the event loop runs one client at a time
                began = time.perf_counter()
                try:
                    status = await send(None if bodies is None else bodies[index % len(bodies)])
                    outcomes[status] += 1
                    if status == 200:
                        latencies.append(time.perf_counter() - began)
                except transport_errors as error:
                    outcomes[type(error).__name__] += 1

        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    answered = sum(count for key, count in outcomes.items() if isinstance(key, int))
    ms = np.array(latencies) * 1e3
    percentiles = np.percentile(ms, [50, 95, 99]) if len(ms) else [math.nan] * 3
    return LoadTestResult(
        path=path, concurrency=concurrency, sent=sent, answered=answered, ok=outcomes[200],
        errors={str(key): count for key, count in sorted(outcomes.items(), key=str) if key != 200},
        wall_s=wall, throughput_rps=outcomes[200] / wall if wall > 0 else 0.0,
        mean_ms=float(ms.mean()) if len(ms) else math.nan,
        p50_ms=float(percentiles[0]), p95_ms=float(percentiles[1]), p99_ms=float(percentiles[2]),
    )


LOAD_TEST_CLIENTS = ("aiohttp", "httpx")
"""HTTP clients :func:`load_test` can drive the load with."""


def _check_positive_int(name: str, value, upper: int | None = None) -> int:
    return check_int(name, value, minimum=1, maximum=upper)


def load_test(url: str, path: str, payloads: Sequence[dict] | None, concurrency: int, num_requests: int,
              timeout_s: float = 60.0, client: str = "aiohttp", request_timeout_s: float = 60.0) -> LoadTestResult:
    """Load-test ``url + path`` with ``concurrency`` clients in a closed loop; returns a :class:`LoadTestResult`.

    Each client sends its next request as soon as its last is answered, until ``num_requests`` are sent:
    POSTs of ``payloads`` (JSON bodies, used in turn, encoded once beforehand so the clients spend little
    CPU), or GETs when ``payloads`` is None. After ``timeout_s`` seconds no more are sent and those in flight
    are awaited (each request times out after ``request_timeout_s``). The clients share one session of
    ``client`` (``"aiohttp"`` or ``"httpx"``) with a connection each. aiohttp is the default because the load
    generator shares the CPU with the service: on the book's 2-core machine an ``httpx.AsyncClient`` spent
    3 ms of CPU per request at 16 clients and 9 ms at 64 (which capped the test at 64 requests/s), aiohttp
    0.4 ms. Works from plain Python and from a Jupyter cell. Used in chapter 7.
    """
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError(f"url must start with http:// or https://, got {url!r}")
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"path must be a string starting with '/', got {path!r}")
    concurrency = _check_positive_int("concurrency", concurrency, upper=1024)
    num_requests = _check_positive_int("num_requests", num_requests)
    for name, value in (("timeout_s", timeout_s), ("request_timeout_s", request_timeout_s)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    if client not in LOAD_TEST_CLIENTS:
        raise ValueError(f"client must be one of {', '.join(map(repr, LOAD_TEST_CLIENTS))}, got {client!r}")
    bodies = None
    if payloads is not None:
        payloads = list(payloads) if not isinstance(payloads, dict) else None
        if not payloads or not all(isinstance(p, dict) for p in payloads):
            raise ValueError("payloads must be a non-empty sequence of JSON objects (dicts), or None for GET "
                             "requests")
        bodies = [json.dumps(p).encode() for p in payloads]
    return _run_coroutine(_closed_loop(url.rstrip("/"), path, bodies, concurrency, num_requests, float(timeout_s),
                                       client, float(request_timeout_s)))


def image_payloads(images) -> list[dict]:
    """``/classify`` bodies ``{"image": nested lists}`` for images ``(N, H, W)`` or ``(N, H, W, 1)`` (uint8
    0-255 or floats in [0, 1]). Used in chapter 7."""
    images = np.asarray(images)
    if images.ndim not in (3, 4):
        raise ValueError(f"images must be a batch (N, H, W) or (N, H, W, C), got shape {images.shape}")
    return [{"image": image.tolist()} for image in images]


def batching_sweep(service, path: str, payloads: Sequence[dict] | None,
                   modes: dict[str, int] | None = None, concurrencies: Sequence[int] = CONCURRENCY_LEVELS,
                   num_requests: int = 200, batch_wait_timeout_s: float | dict | None = None,
                   warmup_requests: int | None = None, timeout_s: float = 60.0) -> list[dict]:
    """Load-test ``service`` (a :class:`Service`, or anything with ``url``, ``reconfigure`` and ``health``)
    under each batching mode and concurrency; returns one row per pair.

    ``modes`` maps a name to ``max_batch_size`` (default ``{"unbatched": 1, "batched": 16}``). For each mode
    the service is reconfigured in place, then for each concurrency it takes a warm-up of ``warmup_requests``
    (default: one per client) and a :func:`load_test` of ``max(num_requests, concurrency)`` requests, each
    sending for at most ``timeout_s`` seconds (which bounds the sweep's cost: slow levels stop early).
    ``batch_wait_timeout_s`` (one number, or a dict per endpoint) is set with each mode; None keeps the
    service's (:data:`BATCH_WAIT_TIMEOUT_S` unless changed). A row holds the mode, its settings, the
    :class:`LoadTestResult` fields and ``mean_batch_size``, the requests per batch the replica ran meanwhile
    (from ``/health``; over all replicas it answered from, exact with one replica). Used in chapter 7.
    """
    _check_batching(None, batch_wait_timeout_s)
    modes = {"unbatched": 1, "batched": DEFAULT_MAX_BATCH_SIZE} if modes is None else dict(modes)
    if not modes:
        raise ValueError("modes must map at least one name to a max_batch_size, got none")
    for size in modes.values():
        _check_batching(size, None)
    concurrencies = [_check_positive_int("concurrencies", c, upper=1024) for c in concurrencies]
    if not concurrencies:
        raise ValueError("concurrencies must hold at least one positive integer, got none")
    num_requests = _check_positive_int("num_requests", num_requests)
    endpoint = path.strip("/").split("/")[0]
    rows = []
    for name, size in modes.items():
        settings = service.reconfigure(max_batch_size=size, batch_wait_timeout_s=batch_wait_timeout_s)
        wait = settings["batch_wait_timeout_s"].get(endpoint)
        for concurrency in concurrencies:
            warmup = concurrency if warmup_requests is None else warmup_requests
            if warmup:
                load_test(service.url, path, payloads, concurrency, warmup, timeout_s)
            before = service.health().get("stats", {}).get(endpoint, {})
            result = load_test(service.url, path, payloads, concurrency, max(num_requests, concurrency), timeout_s)
            after = service.health().get("stats", {}).get(endpoint, {})
            batches = after.get("batches", 0) - before.get("batches", 0)
            requests = after.get("requests", 0) - before.get("requests", 0)
            rows.append({"mode": name, "max_batch_size": size, "batch_wait_timeout_s": wait,
                         **result.as_row(), "mean_batch_size": requests / batches if batches > 0 else math.nan})
    return rows


def batching_gain(rows: Sequence[dict], baseline: str = "unbatched", mode: str = "batched") -> list[dict]:
    """For each concurrency in ``rows`` (from :func:`batching_sweep`) with both modes: the throughput ratio
    ``mode / baseline`` and both p99 latencies in ms. Used in chapter 7."""
    by_key = {(row["mode"], row["concurrency"]): row for row in rows}
    gains = []
    for concurrency in sorted({row["concurrency"] for row in rows}):
        base, other = by_key.get((baseline, concurrency)), by_key.get((mode, concurrency))
        if base is None or other is None:
            continue
        ratio = other["throughput_rps"] / base["throughput_rps"] if base["throughput_rps"] > 0 else math.nan
        gains.append({"concurrency": concurrency, "throughput_ratio": ratio,
                      f"{baseline}_p99_ms": base["p99_ms"], f"{mode}_p99_ms": other["p99_ms"]})
    return gains


if __name__ == "__main__":
    sys.exit(main())
