"""The service's requests: their schemas, their checks and their one-line errors.

A JSON body is checked once, in two steps, where it enters the service: its shape by the pydantic models
:class:`ClassifyRequest` and :class:`GenerateRequest` (FastAPI applies them), its meaning by
:func:`check_classify` and :func:`check_generate`, which turn it into what the models take: an image, or a
:class:`GenerationJob`. Past this point nothing checks a request again. Every bad request becomes a
:class:`RequestError`, answered as ``{"error": "<one line>", "field": "<name>"}`` with a 4xx status
(:func:`error_from_validation` turns pydantic's errors into one). Used in chapter 7.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

MAX_TEMPERATURE = 5.0
"""The highest sampling temperature ``/generate`` accepts."""


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
    """``body`` as a ``model``: a dict is validated, a ``model`` (FastAPI validated it already) passes as it is."""
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
    from bigmodel_utils.cnn.training import check_images  # imports Keras: only where an image is checked

    request = _parse(ClassifyRequest, body)
    try:
        image = np.asarray(request.image)
    except ValueError:
        raise RequestError("image", "image must be nested lists of numbers with rows of equal length") from None
    if not np.issubdtype(image.dtype, np.number):  # bool, strings and objects are no numbers to NumPy
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
    """One generation request, checked by :func:`check_generate`: ``prompt`` token ids ``(T,)`` int32, how many
    tokens to add, how to sample. Prompt plus new tokens fit the model's context. Used in chapter 7."""

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
