"""Who may log in to the archive's web view, and as what.

``ARCHIVE/users.toml``::

    [users.LI]
    role = "custodian"                  # custodian, unit_head or auditor
    password = "scrypt$16384$8$1$<salt b64>$<key b64>"

``custody archive user NAME --role ROLE`` adds one, reading the password from
standard input. Passwords are stored as scrypt hashes (cryptography's Scrypt).
"""

from __future__ import annotations

import base64
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

ROLES = ("custodian", "unit_head", "auditor")
# What each role may do in the web view.
PERMISSIONS = {
    "custodian": {"search", "view", "play", "annotate", "export", "audit"},
    "unit_head": {"search", "view", "play", "acknowledge"},
    "auditor": {"search", "view", "audit"},
}
USERS_NAME = "users.toml"
_N, _R, _P = 2**14, 8, 1


class UsersError(Exception):
    """A bad users file; names the file and key."""


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    key = Scrypt(salt=salt, length=32, n=_N, r=_R, p=_P).derive(password.encode())
    return (f"scrypt${_N}${_R}${_P}${base64.b64encode(salt).decode()}$"
            f"{base64.b64encode(key).decode()}")


def _check_password(stored: str, password: str) -> bool:
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        kdf = Scrypt(salt=base64.b64decode(salt), length=32, n=int(n), r=int(r), p=int(p))
        if scheme != "scrypt":
            return False
        kdf.verify(password.encode(), base64.b64decode(key))
    except (ValueError, InvalidKey):
        return False
    return True


@dataclass(frozen=True)
class User:
    name: str
    role: str

    def may(self, permission: str) -> bool:
        return permission in PERMISSIONS[self.role]

    @property
    def who(self) -> str:
        """How the audit log names this user."""
        return f"{self.role}:{self.name}"


class Users:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.entries: dict[str, tuple[str, str]] = {}  # name -> (role, password hash)
        if not self.path.is_file():
            return
        try:
            raw = tomllib.loads(self.path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise UsersError(f"{self.path}: {e}") from e
        for name, table in raw.get("users", {}).items():
            if not isinstance(table, dict) or table.get("role") not in ROLES:
                raise UsersError(f"{self.path}: users.{name}.role: one of {', '.join(ROLES)}")
            if not isinstance(table.get("password"), str):
                raise UsersError(f"{self.path}: users.{name}.password: missing")
            self.entries[name] = (table["role"], table["password"])

    def login(self, name: str, password: str) -> User | None:
        entry = self.entries.get(name)
        if entry is None:
            _check_password(hash_password("x"), password)  # the same time either way
            return None
        return User(name, entry[0]) if _check_password(entry[1], password) else None

    def add(self, name: str, role: str, password: str) -> None:
        if role not in ROLES:
            raise UsersError(f"role {role!r}: one of {', '.join(ROLES)}")
        if not name.replace("-", "").replace("_", "").isalnum():
            raise UsersError(f"user name {name!r}: letters, digits, - and _ only")
        if len(password) < 8:
            raise UsersError("a password needs at least 8 characters")
        self.entries[name] = (role, hash_password(password))
        lines = []
        for n, (r, h) in sorted(self.entries.items()):
            lines += [f"[users.{n}]", f'role = "{r}"', f'password = "{h}"', ""]
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines))
        os.replace(tmp, self.path)
