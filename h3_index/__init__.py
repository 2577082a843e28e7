"""The spatiotemporal coding system: H3 cells and time buckets, in numpy, DuckDB SQL and Polars.

The public names load their module on first use: every room imports ``citylake.h3_index.errors`` (the root error
lives here, in the bottom room), and that must not cost numpy and h3 for ``citylake --help``.
"""

from __future__ import annotations

import importlib

if __name__ != "citylake.h3_index":  # this folder installs as citylake.h3_index; a checkout on sys.path must not make it `h3_index`
    raise ImportError(f"import citylake.h3_index, not {__name__}: citylake's rooms are subpackages of citylake")

_PUBLIC = {
    **dict.fromkeys(("BUCKETS_US", "partition_keys", "time_bucket"), "buckets"),
    **dict.fromkeys(("MAX_RES", "MIN_RES", "cell_resolutions", "cell_to_children", "cell_to_parent", "cells_to_boundary_wkt",
                     "cells_to_latlng", "cells_to_polygons", "cells_to_strings", "check_cells", "check_resolution", "grid_disk",
                     "latlng_to_cells", "strings_to_cells"), "cells"),
    **dict.fromkeys(("BadCell", "BadCoordinate", "BadFrequency", "BadGeometry", "BadResolution", "CitylakeError", "TooManyCells"),
                    "errors"),
    "polygon_to_cells": "polygons",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)
