"""kepler.gl map views that work offline (``viz.maps``, ``viz.kepler``) and static PNGs (``viz.static``)."""

if __name__ != "citylake.viz":  # this folder installs as citylake.viz; a checkout on sys.path must not make it `viz`
    raise ImportError(f"import citylake.viz, not {__name__}: citylake's rooms are subpackages of citylake")

from citylake.viz.kepler import OWN_SCRIPTS, SCRIPTS, STYLES, VENDOR, Layer, MapError, MapView, map_payload, write_html
from citylake.viz.maps import alerts_view, footfall_map, footfall_view, hotspots_map, od_map, od_view, places_map, readings_map, to_keplergl
from citylake.viz.static import png_bytes, write_png

__all__ = [
    "OWN_SCRIPTS", "SCRIPTS", "STYLES", "VENDOR", "Layer", "MapError", "MapView", "alerts_view",
    "footfall_map", "footfall_view", "hotspots_map", "od_map", "od_view", "places_map", "png_bytes",
    "map_payload", "readings_map", "to_keplergl", "write_html", "write_png",
]
