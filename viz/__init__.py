"""kepler.gl map views that work offline (``viz.maps``, ``viz.kepler``) and static PNGs (``viz.static``)."""

from viz.kepler import Layer, MapError, MapView, write_html
from viz.maps import footfall_map, hotspots_map, od_map, places_map, readings_map, to_keplergl
from viz.static import write_png

__all__ = [
    "Layer", "MapError", "MapView", "footfall_map", "hotspots_map", "od_map", "places_map", "readings_map", "to_keplergl", "write_html",
    "write_png",
]
