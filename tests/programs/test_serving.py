"""Tests for bigmodel_utils.serving: request checks, the batched decoder, the load test and a running service.

Each test stands alone (``pytest -k`` runs any one of them): the tests that need a service share one, started
on first use for the module (tiny models saved in a temporary folder) and reset to the default batching
settings before each test; the test of the clean-up starts a service of its own.
"""

import asyncio
import json
import math
import shutil
import time
from types import SimpleNamespace

import numpy as np
import pytest
from pydantic import ValidationError

from bigmodel_utils import gpt, serving
from bigmodel_utils.cnn import models
from bigmodel_utils.data import text

pytestmark = pytest.mark.timeout(300)  # a service starts in about 30 s on 2 cores; the first test to need it waits

TEXT = "the quick brown fox jumps over the lazy dog. pack my box with five dozen liquor jugs!\n"
CONTEXT = 64
DEFAULT_SETTINGS = {"max_batch_size": 16, "batch_wait_timeout_s": serving.BATCH_WAIT_TIMEOUT_S}


@pytest.fixture(scope="module")
def tiny():
    """A tiny untrained CNN and GPT, saved: serving needs no trained weights."""
    tokenizer = text.CharTokenizer.train(TEXT)
    config = gpt.GPTConfig(vocab_size=tokenizer.vocab_size, context=CONTEXT, num_layers=1, num_heads=2, width=16)
    return SimpleNamespace(gpt=gpt.build_gpt(config, seed=0), tokenizer=tokenizer,
                           cnn=models.build_improved_cnn(width=4, dense_units=0))


@pytest.fixture(scope="module")
def saved(tiny, tmp_path_factory):
    folder = tmp_path_factory.mktemp("serving-models")
    tiny.cnn.save(folder / "cnn.keras")
    gpt.save_language_model(tiny.gpt, tiny.tokenizer, folder, "tiny")
    return SimpleNamespace(folder=folder, cnn_path=folder / "cnn.keras")


# --------------------------------------------------------------------------------------
# The batched decoder
# --------------------------------------------------------------------------------------

