"""Map feed: places (POIs, parks, districts, land use, buildings, roads) into ``places`` and
their H3 covers into ``place_cells``.

Reads GeoJSON, GeoParquet, Shapefiles (zipped too), GeoPackage (every layer, or one), CSV with
a WKT column or lat/lon columns, and OpenStreetMap PBF extracts. Reprojects to EPSG:4326,
flattens 3D shapes to 2D, repairs invalid shapes (and says so), gives every place a stable id
(source + source id, else a hash of the geometry) and covers it with cells flagged interior or
boundary: every cover before anything is written, and the covers before the places.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import zipfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import shapely

from citylake.h3_index import grid_disk, latlng_to_cells, polygon_to_cells
from citylake.h3_index.cells import MAX_CELLS_OUT, cells_to_polygons
from citylake.h3_index.polygons import estimate_cells, is_polygonal
from citylake.ingestion import textfile
from citylake.ingestion import validate as V
from citylake.ingestion.batch import BatchWriter, Chunk, IngestReport, fingerprint, progress_bar, run
from citylake.ingestion.errors import BadOption, UnreadableInput
from citylake.lake import Lake

ID_FIELDS = ("place_id", "id", "osm_id", "@id", "fid", "ID")
NAME_FIELDS = ("name", "NAME", "Name")
WKT_FIELDS = ("wkt", "WKT", "geometry", "geom", "the_geom")
LINE, UNREAD = "_line", "_unread"  # a CSV place's file line; a line that could not be read: (text, reason, kind)
LINE_STEP_DEG = 1e-4  # ~11 m: finer than any res<=11 cell, so a road's cells are all found
# OSM tags → category, most specific first (pyrosm keeps tags as columns).
OSM_CATEGORIES = (("leisure", {"park": "park", "garden": "park", "playground": "park"}), ("highway", None),
                  ("building", None), ("landuse", None), ("amenity", None), ("shop", None), ("tourism", None))


def read_places(
    path: str | Path, /, *, category: str | None = None, name_field: str | None = None, id_field: str | None = None,
    crs: str | None = None, source: str | None = None, layer: str | None = None,
) -> tuple[gpd.GeoDataFrame, list[str]]:
    """Places of a map file in EPSG:4326 with place_id, name, category, attributes; and notes on what was read and repaired.

    Every layer of a multi-layer file (GeoPackage, a zip of shapefiles) is read, unless ``layer`` picks one; a
    multi-layer file's places take ``<file>/<layer>`` as their source, so ids of two layers cannot collide."""
    path = Path(path)
    notes: list[str] = []
    source = source or path.name.split(".")[0]
    layers, in_file = _read(path, layer)
    many = in_file > 1
    frames = []
    for name, frame in layers:
        frame = _to_wgs84(frame, crs, f"{path} layer {name}" if many else str(path), notes)
        frames.append(frame.assign(source=f"{source}/{name}" if many else source))
    if len(layers) > 1:
        notes.append(f"read {len(layers)} layers: " + ", ".join(f"{name} ({len(f):,})" for (name, _), f in zip(layers, frames)))
    elif many:
        notes.append(f"read layer {layer}, one of {in_file}")
    notes += _missing_sidecars(path, category)
    frame = frames[0] if len(frames) == 1 else gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry", crs="EPSG:4326")
    frame = _flatten(frame, notes)
    frame = _repair(frame, notes)
    frame["place_id"] = _place_ids(frame, frame["source"], id_field)
    frame["name"] = _names(frame, name_field)
    frame["category"] = category or _categories(frame)
    frame["attributes"] = _attributes(frame)
    kept = ["place_id", "name", "category", "source", "attributes", "geometry", *(c for c in (LINE, UNREAD) if c in frame)]
    return frame[kept], list(dict.fromkeys(notes))


