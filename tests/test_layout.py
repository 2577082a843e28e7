"""The layout: one import name, rooms whose dependencies point one way, a thin CLI, and imports that stay cheap."""

from __future__ import annotations

import ast
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What each room may import from the others: `citylake → viz, analytics → queries → privacy → lake → h3_index`,
# `ingestion → privacy, lake, h3_index`. No room imports the CLI, the API or the settings above them.
MAY_IMPORT = {
    "h3_index": set(),
    "lake": {"h3_index"},
    "privacy": {"lake", "h3_index"},
    "ingestion": {"privacy", "lake", "h3_index"},
    "queries": {"privacy", "lake", "h3_index"},
    "analytics": {"queries", "privacy", "lake", "h3_index"},
    "viz": {"queries", "privacy", "lake", "h3_index"},
}
CLI_MAY_IMPORT = {"citylake.api", "citylake.settings", "citylake.shell", "citylake.pilot", "citylake.reports", "citylake.CitylakeError",
                  *(f"citylake.{room}" for room in MAY_IMPORT)}  # rooms only through their package, never a module inside


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "citylake":  # from citylake import api: the module api (or a name citylake exports)
                names.update(f"citylake.{alias.name}" for alias in node.names)
            else:
                names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name.split(".")[0] == "citylake"}


def test_one_top_level_package_is_installed():
    assert importlib.metadata.distribution("citylake").read_text("top_level.txt").split() == ["citylake"]


@pytest.mark.integration
def test_a_users_own_folders_named_like_rooms_do_not_shadow_citylake(tmp_path):
    for name in ("lake", "queries", "viz"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("raise RuntimeError('the user folder was imported')\n")
    (tmp_path / "score.py").write_text("from citylake.lake import Lake\nfrom citylake.queries import footfall\nprint(Lake.__module__)\n")
    done = subprocess.run([sys.executable, "score.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "citylake.lake.lake"


@pytest.mark.integration
def test_a_room_is_not_importable_by_its_bare_name_even_from_the_checkout():
    done = subprocess.run([sys.executable, "-c", "import lake"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "import citylake.lake, not lake" in done.stderr


@pytest.mark.parametrize("room", sorted(MAY_IMPORT))
def test_rooms_import_downhill_only(room):
    allowed = {f"citylake.{r}" for r in MAY_IMPORT[room] | {room}}
    for path in sorted((ROOT / room).glob("*.py")):
        for name in imported_modules(path):
            owner = ".".join(name.split(".")[:2])
            assert owner in allowed, f"{path.relative_to(ROOT)} imports {name}; {room} may import only {sorted(allowed)}"


def test_the_cli_is_thin():
    for path in sorted((ROOT / "citylake" / "cli").glob("*.py")):
        lines = len(path.read_text().splitlines())
        assert lines <= 300, f"{path.relative_to(ROOT)} has {lines} lines"
        for name in imported_modules(path):
            assert name.startswith("citylake.cli") or name in CLI_MAY_IMPORT, \
                f"{path.relative_to(ROOT)} imports {name}: the CLI reaches the library through citylake.api and the rooms' packages"


@pytest.mark.integration
@pytest.mark.parametrize("program", ["import citylake", "import citylake.api", "from citylake.cli import main; main(['--help'])"])
def test_importing_citylake_and_asking_for_help_load_no_heavy_library(program):
    heavy = ("paho", "dask", "distributed", "matplotlib", "geopandas", "duckdb", "deltalake", "polars", "numba")
    probe = (f"import sys\ntry:\n    {program}\nexcept SystemExit:\n    pass\n"
             f"print('loaded:', sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r})))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "loaded: []", f"{program!r} {done.stdout.splitlines()[-1]}"
