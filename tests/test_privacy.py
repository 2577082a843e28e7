"""The privacy room: the pseudonym key, the one steward check and the k floor."""

from __future__ import annotations

import stat

import pytest

from citylake.privacy import BadKeyFile, NoPseudonymKey, Refused, k_for_result, require_steward
from citylake.privacy import pseudonyms as P


def test_key_file_is_private_and_outside_the_lake(tmp_path):
    key = P.create_key(tmp_path / "conf" / "pseudonym.key", lake_root=tmp_path / "lake")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(P.load_key(key, env={})) == 64
    assert P.create_key(key) == key and P.load_key(key, env={}) == P.load_key(key, env={})  # created once
    with pytest.raises(BadKeyFile, match="outside the lake"):
        P.create_key(tmp_path / "lake" / "k.key", lake_root=tmp_path / "lake")
    assert P.load_key(key, env={P.KEY_ENV: "from-env"}) == b"from-env"
    with pytest.raises(NoPseudonymKey, match="citylake init"):
        P.load_key(tmp_path / "absent.key", env={})


def test_only_the_key_holder_is_steward(tmp_path, monkeypatch):
    monkeypatch.delenv(P.KEY_ENV, raising=False)
    with pytest.raises(Refused, match="publishing is for the steward"):
        require_steward(tmp_path / "absent.key", doing="publishing")
    key = P.create_key(tmp_path / "steward.key")
    assert require_steward(key) == P.load_key(key)


def test_k_below_the_floor_needs_the_steward(tmp_path, monkeypatch):
    monkeypatch.delenv(P.KEY_ENV, raising=False)
    absent = tmp_path / "absent.key"
    assert k_for_result(None, floor=10, key_file=absent) == 10
    assert k_for_result(25, floor=10, key_file=absent) == 25
    with pytest.raises(Refused, match="below the lake's k-anonymity"):
        k_for_result(3, floor=10, key_file=absent)
    assert k_for_result(3, floor=10, key_file=P.create_key(tmp_path / "steward.key")) == 3
