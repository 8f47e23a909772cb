"""Input pipelines: augmentation layers and batches of images for ``fit`` on any backend.

``make_pipeline`` builds a ``tf.data`` pipeline when TensorFlow is installed (through
:mod:`bigmodel_utils.backend.tensorflow_only`, whatever the Keras backend) and NumPy batches
(:class:`NumpyBatches`, a ``keras.utils.PyDataset``) otherwise. Used in chapters 4, 5 and 9.
"""

from __future__ import annotations

import math
from importlib.util import find_spec

import keras
import numpy as np

from bigmodel_utils.data import image_data as data_module
from bigmodel_utils.validation import check_choice, check_int, check_number


def augmentation(seed: int = 0, flip: bool = True, translate: float = 0.1) -> keras.Sequential:
    """Random horizontal flips and shifts of up to ``translate`` of the image size, as Keras layers.

    Apply them in the input pipeline (:func:`make_pipeline` does), not inside
    the model: ``RandomTranslation`` has ``supports_jit=False``, and one such
    layer inside a model makes ``jit_compile="auto"`` turn XLA off for all of it.
    """
    check_number("translate", translate, 0, 0.5, include_maximum=False)
    stages = []
    if flip:
        stages.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if translate:
        stages.append(keras.layers.RandomTranslation(translate, translate, fill_mode="constant", seed=seed + 1))
    return keras.Sequential(stages, name="augmentation")


def tensorflow_available() -> bool:
    """True when TensorFlow can be imported (it is optional under the JAX and PyTorch backends)."""
    try:
        return find_spec("tensorflow") is not None
    except (ImportError, ValueError):  # ValueError: a blocked or half-imported module
        return False


class NumpyBatches(keras.utils.PyDataset):
    """Batches from NumPy arrays for any backend: scaled, resized and optionally augmented per batch.

    The fallback of :func:`make_pipeline` when the backend is not TensorFlow.
    """

    def __init__(self, images, labels, batch_size, image_size=None, channels=None, shuffle=False,
                 augment=None, seed=0):
        super().__init__()
        self.images, self.labels = images, np.asarray(labels)
        self.batch_size, self.image_size, self.channels = batch_size, image_size, channels
        self.shuffle, self.augment = shuffle, augment
        self.rng = np.random.default_rng(seed)
        self.order = np.arange(len(self.labels))
        self.on_epoch_end()

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __getitem__(self, index):
        rows = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        x = data_module.prepare_images(self.images[rows], self.image_size, self.channels)
        if self.augment is not None:
            x = keras.ops.convert_to_numpy(self.augment(x, training=True))
        return x, self.labels[rows]

    def on_epoch_end(self):
        if self.shuffle:
            self.rng.shuffle(self.order)


def make_pipeline(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    *,
    image_size: int | None = None,
    channels: int | None = None,
    shuffle: bool = False,
    augment: keras.layers.Layer | None = None,
    seed: int = 0,
    cache: bool = True,
    prefetch: bool = True,
):
    """Feed uint8 images (N, H, W[, C]) and int labels (N,) to ``fit`` in batches of float32 in [0, 1].

    With TensorFlow installed this is a ``tf.data`` pipeline: cache the raw
    uint8 arrays, shuffle, batch, scale and resize per batch, apply
    ``augment`` (a Keras layer, for example :func:`augmentation`) in the
    pipeline's ``map``, and prefetch the next batches while the model trains.
    Otherwise it is a :class:`NumpyBatches` sequence doing the same in NumPy.
    """
    batch_size = check_int("batch_size", batch_size, minimum=1)
    if image_size is not None:
        check_int("image_size", image_size, minimum=1, maximum=data_module.MAX_IMAGE_SIZE)
    check_choice("channels", channels, (None, 1, 3))
    if len(images) != len(labels):
        raise ValueError(f"images and labels differ in length: {len(images)} != {len(labels)}")
    if not tensorflow_available():
        return NumpyBatches(images, labels, batch_size, image_size, channels, shuffle, augment, seed)
    from bigmodel_utils.backend import tensorflow_only  # the one dispatch point to TensorFlow here (see .importlinter)

    return tensorflow_only.make_tf_dataset(
        images, labels, batch_size, image_size=image_size, channels=channels, shuffle=shuffle, seed=seed,
        cache=cache, augment=augment, prefetch=prefetch,
    )

