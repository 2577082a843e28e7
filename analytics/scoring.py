"""How unusual a count of people is, and what a detection is called and how bad it is: one vocabulary and one score for
the batch detector (``analytics.detect``) and the live watcher (``analytics.watch``).

Counts of devices are counts: a place that usually holds 4 devices in an hour holds 8 by chance far more often than one
that usually holds 400 holds 800. The score is

    z = (observed − usual) / √(usual · (1 + 1.57 / n) + extra² + 1)

where ``usual`` is the seasonal baseline, ``usual`` its Poisson variance, ``1.57 / n`` the error of a median learned from
``n`` days (a median's variance is π/2 times a mean's), ``extra`` the spread beyond Poisson the history itself shows (days
differ more than coin flips), and 1 keeps an empty usual from making any single device infinitely unusual. The watcher,
whose spread is the MAD of its own history, passes no ``n``.

A crowd surge is raised only when it is large as well as unlikely: at least k devices (nothing smaller is shown to
anyone), at least ``SURGE_RATIO`` times the usual, and ``SURGE_Z`` deviations above it. Its severity is a band of the
ratio (over 2x, 3x, 5x), told only where the usual is itself at least k (a ratio to a usual of 1 is the count).
"""

from __future__ import annotations

import polars as pl

# the kinds every detection and alert is one of
SURGE, FAULT, DROP, READINGS = "crowd surge", "sensor fault", "traffic drop", "unusual readings"
KINDS = (SURGE, FAULT, DROP, READINGS)
SEVERITIES = ("low", "medium", "high", "check sensor")  # high: a planner should act on it; check sensor: a fault
SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2}

SURGE_Z = 4.0  # count-aware deviations above the usual a surge needs
SURGE_RATIO = 2.0  # …and this many times the usual: an hour 30% busier than usual is no event, however sure
HIGH_Z = 8.0  # a surge rated high is also this sure: at 4 deviations one place-hour in ~30,000 is flagged by chance
MEDIAN_ERROR = 1.57  # π/2: the variance of a median of n draws over that of one draw, times n
SURGE_BANDS = ((5.0, "high", "over 5x"), (3.0, "medium", "over 3x"), (0.0, "low", "over 2x"))  # of the usual, when it is >= k


def count_z(observed: str | pl.Expr = "devices", usual: str | pl.Expr = "usual", extra: str | pl.Expr = "extra",
            days: str | pl.Expr | None = None) -> pl.Expr:
    """Count-aware deviations of ``observed`` from ``usual`` (see the module's formula); ``days``: how many days the usual
    was learned from (none: no term for its error)."""
    observed, usual, extra = (pl.col(c) if isinstance(c, str) else c for c in (observed, usual, extra))
    poisson = usual if days is None else usual * (1.0 + MEDIAN_ERROR / (pl.col(days) if isinstance(days, str) else days))
    return (observed - usual) / (poisson + extra ** 2 + 1.0).sqrt()


def is_surge(k: int, observed: str = "devices", usual: str = "usual", z: str = "z") -> pl.Expr:
    """Large as well as unlikely: at least k devices more than usual (a crowd a planner could be told of), ``SURGE_RATIO``
    times the usual, ``SURGE_Z`` deviations above it."""
    return ((pl.col(observed) - pl.col(usual) >= k) & (pl.col(observed) >= SURGE_RATIO * pl.col(usual).clip(1.0))
            & (pl.col(z) >= SURGE_Z))


def surge_judgement(*, ratio: float, z: float, usual: float, k: int, counted: str, when: str,
                    observed: float | None = None) -> tuple[str, str]:
    """Severity and evidence of a surge: how far above the usual in coarse bands, and only where the usual is itself at least
    k devices; high only when it is also ``HIGH_Z`` sure. Where the usual is under k there is no band: medium, or high
    when the crowd (``observed``) is at least 5k, said as "at least 5k". ``counted``: what was counted ("devices in 15
    minutes"); ``when``: the usual's slot ("weekday 14:00 Asia/Shanghai")."""
    if usual < k:
        if observed is not None and observed >= 5 * k and z >= HIGH_Z:
            return "high", f"at least {5 * k} {counted} where there are usually fewer than {k} at {when}"
        return "medium", f"at least {k} {counted} where there are usually fewer than {k} at {when}"
    severity, words = next((severity, words) for floor, severity, words in SURGE_BANDS if ratio >= floor)
    if severity == "high" and z < HIGH_Z:
        severity = "medium"
    return severity, f"{counted} {words} the usual for {when} (at least {k})"


def drop_severity(ratio: float) -> str:
    """A traffic counter under a quarter of its usual is high: traffic has all but stopped."""
    return "high" if ratio < 0.25 else "medium"
