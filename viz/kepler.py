"""kepler.gl map views that open from a file, offline.

A map is a folder-free HTML file plus one shared folder of kepler.gl assets beside it
(``citylake-kepler/``: kepler.gl's prebuilt UMD bundle and the React, Redux, styled-components
and MapLibre builds it expects as globals, all from the npm registry — see ``viz/fetch_assets.sh``).
Data travels inside the HTML as CSV text that kepler.gl parses itself; the map config (layers,
colours, tooltips, the time filter) is kepler.gl's own saved-map schema (v1).

With no tile server the layers draw on a plain background (``styleType: no_map``); pass
``tiles=`` a MapLibre style URL to draw a base map from your own tile server.
"""

from __future__ import annotations

import html
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from citylake.h3_index import CitylakeError

HERE = Path(__file__).resolve().parent
VENDOR = HERE / "vendor"
OWN_SCRIPTS = ("kepler_shim.js", "kepler_boot.js")  # ours, beside this module: the web app loads them too
ASSET_DIR = "citylake-kepler"
SCRIPTS = ("react.production.min.js", "react-dom.production.min.js", "redux.min.js", "react-redux.min.js",
           "styled-components.min.js", "maplibre-gl.js", "keplergl.min.js")
STYLES = ("maplibre-gl.css", "keplergl.min.css")
# a sequential palette (light to dark orange-red): colour-blind safe, reads as "more" on a dark background
PALETTE = {"name": "citylake sequential", "type": "sequential", "category": "Uber",
           "colors": ["#fef0d9", "#fdd49e", "#fdbb84", "#fc8d59", "#e34a33", "#b30000"]}


class MapError(CitylakeError):
    """A map that cannot be written."""


@dataclass
class Layer:
    """One kepler.gl layer over one dataset."""

    kind: str  # hexagonId | geojson | point | arc
    data_id: str
    label: str
    columns: dict[str, str]
    color_by: str | None = None
    size_by: str | None = None  # hexagon height (3D) or point radius
    color: tuple[int, int, int] = (255, 153, 31)
    opacity: float = 0.8

    def config(self, frame: pl.DataFrame) -> dict:
        vis = {"opacity": self.opacity, "colorRange": PALETTE, "thickness": 2, "radius": 12, "filled": True,
               "stroked": True, "strokeColor": [60, 60, 60], "enable3d": self.kind == "hexagonId" and self.size_by is not None,
               "elevationScale": 1.5, "coverage": 0.95, "sizeRange": [1, 10] if self.kind == "arc" else [0, 500],
               "radiusRange": [4, 40]}
        channels = {"colorField": _field(frame, self.color_by), "colorScale": "quantile",
                    "sizeField": _field(frame, self.size_by), "sizeScale": "linear"}
        if self.kind == "point":
            channels["sizeScale"] = "sqrt"
        return {"id": f"{self.data_id}-{self.kind}", "type": self.kind,
                "config": {"dataId": self.data_id, "label": self.label, "color": list(self.color), "columns": self.columns,
                           "isVisible": True, "visConfig": vis, "hidden": False},
                "visualChannels": channels}


@dataclass
class MapView:
    """Datasets, their layers, an optional time filter for playback, and where to look."""

    title: str
    datasets: dict[str, pl.DataFrame] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    layers: list[Layer] = field(default_factory=list)
    tooltips: dict[str, list[str]] = field(default_factory=dict)
    time: tuple[str, str] | None = None  # (dataset id, timestamp column) to play back
    centre: tuple[float, float] | None = None  # lat, lon; default: the middle of the data
    zoom: float = 11.5
    note: str = ""

    def add(self, data_id: str, frame: pl.DataFrame, label: str, *layers: Layer, tooltip: list[str] | None = None) -> MapView:
        self.datasets[data_id], self.labels[data_id] = frame, label
        self.layers.extend(layers)
        self.tooltips[data_id] = tooltip or [c for c in frame.columns if c not in ("geometry",)][:6]
        return self

    def config(self) -> dict:
        filters = []
        if self.time:
            data_id, column = self.time
            stamps = self.datasets[data_id][column]
            if stamps.len():
                lo, hi = (int(v.timestamp() * 1000) for v in (stamps.min(), stamps.max()))
                filters.append({"dataId": [data_id], "id": "time", "name": [column], "type": "timeRange",
                                "value": [lo, hi], "enlarged": True, "plotType": "histogram", "animationWindow": "incremental",
                                "speed": 1})
        lat, lon = self.centre or _middle(self.datasets)
        return {"version": "v1", "config": {
            "visState": {"layers": [layer.config(self.datasets[layer.data_id]) for layer in self.layers], "filters": filters,
                         "interactionConfig": {"tooltip": {"enabled": True, "fieldsToShow": {
                             d: [{"name": c, "format": None} for c in cols] for d, cols in self.tooltips.items()}}}},
            "mapState": {"latitude": lat, "longitude": lon, "zoom": self.zoom, "pitch": 40 if _any_3d(self.layers) else 0,
                         "bearing": 0, "dragRotate": True},
            "mapStyle": {"styleType": "no_map"}}}


