"""Errors of the query library."""

from __future__ import annotations

from citylake.h3_index.errors import CitylakeError


class QueryError(CitylakeError):
    """Root of query errors."""


class BadFilter(QueryError, ValueError):
    def __init__(self, name: str, value: object, why: str) -> None:
        self.name, self.value = name, value
        super().__init__(f"filter {name} = {value!r}: {why}")


class UnknownEngine(QueryError, ValueError):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"engine {name!r} is not known; use one of {', '.join(known)}")
