"""Serving two models over HTTP with Ray Serve, with dynamic batching, and load-testing the service
(chapter 7), one module per job:

- :mod:`~bigmodel_utils.serving.requests`: the request schemas, their checks (:func:`check_classify`,
  :func:`check_generate`) and the one-line :class:`RequestError` every bad request becomes;
- :mod:`~bigmodel_utils.serving.batching`: the batching settings, and both models run on padded batches
  (:func:`generate_batch` gives every prompt the tokens it would get alone);
- :mod:`~bigmodel_utils.serving.app`: :class:`ModelServer`, the Ray Serve deployment with a FastAPI ingress
  (``GET /health``, ``POST /classify``, ``POST /generate``), and its :func:`serve_config`;
- :mod:`~bigmodel_utils.serving.cli`: ``python -m bigmodel_utils.serving``, which starts Ray and Serve and
  takes new batching settings through a control file;
- :mod:`~bigmodel_utils.serving.service`: :func:`running_service` runs that command for a notebook and
  always tears the whole process tree down afterwards (:func:`leftover_processes` checks);
- :mod:`~bigmodel_utils.serving.loadtest`: :func:`load_test`, :func:`batching_sweep`, :func:`batching_gain`
  and :func:`probe_bad_requests`.

A request is checked once, where it comes in (the HTTP body; the arguments of the public functions), and
trusted after that. Ray, FastAPI and pydantic load with this package; Keras and TensorFlow only inside the
functions and the replica that need them, so the command-line process that starts Ray never imports
TensorFlow. The names below are re-exported so that chapters write ``serving.running_service(...)``.
"""

from bigmodel_utils.serving.app import ModelServer, serve_config
from bigmodel_utils.serving.batching import (
    BATCH_SIZES,
    BATCH_WAIT_TIMEOUT_S,
    DEFAULT_MAX_BATCH_SIZE,
    batching_settings,
    generate_batch,
    predict_padded,
)
from bigmodel_utils.serving.cli import READY_PREFIX
from bigmodel_utils.serving.loadtest import (
    LoadTestResult,
    batching_gain,
    batching_sweep,
    image_payloads,
    load_test,
    probe_bad_requests,
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
from bigmodel_utils.serving.service import (
    Service,
    free_port,
    leftover_processes,
    port_is_open,
    process_tree,
    running_service,
)

__all__ = [
    "BATCH_SIZES", "BATCH_WAIT_TIMEOUT_S", "DEFAULT_MAX_BATCH_SIZE", "READY_PREFIX", "ClassifyRequest",
    "GenerateRequest", "GenerationJob", "LoadTestResult", "ModelServer", "RequestError", "Service", "batching_gain",
    "batching_settings", "batching_sweep", "check_classify", "check_generate", "error_from_validation", "free_port",
    "generate_batch", "image_payloads", "leftover_processes", "load_test", "port_is_open", "predict_padded",
    "probe_bad_requests", "process_tree", "running_service", "serve_config",
]
