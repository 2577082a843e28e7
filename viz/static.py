"""Static PNG versions of the map views, for reports: no browser, no network (matplotlib, Agg)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import polars as pl
import shapely

from citylake.h3_index import strings_to_cells
from citylake.h3_index.cells import cells_to_polygons
from citylake.viz.kepler import PALETTE, MapView


def write_png(view: MapView, out: str | Path, /, *, size_in: tuple[float, float] = (8, 8), dpi: int = 110) -> Path:
    """Draw ``view``'s layers (all time buckets together: values summed per feature) into a PNG file."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(png_bytes(view, size_in=size_in, dpi=dpi))
    return out


def png_bytes(view: MapView, /, *, size_in: tuple[float, float] = (8, 8), dpi: int = 110) -> bytes:
    """``view``'s layers drawn as PNG bytes (for embedding in a report). Features are drawn in a fixed order, so the
    same view gives the same bytes (a rerun of a batch of reports changes no file whose data did not change)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection, PolyCollection
    from matplotlib.colors import LinearSegmentedColormap, Normalize

    cmap = LinearSegmentedColormap.from_list("citylake", PALETTE["colors"])
    fig, ax = plt.subplots(figsize=size_in, dpi=dpi)
    fig.patch.set_facecolor("#242730")
    ax.set_facecolor("#242730")
    scale = None
    for layer in view.layers:
        frame = view.datasets[layer.data_id]
        if frame.is_empty():
            continue
        if layer.kind == "geojson":
            shapes = shapely.from_geojson(frame[layer.columns["geojson"]].to_numpy())
            rings = [np.asarray(r.coords) for g in shapes for p in shapely.get_parts(g) for r in [p.exterior]]
            ax.add_collection(PolyCollection(rings, facecolors=(0.35, 0.67, 0.9, 0.12), edgecolors=(0.35, 0.67, 0.9, 0.7), linewidths=0.6))
            continue
        value = layer.color_by
        if layer.kind == "hexagonId":
            totals = frame.group_by(layer.columns["hex_id"]).agg(pl.col(value).sum()).sort(layer.columns["hex_id"])
            polys = cells_to_polygons(strings_to_cells(totals[layer.columns["hex_id"]].to_list()))
            scale = Normalize(0, float(totals[value].max()))
            ax.add_collection(PolyCollection([np.asarray(p.exterior.coords) for p in polys], array=totals[value].to_numpy(),
                                             cmap=cmap, norm=scale, edgecolors="none"))
        elif layer.kind == "point":
            per = frame.group_by(layer.columns["lng"], layer.columns["lat"]).agg(pl.col(value).mean()).sort(pl.all()) if value else frame
            colours = per[value].to_numpy() if value else None
            scale = Normalize(float(colours.min()), float(colours.max())) if value else scale
            ax.scatter(per[layer.columns["lng"]], per[layer.columns["lat"]], c=colours, cmap=cmap if value else None, norm=scale,
                       s=18, color=None if value else np.array(layer.color) / 255, zorder=3)
        elif layer.kind == "arc":
            c = layer.columns
            per = frame.group_by(c["lng0"], c["lat0"], c["lng1"], c["lat1"]).agg(pl.col(value).sum()).sort(pl.all())
            segments = [[(a, b), (x, y)] for a, b, x, y in per.select(c["lng0"], c["lat0"], c["lng1"], c["lat1"]).rows()]
            scale = Normalize(0, float(per[value].max()))
            widths = 0.5 + 4 * per[value].to_numpy() / max(1, per[value].max())
            ax.add_collection(LineCollection(segments, array=per[value].to_numpy(), cmap=cmap, norm=scale, linewidths=widths))
    ax.autoscale_view()
    ax.set_aspect(1 / np.cos(np.radians(np.mean(ax.get_ylim()))))
    ax.tick_params(colors="#999", labelsize=7)
    ax.set_title(view.title, color="#eee", fontsize=11)
    if scale is not None:
        bar = fig.colorbar(plt.cm.ScalarMappable(norm=scale, cmap=cmap), ax=ax, shrink=0.6)
        bar.ax.tick_params(colors="#ccc", labelsize=7)
        label = next((layer.color_by for layer in view.layers if layer.color_by and layer.kind != "geojson"), "")
        bar.set_label(f"{label} (all buckets together)", color="#ccc", fontsize=8)
    if view.note:
        fig.text(0.5, 0.02, view.note, ha="center", color="#bbb", fontsize=7)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", facecolor=fig.get_facecolor())
    plt.close(fig)
    return buffer.getvalue()
