"""Why did the model say that? Saliency maps, Grad-CAM and integrated gradients for Keras image classifiers.

All three explain one class score of a trained classifier, for a batch of
images of shape (N, H, W, C):

* :func:`saliency_map` (Simonyan et al. 2014): the gradient of the class
  score with respect to each input pixel; large where a small change of the
  pixel would change the score most.
* :func:`grad_cam` (Selvaraju et al. 2017): weights the feature maps of a
  convolutional layer by the average gradient of the class score over each
  map, keeps the positive part, and upsamples it to the image: a coarse map of
  *where* the evidence for the class is.
* :func:`integrated_gradients` (Sundararajan et al. 2017): averages gradients
  along the straight path from a baseline image (black by default) to the
  image and multiplies by the difference; the attributions add up to
  ``score(image) - score(baseline)`` (completeness), which chapter 9 checks.

The class score is the logit (the input of the final softmax) when the last
layer is a Dense or Activation layer with a softmax, because gradients of a
saturated probability vanish; otherwise it is the model's output. Gradients
use the backend's autodiff (TensorFlow or JAX). Any functional or sequential
Keras classifier with a convolutional layer works for Grad-CAM, provided the
layers after the chosen convolution read only its output (no skip connection
around it). Used in chapter 9.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from bigmodel_utils.backend import autodiff
from bigmodel_utils.validation import check_int

_CONV_TYPES = ("Conv1D", "Conv2D", "Conv3D", "SeparableConv2D", "DepthwiseConv2D", "Conv2DTranspose")


def _check_images(images) -> np.ndarray:
    x = np.asarray(images, dtype="float32")
    if x.ndim != 4:
        raise ValueError(f"images must have shape (N, height, width, channels), got {x.shape}")
    return x


def _class_indices(class_index, n: int) -> np.ndarray:
    indices = np.broadcast_to(np.asarray(class_index, dtype=np.int64), (n,)).copy()
    if indices.ndim != 1:
        raise ValueError(f"class_index must be an int or one int per image, got shape {np.shape(class_index)}")
    return indices


def _model_input(model: keras.Model):
    """The model's input tensor (or list of them), in the structure Keras expects back."""
    return model.inputs[0] if len(model.inputs) == 1 else model.inputs


def _softmax_head(model: keras.Model):
    """The model's last layer if it is a Dense or Activation layer with a softmax, else None."""
    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    if activation is not None and getattr(activation, "__name__", "") == "softmax":
        return last
    return None


def score_function(model: keras.Model, head_input=None):
    """Return f(tensor) -> class scores (N, classes): logits if the model ends in a softmax, else outputs.

    With ``head_input`` (an intermediate KerasTensor of ``model``), f takes
    that tensor's values instead of images and runs only the rest of the model.
    """
    last = _softmax_head(model)
    start = _model_input(model) if head_input is None else head_input
    if last is None:
        output = model.outputs[0] if len(model.outputs) == 1 else model.outputs
        head = keras.Model(start, output)
        return lambda values: head(values, training=False)
    features = keras.Model(start, last.input)
    if type(last).__name__ == "Dense":
        def logits(values):
            hidden = features(values, training=False)
            out = ops.matmul(hidden, last.kernel)
            return out + last.bias if last.use_bias else out
    else:  # a bare softmax Activation layer: its input already is the logit
        def logits(values):
            return features(values, training=False)
    return logits


def _gradient_of_sum(function, values) -> np.ndarray:
    """d sum(f(values)) / d values, by the backend's autodiff; ``function`` returns (N,) scores."""
    return autodiff.value_and_grad(lambda v: ops.sum(function(v)), values)[1]


def _selected(scores_fn, class_indices):
    picks = ops.convert_to_tensor(class_indices)

    def selected(values):
        scores = scores_fn(values)
        return ops.take_along_axis(scores, ops.expand_dims(ops.cast(picks, "int32"), 1), axis=1)[:, 0]

    return selected


