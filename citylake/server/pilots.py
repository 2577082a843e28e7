"""District pilots through the server: a pilot account uploads its boundary and files, and gets its first report.

A pilot's files go into a lake of its own (``steward/pilots/<name>/``, with a key of its own), never into the city's lake:
they are untrusted input and the pilot is not the city's steward, so its report describes only the data it brought, and
nothing it uploads can change what anyone else reads. Its files are validated exactly as ``citylake pilot`` does (it is
the same code). What a pilot reads of the city are the releases inside its boundary (``PilotArea``).
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import shapely

from citylake import settings as S
from citylake.h3_index.errors import CitylakeError
from citylake.lake import Lake
from citylake.pilot import Pilot, run_pilot

KINDS = ("boundary", "pois", "sensors", "readings", "pings")
SUFFIXES = (".geojson", ".json", ".csv", ".tsv", ".gpkg", ".zip", ".parquet", ".txt")
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
        if suffix not in SUFFIXES:
            raise ValueError(f"a {kind} file named {filename!r}: name it with one of {', '.join(SUFFIXES)} so its format is known")
        uploads = self.folder(name) / "uploads"
        uploads.mkdir(parents=True, exist_ok=True, mode=0o700)
        for old in uploads.glob(f"{kind}.*"):
            old.unlink()
        target = uploads / f"{kind}{suffix}"
        partial = target.with_name(f".{target.name}.part")
        size = 0
        try:
            with open(partial, "wb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.limit:
                        raise UploadTooLarge(f"the upload passed the server's limit of {self.limit // 2**20} MB (setting serve.upload_mb) "
                                             "and was refused; split the file or ask the steward")
                    out.write(chunk)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        return target

    def uploaded(self, name: str) -> dict[str, Path]:
        uploads = self.folder(name) / "uploads"
        found = {path.stem: path for path in uploads.glob("*.*")} if uploads.is_dir() else {}
        return {kind: found[kind] for kind in KINDS if kind in found}

    def first_report(self, name: str, /, *, start=None, end=None) -> tuple[str, PilotArea]:
        """Load the pilot's uploads into its own lake and write its first report; its area, to bind the account to."""
        files = self.uploaded(name)
        if "boundary" not in files:
            raise ValueError("upload the pilot's boundary first (PUT /api/pilot/files/boundary)")
        folder = self.folder(name)
        lake_dir = folder / "lake"
        shutil.rmtree(lake_dir, ignore_errors=True)  # a new report starts from the uploads as they are now
        settings = self.settings.with_overrides({"lake": str(lake_dir), "privacy.pseudonym_key_file": str(folder / "pseudonym.key")})
        area = Pilot(boundary=files["boundary"], name=name, pois=files.get("pois"), sensors=files.get("sensors"),
                     readings=files.get("readings"), pings=files.get("pings"))
        lines: list[str] = []
        try:
            run_pilot(area, out=folder / REPORT, settings=settings, start=start, end=end, workers=1, announce=lines.append)
        except CitylakeError as err:  # said to the pilot: without the server's folders
            raise PilotFailed(str(err).replace(f"{folder}/uploads/", "").replace(str(folder), "")) from None
        return lines[-1].replace(str(folder), "") if lines else "report written", self._area(lake_dir, settings)

    def report(self, name: str) -> Path | None:
        path = self.folder(name) / REPORT
        return path if path.is_file() else None

    def area(self, name: str, place_id: str) -> PilotArea | None:
        wkb = self.folder(name) / "area.wkb"
        return PilotArea(place_id, shapely.from_wkb(wkb.read_bytes())) if wkb.is_file() else None

    def _area(self, lake_dir: Path, settings: S.Settings) -> PilotArea:
        from citylake import api
        from citylake.lake import registry

        lake = api.open_lake(settings=settings)
        boundary = registry.places(lake, categories=("pilot",), columns=("place_id", "geometry"))
        shape = shapely.union_all(registry.shapes(boundary))
        (lake_dir.parent / "area.wkb").write_bytes(shapely.to_wkb(shape))
        return PilotArea(boundary["place_id"][0], shape)


def safe_name(name: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,62}", name):
        raise ValueError(f"{name!r} is not an account name")
    return name