def ingest_places(
    lake: Lake, path: str | Path, /, *, category: str | None = None, name_field: str | None = None, id_field: str | None = None,
    crs: str | None = None, layer: str | None = None, progress: bool = False,
) -> IngestReport:
    """Add or replace places (by place_id) and their H3 covers.

    Every cover is made before anything is written; a place that cannot be covered (too many cells, a shape H3 cannot
    take) is quarantined with the reason and the others land. Then the covers are written, and only then the places:
    every reader starts from ``places``, so cells of a place not (yet) in ``places`` are read by nobody, and a place is
    never read without its cells, even when the process dies between the two commits. A rerun of the file mends that.
    """
    path = Path(path)
    started = time.perf_counter()
    places, notes = read_places(path, category=category, name_field=name_field, id_field=id_field, crs=crs, layer=layer)
    covers, refused = cover_places(places, lake.cell_res, progress=progress)
    chunk = _as_chunk(places, lake.cell_res, refused)
    writer = BatchWriter(lake, "places", str(path), fingerprint(path), registry=True)
    replace_covers(lake, chunk.good.column("place_id").to_pylist(), covers)
    report = run(writer, iter([chunk]), total_bytes=path.stat().st_size, progress=progress)
    report.duplicates += chunk.rows_in - chunk.bad.height - chunk.good.num_rows  # earlier rows of an id the file repeats
    report.notes += notes
    report.seconds = time.perf_counter() - started
    return report


