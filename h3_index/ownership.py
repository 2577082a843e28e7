"""Whether another OS user could change a file, or swap it: the one rule the steward's files are held to (the lake a
steward writes, the pseudonym key file, a settings file). Here, in the bottom room, because the lake, the privacy room
and the settings all apply it; it imports nothing of theirs.

A file is the user's to trust when no one else can change it or any directory above it, as ssh's StrictModes and
sudo hold their files: each directory on the way (as written, and with its links resolved) belongs to this user or
root, is writable by no one else — by no group but the owner's own (a user private group) — unless it is sticky
(``/tmp``: there others may add entries but not rename or remove this user's), and carries no access control list; a
symbolic link on the way is this user's or root's. The file itself is the caller's to check (its owner and mode from
the descriptor read).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

TRUSTED_OWNERS = (0,)  # root, besides the user itself


def untrusted_above(path: Path) -> str | None:
    """Why another user could swap ``path`` through a directory above it (or a link on the way), or None when no one
    can. ``path`` need not exist yet: its existing directories are checked."""
    seen: set[Path] = set()
    for chain in (_chain(Path(os.path.abspath(path))), _chain(Path(os.path.realpath(path)))):
        for component in chain:
            if component in seen:
                continue
            seen.add(component)
            why = _untrusted_directory(component)
            if why:
                return why
    return None


def others_can_change(status: os.stat_result, descriptor: int | None = None) -> str | None:
    """Why users other than the owner (and root) could change this file or directory, or None."""
    mode = status.st_mode
    if mode & 0o002:
        return f"anyone can change it (mode {mode & 0o777:o})"
    if mode & 0o020 and not private_group(status.st_gid, status.st_uid):
        return f"group {_group_name(status.st_gid)} can change it (mode {mode & 0o777:o})"
    if descriptor is not None and has_acl(descriptor):
        return "it has an access control list, which may let other users change it"
    return None


def owned_by_another(uid: int) -> bool:
    return uid != os.geteuid() and uid not in TRUSTED_OWNERS


def has_acl(target: int | str | Path) -> bool:
    """Whether a file (descriptor or path, not followed) carries a POSIX access control list."""
    try:
        if isinstance(target, int):
            os.getxattr(target, "system.posix_acl_access")
        else:
            os.getxattr(target, "system.posix_acl_access", follow_symlinks=False)
    except OSError:  # none, or a file system without ACLs
        return False
    return True


def private_group(gid: int, uid: int) -> bool:
    """Whether group ``gid`` is user ``uid``'s own: named as the user, and no one else in it (as a member, or as the
    group of their own account)."""
    import grp
    import pwd

    try:
        group = grp.getgrgid(gid)
    except KeyError:
        return False
    others = {user.pw_name for user in pwd.getpwall() if user.pw_gid == gid and user.pw_uid != uid}
    return group.gr_name == user_name(uid) and set(group.gr_mem) <= {group.gr_name} and not others


def user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"user {uid}"


def _group_name(gid: int) -> str:
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _chain(path: Path) -> list[Path]:
    """The directories above ``path``, nearest first, that exist (and ``path``'s links: a link as written is on the way)."""
    return [p for p in path.parents if os.path.lexists(p)]


def _untrusted_directory(directory: Path) -> str | None:
    status = directory.lstat()
    if stat.S_ISLNK(status.st_mode):
        return f"{directory} is a link {user_name(status.st_uid)} made" if owned_by_another(status.st_uid) else None
    if owned_by_another(status.st_uid):
        return f"{directory} belongs to {user_name(status.st_uid)}"
    if status.st_mode & stat.S_ISVTX:  # sticky: others add entries, never rename or remove this user's
        return None
    why = others_can_change(status) or ("it has an access control list" if has_acl(directory) else None)
    return f"in {directory}, {why}" if why else None
