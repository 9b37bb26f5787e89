"""Uncertainty of a comparison: the 95 % confidence interval of a paired difference over seeds.

Two methods run with the same seeds (same data order, same initial draw where the networks match) are
compared seed by seed: ``d_s = a_s − b_s``, and the interval is Student's t interval of the mean of the
``d_s``, ``mean ± t_{0.975, n−1} · sd / √n``. Pairing removes the part of the seed-to-seed spread both
runs share, which an unpaired interval would count twice. With one seed there is no interval.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Mapping, Sequence

#: two-sided 95 % quantiles of Student's t, t_{0.975, df}, for df = 1..30 (beyond, the normal 1.960)
T_975 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)


def t_quantile(df: int) -> float:
    return T_975[df - 1] if df <= len(T_975) else 1.960


@dataclass
class Difference:
    """The mean paired difference and its 95 % interval (``low``/``high`` None with fewer than 2 pairs)."""

    mean: float
    low: float | None
    high: float | None
    pairs: int

    @property
    def excludes_zero(self) -> bool:
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)

    def format(self, digits: int = 3) -> str:
        if self.low is None:
            return f"{self.mean:+.{digits}f} (1 seed)"
        mark = " *" if self.excludes_zero else ""
        return f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]{mark}"


def paired_difference(a: Mapping[int, float], b: Mapping[int, float]) -> Difference | None:
    """``a − b`` over the seeds both have (None when they share none)."""
    seeds = sorted(set(a) & set(b))
    differences = [a[s] - b[s] for s in seeds if _finite(a[s]) and _finite(b[s])]
    if not differences:
        return None
    mean = statistics.fmean(differences)
    if len(differences) < 2:
        return Difference(mean, None, None, 1)
    half = t_quantile(len(differences) - 1) * statistics.stdev(differences) / math.sqrt(len(differences))
    return Difference(mean, mean - half, mean + half, len(differences))


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def by_seed(rows: Sequence[Mapping], key: str) -> dict[int, float]:
    """``{seed: row[key]}`` for rows that have the value."""
    return {int(r["seed"]): r[key] for r in rows if r.get(key) is not None}
