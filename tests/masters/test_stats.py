"""The ablation's statistics: 95% t-intervals and paired differences, against values computed
by hand from the textbook formulas."""

import math

import pytest

from masters.stats import mean_ci, paired_difference, t975, verdict


def test_t_quantiles_match_the_tables_and_approach_the_normal():
    assert t975(1) == pytest.approx(12.706) and t975(4) == pytest.approx(2.776)
    assert t975(30) == pytest.approx(2.042)
    assert t975(40) == pytest.approx(2.021, abs=1e-3) and t975(120) == pytest.approx(1.980, abs=1e-3)
    assert t975(31) < t975(30)  # the expansion continues the table downwards
    with pytest.raises(ValueError):
        t975(0)


def test_mean_interval_of_five_seeds():
    xs = [0.30, 0.34, 0.28, 0.36, 0.32]
    ci = mean_ci(xs)
    sd = math.sqrt(sum((x - 0.32) ** 2 for x in xs) / 4)
    assert ci.mean == pytest.approx(0.32) and ci.n == 5
    assert ci.half_width == pytest.approx(2.776 * sd / math.sqrt(5))
    assert ci.low == pytest.approx(0.32 - ci.half_width) and ci.high == pytest.approx(0.32 + ci.half_width)
    one = mean_ci([0.4])
    assert one.half_width is None and one.low is None


def test_paired_difference_removes_the_seed_effect():
    # a beats b by 0.02 at every seed although the seeds spread far more than that
    a = {0: 0.30, 1: 0.50, 2: 0.40, 3: 0.20, 4: 0.60}
    b = {s: v - 0.02 for s, v in a.items()}
    d = paired_difference(a, b)
    assert d.mean == pytest.approx(0.02) and d.half_width == pytest.approx(0.0, abs=1e-12)
    assert verdict(d) == "holds"
    assert mean_ci(list(a.values())).half_width > 0.1  # unpaired, the same gap would not be resolved
    assert verdict(paired_difference(b, a)) == "reversed"
    noisy = paired_difference({0: 0.3, 1: 0.4, 2: 0.35}, {0: 0.32, 1: 0.36, 2: 0.36})
    assert verdict(noisy).startswith("not resolved")
    # a deterministic arm (one value) pairs with every seed of the other
    assert paired_difference(a, {0: 0.1}).mean == pytest.approx(0.4 - 0.1)
    with pytest.raises(ValueError):
        paired_difference({0: 0.1}, {1: 0.2, 2: 0.3})
