"""The ``citylake`` command: one module per command group, shared options (``options``) and output (``output``).

Every fault prints one line on stderr and exits non-zero: a user mistake (a bad setting, an unknown table, a SQL error, a
bad option: exit 2), a lake that cannot be written, a failure of an engine or the file system (exit 1), Ctrl-C (exit 130,
``interrupts``). Native libraries' panic text is filtered out of stderr (``stderr``). An unexpected exception — a bug in
citylake — prints one line naming a file that holds its traceback (``CITYLAKE_DEBUG=1`` shows it instead, with native stderr
unfiltered). Modules import the library inside each command, so ``citylake --help`` stays fast.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import sys
import threading

import click

from citylake.cli import detect, ingest, interrupts, lake, live, map, privacy, query, replay, report, serve, sql, stderr
from citylake.cli.options import Context


class CitylakeGroup(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise interrupts.Interrupted from None  # past click's handler, which prints a blank line before `main` can


@click.group(cls=CitylakeGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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


for group in (lake, sql, ingest, replay, query, report, map, privacy, live, detect, serve):
    for command in group.COMMANDS:
        cli.add_command(command)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning every fault into one line and a non-zero exit code."""
    from citylake import CitylakeError

    try:
        code = cli.main(args=argv, prog_name="citylake", standalone_mode=False)  # a command's click Exit(n) returns n
    except (interrupts.Interrupted, KeyboardInterrupt, click.exceptions.Abort):
        return interrupts.report()
    except click.exceptions.NoArgsIsHelpError as err:
        err.show()
        return err.exit_code
    except click.ClickException as err:
        click.echo(f"citylake: error: {_click_message(err)}", err=True)
        return err.exit_code
    except CitylakeError as err:
        click.echo(f"citylake: error: {one_line(err)}", err=True)
        return 1
    except Exception as err:
        if not _reported_as_one_line(err):
            return _bug(err)
        click.echo(f"citylake: error: {_explained(err)}", err=True)
        return 1
    except BaseException as err:  # a Rust panic reaches Python as pyo3's PanicException, a BaseException
        if type(err).__name__ != "PanicException":
            raise
        click.echo(f"citylake: error: a native library failed ({one_line(err) or 'a panic'}); check the lake is writable and its "
                   "disk has room, then run the command again", err=True)
        return 1
    return code if isinstance(code, int) else 0


def _click_message(err: click.ClickException) -> str:
    """Click's message on one line; a usage mistake also says where the command's help is (instead of its usage lines)."""
    text = " ".join(err.format_message().split())
    command = getattr(getattr(err, "ctx", None), "command_path", None)
    return f"{text} (see `{command} --help`)" if isinstance(err, click.UsageError) and command else text


def _bug(err: Exception) -> int:
    """An exception citylake did not expect: one line, and its traceback in a file for the bug report."""
    import tempfile
    import traceback

    if os.environ.get("CITYLAKE_DEBUG"):
        raise err
    where = "(no file could be written for it)"
    try:
        fd, path = tempfile.mkstemp(prefix="citylake-error-", suffix=".txt")
        with os.fdopen(fd, "w") as file:
            file.write(f"citylake {' '.join(sys.argv[1:])}\n\n" + "".join(traceback.format_exception(err)))
        where = f"the details are in {path}"
    except OSError:
        pass
    click.echo(f"citylake: error: unexpected {type(err).__name__}: {one_line(err)} — a bug in citylake; {where}, please report it",
               err=True)
    return 1


def _reported_as_one_line(err: Exception) -> bool:
    """A failure of the engines, the file system or the input the user can act on: DuckDB's and deltalake's errors, OS
    errors, text that is not valid UTF-8."""
    if isinstance(err, UnicodeError):
        return True
    duckdb, deltalake = sys.modules.get("duckdb"), sys.modules.get("deltalake")  # loaded by whatever raised; never imported to check
    return (isinstance(err, OSError) or (duckdb is not None and isinstance(err, duckdb.Error))
            or (deltalake is not None and isinstance(err, deltalake.exceptions.DeltaError)))


def _explained(err: Exception) -> str:
    """The error's text, with what to do when the file system refused: a lake this user cannot write, a full disk."""
    text = one_line(err)
    if isinstance(err, PermissionError) or "Permission denied" in text:
        path = getattr(err, "filename", None) or next(iter(re.findall(r"(/[^\s#:]+)", text)), None)
        refused = path and sys.modules.get("citylake.lake") and sys.modules["citylake.lake"].NotWritable.inside_lake(path)
        return str(refused) if refused else f"{text} (only the lake's owner may change it; analysts read the shared tables and releases)"
    if "lacked the necessary privileges" in text or "403 Forbidden" in text:
        return (f"the object store refused this user's keys: {text[:200]} (an s3:// lake's steward zone is for the steward's "
                "keys; analysts' keys read tables/ and releases/; check storage.access_key_id or AWS_ACCESS_KEY_ID)")
    if "error sending request" in text or "Connection refused" in text:
        return f"cannot reach the object store: {text[:200]} (check storage.endpoint or AWS_ENDPOINT_URL, and that it is running)"
    if getattr(err, "errno", None) == errno.ENOSPC or "No space left on device" in text:
        return f"{text} (the disk is full: free some space, then run the command again; what was committed stays)"
    return text


def one_line(err: Exception) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()  # delta-rs colours its error chains
    for marker in ("Python exception occurred while executing the UDF: ",):
        if marker in text:
            text = text.split(marker, 1)[1]
    return " ".join(line.strip() for line in text.splitlines()[:3] if line.strip() and not line.startswith("At:"))


def run() -> None:
    """Console-script entry point: native stderr filtered and Ctrl-C watched for the whole command (see ``stderr`` and
    ``interrupts``); once the command is done, what the process prints while shutting down is dropped."""
    stderr.start()
    interrupts.watch()
    try:
        try:
            code = main()
        except KeyboardInterrupt:  # between the command and its one line
            code = interrupts.report()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the command is over: shutting down is not interrupted
    finally:
        stderr.finish()
    # Shutting down may not keep the prompt waiting: a library's exit handler (Dask closing a cluster an interrupt left
    # half-closed waits 10 s) is cut short. Everything is written by now; workers end with this process.
    watchdog = threading.Timer(0.5 if code == 130 else 5.0, os._exit, args=(code,))
    watchdog.daemon = True
    watchdog.start()
    sys.exit(code)
