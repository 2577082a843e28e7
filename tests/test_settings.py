"""Settings: one table, read from defaults, citylake.toml, environment and flags, all documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from citylake import settings as S

README = Path(__file__).resolve().parent.parent / "README.md"


def test_defaults_when_nothing_is_set(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    got = S.load(env={})
    assert got["lake"] == "./citylake-data" and got["h3.cell_resolution"] == 11
    assert set(got.sources.values()) == {"default"}


def test_precedence_default_toml_env_flag(tmp_path):
    config = tmp_path / "citylake.toml"
    config.write_text('lake = "from-toml"\n[h3]\npartition_resolution = 4\ncell_resolution = 10\n')
    env = {"CITYLAKE_H3_CELL_RESOLUTION": "9", "CITYLAKE_LAKE": "from-env"}
    got = S.load(config=config, env=env, overrides={"lake": "from-flag"})
    assert got["h3.partition_resolution"] == 4 and got.sources["h3.partition_resolution"] == str(config)
    assert got["h3.cell_resolution"] == 9 and got.sources["h3.cell_resolution"] == "$CITYLAKE_H3_CELL_RESOLUTION"
    assert got["lake"] == "from-flag" and got.sources["lake"] == "command line"


def test_config_file_from_environment(tmp_path):
    config = tmp_path / "elsewhere.toml"
    config.write_text("[duckdb]\nthreads = 3\n")
    assert S.load(env={"CITYLAKE_CONFIG": str(config)})["duckdb.threads"] == 3


@pytest.mark.parametrize("text, fragment", [
    ("[h3]\ncell_resolution = 99\n", "h3.cell_resolution = 99"),
    ("[h3]\nresolution = 9\n", "no such setting"),
    ("lake = [1, 2]\n", "must be text"),
    ("[h3\n", "not valid TOML"),
])
def test_bad_config_is_named(tmp_path, text, fragment):
    config = tmp_path / "citylake.toml"
    config.write_text(text)
    with pytest.raises(S.SettingError, match=fragment.replace("[", r"\[")):
        S.load(config=config, env={})


def test_missing_config_file_named_on_the_command_line(tmp_path):
    with pytest.raises(S.SettingError, match="no such file"):
        S.load(config=tmp_path / "absent.toml", env={})


def test_every_setting_is_documented_in_the_readme():
    readme = README.read_text()
    for setting in S.SETTINGS:
        assert f"`{setting.name}`" in readme, f"README does not document {setting.name}"
        assert setting.env_var in readme, f"README does not name {setting.env_var}"


def test_the_defaults_users_see_are_the_rooms_own():
    """settings.py repeats the rooms' defaults so that loading settings loads no room; they must not drift apart."""
    from citylake.ingestion import batch, mqtt, textfile, validate
    from citylake.lake import engines, lake

    assert (S.DEFAULT_CELL_RES, S.DEFAULT_PARTITION_RES) == (lake.DEFAULT_CELL_RES, lake.DEFAULT_PARTITION_RES)
    assert S.DEFAULT_EXTENSION_DIR == engines.DEFAULT_EXTENSION_DIR and S.DEFAULT_BATCH_ROWS == textfile.DEFAULT_BATCH_ROWS
    from citylake.queries import base

    assert S.DEFAULT_ENGINE == base.DEFAULT_ENGINE
    assert (S.COMMIT_MESSAGES, S.COMMIT_SECONDS, S.COMPACT_MINUTES) == (mqtt.COMMIT_MESSAGES, mqtt.COMMIT_SECONDS, mqtt.COMPACT_MINUTES)
    assert S.EARLIEST == validate.EARLIEST and S.DEFAULT_BUFFER_MB == batch.DEFAULT_BUFFER_MB
    from citylake.analytics.watch import WatchConfig

    config = WatchConfig()
    assert (S.WATCH_POLL_SECONDS, S.WATCH_HISTORY_DAYS) == (config.poll_seconds, config.history_days)
    assert S.WATCH_LATENESS_MINUTES * 60 == config.lateness.total_seconds()
