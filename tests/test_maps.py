"""Every map command writes an HTML file that draws its data in a real headless Chromium, offline:
all network requests are refused, the page's kepler.gl state holds the query's rows, and the
screenshot (kept in test-artifacts/maps/) shows the layer's colours in the map area."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import TEST_KEY, generated_city_lake
from PIL import Image

from citylake.h3_index import cells_to_strings, latlng_to_cells
from citylake.lake import Lake
from citylake.queries import footfall
from citylake.viz import Layer, MapView, write_html

pytestmark = pytest.mark.integration
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "maps"
VIEWPORT = {"width": 1200, "height": 800}
MAP_AREA = (330, 60, 1000, 450)  # right of kepler's side panel, above the time-playback panel
STATE = """() => { const s = window.citylakeStore.getState().keplerGl.map;
  return {layers: s.visState.layers.map(l => [l.type, l.config.dataId, l.config.isVisible]),
          rows: Object.fromEntries(Object.entries(s.visState.datasets).map(([k, d]) => [k, d.dataContainer.numRows()])),
          drawn: s.visState.layerData.map(d => d && d.data ? d.data.length : 0),
          style: s.mapStyle.styleType} }"""


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed; run `make system-deps` (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chrome = p.chromium.launch(executable_path=CHROMIUM, args=["--use-angle=swiftshader", "--enable-unsafe-swiftshader"])
        yield chrome
        chrome.close()


@pytest.fixture(scope="module")
def lake_path(tmp_path_factory) -> str:
    return str(generated_city_lake(tmp_path_factory.mktemp("maps"), devices=300, days=2, seed=5).root)


def render(browser, html: Path, shot: Path) -> tuple[dict, np.ndarray, list[str]]:
    """Open the map with every network request refused; its kepler.gl state, screenshot pixels and refused URLs."""
    page = browser.new_page(viewport=VIEWPORT)
    refused: list[str] = []

    def refuse(route):
        refused.append(route.request.url)
        route.abort()

    page.route("http://**/*", refuse)
    page.route("https://**/*", refuse)
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(html.resolve().as_uri())
    page.wait_for_function("window.citylakeReady === true", timeout=90_000)
    page.wait_for_timeout(2_000)  # let deck.gl draw the frame
    state = page.evaluate(STATE)
    shot.parent.mkdir(parents=True, exist_ok=True)
    png = page.screenshot(path=str(shot))
    page.close()
    assert not [e for e in errors if "Failed to fetch" not in e], errors  # kepler's optional icon set is the only fetch
    return state, np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int), refused


def warm_pixels(pixels: np.ndarray) -> int:
    """Pixels in the map area in the layers' warm palette (orange to red), which the dark page never uses."""
    x0, y0, x1, y1 = MAP_AREA
    area = pixels[y0:y1, x0:x1]
    r, g, b = area[..., 0], area[..., 1], area[..., 2]
    return int(((r > 150) & (r - b > 60) & (r >= g)).sum())


def citylake_map(lake_path: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "citylake.cli", "--lake", lake_path, "map", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "COLUMNS": "200", "CITYLAKE_PSEUDONYM_KEY": TEST_KEY})  # the steward


def test_footfall_map_draws_the_k_anonymous_cells_offline(browser, lake_path):
    out = ARTIFACTS / "footfall.html"
    done = citylake_map(lake_path, "footfall", "--res", "9", "--freq", "1h", "--role", "steward", "--k", "3", "--out", str(out))
    assert done.returncode == 0, done.stderr
    state, pixels, refused = render(browser, out, ARTIFACTS / "footfall.png")
    want = pl.from_arrow(footfall(Lake.open(lake_path), by="cell", res=9, freq="1h", k=3).table)
    assert state["style"] == "no_map" and ["hexagonId", "footfall", True] in state["layers"]
    assert state["rows"]["footfall"] == want.height > 50 and max(state["drawn"]) == want.height
    assert warm_pixels(pixels) > 2_000, "no hexagons drawn in the map area"
    assert all("citylake-kepler" not in url for url in refused)  # the page's own assets are local files
    payload = json.loads(out.read_text().split('type="application/json">', 1)[1].split("</script>", 1)[0].replace("<\\/", "</"))
    csv = pl.read_csv(io.StringIO(payload["datasets"][0]["csv"]))
    assert set(csv["hex"]) == set(cells_to_strings(want["h3_cell"].to_numpy())) and csv["devices"].min() >= 3


@pytest.mark.parametrize("kind, args, data_id, layer", [
    ("readings", ["--metric", "pm25"], "readings", "point"),
    ("od", ["--category", "district", "--role", "steward", "--k", "2"], "od", "arc"),
    ("places", [], "places", "geojson"),
    ("hotspots", ["--k", "2", "--workers", "1"], "hotspots", "hexagonId"),
])
def test_every_map_command_renders_its_layer(browser, lake_path, kind, args, data_id, layer):
    out = ARTIFACTS / f"{kind}.html"
    done = citylake_map(lake_path, kind, *args, "--out", str(out))
    assert done.returncode == 0, done.stderr
    state, pixels, _ = render(browser, out, ARTIFACTS / f"{kind}.png")
    assert [layer, data_id, True] in state["layers"] and state["rows"][data_id] > 0
    if kind != "places":  # places are drawn in blue: their test is the layer data
        assert warm_pixels(pixels) > 300, f"no {layer} layer drawn in the map area"


