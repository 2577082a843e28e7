"""The ``citylake`` command: one module per command group, shared options (``options``) and output (``output``).

User mistakes (a bad setting, an unknown table, a SQL error) print one line on stderr and exit 1; a traceback
means a bug in citylake. Modules import the library inside each command, so ``citylake --help`` stays fast.
"""

from __future__ import annotations

import sys

import click

from citylake.cli import ingest, lake, map, privacy, query, report, sql
from citylake.cli.options import Context


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--lake", metavar="DIR", help="Lake directory. Default: $CITYLAKE_LAKE, else ./citylake-data.")
@click.option("--config", metavar="FILE", help="Settings file. Default: $CITYLAKE_CONFIG, else ./citylake.toml if present.")
@click.version_option(package_name="citylake")
@click.pass_context
def cli(ctx: click.Context, lake: str | None, config: str | None) -> None:
    """citylake: a spatial lakehouse for city data.

    Feeds (map data, IoT sensors, device pings) land in Delta tables keyed by H3 cells
    and time; DuckDB and Polars query them with the same answers.

    \b
    Start here:
      citylake init                                    create the lake and the pseudonym key
      citylake generate-city --out city                a sample city as feed files
      citylake ingest places city/places.geojson       then sensors, readings, pings likewise
      citylake tables                                  what the lake holds
      citylake query footfall --category park          visitors per park per hour
      citylake sql "SELECT count(*) FROM pings"        anything else, in SQL
    """
    ctx.obj = Context(lake, config)


for group in (lake, sql, ingest, query, report, map, privacy):
    for command in group.COMMANDS:
        cli.add_command(command)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning user mistakes into one line and exit code 1."""
    from citylake import CitylakeError

    try:
        code = cli.main(args=argv, prog_name="citylake", standalone_mode=False)  # a command's click Exit(n) returns n
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as err:
        err.show()
        return err.exit_code
    except CitylakeError as err:
        click.echo(f"citylake: error: {one_line(err)}", err=True)
        return 1
    except Exception as err:
        if not _reported_as_one_line(err):
            raise
        click.echo(f"citylake: error: {one_line(err)}{_hint(err)}", err=True)
        return 1
    return code if isinstance(code, int) else 0


def _reported_as_one_line(err: Exception) -> bool:
    """A failure of the engines, the file system or the input the user can act on: DuckDB's and deltalake's errors, OS
    errors, text that is not valid UTF-8."""
    if isinstance(err, UnicodeError):
        return True
    duckdb, deltalake = sys.modules.get("duckdb"), sys.modules.get("deltalake")  # loaded by whatever raised; never imported to check
    return (isinstance(err, OSError) or (duckdb is not None and isinstance(err, duckdb.Error))
            or (deltalake is not None and isinstance(err, deltalake.exceptions.DeltaError)))


def _hint(err: Exception) -> str:
    denied = isinstance(err, PermissionError) or "Permission denied" in str(err)
    return " (only the lake's owner may change it; analysts read the shared tables and the releases)" if denied else ""


def one_line(err: Exception) -> str:
    text = str(err).strip()
    for marker in ("Python exception occurred while executing the UDF: ",):
        if marker in text:
            text = text.split(marker, 1)[1]
    return " ".join(line.strip() for line in text.splitlines()[:3] if line.strip() and not line.startswith("At:"))


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
