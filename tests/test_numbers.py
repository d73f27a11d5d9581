"""lmbuild/numbers.py: the one reading of a figure as a number."""

import math

import pytest

from lmbuild.numbers import finite


@pytest.mark.parametrize("value, expected", [(3, 3.0), (0, 0.0), (-2.5, -2.5), (1e300, 1e300)])
def test_finite_numbers_are_floats(value, expected):
    got = finite(value)
    assert got == expected and type(got) is float


@pytest.mark.parametrize("value", [True, False, "N/A", "0.5", None, math.nan, math.inf, -math.inf, [1.0], {"x": 1}])
def test_everything_else_is_none(value):
    # A bool is an int to Python, but never a figure; a zero is a figure (not "missing").
    assert finite(value) is None
