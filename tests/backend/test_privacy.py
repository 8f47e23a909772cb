"""DP-SGD pieces: clipping, noise, per-example gradients, training, the privacy accountant and the attack."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from keras import ops
from scipy.stats import norm

from bigmodel_utils.techniques import privacy


def to_numpy(values):
    return [ops.convert_to_numpy(v) for v in values]


def random_gradients(batch=64, seed=0):
    """Per-example gradients of a fake two-variable model, with norms spread from about 0.1 to 30."""
    rng = np.random.default_rng(seed)
    scale = np.exp(rng.uniform(np.log(0.1), np.log(30.0), size=batch)).astype("float32")
    kernel = rng.normal(size=(batch, 5, 3)).astype("float32") * scale[:, None, None] / np.sqrt(18)
    bias = rng.normal(size=(batch, 3)).astype("float32") * scale[:, None] / np.sqrt(18)
    return [kernel, bias]


def norms_of(grads):
    return np.sqrt(sum((g.reshape(len(g), -1) ** 2).sum(axis=1) for g in grads))


@pytest.mark.parametrize("clip_norm", [0.5, 1.0, 4.0])
def test_clipping_bounds_every_example_norm(clip_norm):
    grads = random_gradients()
    clipped, reported = privacy.clip_per_example(grads, clip_norm)
    clipped = to_numpy(clipped)
    after = norms_of(clipped)
    before = norms_of(grads)
    np.testing.assert_allclose(ops.convert_to_numpy(reported), before, rtol=1e-5)
    assert np.all(after <= clip_norm * (1 + 1e-5))
    assert (before > clip_norm).any() and (before < clip_norm).any()  # the test covers both cases
    small = before <= clip_norm
    for original, result in zip(grads, clipped):
        np.testing.assert_allclose(result[small], original[small], rtol=1e-6)  # short gradients untouched
    np.testing.assert_allclose(after[~small], clip_norm, rtol=1e-5)  # long ones land exactly on the sphere
    # clipping only rescales: the direction of each example's gradient is kept
    ratio = clipped[0] / grads[0]
    np.testing.assert_allclose(ratio, ratio[:, :1, :1] * np.ones_like(ratio), rtol=1e-4)


@pytest.mark.parametrize(("sigma", "clip_norm"), [(0.5, 1.0), (1.1, 2.0), (3.0, 0.5)])
def test_noise_has_standard_deviation_sigma_times_clip_norm(sigma, clip_norm):
    summed = [np.zeros((200, 250), dtype="float32"), np.zeros(50_000, dtype="float32")]
    noisy = to_numpy(privacy.add_noise(summed, sigma, clip_norm, seed=keras.random.SeedGenerator(1)))
    values = np.concatenate([n.ravel() for n in noisy])
    assert values.std() == pytest.approx(sigma * clip_norm, rel=0.01)
    assert abs(values.mean()) < 0.01 * sigma * clip_norm
    assert noisy[0].shape == (200, 250)


def test_no_noise_leaves_the_sum_unchanged_and_fresh_noise_each_call():
    summed = [np.ones(10, dtype="float32")]
    np.testing.assert_array_equal(to_numpy(privacy.add_noise(summed, 0.0, 1.0))[0], summed[0])
    generator = keras.random.SeedGenerator(0)
    first, second = (to_numpy(privacy.add_noise(summed, 1.0, 1.0, seed=generator))[0] for _ in range(2))
    assert not np.allclose(first, second)


@pytest.fixture(scope="module")
def tiny_task():
    """Eight-by-eight images whose label is 1 when the left half is brighter than the right."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(400, 8, 8, 1)).astype("float32")
    y = (x[:, :, :4].mean(axis=(1, 2, 3)) > x[:, :, 4:].mean(axis=(1, 2, 3))).astype("int64")
    x[y == 1, :, :4] += 0.5
    return x, y


def test_per_example_gradients_match_one_example_at_a_time(tiny_task):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the reference loop below uses tf.GradientTape")
    import tensorflow as tf

    x, y = tiny_task
    keras.utils.set_random_seed(0)
    model = privacy.build_dp_classifier((8, 8, 1), num_classes=2, width=4)
    batch = privacy.per_example_gradients(model, x[:6], y[:6])
    assert [tuple(g.shape) for g in batch] == [(6, *v.shape) for v in model.trainable_variables]
    for i in range(6):
        with tf.GradientTape() as tape:
            loss = ops.sum(privacy.sparse_crossentropy(y[i:i + 1], model(x[i:i + 1], training=True)))
        for got, want in zip(batch, tape.gradient(loss, model.trainable_variables)):
            np.testing.assert_allclose(ops.convert_to_numpy(got)[i], ops.convert_to_numpy(want), atol=1e-5)


def test_dp_sgd_learns_a_simple_task_and_reports_its_budget(tiny_task):
    x, y = tiny_task
    keras.utils.set_random_seed(0)
    model = privacy.build_dp_classifier((8, 8, 1), num_classes=2, width=4)
    result = privacy.train_dp_sgd(model, x, y, clip_norm=1.0, noise_multiplier=0.7, batch_size=50, epochs=4,
                                  validation_data=(x, y), seed=0)
    assert result.steps == 32 and result.sampling_probability == pytest.approx(0.125)
    assert len(result.history["loss"]) == 4 and len(result.history["val_accuracy"]) == 4
    assert result.history["val_accuracy"][-1] > 0.9
    assert all(0.0 <= f <= 1.0 for f in result.history["clipped_fraction"])
    assert 0 < result.epsilon(1e-5) < math.inf


