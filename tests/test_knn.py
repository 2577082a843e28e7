"""k nearest neighbours with the grid-disk search, against comparing every pair (haversine, no H3)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citylake.h3_index import latlng_to_cells
from citylake.h3_index.cells import grid_disk_flat
from citylake.h3_index.distance import EARTH_RADIUS_M, disk_clearance_m, haversine_m
from citylake.queries.knn import nearest


def brute_force(qlat, qlon, tlat, tlon, k):
    d = haversine_m(qlat[:, None], qlon[:, None], tlat[None, :], tlon[None, :])
    part = np.argpartition(d, k - 1, axis=1)[:, :k] if d.shape[1] > k else np.broadcast_to(np.arange(d.shape[1]), d.shape)
    order = np.take_along_axis(part, np.argsort(np.take_along_axis(d, part, 1), axis=1), 1)
    return order, np.take_along_axis(d, order, 1)


def check(qlat, qlon, tlat, tlon, k, **kw):
    got = nearest(qlat, qlon, tlat, tlon, k, **kw)
    kk = min(k, tlat.size)
    order, want = brute_force(qlat, qlon, tlat, tlon, kk)
    assert got.height == qlat.size * kk
    np.testing.assert_allclose(got["distance_m"].to_numpy().reshape(-1, kk), want, rtol=1e-9, atol=1e-6)
    targets = got["target"].to_numpy().reshape(-1, kk)
    # the targets found are at exactly the distances listed (ties may be listed in another order)
    np.testing.assert_allclose(haversine_m(np.repeat(qlat, kk), np.repeat(qlon, kk), tlat[targets.ravel()], tlon[targets.ravel()]),
                               want.ravel(), rtol=1e-9, atol=1e-6)


@pytest.mark.parametrize("targets", [1, 4, 60, 2_000, 10_000])
@pytest.mark.parametrize("k", [1, 5])
def test_city_scale_matches_every_pair(targets, k):
    rng = np.random.default_rng(targets + k)
    tlat, tlon = 60.10 + rng.random(targets) * 0.15, 24.80 + rng.random(targets) * 0.30
    qlat, qlon = 60.05 + rng.random(1_000) * 0.25, 24.70 + rng.random(1_000) * 0.50  # some queries outside the targets' area
    check(qlat, qlon, tlat, tlon, k)


def test_clustered_targets_and_far_queries():
    rng = np.random.default_rng(3)
    tlat = np.r_[48.85 + rng.normal(0, 0.001, 500), -33.9 + rng.normal(0, 0.01, 20)]
    tlon = np.r_[2.35 + rng.normal(0, 0.001, 500), 151.2 + rng.normal(0, 0.01, 20)]
    qlat, qlon = rng.uniform(-80, 80, 1_000), rng.uniform(-180, 180, 1_000)
    check(qlat, qlon, tlat, tlon, 7)


def test_duplicated_targets_and_queries_on_targets():
    tlat, tlon = np.array([10.0, 10.0, 10.001, 10.002]), np.array([20.0, 20.0, 20.0, 20.0])
    got = nearest(tlat, tlon, tlat, tlon, 2)
    assert got.filter(got["rank"] == 1)["distance_m"].max() == 0.0
    check(tlat, tlon, tlat, tlon, 2)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 300), st.integers(1, 8),
       st.sampled_from([(60.1, 24.9, 0.05), (0.0, 179.99, 0.05), (89.5, 0.0, 0.3), (-45.0, -70.0, 20.0)]))
def test_random_places_on_the_globe(seed, targets, k, area):
    """Hypothesis: the antimeridian, near the pole, wide areas, few and many targets."""
    lat0, lon0, spread = area
    rng = np.random.default_rng(seed)
    wrap = lambda lon: (lon + 180) % 360 - 180  # noqa: E731
    tlat = np.clip(lat0 + rng.uniform(-spread, spread, targets), -89.9, 89.9)
    tlon = wrap(lon0 + rng.uniform(-spread, spread, targets) * 2)
    qlat = np.clip(lat0 + rng.uniform(-spread, spread, 300) * 1.5, -89.9, 89.9)
    qlon = wrap(lon0 + rng.uniform(-spread, spread, 300) * 3)
    check(qlat, qlon, tlat, tlon, k)


def test_a_forced_fine_resolution_still_finds_far_neighbours():
    """Every query must expand many rings (or fall back to comparing all): the answer stays exact."""
    rng = np.random.default_rng(5)
    tlat, tlon = 60 + rng.random(50), 24 + rng.random(50)
    qlat, qlon = 60 + rng.random(300), 24 + rng.random(300)
    check(qlat, qlon, tlat, tlon, 3, res=12)


def test_disk_clearance_is_a_true_bound():
    """No point outside a cell's disk is nearer than the clearance: sample points around cells and check."""
    rng = np.random.default_rng(11)
    for res in (5, 9, 12):
        lat, lon = rng.uniform(-70, 70, 20), rng.uniform(-180, 180, 20)
        cells = latlng_to_cells(lat, lon, res)
        for d in (1, 2, 4):
            clearance = disk_clearance_m(cells, d)
            disk, owner = grid_disk_flat(cells, d)
            scale = np.degrees(clearance / EARTH_RADIUS_M)
            for i in range(cells.size):
                plat = lat[i] + rng.uniform(-3, 3, 4000) * scale[i]
                plon = lon[i] + rng.uniform(-3, 3, 4000) * scale[i] / np.cos(np.radians(lat[i]))
                outside = ~np.isin(latlng_to_cells(plat, plon, res), disk[owner == i])
                # distance from the original point (inside the cell) to every sampled point outside the disk
                assert (haversine_m(np.full(outside.sum(), lat[i]), np.full(outside.sum(), lon[i]), plat[outside], plon[outside])
                        >= clearance[i]).all()
