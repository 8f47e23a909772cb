"""An evaluation harness for a causal language model: how well it predicts held-out text, and how often it
picks the right option of a multiple-choice item, each with an interval; and whether its confidence means
anything (calibration). Chapter 8 uses it on SmolLM2 and its compressed copies; the post-training chapter
reuses it.

* :func:`token_log_probs`: log-probability of every next token, one compiled pass per batch.
* :func:`perplexity`: perplexity and bits per character over non-overlapping windows of a text.
* :func:`score_choices`: each option's summed log-probability after its prompt; the pick, its probability
  among the options and whether it is right.
* :func:`bootstrap_interval` and :func:`reliability`: a 95% interval for a mean, and accuracy by confidence.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from bigmodel_utils.backend.compile import compiled
from bigmodel_utils.validation import check_int, positive_int

BATCH = 8
"""Sequences per compiled pass: batches are padded to it (and lengths to a power of two), so the whole
harness compiles a few shapes only."""


class NextTokenLogProbs(keras.Model):
    """``[token_ids (B, T), padding_mask (B, T)]`` to ``log p(token_ids[:, t + 1] | token_ids[:, :t + 1])``
    ``(B, T - 1)``: the log-softmax is taken inside the compiled pass, so only ``B x T`` numbers come back."""

    def __init__(self, model):
        super().__init__(name="next_token_log_probs")
        self.model = model

    def call(self, inputs):
        token_ids, padding_mask = inputs
        logits = self.model({"token_ids": token_ids, "padding_mask": padding_mask})
        log_probs = ops.log_softmax(ops.cast(logits[:, :-1], "float32"), axis=-1)
        targets = ops.expand_dims(token_ids[:, 1:], -1)
        return ops.squeeze(ops.take_along_axis(log_probs, targets, axis=-1), -1)


def _padded(sequences: list[list[int]]):
    length = max(16, 1 << (max(map(len, sequences)) - 1).bit_length())
    ids = np.zeros((BATCH, length), "int32")
    mask = np.zeros((BATCH, length), bool)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = sequence
        mask[row, : len(sequence)] = True
    return ids, mask


def token_log_probs(model, sequences: list[list[int]]) -> list[np.ndarray]:
    """For each token-id sequence, the log-probability of each of its tokens after the first, given the
    tokens before it (``len(sequence) - 1`` values)."""
    step = compiled(model, NextTokenLogProbs)
    out = []
    for start in range(0, len(sequences), BATCH):
        chunk = sequences[start : start + BATCH]
        (log_probs,) = step(list(_padded(chunk)))
        log_probs = ops.convert_to_numpy(log_probs)
        out.extend(log_probs[row, : len(sequence) - 1].astype(np.float64) for row, sequence in enumerate(chunk))
    return out


def encode(model, text: str) -> list[int]:
    """``text``'s token ids under ``model``'s tokenizer."""
    return [int(i) for i in ops.convert_to_numpy(model.preprocessor.tokenizer(text))]


def decode(model, ids) -> str:
    """The text of token ``ids``."""
    text = model.preprocessor.tokenizer.detokenize(np.asarray(ids, "int32"))
    return text if isinstance(text, str) else ops.convert_to_numpy(text).item().decode("utf-8")


def perplexity(model, text: str, window: int = 256, max_windows: int | None = None) -> dict:
    """Perplexity of ``model`` on ``text`` cut into non-overlapping windows of ``window`` tokens (each
    window's first token is context only), and bits per character: the same total surprise divided by the
    characters of the predicted tokens, a measure that does not depend on the tokenizer."""
    window = check_int("window", window, 2)
    ids = encode(model, text)
    windows = [ids[i : i + window] for i in range(0, len(ids) - 1, window) if len(ids[i : i + window]) > 1]
    windows = windows[: positive_int("max_windows", max_windows)] if max_windows is not None else windows
    log_probs = token_log_probs(model, windows)
    nats = -sum(float(lp.sum()) for lp in log_probs)
    tokens = sum(len(lp) for lp in log_probs)
    characters = sum(len(decode(model, w[1:])) for w in windows)
    return {"tokens": tokens, "characters": characters, "nats_per_token": nats / tokens,
            "perplexity": math.exp(nats / tokens), "bits_per_character": nats / math.log(2) / characters}


def score_choices(model, items: list[dict]) -> dict:
    """Score multiple-choice ``items`` (``prompt``, ``options``, ``answer`` index) by the summed
    log-probability of each option's tokens after the prompt. Returns per item: ``pick``, ``correct``
    (0/1), ``confidence`` (the pick's probability among the options, a softmax of the sums) and
    ``chance`` (1 / number of options)."""
    sequences, owners = [], []
    for index, item in enumerate(items):
        prompt = encode(model, item["prompt"])
        for option in item["options"]:
            sequences.append(prompt + encode(model, option))
            owners.append((index, len(prompt)))
    log_probs = token_log_probs(model, sequences)
    sums = np.zeros(len(sequences))
    for k, (lp, (_, prompt_length)) in enumerate(zip(log_probs, owners)):
        sums[k] = lp[prompt_length - 1 :].sum()
    picks, correct, confidence, chance, position = [], [], [], [], 0
    for item in items:
        scores = sums[position : position + len(item["options"])]
        position += len(item["options"])
        probabilities = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
        picks.append(int(np.argmax(scores)))
        correct.append(int(picks[-1] == item["answer"]))
        confidence.append(float(probabilities.max()))
        chance.append(1 / len(item["options"]))
    return {"pick": picks, "correct": correct, "confidence": confidence, "chance": chance}


def bootstrap_interval(values, num_resamples: int = 2000, seed: int = 0, level: float = 0.95):
    """A percentile bootstrap interval for the mean of ``values``: resample them with replacement
    ``num_resamples`` times and take the middle ``level`` of the means."""
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(positive_int("num_resamples", num_resamples), len(values))).mean(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def reliability(confidence, correct, num_bins: int = 5) -> list[dict]:
    """Accuracy against confidence in ``num_bins`` equal-width bins of confidence (empty bins left out):
    a calibrated model's points lie on the diagonal."""
    confidence, correct = np.asarray(confidence), np.asarray(correct)
    edges = np.linspace(0, 1, positive_int("num_bins", num_bins) + 1)
    rows = []
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence >= low) & ((confidence < high) | (high == 1.0))
        if inside.any():
            rows.append({"low": float(low), "high": float(high), "count": int(inside.sum()),
                         "confidence": float(confidence[inside].mean()), "accuracy": float(correct[inside].mean())})
    return rows
