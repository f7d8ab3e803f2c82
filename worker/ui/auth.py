"""Who may use the review page: users, roles and password hashes in a file; sign-in checks.

The users file (``IMGMOD_UI_USERS``) holds one user per line, ``NAME ROLE HASH``, written by
``imgmod ui adduser``; ``#`` starts a comment. HASH is ``scrypt$N$r$p$SALT$KEY`` (hashlib's
scrypt, salt and key base64): memory-hard, in the standard library, nothing to pin. The file
is read again when it changes, so a new user or a changed role counts at once, without a
restart. Roles are ordered: ``viewer`` (browse), ``reviewer`` (decide), ``admin`` (actions).

Everything here is pure or plain file I/O; the web layer asks :func:`verify` and
:func:`allowed`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

ROLES = ("viewer", "reviewer", "admin")
NAME = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
# scrypt cost: 16 MiB and ~50 ms per check on a slow core; a stolen file costs as much per guess.
SCRYPT_N, SCRYPT_R, SCRYPT_P, KEY_BYTES = 2**14, 8, 1, 32
MIN_PASSWORD = 8


class UsersFileError(ValueError):
    """The users file cannot be used; the message names the file, the line and the fix."""


@dataclass(frozen=True)
class User:
    name: str
    role: str
    password_hash: str = ""  # never shown: not in repr

    def __repr__(self) -> str:
        return f"User(name={self.name!r}, role={self.role!r})"


def allowed(role: str, needed: str) -> bool:
    """Whether ``role`` may do what ``needed`` may (roles are ordered viewer < reviewer < admin)."""
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def hash_password(password: str, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$SALT$KEY`` for ``password`` (a fresh random salt unless given)."""
    salt = salt or secrets.token_bytes(16)
    key = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=KEY_BYTES
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def _parse_hash(stored: str) -> tuple[int, int, int, bytes, bytes] | None:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt" or not all(p.isdigit() for p in parts[1:4]):
        return None
    try:
        salt, key = (
            base64.b64decode(parts[4], validate=True),
            base64.b64decode(parts[5], validate=True),
        )
    except ValueError:
        return None
    return int(parts[1]), int(parts[2]), int(parts[3]), salt, key


_DUMMY = hash_password("imgmod: no such user", salt=b"0" * 16)


def check_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (constant-time compare of the derived keys)."""
    parsed = _parse_hash(stored)
    if parsed is None:
        return False
    n, r, p, salt, key = parsed
    derived = hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, dklen=len(key), maxmem=256 * 1024 * 1024
    )
    return hmac.compare_digest(derived, key)


def parse_users(text: str, source: str) -> dict[str, User]:
    """Users by name from the file's text; :class:`UsersFileError` names ``source`` and line."""
    users: dict[str, User] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        where = f"{source}, line {number}"
        if len(fields) != 3:
            raise UsersFileError(
                f"{where}: expected NAME ROLE HASH; rewrite it with imgmod ui adduser"
            )
        name, role, stored = fields
        if not NAME.match(name):
            raise UsersFileError(
                f"{where}: user name {name!r} may hold only letters, digits and ._@-"
            )
        if role not in ROLES:
            raise UsersFileError(f"{where}: role {role!r} is not one of {', '.join(ROLES)}")
        if _parse_hash(stored) is None:
            raise UsersFileError(f"{where}: the password hash is not scrypt$N$r$p$SALT$KEY")
        if name in users:
            raise UsersFileError(f"{where}: user {name!r} is listed twice")
        users[name] = User(name, role, stored)
    return users


def render_users(users: dict[str, User]) -> str:
    head = "# imgmod ui users: NAME ROLE HASH (imgmod ui adduser NAME --role ROLE)\n"
    return head + "".join(f"{u.name} {u.role} {u.password_hash}\n" for u in users.values())


class UsersFile:
    """The users file, read again whenever its modification time or size changes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._seen: tuple[int, int] | None = None
        self._users: dict[str, User] = {}

    def users(self) -> dict[str, User]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            raise UsersFileError(
                f"no users file at {self.path}: add a user with `imgmod ui adduser NAME`, or "
                "point IMGMOD_UI_USERS at the file"
            ) from None
        seen = (stat.st_mtime_ns, stat.st_size)
        if seen != self._seen:
            self._users = parse_users(self.path.read_text(encoding="utf-8"), str(self.path))
            self._seen = seen
        return self._users

    def get(self, name: str) -> User | None:
        return self.users().get(name)

    def verify(self, name: str, password: str) -> User | None:
        """The user when ``password`` is theirs, else None (the same work either way, so the
        time taken does not tell which names exist)."""
        user = self.users().get(name)
        ok = check_password(password, user.password_hash if user else _DUMMY)
        return user if ok and user is not None else None


def add_user(path: str | Path, name: str, role: str, password: str) -> bool:
    """Add ``name`` (or replace their role and password) in the users file, created ``0600``.
    Returns True when the user is new. ValueError says what is wrong with the input."""
    if not NAME.match(name):
        raise ValueError(f"user name {name!r} may hold only letters, digits and ._@- (1-64)")
    if role not in ROLES:
        raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"the password needs at least {MIN_PASSWORD} characters")
    target = Path(path)
    users = parse_users(target.read_text(encoding="utf-8"), str(target)) if target.exists() else {}
    new = name not in users
    users[name] = User(name, role, hash_password(password))
    partial = target.with_name(target.name + ".tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(render_users(users))
    os.replace(partial, target)
    return new