def test_analysts_map_the_release(browser, lake_path, tmp_path):
    """Without the key, a footfall map shows the release: its cells and noisy counts, nothing else."""
    released = subprocess.run([sys.executable, "-m", "citylake.cli", "--lake", lake_path, "publish"], capture_output=True, text=True,
                              timeout=300, env={**os.environ, "CITYLAKE_PSEUDONYM_KEY": TEST_KEY})
    assert released.returncode == 0, released.stderr
    out = ARTIFACTS / "footfall-release.html"
    analyst = {**os.environ, "CITYLAKE_PRIVACY_PSEUDONYM_KEY_FILE": str(tmp_path / "none.key")}
    analyst.pop("CITYLAKE_PSEUDONYM_KEY", None)
    done = subprocess.run([sys.executable, "-m", "citylake.cli", "--lake", lake_path, "map", "footfall", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env=analyst)
    assert done.returncode == 0, done.stderr
    state, pixels, _ = render(browser, out, ARTIFACTS / "footfall-release.png")
    want = Lake.open(lake_path).table("footfall_cells_hourly").to_pyarrow_table()
    assert state["rows"]["footfall"] == want.num_rows > 0 and warm_pixels(pixels) > 300
    assert "differentially private" in done.stderr and "withheld" not in done.stderr


def test_the_pixel_check_can_fail(browser, tmp_path):
    """The same kind of layer, loaded, but the view looks at the other side of the world: nothing warm is drawn."""
    cells = pl.DataFrame({"hex": cells_to_strings(latlng_to_cells(np.full(50, 37.77) + np.arange(50) * 1e-3, np.full(50, -122.41), 9)),
                          "devices": np.arange(50) + 10})
    view = MapView("elsewhere", centre=(31.2, 121.45)).add("cells", cells, "Cells",
                                                           Layer("hexagonId", "cells", "Cells", {"hex_id": "hex"}, color_by="devices"))
    state, pixels, _ = render(browser, write_html(view, tmp_path / "elsewhere.html"), ARTIFACTS / "elsewhere.png")
    assert state["rows"]["cells"] == 50 and warm_pixels(pixels) < 50


@pytest.mark.parametrize("kind", ["footfall", "od", "readings"])
def test_static_png_maps_need_no_browser(lake_path, kind):
    out = ARTIFACTS / f"{kind}-static.png"
    k = [] if kind == "readings" else ["--role", "steward", "--k", "2"]  # readings are not about people
    done = citylake_map(lake_path, kind, *k, "--out", str(out))
    assert done.returncode == 0, done.stderr
    pixels = np.asarray(Image.open(out).convert("RGB")).astype(int)
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    assert ((r > 150) & (r - b > 60) & (r >= g)).sum() > 200  # the warm palette is drawn


def test_a_static_map_is_the_same_bytes_whatever_order_its_rows_come_in():
    """Reports embed these PNGs: the same data must draw the same picture (engines and group-bys return rows in any
    order, and edges drawn over one another blend in the order they are drawn)."""
    from citylake.h3_index import grid_disk
    from citylake.viz.static import png_bytes

    cells = grid_disk(latlng_to_cells([31.2], [121.45], 9), 8)[0]
    rng = np.random.default_rng(3)
    hexes = pl.DataFrame({"hex": cells_to_strings(np.repeat(cells, 2)), "devices": rng.integers(10, 90, 2 * cells.size)})
    points = pl.DataFrame({"lng": rng.uniform(121.43, 121.47, 40), "lat": rng.uniform(31.18, 31.22, 40), "value": rng.random(40)})

    def drawn(order: np.ndarray) -> bytes:
        view = (MapView("order", centre=(31.2, 121.45))
                .add("cells", hexes[order], "Cells", Layer("hexagonId", "cells", "Cells", {"hex_id": "hex"}, color_by="devices"))
                .add("points", points[order[order < points.height]], "Points",
                     Layer("point", "points", "Points", {"lat": "lat", "lng": "lng"}, color_by="value")))
        return png_bytes(view, size_in=(4, 4), dpi=80)

    first = drawn(np.arange(hexes.height))
    assert all(drawn(rng.permutation(hexes.height)) == first for _ in range(3))


def test_map_mistakes_are_one_line(lake_path, tmp_path):
    done = citylake_map(lake_path, "footfall", "--out", str(tmp_path / "map.txt"))
    assert done.returncode == 1 and done.stderr.startswith("citylake: error:") and ".html" in done.stderr
