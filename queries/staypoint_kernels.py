"""The stay-point rule's sequential walk, compiled (numba): per device, an anchor ping and a forward scan to the first
ping farther than the radius (see ``queries.staypoints``). Compiled on first use and cached beside this file; ``nogil``
so blocks of devices run on threads.

numba caches the compiled code beside this file and pickles this module's import name into it; the cache is
rebuilt when this file changes, so the name (citylake.queries.staypoint_kernels) is written here to make a rename touch the file.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from citylake.h3_index.distance import EARTH_RADIUS_M


@numba.njit(nogil=True, cache=True, inline="always")
def _metres(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine, term for term as ``h3_index.distance.haversine_m``."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(min(max(a, 0.0), 1.0)))


@numba.njit(nogil=True, cache=True)
def stay_ranges(bounds: np.ndarray, ts: np.ndarray, lat: np.ndarray, lon: np.ndarray, radius_m: float,
                min_dwell_us: float) -> tuple[np.ndarray, np.ndarray]:
    """[start, stop) ranges of the stay points of the devices whose time-ordered pings run from ``bounds[d]`` to
    ``bounds[d + 1]``."""
    starts = np.empty(max(ts.size // 2, 1), np.int64)
    stops = np.empty_like(starts)  # a stay holds two pings at least: there are at most half as many stays as pings
    found = 0
    for d in range(bounds.size - 1):
        i, end = bounds[d], bounds[d + 1]
        while i < end - 1:
            j = i + 1
            while j < end and _metres(lat[i], lon[i], lat[j], lon[j]) <= radius_m:
                j += 1
            if ts[j - 1] - ts[i] >= min_dwell_us:
                starts[found], stops[found] = i, j
                found += 1
                i = j
            else:
                i += 1
    return starts[:found], stops[:found]
