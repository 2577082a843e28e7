"""The steward's privacy commands: the lake's policy and budget (``privacy``), its key (``key rotate``)."""

from __future__ import annotations

import click

from citylake.cli.options import Context, pass_context
from citylake.cli.output import emit, rows, say


@click.group()
def privacy() -> None:
    """The lake's privacy policy and budget (the steward's; needs the lake's pseudonym key)."""


@privacy.command(name="show")
@pass_context
def show(ctx: Context) -> None:
    """The policy (k floor, budget per day, release bounds, key epoch) and what releases have spent per day."""
    from citylake import api

    policy, spent = api.privacy_status(ctx.open(), settings=ctx.settings)
    emit(rows([{"setting": name, "value": str(value)} for name, value in policy.items()]), "table", title="privacy policy")
    emit(spent.to_arrow(), "table", title="budget spent per day")


@privacy.command(name="set")
@click.option("--k-floor", type=int, help="Smallest group of devices an exact people result shows.")
@click.option("--epsilon-per-day", type=float, help="The epsilon all releases of one day may spend together.")
@click.option("--delta-per-day", type=float, help="The delta all releases of one day may spend together.")
@click.option("--release-cell-res", type=click.IntRange(0, 15), help="H3 resolution of the cell release.")
@click.option("--max-place-hours", type=int, help="Place-hours one device may add to a day's footfall release.")
@click.option("--max-cell-hours", type=int, help="Cell-hours one device may add to a day's cell release.")
@click.option("--max-trips", type=int, help="District pairs one device may add to a day's flows release.")
@click.option("--alert-epsilon", type=float, help="Of each day's epsilon, what the live crowd alerts analysts and planners read "
              "may spend (0: none for them); releases get the rest by default.")
@click.option("--alert-most", type=int, help="Crowd alerts a day may raise for analysts and planners (each costs as much as "
              "all the quiet checks together).")
@pass_context
def set_policy(ctx: Context, **values) -> None:
    """Change the lake's policy; budget already spent stays spent.

    \b
    Example:
      citylake privacy set --epsilon-per-day 2 --max-place-hours 16
    """
    from citylake import api

    changed = api.change_policy(ctx.open(write=True), settings=ctx.settings, **values)
    say("policy: " + ", ".join(f"{name} = {value}" for name, value in changed.items()))


@click.group()
def key() -> None:
    """The lake's pseudonym key."""


@key.command(name="rotate")
@pass_context
def rotate(ctx: Context) -> None:
    """A new key for the lake (a new epoch), written over the key file.

    Pseudonyms made from now on differ from earlier ones: a device's pings before and after the
    rotation can no longer be linked (stays and flows across it break), which is the point. Do not
    ingest files again that were ingested before the rotation: their rows would land a second time.
    """
    from citylake import api

    lake = ctx.open(write=True)
    epoch = api.rotate_key(lake, settings=ctx.settings)
    say(f"key rotated: epoch {epoch}; the new key is in {api.key_file(lake, settings=ctx.settings)} (back it up)")


COMMANDS = (privacy, key)
