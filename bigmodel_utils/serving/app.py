"""The service: one Ray Serve deployment with a FastAPI ingress holding the CNN and the GPT.

:class:`ModelServer` answers ``GET /health``, ``POST /classify`` and ``POST /generate``, both model endpoints
batched with ``@serve.batch``; the batch size changes at run time through the deployment's ``user_config``
(its ``reconfigure`` method), without restarting the replica. :func:`serve_config` is the declarative config
that deploys it, :func:`build_app` the application that config names. Bad requests are answered with one line
naming the field (:class:`~bigmodel_utils.serving.requests.RequestError`). Used in chapter 7.
"""

import asyncio
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from bigmodel_utils.serving.batching import (
    BATCH_SIZES,
    BATCH_WAIT_TIMEOUT_S,
    DEFAULT_MAX_BATCH_SIZE,
    MAX_BATCH_SIZE_LIMIT,
    batching_settings,
    generate_batch,
    merge_settings,
    padded_size,
    predict_padded,
)
from bigmodel_utils.serving.requests import (
    ClassifyRequest,
    GenerateRequest,
    GenerationJob,
    RequestError,
    check_classify,
    check_generate,
    error_from_validation,
)
from bigmodel_utils.validation import check_int

APP_NAME = "models"
"""The Serve application's name."""

MAX_ONGOING_REQUESTS = MAX_BATCH_SIZE_LIMIT
"""Requests one replica takes at once: at least the largest batch, so that concurrency 64 reaches it."""

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

    ``POST /classify`` and ``POST /generate`` each check their request (the one check it gets) and queue it for
    a ``@serve.batch`` method, which runs everything that arrived within ``batch_wait_timeout_s`` of a batch's
    first request (up to ``max_batch_size`` requests) as one padded batch, on a worker thread so that the event
    loop keeps taking requests meanwhile; batches run one at a time, and Serve forms the next while the last
    still runs. ``reconfigure`` (Serve calls it with the deployment's ``user_config``) changes both settings in
    place, the waits per endpoint (:data:`~bigmodel_utils.serving.batching.BATCH_WAIT_TIMEOUT_S`), and compiles
    new padded batch sizes in the background; ``max_batch_size=1`` is the unbatched service. ``GET /health``
    reports the settings, the startup times and, per endpoint, the batches and requests run so far, the largest
    batch, the busy milliseconds and the most requests the replica held at once. Used in chapter 7.
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
        # tf.function without XLA (XLA's CPU convolutions ran slower than TensorFlow's own for this CNN at batch
        # 16 and 64 on the book's 2-core machine), or jax.jit
        from bigmodel_utils.backend.compile import predictor

        self._predict = predictor(self.cnn)
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
            # on the CNN's own thread, which runs one call at a time
            self._cnn_thread.submit(self._predict, np.zeros((size, *self.image_shape), dtype=np.float32)).result()
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
        largest = padded_size(min(max_batch_size, BATCH_SIZES[-1]))
        for size in BATCH_SIZES:
            if size <= largest and size not in self._warming:
                self._warming.add(size)
                self._warmer.submit(self._compile, size)

    def reconfigure(self, user_config: dict) -> None:
        """Apply ``{"max_batch_size": n, "batch_wait_timeout_s": {"classify": s, "generate": t}}``, as
        :func:`serve_config` and the command line build it: checked there, whole (both keys, both endpoints)."""
        size, waits = user_config["max_batch_size"], user_config["batch_wait_timeout_s"]
        self._warm_up(size)
        for endpoint, method in (("classify", self._classify_batch), ("generate", self._generate_batch)):
            method.set_max_batch_size(size)
            method.set_batch_wait_timeout_s(waits[endpoint])
        self.settings = {"max_batch_size": size, "batch_wait_timeout_s": dict(waits)}

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

    ``replicas`` from 1 to 16; ``max_batch_size`` and ``batch_wait_timeout_s`` as
    :func:`~bigmodel_utils.serving.batching.batching_settings` takes them (None for the waits of
    :data:`~bigmodel_utils.serving.batching.BATCH_WAIT_TIMEOUT_S`). The deployment's ``user_config`` holds
    both settings, whole.

    Deploying it again with only ``user_config`` changed is a "lightweight update": Serve calls each
    running replica's ``reconfigure`` instead of replacing it. Used in chapter 7.
    """
    replicas = check_int("replicas", replicas, minimum=1, maximum=16)
    return {"applications": [{
        "name": APP_NAME,
        "route_prefix": "/",
        "import_path": "bigmodel_utils.serving.app:build_app",
        "args": {"cnn_path": str(cnn_path), "gpt_dir": str(gpt_dir), "gpt_name": str(gpt_name)},
        # one log line per request would flood the log under a load test
        "logging_config": {"enable_access_log": False},
        "deployments": [{
            "name": "ModelServer",
            "num_replicas": replicas,
            "user_config": merge_settings({"batch_wait_timeout_s": dict(BATCH_WAIT_TIMEOUT_S)},
                                          batching_settings(max_batch_size, batch_wait_timeout_s)),
        }],
    }]}
