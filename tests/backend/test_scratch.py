"""The from-scratch NumPy code of chapter 3 against Keras (TensorFlow or JAX backend), on random inputs of
several shapes and dtypes.

Tolerances are the chapter's, ``scratch.TOLERANCES`` (elementwise |ours - theirs| <= atol + rtol * |theirs|):
float64 rtol 1e-5 (atol 1e-12 for exact zeros); float32 rtol 1e-4, atol 1e-5, since float32 keeps about 7 digits
and the backend may sum in another order. ``test_tolerances_pass_rounding_and_fail_a_one_character_bug`` shows they
sit between the two: rounding passes with room to spare, a plausible bug fails.
Gradients come from the backend's autodiff (``autodiff.value_and_grad``: GradientTape or jax.grad); under JAX
the tests turn on 64-bit mode, without which JAX silently computes float64 inputs in float32.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from bigmodel_utils import scratch
from bigmodel_utils.backend import autodiff

DTYPES = ("float64", "float32")
SHAPES = ((1, 2), (7, 3), (32, 10))


def close(ours, theirs, dtype):
    ours, theirs = np.asarray(ours), keras.ops.convert_to_numpy(theirs)
    assert ours.dtype == np.dtype(dtype), f"scratch result is {ours.dtype}, expected {dtype}"
    # float64's rtol of 1e-5 cannot tell float32 arithmetic (about 1e-7 relative) from float64: the reference's
    # dtype says whether the backend really computed in float64 (JAX without 64-bit mode would not)
    assert theirs.dtype == np.dtype(dtype), f"the reference is {theirs.dtype}, expected {dtype}"
    np.testing.assert_allclose(ours, theirs, **scratch.TOLERANCES[dtype])


def random(rng, shape, dtype, scale=3.0):
    return (scale * rng.normal(size=shape)).astype(dtype)


@pytest.fixture
def floatx():
    """Set Keras's default float type for a test (optimisers keep the learning rate in it) and restore it."""
    previous = keras.config.floatx()
    yield keras.config.set_floatx
    keras.config.set_floatx(previous)


@pytest.fixture(autouse=True)
def float64_on_every_backend():
    """JAX's 64-bit mode for each test of this file, restored afterwards (a no-op under TensorFlow)."""
    if keras.backend.backend() != "jax":
        yield
        return
    import jax

    previous = jax.config.jax_enable_x64
    autodiff.enable_float64()
    yield
    jax.config.update("jax_enable_x64", previous)