def write_html(view: MapView, out: str | Path, /, *, tiles: str | None = None) -> Path:
    """Write ``view`` as an HTML file that works offline; its assets go to ``citylake-kepler/`` beside it."""
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise MapError(f"{out} is not an .html file; name the map like footfall.html (or footfall.png for a static picture)")
    missing = [name for name in (*SCRIPTS, *STYLES) if not (VENDOR / name).is_file()]
    if missing:
        raise MapError(f"kepler.gl assets are missing ({', '.join(missing)}); run `make viz-assets` (fetches them from the npm registry)")
    out.parent.mkdir(parents=True, exist_ok=True)
    assets = out.parent / ASSET_DIR
    assets.mkdir(exist_ok=True)
    for name in (*SCRIPTS, *STYLES):
        target = assets / name
        if not target.is_file() or target.stat().st_size != (VENDOR / name).stat().st_size:
            shutil.copyfile(VENDOR / name, target)
    payload = map_payload(view, tiles=tiles)
    out.write_text(_page(view.title, view.note, payload["datasets"], payload["config"]), encoding="utf-8")
    return out


def map_payload(view: MapView, /, *, tiles: str | None = None) -> dict:
    """What a kepler.gl page draws: the view's datasets (as CSV) and its config, for ``write_html`` and the served web app."""
    config = view.config()
    if tiles:
        config["config"]["mapStyle"] = {"styleType": "custom", "mapStyles": {"custom": {
            "id": "custom", "label": "Tiles", "url": tiles, "icon": ""}}}
    datasets = [{"id": d, "label": view.labels[d], "csv": frame.write_csv()} for d, frame in view.datasets.items()]
    return {"title": view.title, "note": view.note, "datasets": datasets, "config": config}


def _page(title: str, note: str, datasets: list[dict], config: dict) -> str:
    styles = "\n".join(f'<link rel="stylesheet" href="{ASSET_DIR}/{name}">' for name in STYLES)
    scripts = "\n".join(f'<script src="{ASSET_DIR}/{name}"></script>' for name in SCRIPTS[:-1])
    payload = json.dumps({"datasets": datasets, "config": config}).replace("</", "<\\/")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
{styles}
<style>html,body,#app{{margin:0;height:100%;width:100%;overflow:hidden;background:#242730;font-family:sans-serif}}
#note{{position:absolute;right:70px;top:14px;color:#ccc;font-size:12px;z-index:10;max-width:45%;text-align:right}}</style>
</head><body><div id="app"></div><div id="note">{html.escape(note)}</div>
{scripts}
<script>
{_script("kepler_shim.js")}
</script>
<script src="{ASSET_DIR}/{SCRIPTS[-1]}"></script>
<script id="citylake-map" type="application/json">{payload}</script>
<script>
{_script("kepler_boot.js")}
citylakeShow(citylakeMount(document.getElementById("app")), JSON.parse(document.getElementById("citylake-map").textContent));
</script></body></html>
"""


def _script(name: str) -> str:
    """One of the map's own scripts (beside this module), to inline in a page; its braces are data, not format fields."""
    return (HERE / name).read_text()


def _field(frame: pl.DataFrame, name: str | None) -> dict | None:
    if name is None:
        return None
    dtype = frame.schema[name]
    kind = "integer" if dtype.is_integer() else "real" if dtype.is_float() else "string"
    return {"name": name, "type": kind}


def _any_3d(layers: list[Layer]) -> bool:
    return any(layer.kind == "hexagonId" and layer.size_by for layer in layers)


def _middle(datasets: dict[str, pl.DataFrame]) -> tuple[float, float]:
    for frame in datasets.values():
        for lat, lon in (("lat", "lon"), ("lat0", "lon0")):
            if lat in frame.columns and frame.height:
                return float(frame[lat].mean()), float(frame[lon].mean())
    return 0.0, 0.0
