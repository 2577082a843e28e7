"""Calibrated noise for releases, through OpenDP's measurements: Laplace for pure epsilon-DP, Gaussian (zero-concentrated
DP, converted to (epsilon, delta)) when a delta is allowed. A release's counts are bounded first (each device adds at
most a known amount: its ``l1`` and ``l2`` sensitivities); the noise is calibrated to those bounds, and OpenDP's own
privacy map says what the release spends."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from citylake.privacy.errors import BadPolicy


@dataclass(frozen=True)
class Noise:
    mechanism: str  # laplace or gaussian
    scale: float
    epsilon: float  # what OpenDP's privacy map says one release with this noise spends
    delta: float
    l1: float
    l2: float
    discrete: bool = True  # noise on whole numbers; a Gaussian whose L2 bound is not whole runs on floats instead

    @property
    def deviation(self) -> float:
        """The noise's standard deviation (a Laplace scale b has sqrt(2)·b)."""
        return self.scale * (math.sqrt(2) if self.mechanism == "laplace" else 1.0)

    def add(self, counts: np.ndarray, /) -> np.ndarray:
        """``counts`` (whole numbers, one per public partition) with OpenDP's noise added, as whole numbers."""
        if counts.size == 0:
            return counts.astype(np.int64)
        if self.discrete:
            return _whole_noise(self.mechanism, self.scale, counts)
        return np.rint(np.asarray(self._measurement()(counts.astype(np.float64).tolist()))).astype(np.int64)  # rounding spends nothing

    def _measurement(self):
        # discrete Laplace / Gaussian on whole numbers: exact samplers, 3-4x faster than on floats; but OpenDP's integer L2
        # distance is a whole number, and rounding sqrt(5) up to 3 would add a third more noise than a bound of 5 needs
        return _mechanism(self.mechanism, self.scale, discrete=self.discrete)


def laplace_noise(counts: np.ndarray, scale: float, /) -> np.ndarray:
    """``counts`` (whole numbers) with OpenDP's discrete Laplace noise of ``scale`` added to each."""
    return counts.astype(np.int64) if counts.size == 0 else _whole_noise("laplace", scale, counts)


def _whole_noise(name: str, scale: float, counts: np.ndarray) -> np.ndarray:
    return np.asarray(_mechanism(name, scale)(counts.astype(np.int64).tolist()), dtype=np.int64)


def calibrate(*, epsilon: float, delta: float, l1: float, l2: float) -> Noise:
    """The noise that spends at most ``epsilon`` (and ``delta``) on counts a device changes by at most ``l1`` (sum of
    absolute changes) and ``l2`` (root of summed squares)."""
    if not (math.isfinite(epsilon) and 1e-6 <= epsilon <= 100):
        raise BadPolicy("epsilon", epsilon, "give a release an epsilon from 1e-6 to 100 (the lake's budget per day caps it)")
    if not (math.isfinite(delta) and 0 <= delta < 1e-3):
        raise BadPolicy("delta", delta, "give a delta of 0 (Laplace noise) or above 0 and below 1e-3")
    l1 = int(math.ceil(l1))  # counts change by whole numbers
    if delta == 0:
        scale = l1 / epsilon
        return Noise("laplace", scale, float(_mechanism("laplace", scale).map(l1)), 0.0, l1, l2)
    discrete = float(l2).is_integer()
    # zCDP: rho = l2² / (2 sigma²) is within (rho + 2 sqrt(rho ln(1/delta)), delta)-DP; OpenDP's conversion is tighter, so
    # start from that sigma and narrow it while OpenDP still says the release spends at most epsilon
    log_term = math.log(1 / delta)
    rho = (math.sqrt(log_term + epsilon) - math.sqrt(log_term)) ** 2
    wide = l2 / math.sqrt(2 * rho)
    spent = lambda scale: _gaussian_epsilon(scale, l2, delta, discrete)  # noqa: E731
    narrow = wide / 4
    for _ in range(40):  # bisection: spent() falls as the scale grows
        middle = (narrow + wide) / 2
        narrow, wide = (narrow, middle) if spent(middle) <= epsilon else (middle, wide)
    return Noise("gaussian", wide, spent(wide), delta, l1, l2, discrete)


def dp_quantile(values: np.ndarray, /, *, candidates: list[int], alpha: float, epsilon: float) -> int:
    """The candidate nearest the ``alpha`` quantile of ``values`` (one per device), chosen with OpenDP's noisy max over
    quantile scores, spending ``epsilon`` (a device changes one value)."""
    dp = _opendp()
    score = dp.t.make_quantile_score_candidates(dp.vector_domain(dp.atom_domain(T=int)), dp.symmetric_distance(), candidates=candidates,
                                                alpha=alpha)
    choose = lambda scale: score >> dp.m.then_noisy_max(dp.max_divergence(), scale=scale, negate=True)  # noqa: E731
    measurement = choose(dp.binary_search_param(choose, d_in=1, d_out=epsilon))
    return candidates[measurement(np.asarray(values, dtype=np.int64).tolist())]


def _gaussian_epsilon(scale: float, l2: float, delta: float, discrete: bool) -> float:
    measurement = _mechanism("gaussian", scale, discrete=discrete)
    return float(_opendp().c.make_zCDP_to_approxDP(measurement).map(int(l2) if discrete else float(l2)).epsilon(delta))


def _mechanism(name: str, scale: float, *, discrete: bool = True):
    dp = _opendp()
    kind = int if discrete else float
    space = dp.vector_domain(dp.atom_domain(T=int) if discrete else dp.atom_domain(T=float, nan=False))
    metric = dp.l1_distance(T=kind) if name == "laplace" else dp.l2_distance(T=kind)
    return (dp.m.make_laplace if name == "laplace" else dp.m.make_gaussian)(space, metric, scale=scale)


def _opendp():
    import opendp.prelude as dp

    dp.enable_features("contrib")
    return dp
