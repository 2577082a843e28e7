"""The privacy room, below ingestion and queries: the pseudonym key and pseudonyms, the roles, the k floor,
and the one check of who is the steward (``require_steward``), used by the CLI, the Python API and the server."""

from __future__ import annotations

if __name__ != "citylake.privacy":  # this folder installs as citylake.privacy; a checkout on sys.path must not make it `privacy`
    raise ImportError(f"import citylake.privacy, not {__name__}: citylake's rooms are subpackages of citylake")

from citylake.privacy.errors import BadKeyFile, NoPseudonymKey, PrivacyError, Refused
from citylake.privacy.pseudonyms import KEY_ENV, create_key, load_key, pseudonym, pseudonymise
from citylake.privacy.roles import (
    ANALYST,
    DEFAULT_K,
    ROLES,
    STEWARD,
    STEWARD_ONLY_TABLES,
    check_role,
    k_for_result,
    require_steward,
)

__all__ = [
    "ANALYST", "BadKeyFile", "DEFAULT_K", "KEY_ENV", "NoPseudonymKey", "PrivacyError", "ROLES", "Refused", "STEWARD",
    "STEWARD_ONLY_TABLES", "check_role", "create_key", "k_for_result", "load_key", "pseudonym", "pseudonymise", "require_steward",
]
