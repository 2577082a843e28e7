"""``citylake query``: people–things–places questions on DuckDB or Polars (same answers), k-anonymous."""

from __future__ import annotations

import click

from citylake.cli.options import ROLE, Bbox, Context, K, filters, pass_context, places, result, window
from citylake.cli.output import note, write_result


@click.group()
def query() -> None:
    """People–things–places questions, on DuckDB or Polars (same answers), k-anonymous."""


def _stays_options(command):
    command = click.option("--min-dwell", default=5, show_default=True, help="Minutes a stay must last to count.")(command)
    return click.option("--max-gap", default=30, show_default=True, help="Minutes of silence inside a place that end a stay.")(command)


@query.command(name="footfall")
@click.option("--by", type=click.Choice(["place", "category", "cell"]), default="place", show_default=True,
              help="Group by place, by place category, or by H3 cell.")
@click.option("--res", type=int, help="H3 resolution for --by cell (default: the lake's cell resolution).")
@click.option("--freq", type=click.Choice(["5min", "15min", "1h", "1d"]), default="1h", show_default=True, help="Time bucket.")
@window
@places
@click.option("--hours", help="Hours of day (UTC): a range such as 9-17 or a list such as 8,12,18.")
@click.option("--weekdays", help="mon,tue,… or weekend / weekdays.")
@click.option("--bbox", type=Bbox(), help="Only pings inside this lon/lat box (analysts: places or cells whose centre is inside).")
@ROLE
@K
@click.option("--scheduler", metavar="tls://HOST:PORT", help="The steward's exact footfall on this Dask cluster (tls:// only), "
              "a task per day of pings: for windows larger than one machine's memory. Same answer.")
@result
@pass_context
def footfall(ctx: Context, by: str, res: int | None, freq: str, role: str, k_anon: int | None, engine_name: str, fmt: str,
             out: str | None, scheduler: str | None, **chosen) -> None:
    """Distinct devices per place (or H3 cell) per hour, from the differentially private release; with
    --role steward, exact pings and devices per place, category or cell at any bucket, k-anonymous.

    The steward's counts: pings in a place's interior cells count directly, pings in its boundary
    cells get an exact point-in-polygon test, and groups with fewer than k distinct devices are withheld.

    \b
    Example: visitors of each park per hour last weekend
      citylake query footfall --category park --from 2026-11-07 --to 2026-11-09
    """
    from citylake import api
    from citylake.queries import with_hex_cells

    found = api.footfall(ctx.open(), role=role, by=by, freq=freq, res=res, filters=filters(**chosen), k=k_anon, engine_name=engine_name,
                         settings=ctx.settings, scheduler=scheduler, announce=note)
    write_result(with_hex_cells(found.table, "h3_cell", into="cell") if by == "cell" else found.table, fmt, out)
    note(found.summary())


@query.command(name="dwell")
@window
@places
@_stays_options
@click.option("--visits", "visits_freq", type=click.Choice(["15min", "1h", "1d"]), help="Show visits per place per bucket instead.")
@click.option("--save", is_flag=True, help="Also write the stays as the derived table `stays` (steward data: per device).")
@ROLE
@K
@click.option("--scheduler", metavar="tls://HOST:PORT", help="Find the stays on this Dask cluster (tls:// only), a task per "
              "span of days, joined across midnight: for windows larger than one machine's memory. Same stays; --max-gap under a day.")
@result
@pass_context
def dwell(ctx: Context, max_gap: int, min_dwell: int, visits_freq: str | None, save: bool, role: str, k_anon: int | None,
          engine_name: str, fmt: str, out: str | None, scheduler: str | None, **chosen) -> None:
    """How long people stay in places: visits, devices, median and p90 stay per place (k-anonymous; the steward's).

    A stay is a run of one device's consecutive pings inside a place with no silence longer than
    --max-gap, lasting at least --min-dwell.

    \b
    Example: dwell in parks last weekend, and visits per hour
      citylake query dwell --category park --from 2026-11-07 --to 2026-11-09
      citylake query dwell --category park --visits 1h
    """
    from citylake import api, queries

    lake = ctx.open(write=save)
    api.require_steward_role(lake, role, doing="dwell", settings=ctx.settings)
    on_the_city_clock = filters(**chosen, tz=lake.timezone)
    found = api.stays(lake, filters=on_the_city_clock, max_gap_s=max_gap * 60, min_dwell_s=min_dwell * 60, engine_name=engine_name,
                      settings=ctx.settings, scheduler=scheduler, announce=note)
    if save:
        version = api.save_stays(lake, found, max_gap_s=max_gap * 60, min_dwell_s=min_dwell * 60, settings=ctx.settings)
        note(f"stays: {found.height:,} rows written (version {version})")
    k = ctx.k(lake, k_anon)
    answer = (queries.visits(found, freq=visits_freq, k=k, engine_name=engine_name) if visits_freq
              else queries.dwell(found, k=k, engine_name=engine_name))
    write_result(answer.table, fmt, out)
    note(answer.summary())


@query.command(name="od")
@click.option("--category", "categories", multiple=True, help="Zones: places of this category (repeatable), e.g. district.")
@click.option("--place", "place_ids", multiple=True, metavar="ID", help="Zones: these places (repeatable).")
@window
@click.option("--freq", type=click.Choice(["1h", "1d"]), default="1d", show_default=True, help="Bucket of the departure time.")
@click.option("--cells", "cell_res", type=click.IntRange(0, 15), metavar="RES",
              help="Zones are H3 cells at RES instead of places; stays are stay points (--radius, --min-dwell).")
