"""Roles and the k floor: the one place that decides who is the steward and how small a group about people
may be shown.

The steward is whoever holds the pseudonym key; everyone else is an analyst, who reads the shareable tables
and people data only as k-anonymous aggregates.
"""

from __future__ import annotations

from pathlib import Path

from citylake.lake import TABLES
from citylake.privacy.errors import NoPseudonymKey, Refused
from citylake.privacy.pseudonyms import load_key

ANALYST = "analyst"
STEWARD = "steward"
ROLES = (ANALYST, STEWARD)
DEFAULT_K = 10  # groups of fewer than 10 distinct devices are never shown to anyone but the steward
# Tables about people (raw pings, stays) or holding raw input text (quarantine) are for the steward only.
STEWARD_ONLY_TABLES = tuple(name for name, spec in TABLES.items() if spec.people) + ("quarantine",)


def check_role(role: str) -> str:
    if role not in ROLES:
        raise Refused(f"role {role!r} is not known; use {' or '.join(ROLES)}")
    return role


def require_steward(key_file: str | Path, /, *, doing: str = "this") -> bytes:
    """The pseudonym key, which makes its holder the steward; refuses anyone without it, saying what needed it."""
    try:
        return load_key(key_file)
    except NoPseudonymKey as missing:
        raise Refused(f"{doing} is for the steward, who holds the pseudonym key: {missing}") from None


def k_for_result(asked: int | None, /, *, floor: int, key_file: str | Path) -> int:
    """The k for one result about people: the lake's floor, or ``asked`` when higher; only the steward may go lower."""
    if asked is None or asked >= floor:
        return floor if asked is None else asked
    require_steward(key_file, doing=f"k = {asked}, below the lake's k-anonymity ({floor}),")
    return asked
