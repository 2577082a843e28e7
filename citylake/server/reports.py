"""The reports the steward publishes to planners: district reports (k-anonymous, like ``citylake report``) kept in the steward
zone (``steward/reports/``) and handed out by name only by the server.

Planners get what the steward chose to publish, not reports on any window they ask for: two exact reports on overlapping
windows could be told apart (k-anonymity does not survive differencing), so the window is the steward's decision, as a
release's is."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
from pathlib import Path

from fastapi import HTTPException

from citylake import settings as S
from citylake.lake import Lake

NAME = re.compile(r"^[A-Za-z0-9_.-]{1,120}\.html$")


class ReportShelf:
    def __init__(self, lake: Lake, /) -> None:
        self.lake = lake
        self.folder = lake.steward_dir / "reports"

    def listing(self) -> list[dict]:
        if not self.folder.is_dir():
            return []
        return [{"name": path.name, "place_id": path.stem.replace("_", ":", 1), "bytes": path.stat().st_size,
                 "published": dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).isoformat(timespec="seconds")}
                for path in sorted(self.folder.glob("*.html"))]

    def find(self, name: str) -> Path:
        """A published report by its file name; only names on the shelf's own listing are ever opened."""
        if NAME.match(name) and name in {entry["name"] for entry in self.listing()}:
            return self.folder / name
        raise HTTPException(404, f"no published report {name!r}; GET /api/reports lists them")

    def make(self, place_ids: list[str], /, *, start: dt.datetime | None, end: dt.datetime | None, settings: S.Settings) -> str:
        from citylake import api
        from citylake.reports import write_reports

        analysis = api.analyse(self.lake, start=start, end=end, settings=settings, workers=1, announce=lambda line: None)
        staging = self.folder.with_name(".reports-staging")
        shutil.rmtree(staging, ignore_errors=True)
        made = write_reports(self.lake, analysis, place_ids, out=staging, start=start, end=end, k=api.k_for(self.lake, settings=settings),
                             announce=lambda line: None)
        self.shelve({report.place_id: staging / f"{report.place_id.replace(':', '_')}.html" for report in made})
        shutil.rmtree(staging, ignore_errors=True)
        return f"{len(made)} reports published"

    def shelve(self, reports: dict[str, Path], /) -> list[Path]:
        """Put written HTML reports (by place id) on the shelf, each replaced whole: a reader never sees half a file."""
        self.folder.mkdir(mode=0o700, exist_ok=True)
        shelved = []
        for place_id, path in reports.items():
            target = self.folder / f"{place_id.replace(':', '_')}.html"
            temporary = target.with_name(f".{target.name}.{os.getpid()}")
            shutil.copyfile(path, temporary)
            os.chmod(temporary, 0o600)
            os.replace(temporary, target)
            shelved.append(target)
        return shelved
