"""The feeds into the lake: map data, the sensor registry and readings (files and MQTT), device pings.
Exactly once; bad rows are quarantined with a reason. And the other way: a city's feed files replayed to MQTT.

The public names load their module on first use, so importing one feed does not import every other
feed's libraries (GeoPandas for map data, paho for MQTT).
"""

from __future__ import annotations

import importlib

if __name__ != "citylake.ingestion":  # this folder installs as citylake.ingestion; a checkout on sys.path must not make it `ingestion`
    raise ImportError(f"import citylake.ingestion, not {__name__}: citylake's rooms are subpackages of citylake")

_PUBLIC = {
    "ingest_pings": "location", "PING_REQUIRED": "location", "PING_OPTIONAL": "location",
    "ingest_pings_on_cluster": "fanout", "ingest_readings_on_cluster": "fanout",
    "ingest_sensors": "iot", "ingest_readings": "iot", "READING_REQUIRED": "iot",
    "ingest_places": "map",
    "ingest_mqtt": "mqtt",
    "replay": "replay", "ReplayReport": "replay", "ReplayInterrupted": "replay",
    "generate_city": "city",
    "parse_mapping": "validate",
    "IngestReport": "batch",
}
_RENAMED = {"PING_REQUIRED": "REQUIRED", "PING_OPTIONAL": "OPTIONAL"}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_PUBLIC[name]}")
    return getattr(module, _RENAMED.get(name, name))
