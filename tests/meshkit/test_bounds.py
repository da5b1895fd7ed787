"""meshkit.bounds gives what numpy's axis-0 min and max give, column by column."""

from __future__ import annotations

import numpy as np
import pytest

from meshkit import bounds


@pytest.mark.parametrize("shape", [(1, 3), (17_000, 3), (5, 2), (1000, 4)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bounds_match_numpys_axis_zero_reduction(shape: tuple[int, int], dtype: type) -> None:
    points = (np.random.default_rng(7).standard_normal(shape) * 100).astype(dtype)
    lo, hi = bounds(points)
    assert lo.dtype == hi.dtype == points.dtype
    np.testing.assert_array_equal(lo, points.min(axis=0))
    np.testing.assert_array_equal(hi, points.max(axis=0))


def test_bounds_of_a_strided_view_and_of_infinities() -> None:
    points = np.arange(60, dtype=np.float32).reshape(10, 6)[:, ::2]  # not contiguous
    points[3, 1] = -np.inf
    lo, hi = bounds(points)
    assert lo.tolist() == [0.0, -np.inf, 4.0] and hi.tolist() == [54.0, 56.0, 58.0]


def test_bounds_of_nothing_fail_as_numpy_does() -> None:
    with pytest.raises(ValueError):
        bounds(np.zeros((0, 3), np.float32))
