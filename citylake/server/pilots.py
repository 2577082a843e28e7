"""District pilots through the server: a pilot account uploads its boundary and files, and gets its first report.

A pilot's files go into a lake of its own (``steward/pilots/<name>/``, with a key of its own), never into the city's lake:
they are untrusted input and the pilot is not the city's steward, so its report describes only the data it brought, and
nothing it uploads can change what anyone else reads. Its files are validated exactly as ``citylake pilot`` does (it is
the same code). What a pilot reads of the city are the releases inside its boundary (``PilotArea``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import shapely
import shapely.errors
import shapely.geometry

from citylake import settings as S
from citylake.h3_index.errors import CitylakeError
from citylake.ingestion.errors import UnreadableInput
from citylake.lake import Lake
from citylake.pilot import Pilot, run_pilot

KINDS = ("boundary", "pois", "sensors", "readings", "pings")
GEOMETRIES = ("Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon", "GeometryCollection")
SUFFIXES = (".geojson", ".json", ".csv", ".tsv", ".gpkg", ".zip", ".parquet", ".txt")
MAP_KINDS = ("boundary", "pois")  # read by GDAL: vetted by their content first (``vet_map_file``)
# GDAL reads boundaries and map POIs, and picks its reader from a file's content: what a pilot sends is never handed to it
# as sent. GeoJSON is parsed here and written again with features, geometries and plain properties only; CSV POIs go
# through citylake's own CSV reader. (GeoPackages and zipped Shapefiles are the steward's, through `citylake pilot`.)
MAP_SUFFIXES = {"boundary": (".geojson", ".json"), "pois": (".geojson", ".json", ".csv", ".tsv", ".txt")}
REPORT = "report.html"


class UploadTooLarge(ValueError):
    pass


class PilotFailed(CitylakeError):
    """A pilot's files could not become a report; says why, naming the uploads, not the server's folders."""


@dataclass(frozen=True)
class PilotArea:
    place_id: str
    shape: shapely.Geometry


class PilotDesk:
    """Where pilots' uploads, lakes and reports live on the server."""

    def __init__(self, lake: Lake, settings: S.Settings, /) -> None:
        self.root = lake.steward_dir / "pilots"
        self.settings = settings
        self.limit = int(settings["serve.upload_mb"]) * 1024 * 1024

    def folder(self, name: str) -> Path:
        return self.root / name

    async def receive(self, name: str, kind: str, filename: str, chunks, /) -> Path:
        """Stream one upload to disk, refusing it mid-stream past the size limit (nothing of it is kept then)."""
        suffix = Path(filename).suffix.lower()
        if kind not in KINDS:
            raise ValueError(f"upload kind {kind!r} is not one of {', '.join(KINDS)}")
        allowed = MAP_SUFFIXES.get(kind, SUFFIXES)
        if suffix not in allowed:
            raise ValueError(f"a {kind} file named {filename!r}: name it with one of {', '.join(allowed)} so its format is known")
        uploads = self.folder(name) / "uploads"
        uploads.mkdir(parents=True, exist_ok=True, mode=0o700)
        target = uploads / f"{kind}{suffix}"
        partial = target.with_name(f".{target.name}.part")
        size = 0
        try:
            with open(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.limit:
                        raise UploadTooLarge(f"the upload passed the server's limit of {self.limit // 2**20} MB (setting serve.upload_mb) "
                                             "and was refused; split the file or ask the steward")
                    out.write(chunk)
            if kind in MAP_KINDS:
                vet_map_file(partial, suffix, limit=self.limit)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        for old in uploads.glob(f"{kind}.*"):  # the earlier file of this kind goes only once the new one is in
            if old != target:
                old.unlink()
        return target

    def uploaded(self, name: str) -> dict[str, Path]:
        uploads = self.folder(name) / "uploads"
        found = {path.stem: path for path in uploads.glob("*.*")} if uploads.is_dir() else {}
        return {kind: found[kind] for kind in KINDS if kind in found}

    def first_report(self, name: str, /, *, start=None, end=None) -> tuple[str, PilotArea]:
        """Load the pilot's uploads into its own lake and write its first report; its area, to bind the account to."""
        files = self.uploaded(name)
        if "boundary" not in files:
            raise PilotFailed("upload the pilot's boundary first (PUT /api/pilot/files/boundary)")
        folder = self.folder(name)
        self._check_boundary(name, files["boundary"])
        lake_dir = folder / "lake"
        shutil.rmtree(lake_dir, ignore_errors=True)  # a new report starts from the uploads as they are now
        settings = self.settings.with_overrides({"lake": str(lake_dir), "privacy.pseudonym_key_file": str(folder / "pseudonym.key")})
        area = Pilot(boundary=files["boundary"], name=name, pois=files.get("pois"), sensors=files.get("sensors"),
                     readings=files.get("readings"), pings=files.get("pings"))
        lines: list[str] = []
        try:
            run_pilot(area, out=folder / REPORT, settings=settings, start=start, end=end, workers=1, announce=lines.append)
        except UnreadableInput as err:  # GDAL's text may quote what it read: say only which upload
            raise PilotFailed(f"{Path(err.source).name}: cannot be read; check its format and columns") from None
        except CitylakeError as err:  # said to the pilot: without the server's folders
            raise PilotFailed(_without_paths(str(err))) from None
        return _without_paths(lines[-1]) if lines else "report written", self._area(lake_dir, settings)

    def report(self, name: str) -> Path | None:
        path = self.folder(name) / REPORT
        return path if path.is_file() else None

    def area(self, name: str, place_id: str) -> PilotArea | None:
        wkb = self.folder(name) / "area.wkb"
        return PilotArea(place_id, shapely.from_wkb(wkb.read_bytes())) if wkb.is_file() else None

    def _check_boundary(self, name: str, boundary: Path) -> None:
        """A pilot's area is one boundary of at most serve.pilot_max_km2, set by its first report: later reports keep it."""
        import geopandas as gpd
        from pyproj import Geod

        try:
            shape = shapely.union_all(gpd.read_file(boundary).geometry.to_numpy())
        except Exception:  # GDAL's own kinds; its text may quote what it read
            raise PilotFailed("the boundary cannot be read as GeoJSON") from None
        km2 = abs(Geod(ellps="WGS84").geometry_area_perimeter(shape)[0]) / 1e6
        most = self.settings["serve.pilot_max_km2"]
        if km2 > most:
            raise PilotFailed(f"the boundary covers {km2:,.0f} km², more than a pilot area may ({most:g} km², setting "
                              "serve.pilot_max_km2); upload the pilot area's own outline")
        kept = self.folder(name) / "area.wkb"
        if kept.is_file() and not shapely.equals_exact(shapely.normalize(shapely.from_wkb(kept.read_bytes())),
                                                       shapely.normalize(shape), tolerance=1e-7):
            raise PilotFailed("this pilot's area was set by its first report; upload that boundary again, or ask the steward for "
                              "an account for another area")

    def _area(self, lake_dir: Path, settings: S.Settings) -> PilotArea:
        from citylake import api
        from citylake.lake import registry

        lake = api.open_lake(settings=settings)
        boundary = registry.places(lake, categories=("pilot",), columns=("place_id", "geometry"))
        shape = shapely.union_all(registry.shapes(boundary))
        kept = lake_dir.parent / "area.wkb"
        if not kept.is_file():  # set once
            kept.write_bytes(shapely.to_wkb(shape))
            kept.chmod(0o600)
        shape = shapely.from_wkb(kept.read_bytes())
        return PilotArea(boundary["place_id"][0], shape)


def vet_map_file(path: Path, suffix: str, /, *, limit: int) -> None:
    """Make a pilot's map file safe for GDAL, or refuse it: GeoJSON rewritten from its parsed features (no ``crs``, no
    unknown members, no keys with control characters or twice over), CSV refused unless it is plain text."""
    if suffix in (".geojson", ".json"):
        features = _features(path)
        with open(path, "w", encoding="utf-8") as out:
            json.dump({"type": "FeatureCollection", "features": features}, out)
        return
    with open(path, "rb") as start:
        head = start.read(4096)
    if head.lstrip().startswith((b"<", b"{", b"[")) or b"\x00" in head:
        raise ValueError("a CSV upload must be plain text with a header line (lat/lon or WKT columns)")


def _features(path: Path) -> list[dict]:
    def strict(pairs):
        keys = [key for key, _ in pairs]
        if len(set(keys)) != len(keys) or any(not key.isprintable() for key in keys):
            raise ValueError("a key appears twice or holds control characters")
        return dict(pairs)

    try:
        with open(path, encoding="utf-8") as text:
            document = json.load(text, object_pairs_hook=strict)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise ValueError(f"the file is not GeoJSON ({str(err).splitlines()[0][:80]})") from None
    if isinstance(document, dict) and document.get("type") == "FeatureCollection" and isinstance(document.get("features"), list):
        found = document["features"]
    elif isinstance(document, dict) and document.get("type") == "Feature":
        found = [document]
    elif isinstance(document, dict) and document.get("type") in GEOMETRIES:
        found = [{"type": "Feature", "geometry": document, "properties": {}}]
    else:
        raise ValueError("the file is JSON but not GeoJSON (a FeatureCollection, a Feature or a geometry)")
    return [_clean(feature) for feature in found]


def _clean(feature) -> dict:
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise ValueError("the file is not GeoJSON: a member of features is not a Feature")
    try:
        geometry = shapely.geometry.shape(feature["geometry"]) if feature.get("geometry") else None
    except (KeyError, TypeError, ValueError, AttributeError, shapely.errors.GEOSException):
        raise ValueError("the file is not GeoJSON: a feature's geometry cannot be read") from None
    properties = feature.get("properties") or {}
    if not isinstance(properties, dict):
        raise ValueError("the file is not GeoJSON: a feature's properties are not an object")
    plain = {str(k): v for k, v in properties.items() if isinstance(v, str | int | float | bool) or v is None}
    return {"type": "Feature", "geometry": json.loads(shapely.to_geojson(geometry)) if geometry is not None else None,
            "properties": plain}


def _without_paths(text: str) -> str:
    """A message for a pilot: every absolute path in it cut to its file name (the server's folders are not the pilot's)."""
    return re.sub(r"(?:[A-Za-z]+:)?/[^\s'\"]*/([^/\s'\"]+)", r"\1", text)


def forget(lake: Lake, name: str, /) -> None:
    """Remove everything of a pilot account (uploads, its lake, report, area): done when the account is revoked or made
    again, so a new account of the same name starts empty."""
    shutil.rmtree(lake.steward_dir / "pilots" / name, ignore_errors=True)


def safe_name(name: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,62}", name):
        raise ValueError(f"{name!r} is not an account name")
    return name
