"""What a table's commits added since a version: the rows a live reader (``citylake watch``) has not seen yet.

Read from the Delta log's commit files, so a reader picks up exactly the files with new data: a compaction's files
(``dataChange: false``) hold rows it has seen and are skipped, and a MERGE's rewritten files are new data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import polars as pl

from citylake.lake.lake import Lake


@dataclass(frozen=True)
class Added:
    version: int  # the table's version read up to
    files: tuple[Path, ...]  # data files the commits after the old version added


def added_since(lake: Lake, name: str, version: int | None, /) -> Added:
    """The data files committed to ``name`` after ``version``; None starts from now (the latest version, no files)."""
    latest = lake.table(name).version()
    root = lake.path(name)
    if version is None or version >= latest:
        return Added(max(latest, version or 0), ())
    files: list[Path] = []
    for v in range(version + 1, latest + 1):
        files += [root / unquote(add["path"]) for add in _adds(root / "_delta_log" / f"{v:020d}.json") if add.get("dataChange", True)]
    return Added(latest, tuple(files))


def read_added(added: Added, columns: list[str]) -> pl.DataFrame | None:
    """The added files' rows (only ``columns``), or None when there are none. A file a vacuum removed raises
    FileNotFoundError: the caller reads the table's snapshot instead."""
    if not added.files:
        return None
    return pl.concat([pl.read_parquet(path, columns=columns) for path in added.files], how="vertical_relaxed")


def _adds(commit: Path) -> list[dict]:
    adds = []
    with commit.open() as lines:
        for line in lines:
            action = json.loads(line)
            if "add" in action:
                adds.append(action["add"])
    return adds
