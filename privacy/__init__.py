"""The privacy room, below ingestion and queries: the lake's key and pseudonyms, the roles, the lake's privacy policy
(k floor, budget, release bounds), and the one check of who is the steward (``require_steward``), used by the CLI,
the Python API and the server."""

from __future__ import annotations

if __name__ != "citylake.privacy":  # this folder installs as citylake.privacy; a checkout on sys.path must not make it `privacy`
    raise ImportError(f"import citylake.privacy, not {__name__}: citylake's rooms are subpackages of citylake")

from citylake.privacy.accounts import ACCOUNT_ROLES, Account, Accounts
from citylake.privacy.errors import BadKeyFile, BadPolicy, NoPseudonymKey, PrivacyError, Refused
from citylake.privacy.keys import establish_key, key_check, key_file_of, require_steward, rotate_key
from citylake.privacy.policy import DEFAULT_K, Policy, read_policy, write_policy
from citylake.privacy.pseudonyms import KEY_ENV, create_key, load_key, pseudonym, pseudonymise
from citylake.privacy.roles import ANALYST, ROLES, STEWARD, STEWARD_ONLY_TABLES, check_role, k_for_result

__all__ = [
    "ACCOUNT_ROLES", "ANALYST", "Account", "Accounts",
    "BadKeyFile", "BadPolicy", "DEFAULT_K", "KEY_ENV", "NoPseudonymKey", "Policy", "PrivacyError", "ROLES", "Refused",
    "STEWARD", "STEWARD_ONLY_TABLES", "check_role", "create_key", "establish_key", "k_for_result", "key_check", "key_file_of",
    "load_key", "pseudonym", "pseudonymise", "read_policy", "require_steward", "rotate_key", "write_policy",
]
