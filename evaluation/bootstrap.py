"""Paired bootstrap over users for the difference of two models on one metric.

Both models are scored on the same users, so the per-user differences are resampled
(users drawn with replacement) and the percentile interval of their mean is reported:
when the 95% interval excludes 0, the gain is not an accident of which users were drawn.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

N_RESAMPLES = 2000


@dataclass(frozen=True)
class PairedDiff:
    model: str
    baseline: str
    metric: str
    mean_model: float
    mean_baseline: float
    diff: float  # mean_model - mean_baseline
    low: float  # percentile interval of diff
    high: float
    share_not_better: float  # share of resamples with diff <= 0 (a one-sided bootstrap p-value)
    confidence: float
    n_users: int

    @property
    def significant(self) -> bool:
        """The interval excludes zero."""
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "significant": self.significant}


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, n_resamples: int = N_RESAMPLES, confidence: float = 0.95, seed: int = 0,
) -> tuple[float, float, float, float]:
    """(mean(a - b), low, high, share of resampled means <= 0) for per-user values a, b of equal length."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"need two equal-length, non-empty 1-d arrays, got shapes {a.shape} and {b.shape}")
    d = a - b
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    chunk = max(1, 2_000_000 // len(d))  # bounded memory for many users
    for start in range(0, n_resamples, chunk):
        n = min(chunk, n_resamples - start)
        means[start : start + n] = d[rng.integers(0, len(d), size=(n, len(d)))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(d.mean()), float(low), float(high), float((means <= 0).mean())


def compare(
    model: str, a: np.ndarray, baseline: str, b: np.ndarray, metric: str,
    n_resamples: int = N_RESAMPLES, confidence: float = 0.95, seed: int = 0,
) -> PairedDiff:
    diff, low, high, share = paired_bootstrap(a, b, n_resamples, confidence, seed)
    return PairedDiff(model=model, baseline=baseline, metric=metric, mean_model=float(np.mean(a)),
                      mean_baseline=float(np.mean(b)), diff=diff, low=low, high=high,
                      share_not_better=share, confidence=confidence, n_users=len(a))
