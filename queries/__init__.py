"""People–things–places queries over the lake, on DuckDB or Polars with the same answers."""

from __future__ import annotations

from lake import Lake
from queries.base import DEFAULT_K, Engine, FootfallBy, QueryResult, k_anonymous, tidy
from queries.errors import BadFilter, QueryError, UnknownEngine
from queries.filters import Filters, check_freq

ENGINES = ("duckdb", "polars")
NO_FILTERS = Filters()


def engine(name: str, lake: Lake, /) -> Engine:
    if name == "duckdb":
        from queries.duckdb import DuckDBEngine

        return DuckDBEngine(lake)
    if name == "polars":
        from queries.polars import PolarsEngine

        return PolarsEngine(lake)
    raise UnknownEngine(name, list(ENGINES))


def footfall(
    lake: Lake, /, *, by: FootfallBy = "place", freq: str = "1h", res: int | None = None, filters: Filters = NO_FILTERS,
    k: int = DEFAULT_K, engine_name: str = "duckdb",
) -> QueryResult:
    """Pings and distinct devices per place (or category, or H3 cell at ``res``) per time bucket, k-anonymous.

    Point-in-place uses ``place_cells``: pings in interior cells count directly, pings in boundary
    cells get an exact point-in-polygon test; no query scans every geometry.
    """
    if by not in ("place", "category", "cell"):
        raise BadFilter("by", by, "use place, category or cell")
    res = lake.cell_res if res is None else res
    if not 0 <= res <= lake.cell_res:
        raise BadFilter("res", res, f"cells can be grouped at resolutions 0 to {lake.cell_res} (the lake's cell resolution)")
    if k < 1:
        raise BadFilter("k", k, "k-anonymity needs k >= 1")
    runner = engine(engine_name, lake)
    raw = runner.footfall(by=by, freq=check_freq(freq), res=res, filters=filters)
    table, suppressed = k_anonymous(tidy(raw, by), k)
    return QueryResult(table.to_arrow(), suppressed, k, runner.name)


__all__ = ["BadFilter", "ENGINES", "Filters", "QueryError", "QueryResult", "UnknownEngine", "engine", "footfall"]