def test_epsilon_decreases_as_noise_grows_and_grows_with_steps():
    sigmas = [0.5, 0.8, 1.0, 2.0, 4.0]
    epsilons = [privacy.dp_sgd_epsilon(s, 0.01, 1000, 1e-5) for s in sigmas]
    assert all(a > b for a, b in zip(epsilons, epsilons[1:])), epsilons
    assert privacy.dp_sgd_epsilon(1.0, 0.01, 4000, 1e-5) > privacy.dp_sgd_epsilon(1.0, 0.01, 1000, 1e-5)
    assert privacy.dp_sgd_epsilon(0.0, 0.01, 1000, 1e-5) == math.inf


def analytic_gaussian_delta(epsilon, mu):
    """Exact delta(epsilon) of a Gaussian mechanism with sensitivity / sigma = mu (Balle and Wang 2018)."""
    return norm.cdf(-epsilon / mu + mu / 2) - math.exp(epsilon) * norm.cdf(-epsilon / mu - mu / 2)


@pytest.mark.parametrize(("sigma", "steps"), [(2.0, 4), (5.0, 50)])
def test_accountants_agree_with_the_exact_gaussian_mechanism(sigma, steps):
    """Without subsampling (q = 1), T Gaussian steps are one Gaussian mechanism with mu = sqrt(T) / sigma."""
    delta = 1e-5
    pld = privacy.dp_sgd_epsilon(sigma, 1.0, steps, delta, accountant="pld")
    rdp = privacy.dp_sgd_epsilon(sigma, 1.0, steps, delta, accountant="rdp")
    mu = math.sqrt(steps) / sigma
    assert 0.8 * delta < analytic_gaussian_delta(pld, mu) <= 1.01 * delta  # PLD is tight
    assert rdp >= pld  # RDP is an upper bound, never better than the exact value
    assert rdp < 1.5 * pld


def test_membership_advantage_bound_is_the_corner_of_the_dp_test_region():
    # No privacy budget, no advantage; delta alone allows delta; large epsilon allows almost anything
    assert privacy.membership_advantage_bound(0.0) == 0.0
    assert privacy.membership_advantage_bound(0.0, 0.01) == pytest.approx(0.01)
    assert 0.999 < privacy.membership_advantage_bound(20.0, 1e-5) < 1.0
    # Independently: the best (FPR, TPR) on both DP constraints, found on a fine grid
    epsilon, delta = 1.0, 1e-3
    fpr = np.linspace(0, 1, 200_001)
    tpr = np.minimum(np.exp(epsilon) * fpr + delta, 1 - (1 - fpr - delta) / np.exp(epsilon))
    assert privacy.membership_advantage_bound(epsilon, delta) == pytest.approx(float(np.max(tpr - fpr)), abs=1e-5)
    # Tighter than the pure-epsilon bound e^eps - 1, which says nothing beyond ln 2
    assert privacy.membership_advantage_bound(np.log(2)) < np.expm1(np.log(2)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"delta must be a finite number \(at least 0 and below 1\), got 1.5"):
        privacy.membership_advantage_bound(1.0, 1.5)


def test_membership_inference_scores():
    perfect = privacy.membership_inference([0.1, 0.2, 0.3], [0.5, 0.7])
    assert perfect.auc == 1.0 and perfect.advantage == pytest.approx(1.0)
    assert 0.3 <= perfect.threshold < 0.5
    rng = np.random.default_rng(0)
    same = privacy.membership_inference(rng.exponential(size=4000), rng.exponential(size=4000))
    assert abs(same.auc - 0.5) < 0.03 and same.advantage < 0.06
    shifted = privacy.membership_inference(rng.exponential(0.5, size=4000), rng.exponential(1.0, size=4000))
    assert shifted.auc == pytest.approx(2 / 3, abs=0.02)  # P(Exp(mean 0.5) < Exp(mean 1)) = 2/3


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: privacy.clip_per_example([np.ones((2, 3))], 0.0), "clip_norm must be a positive number"),
        (lambda: privacy.add_noise([np.ones(3)], -1.0, 1.0),
         "noise_multiplier must be a number of at least 0, got -1.0"),
        (lambda: privacy.dp_sgd_epsilon(1.0, 1.5, 10, 1e-5),
         r"sampling_probability must be a finite number \(above 0 and at most 1\), got 1.5"),
        (lambda: privacy.dp_sgd_epsilon(1.0, 0.1, 10, 2.0),
         r"delta must be a finite number \(above 0 and below 1\), got 2.0"),
        (lambda: privacy.dp_sgd_epsilon(0.0, 0.1, 10, 1e-5, accountant="moments"),
         "accountant must be one of 'rdp', 'pld'; got 'moments'"),
        (lambda: privacy.membership_inference([], [1.0]), "must both be non-empty"),
        (lambda: privacy.train_dp_sgd(privacy.build_dp_classifier((8, 8, 1), 2, 2), np.zeros((4, 8, 8, 1)),
                                      np.zeros(4), batch_size=9), "batch_size must be an integer from 1 to 4, got 9"),
    ],
)
def test_bad_arguments_say_what_is_wrong(call, message):
    with pytest.raises(ValueError, match=message):
        call()