def class_scores(model: keras.Model, images, class_index) -> np.ndarray:
    """The explained score of ``class_index`` for each image, shape (N,) (a logit for softmax models)."""
    x = _check_images(images)
    return ops.convert_to_numpy(_selected(score_function(model), _class_indices(class_index, len(x)))(x))


def saliency_map(model: keras.Model, images, class_index) -> np.ndarray:
    """Vanilla gradient saliency: max over channels of |d score / d pixel|, shape (N, H, W).

    ``class_index`` is one int or one per image (usually the predicted or true class).
    """
    x = _check_images(images)
    fn = _selected(score_function(model), _class_indices(class_index, len(x)))
    grads = _gradient_of_sum(fn, x)
    return np.abs(grads).max(axis=-1)


def last_conv_layer(model: keras.Model) -> keras.layers.Layer:
    """The last convolutional layer of ``model`` (the usual Grad-CAM choice); ValueError if there is none."""
    for layer in reversed(model.layers):
        if type(layer).__name__ in _CONV_TYPES:
            return layer
    raise ValueError(f"model {model.name!r} has no convolutional layer; Grad-CAM needs one")


def grad_cam(model: keras.Model, images, class_index, layer_name: str | None = None,
             upsample: bool = True) -> np.ndarray:
    """Grad-CAM heatmaps in [0, 1], shape (N, H, W) (or the conv layer's (N, h, w) with ``upsample=False``).

    ``layer_name`` picks the convolutional layer (default: the last one). Its
    feature maps A_k are weighted by alpha_k = mean over positions of
    d score / d A_k; the map is ReLU(sum_k alpha_k A_k), scaled so each
    image's maximum is 1 (an all-zero map stays zero). Used in chapter 9.
    """
    x = _check_images(images)
    layer = last_conv_layer(model) if layer_name is None else model.get_layer(layer_name)
    features = keras.Model(_model_input(model), layer.output)
    activations = ops.convert_to_numpy(features(x, training=False))
    head = _selected(score_function(model, head_input=layer.output), _class_indices(class_index, len(x)))
    grads = _gradient_of_sum(head, activations)
    weights = grads.mean(axis=(1, 2), keepdims=True)
    cam = np.maximum((weights * activations).sum(axis=-1), 0.0)
    if upsample and cam.shape[1:] != x.shape[1:3]:
        resized = ops.image.resize(cam[..., None], x.shape[1:3], interpolation="bilinear")
        cam = np.maximum(ops.convert_to_numpy(resized)[..., 0], 0.0)
    peak = cam.max(axis=(1, 2), keepdims=True)
    return np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0)


def integrated_gradients(model: keras.Model, images, class_index, baseline=None, steps: int = 32) -> np.ndarray:
    """Integrated-gradients attributions, same shape as ``images`` (N, H, W, C).

    Approximates ``(x - x') * integral_0^1 d score(x' + a (x - x')) / dx da``
    with the trapezoid rule over ``steps`` intervals. ``baseline`` x' defaults
    to a black image. The attributions of an image sum to about
    ``score(x) - score(x')``; more steps make the sum closer.
    """
    x = _check_images(images)
    steps = check_int("steps", steps, minimum=1)
    base = np.zeros_like(x[0]) if baseline is None else np.asarray(baseline, dtype="float32")
    if base.shape != x.shape[1:]:
        raise ValueError(f"baseline must have the shape of one image {x.shape[1:]}, got {base.shape}")
    scores_fn = score_function(model)
    alphas = np.linspace(0.0, 1.0, steps + 1, dtype="float32")[:, None, None, None]
    trapezoid = np.full(steps + 1, 1.0 / steps, dtype="float32")
    trapezoid[[0, -1]] /= 2
    attributions = np.empty_like(x)
    for i, (image, target) in enumerate(zip(x, _class_indices(class_index, len(x)))):
        path = base + alphas * (image - base)
        grads = _gradient_of_sum(_selected(scores_fn, np.full(steps + 1, target)), path)
        attributions[i] = (image - base) * np.tensordot(trapezoid, grads, axes=1)
    return attributions
