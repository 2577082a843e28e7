"""Errors of the privacy room: who may see what, and the key that makes pseudonyms."""

from __future__ import annotations

from citylake.h3_index.errors import CitylakeError


class PrivacyError(CitylakeError):
    """Root of the privacy room's errors."""


class Refused(PrivacyError, PermissionError):
    """Something the caller's role may not do or see."""


class NoPseudonymKey(PrivacyError, PermissionError):
    def __init__(self, path: str) -> None:
        super().__init__(
            f"no pseudonym key: set CITYLAKE_PSEUDONYM_KEY or run `citylake init` to create {path} "
            "(the key stays outside the lake; without it device ids cannot be pseudonymised)"
        )


class BadKeyFile(PrivacyError, ValueError):
    def __init__(self, path: str, why: str) -> None:
        self.path = path
        super().__init__(f"privacy.pseudonym_key_file {path!r}: {why}")


class BadPolicy(PrivacyError, ValueError):
    def __init__(self, name: str, value: object, why: str) -> None:
        self.name, self.value = name, value
        super().__init__(f"privacy policy {name} = {value!r}: {why}")
