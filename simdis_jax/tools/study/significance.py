"""Is a difference between two presets beyond seed noise? Mean ± std over seeds, Welch's and the paired t-test."""

import math
from typing import Dict, List, Sequence, Tuple

import scipy.stats


def mean_std(values: Sequence[float]) -> Tuple[float, float, int]:
  """Mean, sample standard deviation (ddof=1; 0 for one value) and count of the finite values."""
  xs = [v for v in values if v is not None and math.isfinite(v)]
  if not xs:
    return float("nan"), float("nan"), 0
  m = sum(xs) / len(xs)
  s = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
  return m, s, len(xs)


def difference(a, b) -> Tuple[float, float, float]:
  """Mean of b minus mean of a, the standard error of that difference, and Welch's two-sided p-value.

  The standard error and the test use the seeds' sample spread (Welch: unequal variances, the
  Welch-Satterthwaite degrees of freedom). The p-value is nan where either side has fewer than 2 seeds.
  """
  (ma, sa, na), (mb, sb, nb) = a, b
  va, vb = (sa**2 / na if na else 0.0), (sb**2 / nb if nb else 0.0)
  d, se = mb - ma, math.sqrt(va + vb)
  if na < 2 or nb < 2:
    return d, se, float("nan")
  if se == 0.0:
    return d, se, (1.0 if d == 0.0 else 0.0)
  return d, se, float(scipy.stats.ttest_ind_from_stats(mb, sb, nb, ma, sa, na, equal_var=False).pvalue)


def common_seeds(runs_a: Dict[int, dict], runs_b: Dict[int, dict], metric: str) -> List[int]:
  """The seeds (ascending) where both presets have a finite `metric`."""
  return [
    k
    for k in sorted(set(runs_a) & set(runs_b))
    if math.isfinite(runs_a[k].get(metric, math.nan)) and math.isfinite(runs_b[k].get(metric, math.nan))
  ]


def paired_difference(runs_a: Dict[int, dict], runs_b: Dict[int, dict], metric: str) -> Tuple[float, float, float, int]:
  """b minus a over the seeds both finished (same seed: same initial student and data order): mean, s.e., p, n.

  A paired two-sided t-test on the per-seed differences; the p-value is nan below 2 common seeds.
  """
  seeds = common_seeds(runs_a, runs_b, metric)
  a, b = [runs_a[k][metric] for k in seeds], [runs_b[k][metric] for k in seeds]
  diffs = [y - x for x, y in zip(a, b)]
  n = len(diffs)
  if n < 2:
    return (diffs[0] if diffs else math.nan), math.nan, math.nan, n
  mean = sum(diffs) / n
  se = math.sqrt(sum((x - mean) ** 2 for x in diffs) / (n - 1) / n)
  if se == 0.0:
    return mean, se, (1.0 if mean == 0.0 else 0.0), n
  return mean, se, float(scipy.stats.ttest_rel(b, a).pvalue), n


def mean_interval(values: Sequence[float], level: float = 0.95) -> Dict[str, float]:
  """Mean of `values` and its t-interval at `level` (mean ± t_{n-1} · s/√n); nan bounds below two values."""
  n = len(values)
  out = {"n": n, "mean": sum(values) / n if n else math.nan, "low": math.nan, "high": math.nan, "sd": math.nan}
  if n < 2:
    return out
  out["sd"] = math.sqrt(sum((v - out["mean"]) ** 2 for v in values) / (n - 1))
  half = float(scipy.stats.t.ppf(0.5 + level / 2, n - 1)) * out["sd"] / math.sqrt(n)
  out["low"], out["high"] = out["mean"] - half, out["mean"] + half
  return out


def paired_interval(a: Dict[int, float], b: Dict[int, float], level: float = 0.95) -> Dict[str, float]:
  """b minus a over the seeds both have (finite values): mean, the t-interval at `level`, signs, the paired p.

  The interval is mean ± t_{n-1} · s/√n of the per-seed differences; below 2 seeds it and p are nan.
  """
  seeds = [k for k in sorted(set(a) & set(b)) if math.isfinite(a[k]) and math.isfinite(b[k])]
  diffs = [b[k] - a[k] for k in seeds]
  out = {
    **mean_interval(diffs, level),
    "p": math.nan,
    "positive": sum(d > 0 for d in diffs),
    "negative": sum(d < 0 for d in diffs),
  }
  if out["n"] >= 2:
    out["p"] = (
      (1.0 if out["mean"] == 0.0 else 0.0) if out["sd"] == 0.0 else float(scipy.stats.ttest_1samp(diffs, 0.0).pvalue)
    )
  return out


def holm(pvalues: Sequence[float]) -> List[float]:
  """Holm's step-down adjusted p-values for a family (nan stays nan and does not count in the family's size)."""
  finite = sorted((p, i) for i, p in enumerate(pvalues) if math.isfinite(p))
  adjusted = [math.nan] * len(pvalues)
  running = 0.0
  for rank, (p, i) in enumerate(finite):
    running = max(running, min(1.0, (len(finite) - rank) * p))
    adjusted[i] = running
  return adjusted
