"""What a GPT of a given shape costs: its parameters (about ``12 L d**2`` plus embeddings and norms) and its
FLOPs per token (Kaplan et al. 2020's ``2N + 2 L T d`` forward, with the output layer). Plain arithmetic on a
:class:`~bigmodel_utils.gpt.model.GPTConfig`, no model is built. Used in chapter 6 (and by chapter 9's
scaling laws).
"""

from __future__ import annotations

from bigmodel_utils.gpt.model import GPTConfig
from bigmodel_utils.validation import positive_int


def parameter_count(config: GPTConfig) -> dict[str, int]:
    """Parameters of :func:`~bigmodel_utils.gpt.model.build_gpt`'s model, derived by hand; ``total`` equals
    ``count_params()``.

    Per block: Q, K, V and the output projection ``4 d^2 + 4 d``, the MLP ``8 d^2 + 5
    d``, two LayerNorms ``4 d``: ``12 d^2 + 13 d``. Plus token and position embeddings
    ``(V + T) d``, the final LayerNorm ``2 d`` and the output bias ``V`` (the output
    matrix is the token embedding, tied). ``non_embedding`` is Kaplan et al.'s ``N``:
    everything but the embeddings and the output layer.
    """
    d, layers = config.width, config.num_layers
    per_block = 12 * d * d + 13 * d
    embedding = (config.vocab_size + config.context) * d
    non_embedding = layers * per_block + 2 * d
    return {
        "per_block": per_block,
        "blocks": layers * per_block,
        "embedding": embedding,
        "non_embedding": non_embedding,
        "output_bias": config.vocab_size,
        "total": embedding + non_embedding + config.vocab_size,
        "approximation_12_L_d2": 12 * layers * d * d,
    }


def flops_per_token(config: GPTConfig, context: int | None = None) -> dict[str, float]:
    """Forward and training FLOPs per token (multiply-adds count 2), after Kaplan et al.
    (2020), table 1.

    ``forward = 2 N + 2 L T d + 2 d V``: the weight matrices (``N`` non-embedding
    parameters), attention over a context of ``T`` (``context``, default
    ``config.context``) and the output layer. Attention's scores and weighted sum each
    cost ``2 T d`` per token and layer when computed in full; a causal model needs only
    the earlier half, ``2 L T d`` for both together, which is Kaplan's term and the
    *model* FLOPs that an MFU counts (our layer computes the full square and masks it).
    Training (forward and backward) is three times the forward.
    """
    context = config.context if context is None else positive_int("context", context)
    n = parameter_count(config)["non_embedding"]
    attention = 2 * config.num_layers * context * config.width
    forward = 2 * n + attention + 2 * config.width * config.vocab_size
    return {
        "forward": float(forward),
        "training": 3.0 * forward,
        "attention_share": attention / forward,
    }
