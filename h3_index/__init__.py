"""The spatiotemporal coding system: H3 cells and time buckets, in numpy, DuckDB SQL and Polars."""

from __future__ import annotations

if __name__ != "citylake.h3_index":  # this folder installs as citylake.h3_index; a checkout on sys.path must not make it `h3_index`
    raise ImportError(f"import citylake.h3_index, not {__name__}: citylake's rooms are subpackages of citylake")

from citylake.h3_index.buckets import BUCKETS_US, partition_keys, time_bucket
from citylake.h3_index.cells import (
    MAX_RES,
    MIN_RES,
    cell_resolutions,
    cell_to_children,
    cell_to_parent,
    cells_to_boundary_wkt,
    cells_to_latlng,
    cells_to_polygons,
    cells_to_strings,
    check_cells,
    check_resolution,
    grid_disk,
    latlng_to_cells,
    strings_to_cells,
)
from citylake.h3_index.errors import BadCell, BadCoordinate, BadFrequency, BadGeometry, BadResolution, CitylakeError
from citylake.h3_index.polygons import polygon_to_cells

__all__ = [
    "BUCKETS_US", "MAX_RES", "MIN_RES", "BadCell", "BadCoordinate", "BadFrequency", "BadGeometry",
    "BadResolution", "CitylakeError", "cell_resolutions", "cell_to_children", "cell_to_parent",
    "cells_to_boundary_wkt", "cells_to_latlng", "cells_to_polygons", "cells_to_strings", "check_cells",
    "check_resolution", "grid_disk", "latlng_to_cells", "partition_keys", "polygon_to_cells",
    "strings_to_cells", "time_bucket",
]
