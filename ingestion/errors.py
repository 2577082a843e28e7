"""Errors of the ingestion room: problems with a whole input, not with single rows
(bad rows are quarantined, never raised)."""

from __future__ import annotations

from citylake.h3_index.errors import CitylakeError


class IngestError(CitylakeError):
    """Root of ingestion errors."""


class UnreadableInput(IngestError, ValueError):
    def __init__(self, source: str, why: str) -> None:
        self.source, self.why = source, why
        super().__init__(f"{source}: {why}")


class MissingColumns(IngestError, ValueError):
    def __init__(self, source: str, missing: list[str], found: list[str], hint: str = "",
                 fix: str = "rename columns with --map target=source") -> None:
        self.source, self.missing, self.found = source, missing, found
        shown = ", ".join(found[:12]) + (" …" if len(found) > 12 else "")
        super().__init__(f"{source}: missing column(s) {', '.join(missing)}; found {shown or 'none'}{'; ' + hint if hint else ''}; {fix}")


class BadOption(IngestError, ValueError):
    def __init__(self, option: str, value: object, why: str) -> None:
        super().__init__(f"{option} {value!r}: {why}")