REQUESTS = [  # different prompt lengths and sampling settings
    {"prompt": "t", "max_new_tokens": 5, "temperature": 1.0, "seed": 0},
    {"prompt": "the quick", "max_new_tokens": 12, "temperature": 0.7, "top_k": 5, "seed": 1},
    {"prompt": "lazy dog. pack", "max_new_tokens": 3, "temperature": 2.0, "seed": 7},
    {"prompt": "box", "max_new_tokens": 9, "top_k": 1, "seed": 3},
    {"prompt": "jugs!\n", "max_new_tokens": 1, "temperature": 0.3, "top_k": 10, "seed": 11},
    {"prompt": "five dozen liquor", "max_new_tokens": 7, "temperature": 1.5, "top_k": 20, "seed": 5},
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("batch_sizes", [serving.BATCH_SIZES, (1, 4)])
def test_generate_batch_gives_each_job_the_tokens_it_gets_alone(tiny, batch_sizes):
    # (1, 4) splits the six jobs into a batch of 4 and one of 2 padded to 4; the default pads all six to 16
    jobs = [serving.check_generate(body, tiny.tokenizer, CONTEXT) for body in REQUESTS]
    together = serving.generate_batch(tiny.gpt, jobs, batch_sizes)
    assert [len(tokens) for tokens in together] == [body["max_new_tokens"] for body in REQUESTS]
    for job, tokens in zip(jobs, together):
        alone = gpt.generate(tiny.gpt, job.prompt, job.num_new_tokens, job.temperature, job.top_k, job.seed)
        np.testing.assert_array_equal(tokens, alone)
    # the settings matter: the same prompt under other seeds gives other tokens
    other = serving.generate_batch(tiny.gpt, [serving.GenerationJob(jobs[1].prompt, 12, 0.7, 5, seed)
                                              for seed in range(2, 6)])
    assert any(not np.array_equal(tokens, together[1]) for tokens in other)


def test_predict_padded_pads_and_splits_without_changing_rows():
    calls = []

    def function(batch):  # row-wise: each output row depends on its input row only
        calls.append(len(batch))
        return batch.reshape(len(batch), -1).sum(axis=1, keepdims=True)

    images = np.random.default_rng(0).random((70, 3, 3, 1)).astype("float32")
    out = serving.predict_padded(function, images, (1, 4, 16, 64))
    np.testing.assert_allclose(out[:, 0], images.reshape(70, -1).sum(axis=1), rtol=1e-6)
    assert calls == [64, 16]  # 64 rows, then 6 padded to 16


# --------------------------------------------------------------------------------------
# Request checks, without a server
# --------------------------------------------------------------------------------------


def test_check_generate_returns_the_job(tiny):
    job = serving.check_generate({"prompt": "the fox", "max_new_tokens": 5, "temperature": 2, "top_k": 3,
                                  "seed": 9}, tiny.tokenizer, CONTEXT)
    np.testing.assert_array_equal(job.prompt, tiny.tokenizer.encode("the fox"))
    assert (job.num_new_tokens, job.temperature, job.top_k, job.seed) == (5, 2.0, 3, 9)
    defaults = serving.check_generate({"prompt": "a"}, tiny.tokenizer, CONTEXT)
    assert (defaults.num_new_tokens, defaults.temperature, defaults.top_k, defaults.seed) == (32, 1.0, None, 0)


BAD_GENERATE = [  # (body, field, words the message must hold)
    ({}, "prompt", "prompt is required"),
    ({"prompt": 5}, "prompt", "valid string"),
    ({"prompt": ""}, "prompt", "at least one character"),
    ({"prompt": "the FOX"}, "prompt", "'F' (U+0046)"),
    ({"prompt": "t" * 64}, "prompt", "64 tokens long"),
    ({"prompt": "the", "max_new_tokens": 0}, "max_new_tokens", "from 1 to 63, got 0"),
    ({"prompt": "the", "max_new_tokens": 64}, "max_new_tokens", "from 1 to 63, got 64"),
    ({"prompt": "the quick", "max_new_tokens": 60}, "max_new_tokens", "ask for at most 55"),
    ({"prompt": "the", "max_new_tokens": "3"}, "max_new_tokens", "valid integer"),
    ({"prompt": "the", "max_new_tokens": 3.0}, "max_new_tokens", "valid integer"),
    ({"prompt": "the", "temperature": 0}, "temperature", "greater than 0 and at most 5, got 0.0"),
    ({"prompt": "the", "temperature": 5.5}, "temperature", "got 5.5"),
    ({"prompt": "the", "temperature": float("nan")}, "temperature", "got nan"),
    ({"prompt": "the", "temperature": "hot"}, "temperature", "valid number"),
    ({"prompt": "the", "top_k": 0}, "top_k", "got 0"),
    ({"prompt": "the", "top_k": 10_000}, "top_k", "vocabulary size"),
    ({"prompt": "the", "top_k": True}, "top_k", "valid integer"),
    ({"prompt": "the", "seed": -1}, "seed", "non-negative"),
    ({"prompt": "the", "temprature": 1.0}, "temprature", "not a field"),
    ([1, 2], "body", "JSON object"),
]


@pytest.mark.parametrize("body, field, words", BAD_GENERATE)
def test_check_generate_names_the_bad_field(tiny, body, field, words):
    with pytest.raises(serving.RequestError) as caught:
        serving.check_generate(body, tiny.tokenizer, CONTEXT)
    assert caught.value.field == field
    assert caught.value.status == 422
    assert words in caught.value.message
    assert "\n" not in caught.value.message


def test_check_classify_scales_and_shapes():
    pixels = np.random.default_rng(0).integers(0, 256, size=(28, 28), dtype=np.uint8)
    image = serving.check_classify({"image": pixels.tolist()})
    assert image.shape == (28, 28, 1) and image.dtype == np.float32
    np.testing.assert_allclose(image[..., 0], pixels / 255.0, rtol=1e-6)
    floats = serving.check_classify({"image": (pixels[..., None] / 255.0).tolist()})
    np.testing.assert_allclose(floats, image, rtol=1e-6)


BAD_IMAGES = [  # (image, words the message must hold)
    ([[0, 1], [2, 3]], "shape (2, 2)"),
    ([[0] * 28] * 27, "shape (27, 28)"),
    (np.full((28, 28, 3), 7).tolist(), "shape (28, 28, 3)"),
    ([[300] * 28] * 28, "outside 0-255"),
    ([[-1] * 28] * 28, "outside 0-255"),
    ([[0.5] * 28] * 27 + [[1.5] * 28], "outside [0, 1]"),
    ([[True] * 28] * 28, "type bool"),
    ([["a"] * 28] * 28, "hold numbers"),
    ([[0, [1]]], "rows of equal length"),
    ([[[[0]]]], "4 level(s)"),
    ("pixels", "valid list"),
]


@pytest.mark.parametrize("image, words", BAD_IMAGES)
def test_check_classify_names_the_image(image, words):
    with pytest.raises(serving.RequestError) as caught:
        serving.check_classify({"image": image})
    assert (caught.value.field, caught.value.status) == ("image", 422)
    assert words in caught.value.message


def test_error_from_validation_maps_pydantic_errors():
    with pytest.raises(ValidationError) as caught:
        serving.GenerateRequest.model_validate_json(b'{"prompt": "a",')
    error = serving.error_from_validation(caught.value.errors())
    assert (error.status, error.field) == (400, "body")
    assert "not valid JSON" in error.message
    with pytest.raises(ValidationError) as caught:
        serving.ClassifyRequest.model_validate({})
    assert serving.error_from_validation(caught.value.errors()).body() == {"error": "image is required",
                                                                          "field": "image"}


@pytest.mark.parametrize("settings, message", [
    ({"max_batch_size": 0}, "max_batch_size must be an integer from 1 to 256, got 0"),
    ({"max_batch_size": 1000}, "max_batch_size must be an integer from 1 to 256, got 1000"),
    ({"max_batch_size": 2.0}, "max_batch_size must be an integer .* got 2.0"),
    ({"batch_wait_timeout_s": -0.1}, r"batch_wait_timeout_s\['classify'\] must be a finite number .* got -0.1"),
    ({"batch_wait_timeout_s": {"generate": "long"}}, r"batch_wait_timeout_s\['generate'\] .* got 'long'"),
    ({"batch_wait_timeout_s": {"predict": 0.1}}, r"unknown endpoints \['predict'\]"),
    ({"replicas": 0}, "replicas must be an integer from 1 to 16"),
])
def test_serve_config_checks_batching(settings, message):
    with pytest.raises(ValueError, match=message):
        serving.serve_config("cnn.keras", ".", "tiny", **settings)


def test_serve_config_holds_the_batching_user_config():
    config = serving.serve_config("cnn.keras", ".", "tiny", replicas=2, max_batch_size=8,
                                  batch_wait_timeout_s={"generate": 0.3})
    application = config["applications"][0]
    assert application["import_path"] == "bigmodel_utils.serving.app:build_app"
    deployment = application["deployments"][0]
    assert deployment["num_replicas"] == 2
    assert deployment["user_config"] == {"max_batch_size": 8, "batch_wait_timeout_s": {
        "classify": serving.BATCH_WAIT_TIMEOUT_S["classify"], "generate": 0.3}}
    both = serving.serve_config("cnn.keras", ".", "tiny", batch_wait_timeout_s=0.05)
    assert both["applications"][0]["deployments"][0]["user_config"] == {
        "max_batch_size": 16, "batch_wait_timeout_s": {"classify": 0.05, "generate": 0.05}}


@pytest.mark.parametrize("arguments, message", [
    ({"url": "localhost:8000"}, "url must start with http"),
    ({"path": "health"}, "path must be a string starting with '/'"),
    ({"concurrency": 0}, "concurrency must be an integer from 1 to 1024, got 0"),
    ({"concurrency": 2.5}, "concurrency must be an integer from 1 to 1024, got 2.5"),
    ({"num_requests": -3}, "num_requests must be a positive integer, got -3"),
    ({"timeout_s": 0}, "timeout_s must be a positive number, got 0"),
    ({"payloads": []}, "payloads must be a non-empty sequence"),
    ({"payloads": [[1, 2]]}, "payloads must be a non-empty sequence"),
    ({"client": "curl"}, "client must be one of 'aiohttp', 'httpx'; got 'curl'"),
    ({"request_timeout_s": float("inf")}, "request_timeout_s must be a positive number, got inf"),
])
def test_load_test_checks_its_arguments(arguments, message):
    call = {"url": "http://127.0.0.1:9", "path": "/health", "payloads": None, "concurrency": 2,
            "num_requests": 4, **arguments}
    with pytest.raises(ValueError, match=message):
        serving.load_test(**call)


class _Untouchable:
    """A service the sweep must not reach: it checks every argument before the first request."""

    url = "http://127.0.0.1:9"

    def reconfigure(self, **settings):
        raise AssertionError("reconfigured before the arguments were checked")

    def health(self):
        raise AssertionError("asked for /health before the arguments were checked")


@pytest.mark.parametrize("arguments, message", [
    ({"path": "classify"}, "path must be a string starting with '/'"),
    ({"modes": {}}, "modes must map at least one name"),
    ({"modes": {"unbatched": 1, "huge": 1000}}, "max_batch_size must be an integer from 1 to 256, got 1000"),
    ({"concurrencies": (4, 0)}, r"concurrencies\[1\] must be an integer from 1 to 1024, got 0"),
    ({"concurrencies": ()}, "concurrencies must hold at least one"),
    ({"num_requests": 0}, "num_requests must be a positive integer, got 0"),
    ({"warmup_requests": -1}, "warmup_requests must be a non-negative integer, got -1"),
    ({"timeout_s": 0}, "timeout_s must be a positive number, got 0"),
    ({"batch_wait_timeout_s": {"predict": 1}}, r"unknown endpoints \['predict'\]"),
])
def test_batching_sweep_checks_everything_before_the_first_request(arguments, message):
    with pytest.raises(ValueError, match=message):
        serving.batching_sweep(_Untouchable(), **{"path": "/health", "payloads": None, **arguments})


def test_free_port_is_below_the_ephemeral_range_and_closed():
    ports = {serving.free_port() for _ in range(5)}
    assert all(20000 <= port < 32768 and not serving.port_is_open(port) for port in ports)


@pytest.mark.parametrize("arguments, error, message", [
    ({"port": 0}, ValueError, "port must be an integer from 1 to 65535, got 0"),
    ({"startup_timeout": -1}, ValueError, "startup_timeout must be a positive number, got -1"),
    ({"replicas": 0}, ValueError, "replicas must be an integer from 1"),
    ({"max_batch_size": 0}, ValueError, "max_batch_size must be an integer from 1"),
    ({"batch_wait_timeout_s": {"classify": -1}}, ValueError, r"batch_wait_timeout_s\['classify'\] must be"),
    ({"gpt_name": "missing"}, FileNotFoundError, r"gpt_dir: no file .*missing\.keras"),
])
def test_running_service_checks_its_arguments_before_starting(saved, arguments, error, message):
    call = {"cnn_path": saved.cnn_path, "gpt_dir": saved.folder, "gpt_name": "tiny", **arguments}
    with pytest.raises(error, match=message):
        with serving.running_service(**call):
            pass


def test_running_service_reports_a_command_line_that_exits(saved, tmp_path):
    # the CLI finds no tokenizer next to the model and exits at once: the error carries its log's tail
    (tmp_path / "tiny.keras").write_bytes((saved.folder / "tiny.keras").read_bytes())
    with pytest.raises(RuntimeError, match=r"(?s)exited with status 2.*no file .*tiny\.tokenizer\.json"):
        with serving.running_service(saved.cnn_path, tmp_path, "tiny", startup_timeout=60,
                                     log_path=tmp_path / "service.log"):
            pass
    assert "tiny.tokenizer.json" in (tmp_path / "service.log").read_text()  # the log went where it was asked


# --------------------------------------------------------------------------------------
# A running service
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def running(saved):
    """One service for the module's tests, started when the first of them needs it."""
    with serving.running_service(saved.cnn_path, saved.folder, "tiny", max_batch_size=16, startup_timeout=180,
                                 log_path=saved.folder / "service.log") as service:
        yield service


@pytest.fixture
def service(running):
    """The module's service with the default batching settings, whatever the test before it left."""
    health = running.health()
    if {key: health[key] for key in DEFAULT_SETTINGS} != DEFAULT_SETTINGS:
        running.reconfigure(**DEFAULT_SETTINGS)
    return running


def _post(service, path, body=None, raw=None):
    import httpx

    content = raw if raw is not None else json.dumps(body).encode()
    return httpx.post(service.url + path, content=content, headers={"content-type": "application/json"},
                      timeout=30)


def _counters(service, endpoint):
    return service.health()["stats"].get(endpoint, {})


def test_health_reports_the_settings(service):
    health = service.health()
    assert health["status"] == "ok"
    assert health["max_batch_size"] == 16
    assert health["context"] == CONTEXT and health["image_shape"] == [28, 28, 1]
    assert service.timings["startup_s"] > 0 and service.startup_s >= service.timings["deploy_s"]
    # size 1 is compiled before the replica is ready, the sizes up to max_batch_size soon after
    assert health["compiled_batch_sizes"]["generate"][0] == 1
    deadline = time.monotonic() + 60
    while not all({1, 4, 16} <= set(sizes) for sizes in health["compiled_batch_sizes"].values()):
        assert time.monotonic() < deadline, health["compiled_batch_sizes"]
        time.sleep(0.2)
        health = service.health()


def test_classify_answers_what_the_model_says(service, tiny):
    pixels = np.random.default_rng(1).integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    expected = tiny.cnn.predict_on_batch(pixels[..., None].astype("float32") / 255.0)
    classes = service.health()["classes"]
    for image, want in zip(pixels, expected):
        for body in ({"image": image.tolist()}, {"image": (image[..., None] / 255.0).tolist()}):
            response = _post(service, "/classify", body)
            assert response.status_code == 200, response.text
            answer = response.json()
            np.testing.assert_allclose(answer["probabilities"], want, atol=1e-5)
            assert answer["index"] == int(np.argmax(want))
            assert answer["label"] == classes[answer["index"]]


def test_generate_answers_what_generate_gives(service, tiny):
    body = {"prompt": "the lazy ", "max_new_tokens": 10, "temperature": 0.8, "top_k": 8, "seed": 4}
    tokens = gpt.generate(tiny.gpt, tiny.tokenizer.encode(body["prompt"]), 10, 0.8, 8, 4)
    assert service.post("/generate", body) == {"text": tiny.tokenizer.decode(tokens), "new_tokens": 10,
                                               "prompt_tokens": 9}
    with pytest.raises(RuntimeError, match="POST /generate answered 422"):
        service.post("/generate", {"prompt": ""})


BAD_REQUESTS = [  # (path, JSON body or raw bytes, status, field)
    ("/classify", b'{"image": [[0, 1]', 400, "body"),
    ("/generate", b"prompt=hello", 400, "body"),
    ("/classify", b"", 422, "body"),
    ("/classify", {}, 422, "image"),
    ("/classify", {"image": "a picture"}, 422, "image"),
    ("/classify", {"image": [[0, 1], [2, 3]]}, 422, "image"),
    ("/classify", {"image": [[0.5] * 28] * 27 + [[1.5] * 28]}, 422, "image"),
    ("/classify", {"image": [[0] * 28] * 28, "label": 3}, 422, "label"),
    ("/generate", {"max_new_tokens": 3}, 422, "prompt"),
    ("/generate", {"prompt": 42}, 422, "prompt"),
    ("/generate", {"prompt": "ZEBRA"}, 422, "prompt"),
    ("/generate", {"prompt": "the quick", "max_new_tokens": 60}, 422, "max_new_tokens"),
    ("/generate", {"prompt": "the", "max_new_tokens": "3"}, 422, "max_new_tokens"),
    ("/generate", {"prompt": "the", "temperature": 0}, 422, "temperature"),
    ("/generate", {"prompt": "the", "temperature": 9}, 422, "temperature"),
    ("/generate", {"prompt": "the", "top_k": 0}, 422, "top_k"),
    ("/generate", {"prompt": "the", "top_k": 999}, 422, "top_k"),
    ("/generate", {"prompt": "the", "seed": -5}, 422, "seed"),
    ("/nowhere", {}, 404, "path"),
]


@pytest.mark.parametrize("path, body, status, field", BAD_REQUESTS)
def test_bad_requests_get_a_one_line_error_naming_the_field(service, path, body, status, field):
    raw = body if isinstance(body, bytes) else None
    response = _post(service, path, body, raw)
    assert response.status_code == status, response.text
    answer = response.json()
    assert set(answer) == {"error", "field"}
    assert answer["field"] == field
    assert answer["error"] and "\n" not in answer["error"]


def test_probe_bad_requests_gets_every_refusal_right(service):
    rows = serving.probe_bad_requests(service)
    assert len(rows) >= 15 and {row["path"] for row in rows} == {"/classify", "/generate"}
    wrong = [row for row in rows if not (400 <= row["status"] < 500 and row["field"] == row["expected_field"])]
    assert wrong == []
    assert all(row["error"] and "\n" not in row["error"] for row in rows)


def test_a_burst_of_64_concurrent_requests_loses_none_and_is_batched(service):
    pixels = np.random.default_rng(2).integers(0, 256, size=(8, 28, 28), dtype=np.uint8)
    before = _counters(service, "classify")
    result = serving.load_test(service.url, "/classify", serving.image_payloads(pixels), concurrency=64,
                               num_requests=64, timeout_s=60)
    assert (result.sent, result.answered, result.ok, result.errors) == (64, 64, 64, {})
    assert result.p50_ms <= result.p95_ms <= result.p99_ms
    after = _counters(service, "classify")
    # 64 requests at once with max_batch_size 16: the replica ran them in batches of up to 16
    assert after["requests"] - before.get("requests", 0) == 64
    assert 4 <= after["batches"] - before.get("batches", 0) < 64
    assert after["largest_batch"] <= 16
    generations = [{"prompt": "the", "max_new_tokens": 4, "seed": seed} for seed in range(16)]
    before = _counters(service, "generate")
    result = serving.load_test(service.url, "/generate", generations, concurrency=16, num_requests=32,
                               client="httpx")
    assert (result.sent, result.answered, result.ok) == (32, 32, 32)
    assert _counters(service, "generate")["requests"] - before.get("requests", 0) == 32


def test_reconfigure_changes_batching_without_a_restart(service):
    replica = service.health()
    assert service.reconfigure(max_batch_size=1) == {"max_batch_size": 1,
                                                     "batch_wait_timeout_s": serving.BATCH_WAIT_TIMEOUT_S}
    unbatched = service.health()
    assert (unbatched["max_batch_size"], unbatched["pid"], unbatched["replica"]) == (1, replica["pid"],
                                                                                      replica["replica"])
    result = serving.load_test(service.url, "/health", None, concurrency=4, num_requests=8)
    assert result.ok == 8
    changed = service.reconfigure(max_batch_size=16, batch_wait_timeout_s={"classify": 0.01})
    assert changed == {"max_batch_size": 16, "batch_wait_timeout_s": {**serving.BATCH_WAIT_TIMEOUT_S,
                                                                      "classify": 0.01}}
    assert service.health()["batch_wait_timeout_s"] == changed["batch_wait_timeout_s"]
    assert service.health()["pid"] == replica["pid"]
    with pytest.raises(ValueError, match="max_batch_size must be an integer from 1"):
        service.reconfigure(max_batch_size=0)
    with pytest.raises(ValueError, match="reconfigure needs max_batch_size or batch_wait_timeout_s"):
        service.reconfigure()


def test_batching_sweep_batches_concurrent_requests_only(service):
    pixels = np.random.default_rng(3).integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    rows = serving.batching_sweep(service, "/classify", serving.image_payloads(pixels),
                                  modes={"unbatched": 1, "batched": 8}, concurrencies=(1, 24), num_requests=16,
                                  warmup_requests=4)
    assert [(row["mode"], row["concurrency"]) for row in rows] == [("unbatched", 1), ("unbatched", 24),
                                                                   ("batched", 1), ("batched", 24)]
    assert all(row["ok"] == row["sent"] == max(16, row["concurrency"]) for row in rows)  # one per client at least
    assert all(row["batch_wait_timeout_s"] == serving.BATCH_WAIT_TIMEOUT_S["classify"] for row in rows)
    by_key = {(row["mode"], row["concurrency"]): row for row in rows}
    # the replica's counters: one request per batch unbatched, or with one client; several with 24 of them
    assert by_key["unbatched", 1]["mean_batch_size"] == by_key["unbatched", 24]["mean_batch_size"] == 1.0
    assert by_key["batched", 1]["mean_batch_size"] == 1.0
    assert 1.0 < by_key["batched", 24]["mean_batch_size"] <= 8
    gains = serving.batching_gain(rows)
    assert [gain["concurrency"] for gain in gains] == [1, 24]
    assert math.isclose(gains[1]["throughput_ratio"],
                        by_key["batched", 24]["throughput_rps"] / by_key["unbatched", 24]["throughput_rps"])
    assert gains[1]["batched_p99_ms"] == by_key["batched", 24]["p99_ms"]


@pytest.mark.perf
def test_batching_raises_throughput_under_concurrent_load(service):
    """Measured in one run: the same service, unbatched then batched, under 16 concurrent generations."""
    generations = [{"prompt": "the", "max_new_tokens": 16, "seed": seed} for seed in range(16)]
    rows = serving.batching_sweep(service, "/generate", generations, modes={"unbatched": 1, "batched": 16},
                                  concurrencies=(16,), num_requests=96)
    (gain,) = serving.batching_gain(rows)
    assert gain["throughput_ratio"] > 1.5, rows


def test_load_test_stops_sending_after_timeout_and_waits_for_the_rest(service):
    result = serving.load_test(service.url, "/health", None, concurrency=8, num_requests=100_000, timeout_s=0.5)
    assert 8 <= result.sent < 100_000
    assert result.answered == result.ok == result.sent  # those in flight at the deadline were awaited
    assert result.wall_s >= 0.5  # it kept sending until the deadline


def test_load_test_runs_inside_a_running_event_loop(service):
    async def from_a_notebook_cell():  # Jupyter runs cells inside an event loop
        return serving.load_test(service.url, "/health", None, concurrency=2, num_requests=6)

    result = asyncio.run(from_a_notebook_cell())
    assert (result.sent, result.ok) == (6, 6)


def test_exit_cleans_up_even_when_the_body_raises(saved):
    """A service of its own, left as if the ``with`` body had failed."""
    with pytest.raises(RuntimeError, match="the body failed"):  # the body's error is not swallowed
        with serving.running_service(saved.cnn_path, saved.folder, "tiny", max_batch_size=1,
                                     startup_timeout=180) as service:
            raise RuntimeError("the body failed")
    try:
        assert service.process.returncode is not None
        assert len(service.processes) >= 5  # the command line, Ray's daemons, the controller, proxy and replica
        assert serving.leftover_processes(service.processes) == []
        assert not serving.port_is_open(service.port)
        assert service.leftovers == []
        assert serving.READY_PREFIX in service.log_path.read_text()  # a failed run keeps its log
    finally:
        shutil.rmtree(service.log_path.parent, ignore_errors=True)
