"""``citylake map``: kepler.gl maps as HTML files that open offline, or static PNGs."""

from __future__ import annotations

import click

from citylake.cli.options import CATEGORIES, ROLE, Context, K, OutPath, analysis, filters, options, pass_context, window
from citylake.cli.output import note


@click.group(name="map")
def map_group() -> None:
    """kepler.gl maps as HTML files that open offline (assets beside them in citylake-kepler/).

    With no tile server the layers draw on a plain background; --tiles URL (a MapLibre style
    JSON on your own tile server) draws a base map under them.
    """


TILES = click.option("--tiles", metavar="STYLE_URL", help="MapLibre style URL of your tile server (default: no base map).")
OUT = click.option("--out", type=OutPath(make_parents=True), required=True,
                   help="The file to write: footfall.html (interactive, offline) or footfall.png (static, for reports).")
drawn = options(TILES, OUT, pass_context)
FREQ = click.option("--freq", type=click.Choice(["15min", "1h", "1d"]), default="1h", show_default=True, help="Time bucket to play back.")


def _write(view, out: str, tiles: str | None) -> None:
    from citylake.viz import write_html, write_png

    path = write_png(view, out) if out.lower().endswith(".png") else write_html(view, out, tiles=tiles)
    layers = ", ".join(f"{layer.label} ({view.datasets[layer.data_id].height:,} rows)" for layer in view.layers)
    note(f"map written to {path} — {layers}" + (f"; {view.note}" if view.note else ""))


@map_group.command(name="footfall")
@click.option("--res", type=click.IntRange(0, 15), help="H3 resolution of the hexagons (analysts: the release's; steward: default 9).")
@FREQ
@ROLE
@K
@window
@drawn
def footfall(ctx: Context, res: int | None, freq: str, role: str, k_anon: int | None, start, end, tiles: str | None, out: str) -> None:
    """Devices per H3 cell per hour as extruded hexagons with time playback, from the release; with
    --role steward, exact and k-anonymous at any resolution and bucket.

    \b
    Example:
      citylake map footfall --from 2026-11-04 --to 2026-11-05 --out footfall.html
    """
    from citylake import api
    from citylake.viz import footfall_view

    lake = ctx.open()
    found = api.footfall(lake, role=role, by="cell", freq=freq, res=res if res is not None or role != "steward" else 9,
                         filters=filters(start=start, end=end), k=k_anon, settings=ctx.settings)
    _write(footfall_view(lake, found, freq=freq), out, tiles)


@map_group.command(name="readings")
@click.option("--metric", help="Only this metric, e.g. pm25 (default: all, coloured by value).")
@FREQ
@window
@drawn
def readings(ctx: Context, metric: str | None, freq: str, start, end, tiles: str | None, out: str) -> None:
    """Mean reading per sensor per bucket as coloured points with time playback.

    \b
    Example:
      citylake map readings --metric pm25 --out pm25.html
    """
    from citylake.viz import readings_map

    _write(readings_map(ctx.open(), metric=metric, freq=freq, filters=filters(start=start, end=end)), out, tiles)


@map_group.command(name="od")
@click.option("--category", default="district", show_default=True, help="Zones: places of this category.")
@click.option("--freq", type=click.Choice(["1h", "1d"]), default="1d", show_default=True, help="Bucket of the departure time.")
@ROLE
@K
@window
@drawn
def od(ctx: Context, category: str, freq: str, role: str, k_anon: int | None, start, end, tiles: str | None, out: str) -> None:
    """Devices travelling between districts per day as arcs, from the release; with --role steward, exact
    trips between zones of any category (k-anonymous).

    \b
    Example:
      citylake map od --category district --out flows.html
    """
    from citylake import api
    from citylake.viz import od_view

    lake = ctx.open()
    found = api.od(lake, role=role, freq=freq, filters=filters(start=start, end=end, categories=(category,)), k=k_anon,
                   settings=ctx.settings)
    _write(od_view(lake, found, category=category, freq=freq), out, tiles)


@map_group.command(name="hotspots")
@K
@analysis
@drawn
def hotspots(ctx: Context, k_anon: int | None, start, end, scheduler: str | None, workers: int | None, tiles: str | None,
             out: str) -> None:
    """Hot and cold H3 cells (Getis-Ord Gi* of pings) from the situational analysis, coloured by z.

    \b
    Example:
      citylake map hotspots --from 2026-11-04 --to 2026-11-06 --out hotspots.html
    """
    from citylake import api
    from citylake.viz import hotspots_map

    lake = ctx.open()
    found = api.analyse(lake, start=start, end=end, settings=ctx.settings, scheduler=scheduler, workers=workers, announce=note)
    _write(hotspots_map(lake, found.hotspots, patterns=found.trends, k=ctx.k(lake, k_anon)), out, tiles)


@map_group.command(name="places")
@CATEGORIES
@drawn
def places(ctx: Context, categories: tuple[str, ...], tiles: str | None, out: str) -> None:
    """Places as polygons coloured by category, and the sensors.

    \b
    Example:
      citylake map places --out places.html
    """
    from citylake.viz import places_map

    _write(places_map(ctx.open(), filters=filters(categories=categories)), out, tiles)


COMMANDS = (map_group,)
