"""The paired confidence interval against a hand computation."""

import pytest

from erlmr.analysis.stats import paired_difference


def test_paired_interval_matches_a_hand_computation():
    # differences 0.02, 0.04, 0.06: mean 0.04, sd 0.02, t(0.975, 2) = 4.303 -> half width 4.303·0.02/√3 = 0.049687
    d = paired_difference({0: 0.92, 1: 0.94, 2: 0.96}, {0: 0.90, 1: 0.90, 2: 0.90})
    assert d.mean == pytest.approx(0.04) and d.pairs == 3
    assert (d.low, d.high) == pytest.approx((0.04 - 0.049687, 0.04 + 0.049687), abs=1e-6)
    assert not d.excludes_zero and "*" not in d.format()


def test_a_consistent_gain_excludes_zero_and_is_marked():
    d = paired_difference({s: 0.9 + 0.001 * s for s in range(5)}, {s: 0.8 + 0.001 * s for s in range(5)})
    assert d.low == pytest.approx(0.1) and d.excludes_zero and d.format().endswith("*")


def test_pairs_are_seeds_both_runs_have():
    d = paired_difference({0: 0.5, 1: 0.7, 7: 0.1}, {0: 0.4, 1: 0.5})
    assert d.pairs == 2 and d.mean == pytest.approx(0.15)
    assert paired_difference({0: 0.5}, {1: 0.5}) is None
    assert paired_difference({0: 0.5}, {0: 0.4}).format() == "+0.100 (1 seed)"
