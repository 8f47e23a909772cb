"""Prediction: validate images a reader hands in and return classes with probabilities.
Used in chapter 4 and by the chapter 7 server.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np

from bigmodel_utils.validation import check_int


@dataclass
class Predictions:
    """Class probabilities (N, num_classes), predicted labels (N,) and, when known, their names."""

    probabilities: np.ndarray
    labels: np.ndarray
    names: list[str] | None = None

    @property
    def confidence(self) -> np.ndarray:
        """The probability of the predicted class, (N,)."""
        return self.probabilities.max(axis=-1)


def _expected_shape(model: keras.Model) -> tuple[int, int, int]:
    shape = tuple(model.input_shape[1:])
    if len(shape) != 3 or any(d is None for d in shape):
        raise ValueError(f"predict needs a model with a fixed image input (H, W, C), this one takes {shape}")
    return shape


def check_images(images, expected_shape: tuple[int, int, int]) -> np.ndarray:
    """Check and convert images for a model taking ``expected_shape`` = (H, W, C); returns float32 (N, H, W, C).

    Accepts one image or a batch, with or without the channel axis, as uint8
    in 0-255 or floats in [0, 1]. Anything else raises a ValueError that says
    what was given and what the model expects.
    """
    height, width, channels = expected_shape
    want = (f"the model expects images of {height}x{width} pixels with {channels} channel(s), as uint8 "
            f"0-255 or floats in [0, 1], shaped ({height}, {width}), ({height}, {width}, {channels}) for one "
            f"image or with a leading batch axis")
    x = np.asarray(images)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)
                                 or x.dtype == bool):
        raise ValueError(f"images have dtype {x.dtype}; {want}")
    if x.ndim >= 2 and x.shape[-2:] == (height, width) and channels == 1:
        x = x[..., None]  # (H, W) or (N, H, W) grayscale: add the channel axis
    if x.ndim == 3:
        x = x[None]  # one image
    if x.ndim != 4 or x.shape[1:] != (height, width, channels):
        raise ValueError(f"images have shape {np.shape(images)}; {want}")
    if x.shape[0] == 0:
        raise ValueError(f"images is an empty batch; {want}")
    if np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all():
            raise ValueError(f"images contain NaN or infinite values; {want}")
        low, high = float(x.min()), float(x.max())
        if low < 0.0 or high > 1.0:
            hint = " (divide 0-255 values by 255)" if high <= 255.0 and low >= 0.0 else ""
            raise ValueError(f"float images range over [{low:g}, {high:g}], outside [0, 1]{hint}; {want}")
        return x.astype(np.float32)
    if x.dtype != np.uint8 and (x.min() < 0 or x.max() > 255):
        raise ValueError(f"integer images range over [{x.min()}, {x.max()}], outside 0-255; {want}")
    return x.astype(np.float32) / 255.0


def predict(model: keras.Model, images, class_names: Sequence[str] | None = None,
            batch_size: int = 256) -> Predictions:
    """Classify one image or a batch with :func:`check_images` first; returns :class:`Predictions`.

    Used in chapter 4 (the "apply" step) and by the command line.
    """
    x = check_images(images, _expected_shape(model))
    batch_size = check_int("batch_size", batch_size, minimum=1)
    probabilities = np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float32)
    labels = probabilities.argmax(axis=-1)
    names = None if class_names is None else [class_names[i] for i in labels]
    return Predictions(probabilities, labels, names)

