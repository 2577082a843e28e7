"""Places of new pings as they arrive: the covers of every polygonal place read once, then each micro-batch of pings
located with the same exact test as every footfall (``citylake watch`` counts devices per place from it)."""

from __future__ import annotations

import polars as pl

from citylake.lake import Lake
from citylake.queries.filters import Filters
from citylake.queries.polars import PLACE, PolarsEngine, hits_in


class PlaceFinder:
    """Which places hold each ping, for a lake whose places do not change while it runs (``refresh`` after they do)."""

    def __init__(self, lake: Lake, /) -> None:
        self.lake = lake
        self.refresh()

    def refresh(self) -> None:
        places, self._shapes, cells = PolarsEngine(self.lake).covers(Filters())
        self.places = places.select(PLACE, "place_id", "name", "category")
        self._cells = cells.collect()

    def shapes(self, place_ids: list[str], /) -> dict:
        """The shapes of these places, by id."""
        numbers = self.places.filter(pl.col("place_id").is_in(place_ids))
        return dict(zip(numbers["place_id"], self._shapes[numbers[PLACE].to_numpy()]))

    def hits(self, pings: pl.DataFrame, /) -> pl.DataFrame:
        """``pings`` (device_id, ts, lat, lon, h3_cell) as place_id, device_id, ts: once per place that holds each."""
        if pings.is_empty() or self.places.is_empty():
            ts = pings.schema.get("ts", pl.Datetime("us", "UTC"))
            return pl.DataFrame(schema={"place_id": pl.String, "device_id": pl.Int64, "ts": ts})
        found = hits_in(pings.lazy().select("device_id", "ts", "lat", "lon", "h3_cell"), self._cells.lazy(), self._shapes).collect()
        return found.join(self.places.select(PLACE, "place_id"), on=PLACE).select("place_id", "device_id", "ts")