# ---------------------------------------------------------------- activations and dense layers


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + ((4, 5, 6),))
@pytest.mark.parametrize("name", ["relu", "sigmoid", "softmax", "log_softmax"])
def test_activations_match_keras_ops(name, shape, dtype):
    z = random(np.random.default_rng(len(shape) * 100 + shape[-1]), shape, dtype)
    close(getattr(scratch, name)(z), getattr(keras.ops, name)(z), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_activations_stay_finite_at_extreme_inputs(dtype):
    z = np.array([[-1000.0, 0.0, 1000.0], [500.0, 500.0, -500.0]], dtype=dtype)
    for name in ("sigmoid", "softmax", "log_softmax", "log_sigmoid"):
        ours = getattr(scratch, name)(z)
        assert np.all(np.isfinite(ours)), f"{name} overflowed"
        close(ours, getattr(keras.ops, name)(z), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_sigmoid_is_log_softmax_of_zero_and_z(dtype):
    z = random(np.random.default_rng(1), (20,), dtype, scale=10)
    pairs = np.stack([np.zeros_like(z), z], axis=-1)
    close(scratch.log_sigmoid(z), scratch.log_softmax(pairs)[..., 1], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, d_in, d_out", [(1, 1, 2), (5, 4, 3), (16, 30, 10)])
@pytest.mark.parametrize("activation", scratch.ACTIVATIONS)
def test_dense_forward_matches_keras_dense(activation, n, d_in, d_out, dtype):
    rng = np.random.default_rng(n + d_in + d_out)
    x, w, b = random(rng, (n, d_in), dtype, 1), random(rng, (d_in, d_out), dtype, 1), random(rng, (d_out,), dtype, 1)
    layer = keras.layers.Dense(d_out, activation=activation, dtype=dtype)
    layer.build((None, d_in))
    layer.set_weights([w, b])
    close(scratch.dense_forward(x, w, b, activation), layer(x), dtype)


def test_dense_forward_rejects_bad_shapes_and_activations():
    x, w, b = np.ones((2, 3)), np.ones((3, 4)), np.ones(4)
    with pytest.raises(ValueError, match="activation must be one of"):
        scratch.dense_forward(x, w, b, "tanh")
    with pytest.raises(ValueError, match=r"got \(2, 3\), \(2, 4\), \(4,\)"):
        scratch.dense_forward(x, np.ones((2, 4)), b)
    with pytest.raises(ValueError, match="shapes must be"):
        scratch.dense_forward(x, w, np.ones(3))


# ---------------------------------------------------------------- losses


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_mean_squared_error_matches_keras_and_half_form_is_a_factor_two_over_d(shape, dtype):
    rng = np.random.default_rng(shape[0])
    y_true, y_pred = random(rng, shape, dtype, 1), random(rng, shape, dtype, 1)
    keras_mse = keras.losses.MeanSquaredError(dtype=dtype)(y_true, y_pred)
    close(scratch.mean_squared_error(y_true, y_pred), keras_mse, dtype)
    close(scratch.half_mean_squared_error(y_true, y_pred) * 2 / shape[1], keras_mse, dtype)


def test_half_mse_gradient_is_prediction_minus_target_over_n():
    rng = np.random.default_rng(3)
    y_true, y_pred = rng.normal(size=(8, 1)), rng.normal(size=(8, 1))
    _, gradient = autodiff.value_and_grad(
        lambda p: keras.losses.MeanSquaredError(dtype="float64")(y_true, p) / 2, y_pred)
    close((y_pred - y_true) / 8, gradient, "float64")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + ((64, 1),))
def test_binary_cross_entropy_matches_keras_from_logits(shape, dtype):
    rng = np.random.default_rng(shape[1])
    logits, targets = random(rng, shape, dtype, 5), rng.integers(0, 2, size=shape).astype(dtype)
    expected = keras.losses.BinaryCrossentropy(from_logits=True, dtype=dtype)(targets, logits)
    close(scratch.binary_cross_entropy(targets, logits), expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ((1, 2), (7, 3), (32, 10)))
def test_categorical_cross_entropy_matches_keras_from_logits(shape, dtype):
    rng = np.random.default_rng(shape[0])
    logits = random(rng, shape, dtype, 5)
    targets = scratch.one_hot(rng.integers(0, shape[1], size=shape[0]), shape[1], dtype=dtype)
    expected = keras.losses.CategoricalCrossentropy(from_logits=True, dtype=dtype)(targets, logits)
    close(scratch.categorical_cross_entropy(targets, logits), expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_stable_losses_are_exact_where_the_naive_formulas_overflow(dtype):
    logits = np.array([[100.0, 0.0, -100.0]], dtype=dtype) * (10 if dtype == "float64" else 1)
    target = np.array([[0.0, 0.0, 1.0]], dtype=dtype)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        assert not np.isfinite(scratch.naive_categorical_cross_entropy(target, logits))
        assert np.isnan(scratch.naive_softmax(logits)).any()
        assert not np.isfinite(scratch.naive_binary_cross_entropy(np.zeros((1, 1), dtype), logits[:, :1]))
    stable = scratch.categorical_cross_entropy(target, logits)
    close(stable, keras.losses.CategoricalCrossentropy(from_logits=True, dtype=dtype)(target, logits), dtype)
    assert stable == pytest.approx(float(logits[0, 0] - logits[0, 2]), rel=1e-6)
    binary = scratch.binary_cross_entropy(np.zeros((1, 1), dtype), logits[:, :1])
    assert binary == pytest.approx(float(logits[0, 0]), rel=1e-6)


def test_naive_and_stable_losses_agree_on_moderate_logits():
    rng = np.random.default_rng(4)
    logits, targets = rng.normal(size=(10, 4)), scratch.one_hot(rng.integers(0, 4, 10), 4, np.float64)
    close(scratch.naive_categorical_cross_entropy(targets, logits), scratch.categorical_cross_entropy(targets, logits),
          "float64")


def test_losses_and_one_hot_reject_bad_input():
    with pytest.raises(ValueError, match=r"same shape, got \(3, 1\) and \(3,\)"):
        scratch.mean_squared_error(np.ones((3, 1)), np.ones(3))
    with pytest.raises(ValueError, match="same shape"):
        scratch.categorical_cross_entropy(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"labels must lie in 0..2, got values from 0 to 3"):
        scratch.one_hot([0, 3], 3)


# ---------------------------------------------------------------- backpropagation


def tape_gradients(params, x, y):
    """The loss and its gradients by the backend's autodiff (the name stays from TensorFlow's tape)."""

    def loss(variables):
        hidden = keras.ops.relu(keras.ops.matmul(x, variables["W1"]) + variables["b1"])
        logits = keras.ops.matmul(hidden, variables["W2"]) + variables["b2"]
        return keras.losses.CategoricalCrossentropy(from_logits=True, dtype=x.dtype.name)(y, logits)

    value, grads = autodiff.value_and_grad(loss, params)
    return np.asarray(value, dtype=x.dtype), grads


def random_network(n, d, h, k, dtype, seed=0):
    rng = np.random.default_rng(seed)
    params = scratch.init_two_layer(d, h, k, rng, dtype=np.dtype(dtype))
    params["b1"], params["b2"] = random(rng, (h,), dtype, 0.1), random(rng, (k,), dtype, 0.1)
    x, y = random(rng, (n, d), dtype, 1), scratch.one_hot(rng.integers(0, k, n), k, dtype=np.dtype(dtype))
    return params, x, y


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, d, h, k", [(1, 2, 3, 2), (8, 5, 4, 3), (64, 20, 16, 10)])
def test_backprop_matches_gradient_tape(n, d, h, k, dtype):
    params, x, y = random_network(n, d, h, k, dtype)
    loss, grads = scratch.two_layer_loss_and_grads(params, x, y)
    tape_loss, tape_grads = tape_gradients(params, x, y)
    close(loss, tape_loss, dtype)
    assert set(grads) == set(params)
    for name in params:
        assert grads[name].shape == params[name].shape
        close(grads[name], tape_grads[name], dtype)


@pytest.mark.parametrize("n, d, h, k", [(3, 2, 3, 2), (10, 4, 6, 5)])
def test_backprop_matches_finite_differences(n, d, h, k):
    params, x, y = random_network(n, d, h, k, "float64", seed=n)
    _, grads = scratch.two_layer_loss_and_grads(params, x, y)
    before = {name: value.copy() for name, value in params.items()}
    numeric = scratch.numerical_gradient(
        lambda p: scratch.categorical_cross_entropy(y, scratch.two_layer_forward(p, x)[0]), params)
    for name in params:
        np.testing.assert_allclose(grads[name], numeric[name], rtol=1e-6, atol=1e-8)
        np.testing.assert_array_equal(params[name], before[name])  # nudged entries were restored


def test_numerical_gradient_of_a_quadratic_is_exact_enough_and_refuses_float32():
    params = {"w": np.array([1.0, -2.0, 3.0])}
    grad = scratch.numerical_gradient(lambda p: float(np.sum(p["w"] ** 2)), params)
    np.testing.assert_allclose(grad["w"], [2.0, -4.0, 6.0], rtol=1e-8)
    with pytest.raises(ValueError, match="needs float64 parameters, got w as float32"):
        scratch.numerical_gradient(lambda p: 0.0, {"w": np.ones(2, np.float32)})


@pytest.mark.parametrize("name", ["quadratic", "rosenbrock"])
def test_surface_gradients_match_gradient_tape(name):
    w = np.array([[-1.5, 2.0], [0.3, -0.7], [1.0, 1.0]])
    _, gradient = autodiff.value_and_grad(lambda v: keras.ops.sum(getattr(scratch, name)(v)), w)
    close(getattr(scratch, f"{name}_gradient")(w), gradient, "float64")


# ---------------------------------------------------------------- optimisers


def run_keras(optimizer, w0, gradients):
    w = keras.Variable(w0, dtype=w0.dtype.name)
    for g in gradients:
        optimizer.apply_gradients([(keras.ops.convert_to_tensor(g), w)])
    return keras.ops.convert_to_numpy(w)


def hyperparameter_type(dtype):
    """Keras (TensorFlow backend) rounds a Python-float hyperparameter through float32; float64 runs need NumPy's."""
    return np.float64 if dtype == "float64" else float


def gradient_sequence(shape, dtype, num_steps=10, seed=0):
    rng = np.random.default_rng(seed)
    return random(rng, shape, dtype, 1), [random(rng, shape, dtype, 1) for _ in range(num_steps)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ((3,), (4, 5), (2, 3, 4)))
def test_sgd_and_momentum_match_keras_sgd(shape, dtype, floatx):
    floatx(dtype)
    real = hyperparameter_type(dtype)
    w0, gradients = gradient_sequence(shape, dtype)
    w_sgd, w_momentum, velocity = w0, w0, np.zeros_like(w0)
    for g in gradients:
        w_sgd = scratch.sgd_step(w_sgd, g, lr=0.05)
        w_momentum, velocity = scratch.momentum_step(w_momentum, g, velocity, lr=0.05, momentum=0.9)
    close(w_sgd, run_keras(keras.optimizers.SGD(0.05), w0, gradients), dtype)
    close(w_momentum, run_keras(keras.optimizers.SGD(0.05, momentum=real(0.9)), w0, gradients), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ((3,), (4, 5), (2, 3, 4)))
def test_adam_matches_keras_adam_step_by_step(shape, dtype, floatx):
    floatx(dtype)
    real = hyperparameter_type(dtype)
    w0, gradients = gradient_sequence(shape, dtype, seed=len(shape))
    w, m, v = w0, np.zeros_like(w0), np.zeros_like(w0)
    for t, g in enumerate(gradients, start=1):
        w, m, v = scratch.adam_step_keras(w, g, m, v, t, lr=0.01)
        optimizer = keras.optimizers.Adam(0.01, beta_1=real(0.9), beta_2=real(0.999))
        close(w, run_keras(optimizer, w0, gradients[:t]), dtype)


ADAM_BUGS = {
    "beta_2 typed as 0.99": lambda w, g, m, v, t: scratch.adam_step_keras(w, g, m, v, t, lr=0.01, beta2=0.99),
    "bias correction one step late": lambda w, g, m, v, t: scratch.adam_step_keras(w, g, m, v, t + 1, lr=0.01),
}


@pytest.mark.parametrize("bug", ADAM_BUGS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_tolerances_pass_rounding_and_fail_a_one_character_bug(dtype, bug, floatx):
    """The tolerances are tight enough to catch a real error: ten Adam steps with a one-character bug move the
    weights by 2e-4 (beta_2) or 6e-3 (the step count) from Keras's, and fail the agreement check at the chapter's
    tolerance (about 5 and 180 times it in float32, 65 and 3,000 times in float64), while the right steps differ
    from Keras by rounding only, under a tenth of the tolerance."""
    floatx(dtype)
    real = hyperparameter_type(dtype)
    w0, gradients = gradient_sequence((4, 5), dtype, seed=2)
    reference = run_keras(keras.optimizers.Adam(0.01, beta_1=real(0.9), beta_2=real(0.999)), w0, gradients)

    def run(step):
        w, m, v = w0, np.zeros_like(w0), np.zeros_like(w0)
        for t, g in enumerate(gradients, start=1):
            w, m, v = step(w, g, m, v, t)
        return w

    tolerance = scratch.TOLERANCES[dtype]
    allowed = tolerance["atol"] + tolerance["rtol"] * np.abs(reference.astype(np.float64))
    right = run(lambda w, g, m, v, t: scratch.adam_step_keras(w, g, m, v, t, lr=0.01))
    assert scratch.agreement(right, reference)["passed"]
    assert np.max(np.abs(right - reference) / allowed) < 0.1
    wrong = scratch.agreement(run(ADAM_BUGS[bug]), reference)
    assert not wrong["passed"], f"{bug}: {wrong}"
    assert (wrong["rtol"], wrong["atol"]) == (tolerance["rtol"], tolerance["atol"])  # judged at the chapter's
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        close(run(ADAM_BUGS[bug]), reference, dtype)


def test_paper_adam_equals_keras_form_with_epsilon_rescaled_and_differs_without():
    w0, gradients = gradient_sequence((6,), "float64", num_steps=30)
    gradients = [1e-6 * g for g in gradients]  # small gradients make epsilon matter
    w_paper = w_same = w_keras = w0
    m_p = v_p = m_s = v_s = m_k = v_k = np.zeros(6)
    for t, g in enumerate(gradients, start=1):
        w_paper, m_p, v_p = scratch.adam_step(w_paper, g, m_p, v_p, t, eps=1e-7 / np.sqrt(1 - 0.999**t))
        w_same, m_s, v_s = scratch.adam_step(w_same, g, m_s, v_s, t, eps=1e-7)
        w_keras, m_k, v_k = scratch.adam_step_keras(w_keras, g, m_k, v_k, t, eps_hat=1e-7)
    np.testing.assert_allclose(w_paper - w0, w_keras - w0, rtol=1e-10)
    assert np.abs(w_same - w_keras).max() > 0.1 * np.abs(w_keras - w0).max()


def test_adam_first_step_is_lr_times_sign_and_ignores_gradient_scale():
    w0, g = np.zeros(4), np.array([0.1, -2.0, 50.0, -7e3])
    for scale in (1e-2, 1.0, 1e2):
        w, _, _ = scratch.adam_step(w0, scale * g, np.zeros(4), np.zeros(4), t=1, lr=0.1)
        np.testing.assert_allclose(w, -0.1 * np.sign(g), rtol=1e-4)


def test_adam_without_denominator_steps_grow_with_the_gradient():
    g = np.array([1.0, -3.0])
    steps = [scratch.adam_no_denominator_step(np.zeros(2), s * g, np.zeros(2), t=1, lr=0.1)[0] for s in (1, 100)]
    np.testing.assert_allclose(steps[1], 100 * steps[0])
    np.testing.assert_allclose(steps[0], -0.1 * g)  # at t=1 the bias-corrected m-hat is the gradient itself


@pytest.mark.parametrize("optimizer, settings", [("sgd", {"lr": 1e-3}), ("momentum", {"lr": 2e-4, "momentum": 0.9}),
                                                  ("adam", {"lr": 0.05})])
def test_optimize_on_rosenbrock_matches_keras(optimizer, settings, floatx):
    floatx("float64")
    w0, num_steps = np.array([-1.5, 2.0]), 25
    ours = scratch.optimize(scratch.rosenbrock_gradient, w0, num_steps, optimizer, **settings)
    assert ours.shape == (num_steps + 1, 2)
    keras_optimizer = {"sgd": lambda: keras.optimizers.SGD(1e-3),
                       "momentum": lambda: keras.optimizers.SGD(2e-4, momentum=np.float64(0.9)),
                       "adam": lambda: keras.optimizers.Adam(0.05, beta_1=np.float64(0.9),
                                                             beta_2=np.float64(0.999))}[optimizer]()
    w = keras.Variable(w0, dtype="float64")
    for step in range(1, num_steps + 1):
        _, gradient = autodiff.value_and_grad(lambda v: keras.ops.sum(scratch.rosenbrock(v)),
                                              keras.ops.convert_to_numpy(w))
        keras_optimizer.apply_gradients([(keras.ops.convert_to_tensor(gradient), w)])
        close(ours[step], w, "float64")


def test_optimize_rejects_bad_settings():
    grad = scratch.quadratic_gradient
    with pytest.raises(ValueError, match="optimizer must be one of .*, got 'adagrad'"):
        scratch.optimize(grad, np.ones(2), 3, "adagrad")
    with pytest.raises(ValueError, match="lr must be positive, got -0.1"):
        scratch.optimize(grad, np.ones(2), 3, "sgd", lr=-0.1)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\), got 1.5"):
        scratch.optimize(grad, np.ones(2), 3, "momentum", momentum=1.5)


def test_adam_update_steps_every_parameter_like_adam_step_keras():
    rng = np.random.default_rng(5)
    params = {"a": rng.normal(size=3), "b": rng.normal(size=(2, 2))}
    grads = {"a": rng.normal(size=3), "b": rng.normal(size=(2, 2))}
    state = scratch.adam_init(params)
    expected = {k: scratch.adam_step_keras(p, grads[k], 0 * p, 0 * p, 1, lr=0.01)[0] for k, p in params.items()}
    scratch.adam_update(params, grads, state, lr=0.01)
    assert state["t"] == 1
    for k in params:
        np.testing.assert_allclose(params[k], expected[k])


# ---------------------------------------------------------------- initialisation and helpers


@pytest.mark.parametrize("fan_in, fan_out", [(784, 128), (256, 256), (1000, 10)])
def test_glorot_uniform_has_the_variance_and_limit_of_keras_glorot_uniform(fan_in, fan_out):
    variance, limit = 2 / (fan_in + fan_out), np.sqrt(6 / (fan_in + fan_out))
    ours = scratch.glorot_uniform(fan_in, fan_out, np.random.default_rng(0))
    theirs = keras.ops.convert_to_numpy(keras.initializers.GlorotUniform(seed=0)((fan_in, fan_out)))
    assert ours.shape == theirs.shape == (fan_in, fan_out) and ours.dtype == np.float32
    for weights in (ours, theirs):
        assert weights.var() == pytest.approx(variance, rel=0.05)
        assert limit * 0.98 < np.abs(weights).max() <= limit
        assert abs(weights.mean()) < 0.05 * limit


def test_glorot_uniform_rejects_empty_layers():
    with pytest.raises(ValueError, match="fan_in and fan_out must be positive, got 0 and 3"):
        scratch.glorot_uniform(0, 3, np.random.default_rng(0))


def test_stack_statistics_separates_good_and_bad_initialisation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 64))
    small = scratch.stack_statistics(x, [rng.normal(0, 0.01, (64, 64)) for _ in range(10)])
    glorot = scratch.stack_statistics(x, [scratch.glorot_uniform(64, 64, rng, np.float64) for _ in range(10)])
    large = scratch.stack_statistics(x, [rng.normal(0, 1, (64, 64)) for _ in range(10)])
    assert len(small["std"]) == len(small["saturated"]) == 10
    assert small["std"][-1] < 1e-6 < 0.05 < glorot["std"][-1]
    assert large["saturated"][-1] > 0.5 > 0.01 > glorot["saturated"][-1]
    with pytest.raises(ValueError, match="activation must be one of tanh, relu, linear, got 'gelu'"):
        scratch.stack_statistics(x, [], activation="gelu")


def test_minibatch_order_visits_every_example_once():
    batches = scratch.minibatch_order(10, 4, np.random.default_rng(0))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(np.concatenate(batches).tolist()) == list(range(10))
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        scratch.minibatch_order(10, 0, np.random.default_rng(0))


def test_accuracy_counts_argmax_hits():
    logits = np.array([[2.0, 1.0], [0.0, 3.0], [5.0, -1.0]])
    assert scratch.accuracy(logits, [0, 1, 1]) == pytest.approx(2 / 3)


def test_agreement_passes_rounding_and_fails_real_differences():
    reference = np.array([1.0, -2.0, 0.0])
    assert scratch.agreement(reference * (1 + 1e-9), reference)["passed"]
    failed = scratch.agreement(reference + np.array([0.0, 1e-3, 0.0]), reference)
    assert not failed["passed"] and failed["max_abs_diff"] == pytest.approx(1e-3)
    ref32 = reference.astype(np.float32)
    assert scratch.agreement(ref32 + np.float32(5e-6), ref32)["passed"]  # inside float32's atol 1e-5
    assert not scratch.agreement(ref32 + np.float32(1e-3), ref32)["passed"]
    with pytest.raises(ValueError, match=r"same shape, got \(2,\) and \(3,\)"):
        scratch.agreement(np.ones(2), reference)
