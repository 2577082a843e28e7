"""``citylake serve`` and ``citylake users``: the lake as a service, and the accounts that reach it."""

from __future__ import annotations

import click

from citylake.cli.options import TABLE_FORMATS, Context, pass_context
from citylake.cli.output import emit, rows, say


@click.command()
@click.option("--host", help="Address to listen on (setting serve.host; default 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), help="HTTP port (setting serve.port; default 8080).")
@click.option("--flight-port", type=click.IntRange(0, 65535), help="Arrow Flight SQL port (setting serve.flight_port; default 8081; "
              "0: none).")
@pass_context
def serve(ctx: Context, host: str | None, port: int | None, flight_port: int | None) -> None:
    """Serve the lake: the planner web app and JSON API over HTTP, and Arrow Flight SQL for analysts' tools.

    Run it as the lake's OS user, with the lake's key: it answers every account through the same
    privacy rules as the CLI. Every request needs a bearer token from `citylake users add`:

    \b
      planner   maps, footfall, flows, hotspots and alerts from the releases; published reports
      analyst   that, and SQL (SELECT only) over the shared tables and releases, also by Flight SQL
      pilot     uploads its area's boundary and files and gets its first report; reads the
                releases inside its area
      steward   everything

    TLS: set serve.tls_cert and serve.tls_key (citylake.toml or $CITYLAKE_SERVE_TLS_CERT / _KEY).

    \b
    Examples:
      citylake users add ana --role planner        prints ana's token, once
      citylake serve --port 8080                   then open http://127.0.0.1:8080/
      curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8080/api/footfall?category=park
    """
    from citylake import api

    chosen = {"serve.host": host, "serve.port": port, "serve.flight_port": flight_port}
    settings = ctx.settings.with_overrides({name: value for name, value in chosen.items() if value is not None})
    api.serve(ctx.open(), settings=settings, announce=say)


@click.group()
def users() -> None:
    """Accounts of `citylake serve` (the steward's; needs the lake's key)."""


@users.command(name="add")
@click.argument("name")
@click.option("--role", type=click.Choice(["planner", "analyst", "pilot", "steward"]), required=True,
              help="What the account may do (see `citylake serve --help`).")
@pass_context
def add(ctx: Context, name: str, role: str) -> None:
    """Make an account and print its bearer token — once: the lake keeps only its hash.

    \b
    Example:
      citylake users add ana --role planner
    """
    from citylake import api

    token = api.add_user(ctx.open(), name, role, settings=ctx.settings)
    say(f"account {name} ({role}); its token, shown only now — hand it over privately:")
    click.echo(token)


@users.command(name="list")
@click.option("--format", "fmt", type=TABLE_FORMATS, default="table", show_default=True)
@pass_context
def list_users(ctx: Context, fmt: str) -> None:
    """The accounts: name, role, when made, a pilot's area (never tokens)."""
    from citylake import api

    found = api.users(ctx.open(), settings=ctx.settings)
    emit(rows([{"name": a.name, "role": a.role, "created": a.created, "area": a.area or ""} for a in found]), fmt, title="accounts")


@users.command(name="revoke")
@click.argument("name")
@pass_context
def revoke(ctx: Context, name: str) -> None:
    """Remove an account: a running server refuses its token from the next request on."""
    from citylake import api

    api.revoke_user(ctx.open(), name, settings=ctx.settings)
    say(f"account {name} revoked")


COMMANDS = [serve, users]
