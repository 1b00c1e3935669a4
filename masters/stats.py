"""Confidence intervals for the ablation: the mean of a few seeds with its 95% Student-t
interval, and paired differences (the same seed in two arms)."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

# two-sided 95% quantiles of Student's t, t_{0.975, df}, df = 1..30 (standard tables)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)
_Z975 = 1.959964


def t975(df: int) -> float:
    """t_{0.975, df}; beyond the table, the Cornish-Fisher expansion around the normal quantile
    (error < 1e-3 for df > 30)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


@dataclass(frozen=True)
class Interval:
    mean: float
    half_width: float | None  # None with a single value
    n: int

    @property
    def low(self) -> float | None:
        return None if self.half_width is None else self.mean - self.half_width

    @property
    def high(self) -> float | None:
        return None if self.half_width is None else self.mean + self.half_width


def mean_ci(values: list[float]) -> Interval:
    """Mean and 95% t-interval half-width (None for one value)."""
    if not values:
        raise ValueError("no values")
    if len(values) == 1:
        return Interval(values[0], None, 1)
    n = len(values)
    return Interval(statistics.mean(values), t975(n - 1) * statistics.stdev(values) / math.sqrt(n), n)


def paired_difference(a: dict[int, float], b: dict[int, float]) -> Interval:
    """Mean of a[seed] - b[seed] over the seeds both have, with its 95% interval. ``b`` with a
    single value (a deterministic arm such as the untrained student) pairs with every seed."""
    if len(b) == 1:
        (only,) = b.values()
        b = {s: only for s in a}
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError("the two arms share no seed")
    return mean_ci([a[s] - b[s] for s in seeds])


def verdict(diff: Interval) -> str:
    """Whether "first > second" holds at 95%: holds, reversed, or not resolved."""
    if diff.half_width is None:
        return "one seed: no interval"
    if diff.low > 0:
        return "holds"
    if diff.high < 0:
        return "reversed"
    return "not resolved (interval contains 0)"