@click.option("--radius", default=200.0, show_default=True, help="With --cells: metres a device may wander and still stay.")
@_stays_options
@ROLE
@K
@result
@pass_context
def od(ctx: Context, freq: str, cell_res: int | None, radius: float, max_gap: int, min_dwell: int, role: str, k_anon: int | None,
       engine_name: str, fmt: str, out: str | None, **chosen) -> None:
    """Origin–destination flows: devices travelling between districts per day, from the release; with --role
    steward, exact trips between consecutive stays in any zones (k-anonymous).

    Zones should not overlap (one category such as district): a stay inside two overlapping
    zones at once would read as a trip between them.

    With --cells, zones are H3 cells and stays are stay points anywhere: runs of pings within
    --radius metres of their first for at least --min-dwell minutes.

    \b
    Examples: flows between districts per day; between resolution-7 cells
      citylake query od --category district --freq 1d
      citylake query od --cells 7 --radius 200 --min-dwell 15
    """
    from citylake import api, queries

    lake = ctx.open()
    chosen_filters = filters(**chosen, tz=lake.timezone)  # hours and weekdays on the city's clock
    if cell_res is not None:
        api.require_steward_role(lake, role, doing="flows between cells", settings=ctx.settings)
        points = queries.stay_points(lake, radius_m=radius, min_dwell_s=min_dwell * 60, filters=chosen_filters, engine_name=engine_name)
        flows = queries.od_cells(points, res=cell_res, freq=freq, k=ctx.k(lake, k_anon), engine_name=engine_name)
        table = queries.with_hex_cells(queries.with_hex_cells(flows.table, "origin"), "destination")
    else:
        flows = api.od(lake, role=role, freq=freq, filters=chosen_filters, k=k_anon, max_gap_s=max_gap * 60, min_dwell_s=min_dwell * 60,
                       engine_name=engine_name, settings=ctx.settings)
        table = flows.table
    write_result(table, fmt, out)
    note(flows.summary())


@query.command(name="near")
@click.option("--place", "place_ids", multiple=True, metavar="ID", help="Around this place (repeatable); with --of sensors, these sensors.")
@click.option("--category", "categories", multiple=True, help="Around places of this category (repeatable), e.g. expo.")
@click.option("--what", type=click.Choice(["sensors", "pois"]), default="sensors", show_default=True, help="What to look for.")
@click.option("--radius", default=300.0, show_default=True, help="Metres from the place's outline (0 inside it).")
@click.option("--knn", "k", type=int, help="Instead of a radius: the K nearest (from each place, or each sensor with --of sensors).")
@click.option("--of", "of", type=click.Choice(["places", "sensors"]), default="places", show_default=True,
              help="Whose neighbours --knn finds.")
@click.option("--readings", is_flag=True, help="Show what the nearby sensors read during each place's busy hours.")
@window
@ROLE
@K
@result
@pass_context
def near(ctx: Context, what: str, radius: float, k: int | None, of: str, readings: bool, role: str, k_anon: int | None,
         engine_name: str, fmt: str, out: str | None, **chosen) -> None:
    """Things near places: sensors or POIs within --radius metres, or the --knn nearest, with distances on the sphere.

    \b
    Examples:
      citylake query near --place places:expo --radius 300                 # sensors within 300 m of the expo hall
      citylake query near --category park --what pois --knn 3              # 3 nearest POIs of each park
      citylake query near --place places:expo --readings --from 2026-11-04 # what they read while the expo was busy
    """
    from citylake import api, queries

    lake = ctx.open()
    chosen_filters = filters(**chosen, tz=lake.timezone)  # hours and weekdays on the city's clock
    if readings:
        table = api.conditions(lake, role=role, radius_m=radius, filters=chosen_filters, k=k_anon, engine_name=engine_name,
                               settings=ctx.settings)
    elif k is not None:
        table = queries.nearest_things(lake, of=of, what=what, k=k, filters=chosen_filters)
    else:
        table = queries.things_near(lake, what=what, radius_m=radius, filters=chosen_filters)
    write_result(table.to_arrow(), fmt, out)
    note(f"{table.height:,} rows")


@query.command(name="profile")
@places
@click.option("--radius", default=300.0, show_default=True, help="Sensors within this many metres of the place count as its own.")
@click.option("--freq", type=click.Choice(["15min", "1h", "1d"]), default="1h", show_default=True, help="Time bucket.")
@window
@ROLE
@K
@result
@pass_context
def profile(ctx: Context, radius: float, freq: str, role: str, k_anon: int | None, engine_name: str, fmt: str, out: str | None,
            **chosen) -> None:
    """People–things–places: footfall of each place per bucket beside its nearby sensors' mean readings.

    One column per metric (e.g. pm25, laeq, people_count); the correlation of devices with each
    metric is printed after the table. k-anonymous: buckets with fewer than k devices are absent.

    \b
    Example: the expo hall during the event, hourly
      citylake query profile --place places:expo --from 2026-11-04 --to 2026-11-06
    """
    import polars as pl

    from citylake import api, queries

    found = api.profile(ctx.open(), role=role, radius_m=radius, freq=freq, filters=filters(**chosen), k=k_anon, engine_name=engine_name,
                        settings=ctx.settings)
    write_result(found.table, fmt, out)
    for row in queries.correlations(pl.from_arrow(found.table)).filter(pl.col("buckets") >= 3).iter_rows(named=True):
        note(f"{row['place_id']}: devices vs {row['metric']}: r = {row['r']} over {row['buckets']} buckets")
    note(found.summary())


COMMANDS = (query,)
