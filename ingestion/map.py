"""Map feed: places (POIs, parks, districts, land use, buildings, roads) into ``places`` and
their H3 covers into ``place_cells``.

Reads GeoJSON, GeoParquet, Shapefiles (zipped too), GeoPackage, CSV with a WKT column or
lat/lon columns, and OpenStreetMap PBF extracts. Reprojects to EPSG:4326, repairs invalid
shapes (and says so), gives every place a stable id (source + source id, else a hash of the
geometry) and covers it with cells flagged interior or boundary.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import shapely

from citylake.h3_index import grid_disk, latlng_to_cells, polygon_to_cells
from citylake.h3_index.cells import cells_to_polygons
from citylake.h3_index.polygons import is_polygonal
from citylake.ingestion import validate as V
from citylake.ingestion.batch import BatchWriter, Chunk, IngestReport, fingerprint, run
from citylake.ingestion.errors import BadOption, UnreadableInput
from citylake.lake import Lake

ID_FIELDS = ("place_id", "id", "osm_id", "@id", "fid", "ID")
NAME_FIELDS = ("name", "NAME", "Name")
WKT_FIELDS = ("wkt", "WKT", "geometry", "geom", "the_geom")
LINE_STEP_DEG = 1e-4  # ~11 m: finer than any res<=11 cell, so a road's cells are all found
# OSM tags → category, most specific first (pyrosm keeps tags as columns).
OSM_CATEGORIES = (("leisure", {"park": "park", "garden": "park", "playground": "park"}), ("highway", None),
                  ("building", None), ("landuse", None), ("amenity", None), ("shop", None), ("tourism", None))


def read_places(
    path: str | Path, /, *, category: str | None = None, name_field: str | None = None, id_field: str | None = None,
    crs: str | None = None, source: str | None = None,
) -> tuple[gpd.GeoDataFrame, list[str]]:
    """Places of a map file in EPSG:4326 with place_id, name, category, attributes; and notes on repairs."""
    path = Path(path)
    frame = _read(path)
    notes: list[str] = []
    frame = _to_wgs84(frame, crs, str(path), notes)
    frame = _repair(frame, notes)
    source = source or path.name.split(".")[0]
    frame["place_id"] = _place_ids(frame, source, id_field)
    frame["name"] = _names(frame, name_field)
    frame["category"] = category or _categories(frame)
    frame["source"] = source
    frame["attributes"] = _attributes(frame)
    return frame[["place_id", "name", "category", "source", "attributes", "geometry"]], notes


def ingest_places(
    lake: Lake, path: str | Path, /, *, category: str | None = None, name_field: str | None = None, id_field: str | None = None,
    crs: str | None = None, progress: bool = False,
) -> IngestReport:
    """Add or replace places (by place_id) and their H3 covers."""
    path = Path(path)
    started = time.perf_counter()
    places, notes = read_places(path, category=category, name_field=name_field, id_field=id_field, crs=crs)
    chunk = _as_chunk(places, lake.cell_res)
    writer = BatchWriter(lake, "places", str(path), fingerprint(path), registry=True)
    report = run(writer, iter([chunk]), total_bytes=path.stat().st_size, progress=progress)
    good = pl.from_arrow(chunk.good)
    replace_covers(lake, good["place_id"].to_list(), cover(good, lake.cell_res))
    report.notes += notes
    report.seconds = time.perf_counter() - started
    return report


def _read(path: Path) -> gpd.GeoDataFrame:
    suffix = path.suffix.lower()
    if not path.is_file():
        raise UnreadableInput(str(path), "no such file")
    try:
        if suffix == ".pbf":
            return _read_osm(path)
        if suffix in (".parquet", ".geoparquet"):
            return gpd.read_parquet(path)
        if suffix in (".csv", ".tsv", ".txt"):
            return _read_csv(path)
        return gpd.read_file(f"zip://{path}" if suffix == ".zip" else path)
    except (UnreadableInput, BadOption):
        raise
    except Exception as err:  # GDAL, pyarrow and pyrosm each raise their own kinds
        raise UnreadableInput(str(path), f"cannot read it as map data ({str(err).splitlines()[0][:200]})") from None


def _read_csv(path: Path) -> gpd.GeoDataFrame:
    table = pd.read_csv(path, dtype=str, keep_default_na=False, sep=None, engine="python")
    wkt = next((c for c in WKT_FIELDS if c in table.columns), None)
    if wkt:
        geometry = shapely.from_wkt(table[wkt].replace("", None), on_invalid="ignore")
        return gpd.GeoDataFrame(table.drop(columns=[wkt]), geometry=geometry)
    lat = next((c for c in ("lat", "latitude", "y") if c in table.columns), None)
    lon = next((c for c in ("lon", "lng", "longitude", "x") if c in table.columns), None)
    if not (lat and lon):
        raise UnreadableInput(str(path), f"no geometry: give a WKT column ({', '.join(WKT_FIELDS)}) or lat and lon columns")
    y, x = pd.to_numeric(table[lat], errors="coerce"), pd.to_numeric(table[lon], errors="coerce")
    geometry = [shapely.Point(a, b) if np.isfinite(a) and np.isfinite(b) else None for a, b in zip(x, y)]
    return gpd.GeoDataFrame(table.drop(columns=[lat, lon]), geometry=geometry)


def _read_osm(path: Path) -> gpd.GeoDataFrame:
    import pyrosm  # only OSM extracts need it, and it is slow to import

    osm = pyrosm.OSM(str(path))
    layers = [osm.get_pois(), osm.get_landuse(), osm.get_buildings(), osm.get_network("driving"),
              osm.get_data_by_custom_criteria({"leisure": ["park", "garden", "playground"]}, filter_type="keep", keep_nodes=False)]
    frames = [f for f in layers if f is not None and len(f)]
    if not frames:
        raise UnreadableInput(str(path), "the extract holds no POIs, land use, buildings, roads or parks")
    merged = pd.concat(frames, ignore_index=True)
    merged["osm_id"] = merged["osm_type"].fillna("node").astype(str) + "/" + merged["id"].astype(str)
    merged = merged.drop_duplicates("osm_id")
    return gpd.GeoDataFrame(merged.drop(columns=["tags"], errors="ignore"), geometry="geometry", crs="EPSG:4326")


def _to_wgs84(frame: gpd.GeoDataFrame, crs: str | None, source: str, notes: list[str]) -> gpd.GeoDataFrame:
    if crs:
        try:
            frame = frame.set_crs(crs, allow_override=True)
        except Exception:
            raise BadOption("--crs", crs, "not a CRS pyproj knows; write it as EPSG:NNNN") from None
    if frame.crs is None:
        xmin, ymin, xmax, ymax = frame.total_bounds if len(frame) else (0, 0, 0, 0)
        if not (-180 <= xmin <= xmax <= 180 and -90 <= ymin <= ymax <= 90):
            raise UnreadableInput(source, "the file names no CRS and its coordinates are not degrees; pass --crs EPSG:NNNN")
        notes.append("no CRS in the file; coordinates look like degrees, read as EPSG:4326")
        return frame.set_crs("EPSG:4326")
    if frame.crs.to_epsg() != 4326:
        notes.append(f"reprojected from {frame.crs.to_string()} to EPSG:4326")
        frame = frame.to_crs("EPSG:4326")
    return frame


def _repair(frame: gpd.GeoDataFrame, notes: list[str]) -> gpd.GeoDataFrame:
    geometry = frame.geometry.values
    present = ~(shapely.is_missing(geometry) | shapely.is_empty(geometry))
    invalid = present & ~shapely.is_valid(geometry)
    if invalid.any():
        fixed = shapely.make_valid(geometry[invalid])
        polygonal = is_polygonal(geometry[invalid])
        fixed[polygonal] = [_polygonal_part(g) for g in fixed[polygonal]]
        geometry = geometry.copy()
        geometry[invalid] = fixed
        notes.append(f"repaired {int(invalid.sum())} invalid geometr{'y' if invalid.sum() == 1 else 'ies'} with make_valid")
    return frame.set_geometry(gpd.GeoSeries(geometry, index=frame.index, crs=frame.crs))


def _polygonal_part(geom):
    """make_valid can return a collection; a polygon stays a (multi)polygon, slivers of lines dropped."""
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    parts = [g for g in shapely.get_parts(geom) if g.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(parts) if parts else shapely.Polygon()


def _place_ids(frame: gpd.GeoDataFrame, source: str, id_field: str | None) -> list[str]:
    field = id_field or next((c for c in ID_FIELDS if c in frame.columns), None)
    if id_field and id_field not in frame.columns:
        raise BadOption("--id-field", id_field, f"no such column; columns are {', '.join(map(str, frame.columns))}")
    wkb = shapely.to_wkb(frame.geometry.values, hex=False)
    geometry_ids = [f"geom:{hashlib.sha256(w).hexdigest()[:16]}" if w is not None else None for w in wkb]
    if field is None:
        return geometry_ids
    ids = frame[field].astype(str).where(frame[field].notna() & (frame[field].astype(str) != ""))
    return [f"{source}:{i}" if isinstance(i, str) else g for i, g in zip(ids, geometry_ids)]


def _names(frame: gpd.GeoDataFrame, name_field: str | None) -> pd.Series:
    if name_field and name_field not in frame.columns:
        raise BadOption("--name-field", name_field, f"no such column; columns are {', '.join(map(str, frame.columns))}")
    field = name_field or next((c for c in NAME_FIELDS if c in frame.columns), None)
    return frame[field].astype("string").replace("", pd.NA) if field else pd.Series(pd.NA, index=frame.index, dtype="string")


def _categories(frame: gpd.GeoDataFrame) -> pd.Series:
    if "category" in frame.columns:
        return frame["category"].astype("string").fillna("place").replace("", "place")
    out = pd.Series(pd.NA, index=frame.index, dtype="string")
    for tag, mapping in OSM_CATEGORIES:
        if tag not in frame.columns:
            continue
        values = frame[tag].astype("string").replace("", pd.NA)
        if mapping:
            named = values.map(mapping)
        elif tag == "highway":
            named = values.where(values.isna(), "road")
        elif tag == "building":
            named = values.where(values.isna(), "building")
        else:
            named = (tag + ":" + values) if tag == "landuse" else ("poi:" + values)
        out = out.fillna(named.astype("string"))
    return out.fillna("place")


def _attributes(frame: gpd.GeoDataFrame) -> list[str | None]:
    own = {"place_id", "name", "category", "source", "attributes", frame.geometry.name}
    columns = [c for c in frame.columns if c not in own]
    records = frame[columns].astype(object).where(frame[columns].notna(), None).to_dict("records")
    return [json.dumps({k: str(v) for k, v in r.items() if v not in (None, "")}) or None for r in records]


def _as_chunk(places: gpd.GeoDataFrame, cell_res: int) -> Chunk:
    geometry = places.geometry.values
    missing = shapely.is_missing(geometry) | shapely.is_empty(geometry)
    bad = pl.DataFrame({
        V.POSITION: np.flatnonzero(missing) + 1,
        "raw": places.loc[missing, "place_id"].fillna("(no id)").astype(str).tolist(),
        "reason": ["geometry is missing, empty or could not be repaired"] * int(missing.sum()),
        "kind": ["geometry missing"] * int(missing.sum()),
    }, schema=V.BAD_SCHEMA)
    good = places.loc[~missing]
    shapes = good.geometry.values
    bounds = shapely.bounds(shapes)
    centroids = shapely.centroid(shapes)
    table = pa.table({
        "place_id": good["place_id"].tolist(),
        "name": pa.array(good["name"].astype(object).where(good["name"].notna(), None).tolist(), pa.string()),
        "category": good["category"].astype(str).tolist(), "geometry": shapely.to_wkb(shapes).tolist(),
        "bbox": [dict(zip(("xmin", "ymin", "xmax", "ymax"), b)) for b in bounds.tolist()],
        "h3_cell": latlng_to_cells(shapely.get_y(centroids), shapely.get_x(centroids), cell_res),
        "source": good["source"].tolist(), "attributes": good["attributes"].tolist(),
        "loaded_at": pa.array([pd.Timestamp.now(tz="UTC").to_pydatetime()] * len(good), pa.timestamp("us", tz="UTC")),
    })
    return Chunk(table, bad, len(places), 0)


def cover(places: pl.DataFrame, cell_res: int) -> pl.DataFrame:
    """place_id, h3_cell, interior for every place: polygons by area, lines and points by the cells they touch."""
    parts = []
    for place_id, wkb in places.select("place_id", "geometry").iter_rows():
        cells, interior = cells_of(shapely.from_wkb(wkb), cell_res)
        parts.append(pl.DataFrame({"place_id": [place_id] * cells.size, "h3_cell": cells, "interior": interior}))
    return pl.concat(parts) if parts else pl.DataFrame(schema={"place_id": pl.String, "h3_cell": pl.Int64, "interior": pl.Boolean})


def cells_of(geom, cell_res: int) -> tuple[np.ndarray, np.ndarray]:
    kind = geom.geom_type
    if kind in ("Polygon", "MultiPolygon"):
        return polygon_to_cells(geom, cell_res)
    if kind in ("Point", "MultiPoint"):
        coords = shapely.get_coordinates(geom)
        cells = np.unique(latlng_to_cells(coords[:, 1], coords[:, 0], cell_res))
        return cells, np.zeros(cells.size, bool)
    if kind in ("LineString", "MultiLineString"):
        coords = shapely.get_coordinates(shapely.segmentize(geom, LINE_STEP_DEG))
        near = np.unique(np.concatenate(grid_disk(np.unique(latlng_to_cells(coords[:, 1], coords[:, 0], cell_res)), 1)))
        touched = near[shapely.intersects(geom, cells_to_polygons(near))]
        return touched, np.zeros(touched.size, bool)
    parts = [cells_of(g, cell_res) for g in shapely.get_parts(geom)]  # a collection: cover each part
    cells = np.concatenate([p[0] for p in parts]) if parts else np.empty(0, np.int64)
    return np.unique(cells), np.zeros(np.unique(cells).size, bool)


def replace_covers(lake: Lake, place_ids: list[str], cells: pl.DataFrame) -> None:
    """Replace the covers of these places in one commit (old cells of re-ingested places go)."""
    if not place_ids:
        return
    lake.replace_keys("place_cells", cells, column="place_id", values=place_ids)
