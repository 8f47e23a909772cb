"""Load-testing the service: a closed loop of clients, batching swept on and off, and bad requests probed.

:func:`load_test` drives one endpoint with ``concurrency`` clients; :func:`batching_sweep` runs it unbatched
and batched at several concurrencies and reads from the replica's own counters how many requests each batch
held; :func:`batching_gain` summarises the sweep; :func:`probe_bad_requests` sends one bad request of each
kind and reports the answers. Each public function checks its arguments; what it hands on is not checked
again. Used in chapter 7.
"""

import asyncio
import json
import math
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np

from bigmodel_utils.serving.batching import DEFAULT_MAX_BATCH_SIZE, batching_settings
from bigmodel_utils.validation import check_choice, check_int, positive, positive_int

CONCURRENCY_LEVELS = (1, 4, 16, 64)
"""The numbers of clients :func:`batching_sweep` tries by default."""

MAX_CONCURRENCY = 1024
"""The most clients one load test runs."""

LOAD_TEST_CLIENTS = ("aiohttp", "httpx")
"""HTTP clients :func:`load_test` can drive the load with."""


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
                       timeout_s: float, client: str = "aiohttp", request_timeout_s: float = 60.0) -> LoadTestResult:
    """:func:`load_test` with its arguments checked and the payloads encoded (``bodies``)."""
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


def _checked_bodies(path, payloads) -> list[bytes] | None:
    """``payloads`` encoded as JSON once (None for GET requests), after checking ``path`` and them."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"path must be a string starting with '/', got {path!r}")
    if payloads is None:
        return None
    payloads = list(payloads) if not isinstance(payloads, dict) else None
    if not payloads or not all(isinstance(p, dict) for p in payloads):
        raise ValueError("payloads must be a non-empty sequence of JSON objects (dicts), or None for GET requests")
    return [json.dumps(p).encode() for p in payloads]


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
    bodies = _checked_bodies(path, payloads)
    concurrency = check_int("concurrency", concurrency, 1, MAX_CONCURRENCY)
    num_requests = positive_int("num_requests", num_requests)
    timeout_s, request_timeout_s = positive("timeout_s", timeout_s), positive("request_timeout_s", request_timeout_s)
    client = check_choice("client", client, LOAD_TEST_CLIENTS)
    return _run_coroutine(_closed_loop(url.rstrip("/"), path, bodies, concurrency, num_requests, timeout_s, client,
                                       request_timeout_s))


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
    """Load-test ``service`` (a :class:`~bigmodel_utils.serving.service.Service`, or anything with ``url``,
    ``reconfigure`` and ``health``) under each batching mode and concurrency; returns one row per pair.

    ``modes`` maps a name to ``max_batch_size`` (default ``{"unbatched": 1, "batched": 16}``). For each mode
    the service is reconfigured in place, then for each concurrency it takes a warm-up of ``warmup_requests``
    (default: one per client) and a :func:`load_test` of ``max(num_requests, concurrency)`` requests, each
    sending for at most ``timeout_s`` seconds (which bounds the sweep's cost: slow levels stop early).
    ``batch_wait_timeout_s`` (one number, or a dict per endpoint) is set with each mode; None keeps the
    service's. A row holds the mode, its settings, the :class:`LoadTestResult` fields and ``mean_batch_size``,
    the requests per batch the replica ran meanwhile (from ``/health``'s counters; over all replicas it
    answered from, exact with one replica). Every argument is checked before the first request. Used in
    chapter 7.
    """
    bodies = _checked_bodies(path, payloads)
    modes = {"unbatched": 1, "batched": DEFAULT_MAX_BATCH_SIZE} if modes is None else dict(modes)
    if not modes:
        raise ValueError("modes must map at least one name to a max_batch_size, got none")
    for size in modes.values():
        batching_settings(size, batch_wait_timeout_s)
    concurrencies = [check_int(f"concurrencies[{i}]", c, 1, MAX_CONCURRENCY) for i, c in enumerate(concurrencies)]
    if not concurrencies:
        raise ValueError("concurrencies must hold at least one positive integer, got none")
    num_requests = positive_int("num_requests", num_requests)
    if warmup_requests is not None:
        warmup_requests = check_int("warmup_requests", warmup_requests, minimum=0)
    timeout_s = positive("timeout_s", timeout_s)
    url, endpoint = service.url.rstrip("/"), path.strip("/").split("/")[0]
    rows = []
    for name, size in modes.items():
        settings = service.reconfigure(max_batch_size=size, batch_wait_timeout_s=batch_wait_timeout_s)
        wait = settings["batch_wait_timeout_s"].get(endpoint)
        for concurrency in concurrencies:
            warmup = concurrency if warmup_requests is None else warmup_requests
            if warmup:
                _run_coroutine(_closed_loop(url, path, bodies, concurrency, warmup, timeout_s))
            before = service.health().get("stats", {}).get(endpoint, {})
            result = _run_coroutine(_closed_loop(url, path, bodies, concurrency, max(num_requests, concurrency),
                                                 timeout_s))
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


def probe_bad_requests(service, image_shape: Sequence[int] | None = None, context: int | None = None,
                       prompt: str | None = None) -> list[dict]:
    """Send the service one bad request of each kind it must refuse; returns one row per request: ``case``,
    ``path``, the answer's ``status`` and ``field``, the ``expected_field`` and the ``error`` message.

    The kinds: malformed JSON, missing and wrong-typed fields, an unknown field, an image of the wrong shape
    or range, an empty prompt or one with unknown characters, too many tokens, temperature and top-k out of
    range, a negative seed. ``image_shape`` (H, W[, C]), ``context`` and a valid ``prompt`` default to what
    ``/health`` reports. ``service`` is a :class:`~bigmodel_utils.serving.service.Service` or anything with
    ``url`` and ``health()``. Used in chapter 7.
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