def _read(path: Path, layer: str | None) -> tuple[list[tuple[str | None, gpd.GeoDataFrame]], int]:
    """(layer name, frame) for every layer read (one for formats without layers), and how many layers the file has."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise UnreadableInput(str(path), "no such file")
    if layer is not None and suffix in (".pbf", ".parquet", ".geoparquet", ".csv", ".tsv", ".txt"):
        raise BadOption("--layer", layer, f"a {suffix} file has no layers; --layer picks a layer of a GeoPackage or another "
                                          "multi-layer file")
    try:
        if suffix == ".pbf":
            return [(None, _read_osm(path))], 1
        if suffix in (".parquet", ".geoparquet"):
            return [(None, gpd.read_parquet(path))], 1
        if suffix in (".csv", ".tsv", ".txt"):
            return [(None, _read_csv(path))], 1
        chosen, in_file = _layers(path, layer)
        # a shape GEOS cannot build (an unclosed ring, a one-point line) is read as no shape and quarantined, not the file refused
        return [(name, gpd.read_file(_gdal_path(path), layer=name, on_invalid="ignore")) for name in chosen], in_file
    except (UnreadableInput, BadOption):
        raise
    except Exception as err:  # GDAL, pyarrow and pyrosm each raise their own kinds
        raise UnreadableInput(str(path), f"cannot read it as map data ({str(err).splitlines()[0][:200]})") from None


def _gdal_path(path: Path) -> str:
    return f"zip://{path}" if path.suffix.lower() == ".zip" else str(path)


def _layers(path: Path, layer: str | None) -> tuple[list[str], int]:
    """The layers to read (``layer``, else every layer with geometry: a GeoPackage may hold plain tables too), and how
    many layers with geometry the file has."""
    import pyogrio

    listed = pyogrio.list_layers(_gdal_path(path))
    spatial = [str(name) for name, kind in listed if kind is not None]
    if layer is None:
        if not spatial:
            raise UnreadableInput(str(path), "no layer in it has geometry")
        return spatial, len(spatial)
    if layer not in spatial:
        why = "has no geometry" if layer in [str(name) for name, _ in listed] else f"is not in {path.name}"
        raise BadOption("--layer", layer, f"that layer {why}; the file's layers are {', '.join(spatial) or 'none'}")
    return [layer], len(spatial)


def _missing_sidecars(path: Path, category: str | None) -> list[str]:
    """Notes for shapefiles without their .dbf (the attributes: names, categories, ids), beside them or in their zip."""
    suffix = path.suffix.lower()
    if suffix == ".shp":
        members = [p.name for p in path.parent.iterdir()]
        shapefiles = [path.name]
    elif suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            members = archive.namelist()
        shapefiles = [m for m in members if m.lower().endswith(".shp")]
    else:
        return []
    lowered = {m.lower() for m in members}
    lost = "names" if category else "names or categories"
    return [f"no {Path(shp).stem}.dbf beside {Path(shp).name}: places have no {lost}"
            for shp in shapefiles if f"{shp[:-4]}.dbf".lower() not in lowered]


def _read_csv(path: Path) -> gpd.GeoDataFrame:
    """Places of a CSV with a WKT column or lat and lon, read as every feed reads CSV (``textfile.chunks``): each row keeps
    its file line (``LINE``), and a line that cannot be read (a wrong number of fields, not UTF-8, an unbalanced quote)
    is kept as a row without a shape carrying its text, reason and kind (``UNREAD``), to be quarantined with them."""
    parts = list(textfile.chunks(path, batch_rows=textfile.DEFAULT_BATCH_ROWS))
    table = pa.concat_tables([part.rows for part in parts]).to_pandas() if parts else pd.DataFrame(columns=textfile.columns(path))
    lines = np.concatenate([part.positions for part in parts]) if parts else np.empty(0, np.int64)
    wkt = next((c for c in WKT_FIELDS if c in table.columns), None)
    if wkt:
        text = np.array(table[wkt], dtype=object)
        text[table[wkt].str.strip().eq("").to_numpy()] = None  # no shape, quarantined; shapely takes "" for an error
        geometry = shapely.from_wkt(text, on_invalid="ignore")
        frame = gpd.GeoDataFrame(table.drop(columns=[wkt]), geometry=geometry)
    else:
        lat = next((c for c in ("lat", "latitude", "y") if c in table.columns), None)
        lon = next((c for c in ("lon", "lng", "longitude", "x") if c in table.columns), None)
        if not (lat and lon):
            raise UnreadableInput(str(path), f"no geometry: give a WKT column ({', '.join(WKT_FIELDS)}) or lat and lon columns")
        y, x = pd.to_numeric(table[lat], errors="coerce"), pd.to_numeric(table[lon], errors="coerce")
        geometry = [shapely.Point(a, b) if np.isfinite(a) and np.isfinite(b) else None for a, b in zip(x, y)]
        frame = gpd.GeoDataFrame(table.drop(columns=[lat, lon]), geometry=geometry)
    frame[LINE] = lines
    unread = [(line, (text, reason, kind)) for part in parts for line, text, reason, kind in part.rejected]
    if not unread:
        return frame
    lost = gpd.GeoDataFrame({LINE: [line for line, _ in unread], UNREAD: [why for _, why in unread]}, geometry=[None] * len(unread))
    return pd.concat([frame, lost], ignore_index=True).sort_values(LINE, ignore_index=True)


def _read_osm(path: Path) -> gpd.GeoDataFrame:
    import pyrosm  # only OSM extracts need it, and it is slow to import

    osm = pyrosm.OSM(str(path), engine=_osm_engine())
    layers = [osm.get_pois(), osm.get_landuse(), osm.get_buildings(), osm.get_network("driving"),
              osm.get_data_by_custom_criteria({"leisure": ["park", "garden", "playground"]}, filter_type="keep", keep_nodes=False)]
    frames = [f for f in layers if f is not None and len(f)]
    if not frames:
        raise UnreadableInput(str(path), "the extract holds no POIs, land use, buildings, roads or parks")
    merged = pd.concat(frames, ignore_index=True)
    merged["osm_id"] = merged["osm_type"].fillna("node").astype(str) + "/" + merged["id"].astype(str)
    merged = merged.drop_duplicates("osm_id")
    return gpd.GeoDataFrame(merged.drop(columns=["tags"], errors="ignore"), geometry="geometry", crs="EPSG:4326")


def _osm_engine() -> str:
    """pyrosm's bounded-memory reader sets each layer's nodes aside in a Parquet file and reads them back; once
    geoarrow-pyarrow is imported in the process (a notebook's, say), their geometry comes back as a GeoArrow type
    the ways' plain WKB cannot be merged with, and the read fails. Then the whole extract is read in memory instead."""
    return "in_memory" if "geoarrow.pyarrow" in sys.modules else "out_of_core"


def _to_wgs84(frame: gpd.GeoDataFrame, crs: str | None, source: str, notes: list[str]) -> gpd.GeoDataFrame:
    if crs:
        try:
            frame = frame.set_crs(crs, allow_override=True)
        except Exception:
            raise BadOption("--crs", crs, "not a CRS pyproj knows; write it as EPSG:NNNN") from None
    if frame.crs is None:
        # degrees if most shapes are within ±180, ±90: one swapped or mistyped row must not refuse the file (H3 refuses
        # that place, and it is quarantined); a projected file has (nearly) none there
        bounds = frame.geometry.bounds.dropna()
        degrees = bounds.minx.ge(-180) & bounds.maxx.le(180) & bounds.miny.ge(-90) & bounds.maxy.le(90)
        if len(bounds) and degrees.mean() <= 0.5:
            raise UnreadableInput(source, "the file names no CRS and its coordinates are not degrees; pass --crs EPSG:NNNN")
        notes.append("no CRS in the file; coordinates look like degrees, read as EPSG:4326")
        return frame.set_crs("EPSG:4326")
    if frame.crs.to_epsg() != 4326:
        notes.append(f"reprojected from {frame.crs.to_string()} to EPSG:4326")
        frame = frame.to_crs("EPSG:4326")
    return frame


def _flatten(frame: gpd.GeoDataFrame, notes: list[str]) -> gpd.GeoDataFrame:
    """Drop Z (and M) coordinates: places are 2D, and H3 covers take only 2D shapes."""
    geometry = frame.geometry.values
    raised = shapely.has_z(geometry) | shapely.has_m(geometry)
    if not raised.any():
        return frame
    geometry = geometry.copy()
    geometry[raised] = shapely.force_2d(geometry[raised])
    notes.append(f"flattened {int(raised.sum())} 3D geometr{'y' if raised.sum() == 1 else 'ies'} to 2D")
    return frame.set_geometry(gpd.GeoSeries(geometry, index=frame.index, crs=frame.crs))


def _repair(frame: gpd.GeoDataFrame, notes: list[str]) -> gpd.GeoDataFrame:
    geometry = frame.geometry.values
    present = ~(shapely.is_missing(geometry) | shapely.is_empty(geometry))
    invalid = present & ~shapely.is_valid(geometry)
    coordinates, owner = shapely.get_coordinates(geometry[invalid], return_index=True)
    unbounded = np.flatnonzero(invalid)[np.unique(owner[~np.isfinite(coordinates).all(axis=1)])]
    if unbounded.size:  # NaN or infinite coordinates (which make a shape invalid): no repair can place it; quarantined
        geometry = geometry.copy()
        geometry[unbounded] = None
        invalid[unbounded] = False
        notes.append(f"set aside {unbounded.size} geometr{'y' if unbounded.size == 1 else 'ies'} with NaN or infinite coordinates")
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


def _place_ids(frame: gpd.GeoDataFrame, source: pd.Series, id_field: str | None) -> list[str]:
    field = id_field or next((c for c in ID_FIELDS if c in frame.columns), None)
    if id_field and id_field not in frame.columns:
        raise BadOption("--id-field", id_field, f"no such column; columns are {', '.join(map(str, frame.columns))}")
    wkb = shapely.to_wkb(frame.geometry.values, hex=False)
    geometry_ids = [f"geom:{hashlib.sha256(w).hexdigest()[:16]}" if w is not None else None for w in wkb]
    if field is None:
        return geometry_ids
    ids = frame[field].astype(str).where(frame[field].notna() & (frame[field].astype(str) != ""))
    return [f"{s}:{i}" if isinstance(i, str) else g for s, i, g in zip(source, ids, geometry_ids)]


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
    own = {"place_id", "name", "category", "source", "attributes", frame.geometry.name, LINE, UNREAD}
    columns = [c for c in frame.columns if c not in own]
    records = frame[columns].astype(object).where(frame[columns].notna(), None).to_dict("records")
    return [json.dumps({k: str(v) for k, v in r.items() if v not in (None, "")}) or None for r in records]


def _to_cover(places: gpd.GeoDataFrame) -> np.ndarray:
    """Which rows become places: those with a shape, and of rows repeating a place_id the last (as the upsert keeps)."""
    geometry = places.geometry.values
    present = ~(shapely.is_missing(geometry) | shapely.is_empty(geometry))
    later = pd.Series(False, index=places.index)
    later[present] = places.loc[present, "place_id"].duplicated(keep="last")
    return present & ~later.to_numpy()


def cover_places(places: gpd.GeoDataFrame, cell_res: int, *, progress: bool = False) -> tuple[pl.DataFrame, dict[int, tuple[str, str]]]:
    """The cover (place_id, h3_cell, interior) of every place to be written, and the places refused: row → (reason, kind).

    A place whose estimated cover passes ``MAX_CELLS_OUT`` is refused before any covering starts; one that H3 cannot
    cover, or that covers no cell, is refused with the reason. The bar counts places, and moves by their estimated cells.
    """
    rows = np.flatnonzero(_to_cover(places))
    shapes, ids = places.geometry.values[rows], places["place_id"].to_numpy()[rows]
    estimates = [estimate_cells(shape, cell_res) for shape in shapes]
    refused: dict[int, tuple[str, str]] = {}
    parts = []
    bar = progress_bar("[bold]covering[/] {task.fields[done]:,}/{task.fields[places]:,} places", progress=progress)
    with bar:
        task = bar.add_task("cover", total=sum(e for e in estimates if e <= MAX_CELLS_OUT) or None, done=0, places=len(rows))
        for n, (row, place_id, shape, estimate) in enumerate(zip(rows.tolist(), ids, shapes, estimates), start=1):
            try:
                cells, interior = _cover(shape, estimate, cell_res)
                parts.append(pl.DataFrame({"place_id": [place_id] * cells.size, "h3_cell": cells, "interior": interior}))
            except _Refused as refusal:
                refused[row] = refusal.args
            bar.update(task, advance=estimate if estimate <= MAX_CELLS_OUT else 0, done=n)
    covers = pl.concat(parts) if parts else pl.DataFrame(schema={"place_id": pl.String, "h3_cell": pl.Int64, "interior": pl.Boolean})
    return covers, refused


class _Refused(Exception):
    """A place that gets no cover: (reason, kind)."""


def _cover(shape, estimate: int, cell_res: int) -> tuple[np.ndarray, np.ndarray]:
    if shape.geom_type == "Point" and shape.x == 0 and shape.y == 0:  # as pings and sensors at (0, 0) are refused
        raise _Refused("position (0, 0) is a null-island placeholder, not a place", "position (0, 0)")
    if estimate > MAX_CELLS_OUT:
        raise _Refused(f"its cover at H3 resolution {cell_res} would be about {estimate:,} cells, more than the limit of "
                       f"{MAX_CELLS_OUT:,}; split it into smaller shapes, or keep it in a lake with a coarser h3.cell_resolution",
                       "too many cells")
    try:
        cells, interior = cells_of(shape, cell_res)
    except ValueError as err:  # our H3 errors (TooManyCells, BadGeometry) and h3ronpy's own are ValueErrors
        raise _Refused(f"cannot be covered with H3 cells: {str(err).splitlines()[0][:300]}", "cannot be covered") from None
    if cells.size == 0:
        raise _Refused(f"its {shape.geom_type} covers no H3 cell", "cannot be covered")
    return cells, interior


def _as_chunk(places: gpd.GeoDataFrame, cell_res: int, refused: dict[int, tuple[str, str]]) -> Chunk:
    """The rows to write, and the rows set aside: no shape, or refused a cover (``refused``: row → reason, kind)."""
    geometry = places.geometry.values
    missing = shapely.is_missing(geometry) | shapely.is_empty(geometry)
    why = {int(row): ("geometry is missing, empty or could not be repaired", "geometry missing") for row in np.flatnonzero(missing)}
    why.update(refused)
    unread = places[UNREAD].dropna() if UNREAD in places else pd.Series(dtype=object)  # CSV lines that could not be read
    why.update({int(row): (reason, kind) for row, (_, reason, kind) in zip(unread.index, unread)})
    rows = sorted(why)
    raw = places["place_id"].iloc[rows].fillna("(no id)").astype(str)
    raw.update(unread.map(lambda line: line[0]))
    bad = pl.DataFrame({
        V.POSITION: places[LINE].iloc[rows].tolist() if LINE in places else [row + 1 for row in rows],  # file line, or feature
        "raw": raw.tolist(), "reason": [why[row][0] for row in rows], "kind": [why[row][1] for row in rows],
    }, schema=V.BAD_SCHEMA)
    keep = _to_cover(places)
    keep[rows] = False
    good = places.loc[keep]
    shapes = good.geometry.values
    bounds = shapely.bounds(shapes)
    centroids = shapely.centroid(shapes)
    table = pa.table({
        "place_id": pa.array(good["place_id"].tolist(), pa.string()),
        "name": pa.array(good["name"].astype(object).where(good["name"].notna(), None).tolist(), pa.string()),
        "category": pa.array(good["category"].astype(str).tolist(), pa.string()),
        "geometry": pa.array(shapely.to_wkb(shapes).tolist(), pa.binary()),
        "bbox": [dict(zip(("xmin", "ymin", "xmax", "ymax"), b)) for b in bounds.tolist()],
        "h3_cell": latlng_to_cells(shapely.get_y(centroids), shapely.get_x(centroids), cell_res),
        "source": pa.array(good["source"].tolist(), pa.string()), "attributes": pa.array(good["attributes"].tolist(), pa.string()),
        "loaded_at": pa.array([pd.Timestamp.now(tz="UTC").to_pydatetime()] * len(good), pa.timestamp("us", tz="UTC")),
    })
    return Chunk(table, bad, len(places), 0)


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
    """Replace the covers of these places in one commit (old cells of re-ingested places go). Called before the places
    themselves are written: see ``ingest_places``."""
    if not place_ids:
        return
    lake.replace_keys("place_cells", cells, column="place_id", values=place_ids)
