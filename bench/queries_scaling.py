"""Figure queries_scaling: stays, OD, stay points and the things-near-places queries at a tenth of the pings and all."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa

from bench.harness import timed
from bench.synthetic import city_points, city_polygons, place_pings
from citylake.lake import Lake

SCALING_SENSORS = 2_000


def bench_queries_scaling(rows: int, work: Path) -> dict:
    """How stays, OD, stay points and the things-near-places queries grow with the pings (a tenth of ``rows`` and
    ``rows``), same places, sensors and readings."""
    import geopandas as gpd

    from citylake.ingestion.iot import ingest_readings, ingest_sensors
    from citylake.ingestion.map import ingest_places
    from citylake.queries import Filters, conditions, od, stay_points, stays
    from citylake.queries.near import near

    shapes = city_polygons(1_000)
    gpd.GeoDataFrame({"id": [f"b{i}" for i in range(len(shapes))], "category": "park"}, geometry=shapes,
                     crs="EPSG:4326").to_file(work / "scaling.geojson", driver="GeoJSON")
    sensors_csv, readings_csv = write_sensor_feeds(work)
    out: dict = {"sensors": SCALING_SENSORS, "near_radius_m": 300}
    for n in (rows // 10, rows):
        lake = Lake.init(work / f"scaling-{n}")
        ingest_places(lake, work / "scaling.geojson")
        ingest_sensors(lake, sensors_csv)
        ingest_readings(lake, readings_csv)
        lake.write("pings", place_pings(n, shapes, lake.cell_res))
        figures: dict = {}
        for engine in ("duckdb", "polars"):
            figures[f"stays_{engine}_s"], found = timed(lambda lake=lake, engine=engine: stays(
                lake, filters=Filters(categories=("park",)), engine_name=engine))
            figures[f"od_{engine}_s"], _ = timed(lambda found=found, engine=engine: od(found, k=10, engine_name=engine))
            figures[f"conditions_{engine}_s"], during = timed(lambda lake=lake, engine=engine: conditions(
                lake, radius_m=300, engine_name=engine))
        figures["stays"], figures["conditions_rows"] = found.height, during.height
        figures["near_sensors_s"], pairs = timed(lambda lake=lake: near(lake, what="sensors", radius_m=300))
        figures["near_pairs"] = pairs.height
        figures["stay_points_s"], points = timed(lambda lake=lake: stay_points(lake, engine_name="polars"))
        figures["stay_points"] = points.height
        out[f"pings_{n}"] = {k: round(v, 2) if isinstance(v, float) else v for k, v in figures.items()}
        shutil.rmtree(lake.root, ignore_errors=True)
    small, large = out[f"pings_{rows // 10}"], out[f"pings_{rows}"]
    out["growth_for_10x_pings"] = {k: round(large[k] / small[k], 2) for k in large if k.endswith("_s") and k in small and small[k]}
    out["note"] = ("near_sensors does not read pings (its growth shows the noise); conditions = footfall per place + "
                   "readings of the sensors within 300 m during each place's busy hours")
    return out


def write_sensor_feeds(work: Path, days: int = 3) -> tuple[Path, Path]:
    """A sensor registry (air quality and noise sensors anywhere in the city) and a reading every 15 minutes of each
    over the pings' days, as the CSV files a city would deliver."""
    import pyarrow.csv as pcsv

    rng = np.random.default_rng(11)
    lat, lon = city_points(SCALING_SENSORS, seed=12)
    kind = np.where(np.arange(SCALING_SENSORS) % 2 == 0, "air_quality", "noise")
    ids = [f"S{i:05d}" for i in range(SCALING_SENSORS)]
    sensors = work / "scaling-sensors.csv"
    pcsv.write_csv(pa.table({"sensor_id": ids, "kind": kind, "unit": np.where(kind == "air_quality", "ug/m3", "dB"),
                             "lat": lat, "lon": lon}), sensors)
    stamps = np.datetime64("2026-11-01T00:00:00", "s") + np.arange(days * 96) * np.timedelta64(900, "s")
    sensor = np.repeat(np.arange(SCALING_SENSORS), stamps.size)
    readings = work / "scaling-readings.csv"
    pcsv.write_csv(pa.table({"sensor_id": pa.array(ids).take(pa.array(sensor)),
                             "ts": pa.array(np.tile(stamps, SCALING_SENSORS)).cast(pa.timestamp("s", tz="UTC")),
                             "metric": np.where(kind[sensor] == "air_quality", "pm25", "db"),
                             "value": np.round(rng.gamma(4.0, 10.0, sensor.size), 2)}), readings)
    return sensors, readings
