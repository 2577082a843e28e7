"""Stay points (R metres, T minutes) against a plain-Python reading of the rule, on both engines;
OD between H3 cells against h3's own parents; k-anonymity on every flow."""

from __future__ import annotations

import datetime as dt
import math

import h3
import polars as pl
import pytest

from citylake.ingestion.city import generate_city
from citylake.ingestion.location import ingest_pings
from citylake.lake import Lake, scan
from citylake.queries import ENGINES, BadFilter, od_cells, stay_points
from citylake.queries.staypoints import stay_points as detect

UTC = dt.timezone.utc


def metres(lat1, lon1, lat2, lon2):
    """Haversine in plain Python with H3's Earth radius (an implementation independent of numpy)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * 6_371_007.180918475 * math.asin(math.sqrt(a))


def oracle(pings: pl.DataFrame, radius_m: float, min_dwell_s: float) -> list[tuple]:
    """Li et al.'s rule, literally: one anchor at a time, one ping at a time."""
    found = []
    for (device,), rows in pings.sort("device_id", "ts", "lat", "lon").partition_by("device_id", as_dict=True, maintain_order=True).items():
        pts = rows.select("ts", "lat", "lon").rows()
        i = 0
        while i < len(pts) - 1:
            j = i + 1
            while j < len(pts) and metres(pts[i][1], pts[i][2], pts[j][1], pts[j][2]) <= radius_m:
                j += 1
            if (pts[j - 1][0] - pts[i][0]).total_seconds() >= min_dwell_s:
                found.append((device, pts[i][0], pts[j - 1][0], j - i))
                i = j
            else:
                i += 1
    return found


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("staypoints")
    generate_city(root / "city", devices=60, days=2, seed=4)
    lake = Lake.init(root / "lake")
    ingest_pings(lake, root / "city" / "pings.csv", key=b"k")
    return lake


@pytest.mark.parametrize("radius, minutes", [(200.0, 15), (50.0, 5), (1000.0, 60)])
def test_stay_points_follow_the_rule(lake, radius, minutes):
    pings = scan(lake, "pings").select("device_id", "ts", "lat", "lon").collect()
    got = detect(pings, radius_m=radius, min_dwell_s=minutes * 60)
    want = oracle(pings, radius, minutes * 60)
    assert len(want) > 50
    assert [(r["device_id"], r["start"], r["end"], r["pings"]) for r in got.iter_rows(named=True)] == want


def test_both_engines_find_the_same_stay_points(lake):
    results = [stay_points(lake, radius_m=200, min_dwell_s=900, res=9, engine_name=e) for e in ENGINES]
    assert results[0].height > 0 and results[0].equals(results[1])
    cells = [h3.str_to_int(h3.latlng_to_cell(lat, lon, 9)) for lat, lon in results[0].select("lat", "lon").rows()]
    assert results[0]["h3_cell"].to_list() == cells


def test_od_between_cells_uses_h3_parents_and_stays_k_anonymous(lake):
    points = stay_points(lake, radius_m=200, min_dwell_s=900)
    flows = pl.from_arrow(od_cells(points, res=7, freq="1d", k=1).table)
    # oracle: consecutive stay points of each device, their cells' parents by h3, different cells only
    trips = {}
    for (device,), rows in points.sort("device_id", "start").partition_by("device_id", as_dict=True, maintain_order=True).items():
        zones = [h3.str_to_int(h3.cell_to_parent(h3.int_to_str(c), 7)) for c in rows["h3_cell"]]
        for a, b, left in zip(zones, zones[1:], rows["end"]):
            if a != b:
                key = (a, b, left.replace(hour=0, minute=0, second=0, microsecond=0))
                trips.setdefault(key, []).append(device)
    want = sorted((a, b, day, len(d), len(set(d))) for (a, b, day), d in trips.items())
    assert sorted(flows.rows()) == want and len(want) > 10
    private = od_cells(points, res=7, freq="1d", k=3)
    assert pl.from_arrow(private.table)["devices"].min() >= 3
    assert private.suppressed == sum(1 for row in want if row[4] < 3)


def test_bad_parameters(lake):
    with pytest.raises(BadFilter, match="radius"):
        stay_points(lake, radius_m=0)
