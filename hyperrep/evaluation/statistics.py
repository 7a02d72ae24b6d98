"""The statistics every comparison reports: bootstrap CIs of a mean (BCa, as the paper), the
two-sided Mann-Whitney U test and its floor for complete separation, and Holm's correction; the
bootstrap CI of a difference of two means (independent samples)."""

from __future__ import annotations

import numpy as np


def bootstrap_ci(values: np.ndarray, resamples: int, seed: int = 42) -> tuple[float, float]:
    """95 % bootstrap CI of the mean (scipy, BCa), as the paper's statistics (random_state 42)."""
    from scipy.stats import bootstrap

    values = values[np.isfinite(values)]
    if len(values) < 2 or np.ptp(values) == 0:
        mean = float(values.mean()) if len(values) else float("nan")
        return mean, mean
    result = bootstrap((values,), np.mean, n_resamples=resamples, confidence_level=0.95, random_state=seed)
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def bootstrap_difference_ci(values: np.ndarray, baseline: np.ndarray, resamples: int,
                            seed: int = 42) -> tuple[float, float]:
    """Percentile 95 % CI of mean(values) - mean(baseline), resampling each sample on its own
    (independent members, finite values only); NaN when either has no finite value."""
    a, b = values[np.isfinite(values)], baseline[np.isfinite(baseline)]
    if len(a) == 0 or len(b) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means_a = a[rng.integers(0, len(a), size=(resamples, len(a)))].mean(axis=1)
    means_b = b[rng.integers(0, len(b), size=(resamples, len(b)))].mean(axis=1)
    low, high = np.percentile(means_a - means_b, [2.5, 97.5])
    return float(low), float(high)


def mann_whitney_p(values: np.ndarray, baseline: np.ndarray) -> float:
    """Two-sided Mann-Whitney U p-value of two samples (finite values only)."""
    from scipy.stats import mannwhitneyu

    a, b = values[np.isfinite(values)], baseline[np.isfinite(baseline)]
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    return float(mannwhitneyu(a, b, alternative="two-sided").pvalue)


def mann_whitney_floor(n_a: int, n_b: int) -> float:
    """The smallest p `mann_whitney_p` gives for samples of these sizes: complete separation."""
    if n_a == 0 or n_b == 0:
        return float("nan")
    return mann_whitney_p(np.arange(n_a, dtype=float), np.arange(n_a, n_a + n_b, dtype=float))


def holm(pvalues: np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (NaN entries are left out of the family and stay NaN)."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    index = np.flatnonzero(np.isfinite(p))
    order = index[np.argsort(p[index], kind="stable")]
    m = len(order)
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out[order] = adjusted
    return out
