"""The lake's key: which pseudonym key is this lake's, and the one check of who is its steward.

The lake records a check value of its key (an HMAC of a fixed text under the key, never the key) in the steward
zone's policy file, one per key epoch. Whoever presents a key with the current check value is the steward; any
other key is refused, however it is given. ``citylake key rotate`` starts a new epoch with a new key: pseudonyms
made from then on differ from the old ones, so a device's rows before and after the rotation cannot be linked
(stays and flows across the rotation break; files ingested before it must not be ingested again).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from citylake.lake import Lake
from citylake.privacy.errors import NoPseudonymKey, Refused
from citylake.privacy.policy import Policy, read_policy, write_policy
from citylake.privacy.pseudonyms import KEY_ENV, create_key, load_key, new_key, write_key_file

CHECK_TEXT = b"citylake key check v1"
KEYS_DIR = Path("~/.config/citylake/keys")


def key_check(key: bytes, /) -> str:
    """The check value of a key: recognises the key, reveals nothing of it."""
    return hmac.new(key, CHECK_TEXT, hashlib.sha256).hexdigest()


def key_file_of(lake: Lake, configured: str | Path | None = None, /) -> Path:
    """The key file: the setting when given, else one per lake, named by the lake's id (so lakes never share a key; the
    id is 16 hex digits, checked where ``citylake.json`` is read, so it never names a path)."""
    if configured:
        return Path(configured).expanduser()
    return (KEYS_DIR / f"{lake.lake_id or 'lake'}.key").expanduser()


def establish_key(lake: Lake, key_file: Path, /, *, policy: Policy) -> Path | None:
    """Give a new lake its key (the one in $CITYLAKE_PSEUDONYM_KEY, else a new key file) and its policy; a lake that
    has one keeps it. Returns the key file it made, if any."""
    if read_policy(lake, doing="giving the lake its key") is not None:
        return None
    made = None
    if not os.environ.get(KEY_ENV):
        made = None if key_file.exists() else key_file
        create_key(key_file, lake_root=lake.root)
    write_policy(lake, policy.with_epoch(key_check(load_key(key_file))))
    return made


def require_steward(lake: Lake, key_file: str | Path, /, *, doing: str = "this") -> bytes:
    """The lake's pseudonym key, from whoever holds it; refuses anyone else, saying what needed it."""
    try:
        key = load_key(key_file)
    except NoPseudonymKey as missing:
        raise Refused(f"{doing} is for the steward, who holds this lake's pseudonym key: {missing}") from None
    policy = read_policy(lake, doing=doing)
    if policy is None:
        raise Refused(f"{doing} needs the lake's pseudonym key, and this lake has none yet: run `citylake init` as its owner")
    check = key_check(key)
    if check == policy.pending:
        policy = _finish_rotation(lake, policy)
    if check != policy.current_check:
        raise Refused(f"{doing} is for the steward: the key given is not this lake's pseudonym key (its check value differs); "
                      "use the key `citylake init` made for this lake")
    return key


def rotate_key(lake: Lake, key_file: Path, /) -> int:
    """A new key for the lake (a new epoch), written over the key file; returns the new epoch."""
    if os.environ.get(KEY_ENV):
        raise Refused(f"key rotation writes the key file; unset {KEY_ENV} and keep the key in {key_file}")
    require_steward(lake, key_file, doing="rotating the key")
    fresh, staged = new_key(), key_file.with_name(key_file.name + ".new")
    staged.unlink(missing_ok=True)
    write_key_file(staged, fresh)
    policy = read_policy(lake)
    write_policy(lake, policy.with_pending(key_check(fresh)))  # a crash from here on: the staged key still unlocks the lake
    staged.replace(key_file)
    return _finish_rotation(lake, read_policy(lake)).epoch


def _finish_rotation(lake: Lake, policy: Policy) -> Policy:
    finished = policy.with_epoch(policy.pending)
    write_policy(lake, finished)
    return finished

