"""Errors of the H3 coding system.

`CitylakeError`, the root of every citylake error, lives here because `h3_index`
is the bottom room: every other room may import it, it imports none of them.
"""

from __future__ import annotations


class CitylakeError(Exception):
    """Root of every error citylake raises on purpose; the CLI prints these as one line."""


class H3IndexError(CitylakeError):
    """Root of the H3 coding system's errors."""


class BadResolution(H3IndexError, ValueError):
    def __init__(self, value: object, *, lowest: int = 0, highest: int = 15, why: str = "") -> None:
        self.value = value
        reason = why or f"H3 resolutions run from {lowest} to {highest}"
        super().__init__(f"resolution {value!r} is not valid: {reason}; pass a whole number in {lowest}..{highest}")


class BadCoordinate(H3IndexError, ValueError):
    def __init__(self, *, column: str, row: int, value: float, allowed: str) -> None:
        self.column, self.row, self.value = column, row, value
        super().__init__(
            f"{column} {value!r} at row {row} is not a valid coordinate ({column} must be finite and {allowed}); "
            "check for swapped lat/lon columns or a projected CRS, and reproject to EPSG:4326"
        )


class BadCell(H3IndexError, ValueError):
    def __init__(self, value: object, *, row: int | None = None) -> None:
        self.value, self.row = value, row
        where = f" at row {row}" if row is not None else ""
        shown = f"{value:x} ({value})" if isinstance(value, int) else repr(value)
        super().__init__(
            f"{shown}{where} is not a valid H3 cell; cells are 64-bit integers or 15-character hex strings "
            "such as 8b309ad1a2e2fff, made by h3_latlng_to_cell"
        )


class BadFrequency(H3IndexError, ValueError):
    def __init__(self, value: object, allowed: list[str]) -> None:
        self.value = value
        super().__init__(f"time bucket {value!r} is not known; use one of {', '.join(allowed)}")


class BadGeometry(H3IndexError, ValueError):
    def __init__(self, geom_type: str, why: str = "") -> None:
        self.geom_type = geom_type
        super().__init__(
            f"cannot cover a {geom_type} with H3 cells{': ' + why if why else ''}; pass a Polygon or MultiPolygon in EPSG:4326"
        )


class TooManyCells(H3IndexError, ValueError):
    def __init__(self, asked: int, most: int, what: str) -> None:
        self.asked = asked
        super().__init__(f"{what} would make {asked:,} cells, more than the {most:,} one call may make; "
                         "ask for a coarser resolution, a smaller k, or fewer cells at a time")
