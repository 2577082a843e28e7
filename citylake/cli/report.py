"""``citylake report`` and ``citylake pilot``: decision-support summaries for districts and pilot areas."""

from __future__ import annotations

from pathlib import Path

import click

from citylake.cli.options import Context, K, OutPath, analysis, pass_context
from citylake.cli.output import note


@click.command()
@click.option("--district", "place_ids", multiple=True, metavar="PLACE_ID", help="Report on this place (repeatable).")
@click.option("--category", help="One report per place of this category, e.g. district (batch mode).")
@click.option("--out", type=OutPath(dir_okay=True, make_parents=True), required=True,
              help="report.html or report.md for one place; a directory for several (with summary.json).")
@click.option("--for-planners", is_flag=True, help="Also publish the reports (HTML) to `citylake serve`'s planners and analysts.")
@K
@analysis
@pass_context
def report(ctx: Context, place_ids: tuple[str, ...], category: str | None, out: str, for_planners: bool, k_anon: int | None, start, end,
           scheduler: str | None, workers: int | None) -> None:
    """Decision-support summaries: what is unusual (events, sensor faults), hotspots, footfall and dwell,
    nearby sensors, flows in and out — k-anonymous, as HTML (figures embedded) or Markdown.

    The analysis runs on Dask; with --scheduler or --workers (or the setting analysis.scheduler) the reports are also
    computed and drawn there, a task per place, and only written here.

    \b
    Examples:
      citylake report --district places:expo --from 2026-11-04 --to 2026-11-06 --out expo.html
      citylake report --category district --out reports/        # one per district + reports/summary.json
      citylake report --category district --workers 2 --out reports/
    """
    from citylake import api, reports

    lake = ctx.open()
    if category:
        place_ids = tuple(api.place_ids_of(lake, category))
    if not place_ids:
        raise click.UsageError("say which place: --district PLACE_ID (repeatable) or --category CATEGORY")
    k = ctx.k(lake, k_anon)
    if for_planners and Path(out).suffix.lower() == ".md":
        raise click.UsageError("--for-planners publishes HTML reports; write them as .html (or into a directory)")
    single = len(place_ids) == 1 and Path(out).suffix.lower() in (".html", ".md")
    written = api.report(lake, place_ids, out=out, single=single, start=start, end=end, settings=ctx.settings, scheduler=scheduler,
                         workers=workers, k=k, announce=note)
    if not single:
        note(f"summary: {reports.write_summary(written, Path(out) / 'summary.json')}")
    if for_planners:
        made = {r.place_id: Path(out) if single else Path(out) / f"{r.place_id.replace(':', '_')}.html" for r in written}
        shelved = api.publish_reports(lake, made, settings=ctx.settings)
        note(f"published to the server's planners: {', '.join(path.name for path in shelved)}")


@click.command()
@click.option("--boundary", type=click.Path(exists=True, dir_okay=False), required=True,
              help="The pilot area (GeoJSON, Shapefile zip, GeoPackage…), one polygon.")
@click.option("--pois", type=click.Path(exists=True, dir_okay=False), help="The area's POIs (CSV with lat/lon or WKT, GeoJSON…).")
@click.option("--sensors", type=click.Path(exists=True, dir_okay=False), help="Sensor registry of the area.")
@click.option("--readings", type=click.Path(exists=True, dir_okay=False), help="Sensor readings.")
@click.option("--pings", type=click.Path(exists=True, dir_okay=False), help="Location-service pings.")
@click.option("--name", default="pilot", show_default=True, help="Name of the pilot area.")
@click.option("--timezone", metavar="ZONE", help="The area's time zone, e.g. Asia/Shanghai: the report's hours are in it (kept "
              "with the lake; default: the lake's, else UTC).")
@click.option("--out", type=OutPath(make_parents=True), default="pilot-report.html", show_default=True,
              help="The first report (.html or .md).")
@K
@analysis
@pass_context
def pilot(ctx: Context, boundary: str, pois: str | None, sensors: str | None, readings: str | None, pings: str | None, name: str,
          timezone: str | None, out: str, k_anon: int | None, start, end, scheduler: str | None, workers: int | None) -> None:
    """District pilot in one command: load the area's boundary and its own data, index it, write its first report.

    \b
    Example:
      citylake pilot --boundary park.geojson --pois pois.csv --sensors sensors.csv --readings readings.csv \\
                     --pings pings.csv --name "Riverside Park" --out riverside.html
    """
    from citylake.pilot import Pilot, run_pilot

    area = Pilot(boundary=boundary, name=name, pois=pois, sensors=sensors, readings=readings, pings=pings, timezone=timezone)
    target = run_pilot(area, out=out, settings=ctx.settings, k=k_anon, start=start, end=end, scheduler=scheduler,
                       workers=workers, announce=note)
    note(f"pilot: first report at {target}")


@click.command()
@click.argument("scheduler", metavar="tls://HOST:PORT")
@click.option("--memory-limit", metavar="SIZE", help="Memory this worker may use, e.g. 4GB (default: the setting "
              "analysis.worker_memory, else Dask's share of this machine's memory).")
@click.option("--name", help="The worker's name on the dashboard (default: its address).")
@pass_context
def worker(ctx: Context, scheduler: str, memory_limit: str | None, name: str | None) -> None:
    """Join a Dask cluster as one worker: one thread on one core, tuned like the local cluster's.

    \b
    Start one per core on each machine, after `dask scheduler --protocol tls` (with --tls-ca-file/--tls-cert/--tls-key
    there, and the settings analysis.tls_ca_file, analysis.tls_cert and analysis.tls_key here):
      dask scheduler --protocol tls --host 10.0.0.5 --port 8786 --tls-ca-file ca.pem --tls-cert s.pem --tls-key s.key
      citylake worker tls://10.0.0.5:8786          # on every worker machine, once per core
      citylake --lake s3://city/lake report --scheduler tls://10.0.0.5:8786 --district places:cbd --out reports
    Tasks carry the lake's URI and the submitting machine's storage settings, its S3 keys included (an ingest's, the
    pseudonym key too): with an s3:// lake a worker needs only to reach the store. A plain tcp:// cluster is refused:
    whoever reaches one can run code on its workers."""
    from citylake import api

    api.worker(scheduler, settings=ctx.settings, memory_limit=memory_limit, name=name)


COMMANDS = (report, pilot, worker)
