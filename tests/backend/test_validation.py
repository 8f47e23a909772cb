"""One idea of "an integer" and "a number" for the whole package, and errors that name the parameter, the value
given and what is accepted."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bigmodel_utils import validation
from bigmodel_utils.cnn import models, training
from bigmodel_utils.data import image_data


@pytest.mark.parametrize("value", [3, np.int64(3), np.int32(3), np.uint8(3)])
def test_integers_of_any_kind_are_accepted_and_come_back_as_int(value):
    result = validation.check_int("n", value, minimum=1)
    assert result == 3 and type(result) is int


@pytest.mark.parametrize("value", [True, 3.0, np.float64(3.0), "3", None, [3]])
def test_bools_floats_and_strings_are_not_integers(value):
    with pytest.raises(ValueError, match=r"^n must be a positive integer, got "):
        validation.check_int("n", value, minimum=1)


@pytest.mark.parametrize("minimum, maximum, value, message", [
    (1, None, 0, "n must be a positive integer, got 0"),
    (0, None, -1, "n must be a non-negative integer, got -1"),
    (2, None, 1, "n must be an integer of at least 2, got 1"),
    (1, 64, 65, "n must be an integer from 1 to 64, got 65"),
    (None, 5, 6, "n must be an integer of at most 5, got 6"),
])
def test_integer_errors_say_what_is_accepted(minimum, maximum, value, message):
    with pytest.raises(ValueError) as error:
        validation.check_int("n", value, minimum=minimum, maximum=maximum)
    assert str(error.value) == message
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, True, "1.0", None])
def test_nan_infinity_bool_and_strings_are_not_numbers(value):
    assert not validation.is_number(value)
    with pytest.raises(ValueError, match="x must be a finite number"):
        validation.check_number("x", value)


def test_number_bounds_can_be_open_or_closed():
    assert validation.check_number("p", 0, minimum=0) == 0.0
    with pytest.raises(ValueError, match=r"p must be a finite number \(above 0 and at most 1\), got 0"):
        validation.check_number("p", 0, minimum=0, maximum=1, include_minimum=False)
    assert validation.check_number("p", np.float32(0.5), minimum=0, maximum=1) == 0.5


def test_choices_reject_true_even_where_1_is_allowed():
    assert validation.check_choice("channels", 3, (None, 1, 3)) == 3
    with pytest.raises(ValueError, match=r"channels must be one of None, 1, 3; got True"):
        validation.check_choice("channels", True, (None, 1, 3))


def test_the_package_uses_the_same_idea_of_an_integer_everywhere():
    """NumPy integers (what arithmetic on arrays gives) work wherever Python ints do; bools and floats never."""
    images, labels = np.zeros((8, 28, 28), np.uint8), np.zeros(8, np.int64)
    assert len(training.make_pipeline(images, labels, np.int64(4))) == 2
    assert models.build_improved_cnn(width=np.int64(4)).count_params() == models.build_improved_cnn(
        width=4).count_params()
    assert training.scaled_learning_rate(1e-3, np.int64(64)) == pytest.approx(2e-3)
    for call in (lambda: training.make_pipeline(images, labels, True),
                 lambda: models.build_improved_cnn(width=4.0),
                 lambda: image_data.prepare_images(images, image_size=32.0),
                 lambda: training.scaled_learning_rate(1e-3, True)):
        with pytest.raises(ValueError, match=r"must be (a positive integer|an integer from 1 to \d+), got "):
            call()
