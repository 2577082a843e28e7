"""Roles: the steward (whoever holds the lake's pseudonym key: ``privacy.keys.require_steward``) reads everything and
gets exact, k-anonymous people results; everyone else is an analyst, who reads the shared tables and people data only
as differentially private releases."""

from __future__ import annotations

from citylake.lake import TABLES, Lake
from citylake.privacy.errors import Refused
from citylake.privacy.policy import DEFAULT_K, read_policy

ANALYST = "analyst"
STEWARD = "steward"
ROLES = (ANALYST, STEWARD)
# The steward zone: raw pings, stays, the quarantine's raw input, the batches' file paths, the privacy ledger.
STEWARD_ONLY_TABLES = tuple(name for name, spec in TABLES.items() if spec.zone == "steward")


def check_role(role: str) -> str:
    if role not in ROLES:
        raise Refused(f"role {role!r} is not known; use {' or '.join(ROLES)}")
    return role


def k_for_result(lake: Lake, asked: int | None, /) -> int:
    """The k of one of the steward's exact people results: the lake's floor, or ``asked`` (the steward may go lower).
    Call it after ``require_steward``: the floor lives in the steward zone."""
    policy = read_policy(lake)
    floor = policy.k_floor if policy else DEFAULT_K
    if asked is not None and asked < 1:
        raise Refused(f"k = {asked}: k-anonymity needs k >= 1")
    return floor if asked is None else asked
