"""A GPT (decoder-only transformer) from its pieces: attention in NumPy, the model in Keras 3, its costs,
training, generation and saving. One module per job; ``from bigmodel_utils import gpt`` gives them all.

* :mod:`.attention`: attention from scratch in NumPy (:func:`softmax` is chapter 3's), comparable with
  ``keras.layers.MultiHeadAttention`` on the same weights.
* :mod:`.model`: :class:`GPTConfig`, :class:`CausalSelfAttention`, :class:`TransformerBlock` and
  :class:`GPT` in backend-agnostic Keras 3, built by :func:`build_gpt`.
* :mod:`.costs`: :func:`parameter_count` and :func:`flops_per_token`.
* :mod:`.train`: :func:`make_optimizer`, :func:`compile_language_model`, :func:`train_language_model`.
* :mod:`.cache` and :mod:`.generate`: the KV cache (:class:`KVCache`), sampling and :func:`generate`.
* :mod:`.persist`: :func:`save_language_model`, :func:`load_language_model`, :func:`load_or_train`.

Used in chapter 6 (and by chapter 7, which adapts and serves the trained model, and chapter 9).
"""

from bigmodel_utils.gpt.attention import (
    MHA_WEIGHT_NAMES,
    causal_mask,
    mha_weights,
    multi_head_attention,
    scaled_dot_product_attention,
)
from bigmodel_utils.gpt.cache import DecodeStep, KVCache, attention_step, block_step, model_step
from bigmodel_utils.gpt.costs import flops_per_token, parameter_count
from bigmodel_utils.gpt.generate import (
    Forward,
    check_sampling,
    compile_generation,
    compiled_forward,
    generate,
    next_token_logits,
    sample_next,
)
from bigmodel_utils.gpt.model import GPT, CausalSelfAttention, GPTConfig, TransformerBlock, build_gpt
from bigmodel_utils.gpt.persist import SMALL_MODEL, load_language_model, load_or_train, save_language_model
from bigmodel_utils.gpt.train import TrainingRun, compile_language_model, make_optimizer, train_language_model
from bigmodel_utils.scratch import softmax

__all__ = [
    "GPT",
    "MHA_WEIGHT_NAMES",
    "SMALL_MODEL",
    "CausalSelfAttention",
    "DecodeStep",
    "Forward",
    "GPTConfig",
    "KVCache",
    "TrainingRun",
    "TransformerBlock",
    "attention_step",
    "block_step",
    "build_gpt",
    "causal_mask",
    "check_sampling",
    "compile_generation",
    "compile_language_model",
    "compiled_forward",
    "flops_per_token",
    "generate",
    "load_language_model",
    "load_or_train",
    "make_optimizer",
    "mha_weights",
    "model_step",
    "multi_head_attention",
    "next_token_logits",
    "parameter_count",
    "sample_next",
    "save_language_model",
    "scaled_dot_product_attention",
    "softmax",
    "train_language_model",
]
