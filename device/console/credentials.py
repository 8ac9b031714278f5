"""Technicians' console credentials: scrypt hashes only, and the login throttle.

The credentials file is provisioned with the unit (``custody console --add-technician``
or :func:`add_technician`) and holds, per technician, a salt and an scrypt hash
of the password (memory-hard: 32 MiB and about a tenth of a second per try,
from ``cryptography``). The password itself is never stored or logged::

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "technicians.json"
    >>> add_technician(path, "tech", "correct horse", cost=2**10)
    >>> store = TechnicianStore.load(path)
    >>> store.check("tech", "correct horse"), store.check("tech", "wrong")
    (True, False)

A wrong name costs the same scrypt as a wrong password, so timing does not tell
which names exist.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from hardware.host.durable import replace_atomically

FORMAT = "custody-technicians/1"
SCRYPT_COST = 2**15  # n; with r = 8 that is 32 MiB of memory per try
SCRYPT_BLOCK, SCRYPT_PARALLEL, HASH_BYTES, SALT_BYTES = 8, 1, 32, 16
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
MIN_PASSWORD = 8


class CredentialsError(ValueError):
    """A credentials file or a new technician that is not acceptable; names the file or key."""


@dataclass(frozen=True)
class Credential:
    salt: bytes
    hash: bytes
    n: int = SCRYPT_COST
    r: int = SCRYPT_BLOCK
    p: int = SCRYPT_PARALLEL

    @classmethod
    def make(cls, password: str, cost: int = SCRYPT_COST) -> Credential:
        salt = secrets.token_bytes(SALT_BYTES)
        return cls(salt, _kdf(salt, cost, SCRYPT_BLOCK, SCRYPT_PARALLEL).derive(password.encode()),
                   cost)

    def matches(self, password: str) -> bool:
        try:
            _kdf(self.salt, self.n, self.r, self.p).verify(password.encode(), self.hash)
        except InvalidKey:
            return False
        return True

    def to_dict(self) -> dict:
        return {"kdf": "scrypt", "n": self.n, "r": self.r, "p": self.p,
                "salt": self.salt.hex(), "hash": self.hash.hex()}


def _kdf(salt: bytes, n: int, r: int, p: int) -> Scrypt:
    return Scrypt(salt=salt, length=HASH_BYTES, n=n, r=r, p=p)


@dataclass
class TechnicianStore:
    """The technicians a device accepts, by name."""

    technicians: dict[str, Credential] = field(default_factory=dict)
    source: str = ""

    @classmethod
    def load(cls, path: Path) -> TechnicianStore:
        where = str(path)
        try:
            data = json.loads(Path(path).read_bytes())
        except OSError as e:
            raise CredentialsError(f"{where}: {e.strerror}") from e
        except ValueError as e:
            raise CredentialsError(f"{where}: not JSON ({e})") from e
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CredentialsError(f"{where}: format: expected {FORMAT!r}")
        table = data.get("technicians")
        if not isinstance(table, dict):
            raise CredentialsError(f"{where}: technicians: expected an object")
        store = cls(source=where)
        for name, raw in table.items():
            key = f"{where}: technicians.{name}"
            if not isinstance(raw, dict) or raw.get("kdf") != "scrypt":
                raise CredentialsError(f"{key}: expected an object with kdf \"scrypt\"")
            try:
                store.technicians[name] = Credential(
                    bytes.fromhex(raw["salt"]), bytes.fromhex(raw["hash"]),
                    int(raw["n"]), int(raw["r"]), int(raw["p"]))
            except (KeyError, TypeError, ValueError) as e:
                raise CredentialsError(f"{key}: needs hex salt and hash and whole n, r, p ({e})") \
                    from None
        return store

    def check(self, name: str, password: str) -> bool:
        """Whether ``password`` is ``name``'s; as slow for an unknown name as for a known one."""
        credential = self.technicians.get(name)
        if credential is None:
            # Same work as a real check, against a hash nobody has.
            Credential(b"\0" * SALT_BYTES, b"\0" * HASH_BYTES).matches(password)
            return False
        return credential.matches(password)

    def save(self, path: Path) -> None:
        data = {"format": FORMAT,
                "technicians": {n: c.to_dict() for n, c in sorted(self.technicians.items())}}
        replace_atomically(Path(path), (json.dumps(data, indent=2) + "\n").encode(), mode=0o600)


def add_technician(path: Path, name: str, password: str, cost: int = SCRYPT_COST) -> None:
    """Add (or give a new password to) a technician in the credentials file at ``path``."""
    if not _NAME.fullmatch(name):
        raise CredentialsError(f"technician name {name!r}: 1-32 letters, digits, '.', '_' or '-'")
    if len(password) < MIN_PASSWORD:
        raise CredentialsError(f"the password for {name!r} must have at least {MIN_PASSWORD} "
                               "characters")
    path = Path(path)
    store = TechnicianStore.load(path) if path.exists() else TechnicianStore()
    store.technicians[name] = Credential.make(password, cost)
    store.save(path)


@dataclass
class LoginThrottle:
    """Failed logins cost time: the ``free_attempts``-th failure in a row locks every
    login out for ``base_delay`` seconds, and each further failure doubles the delay
    (up to ``max_delay``). A success clears it.

    >>> throttle = LoginThrottle(free_attempts=2, base_delay=5, clock=lambda: 100.0)
    >>> throttle.failed(), throttle.failed(), throttle.failed()
    (0.0, 5.0, 10.0)
    >>> throttle.locked_for()
    10.0
    """

    free_attempts: int = 3
    base_delay: float = 5.0
    max_delay: float = 900.0
    clock: object = time.monotonic
    failures: int = 0
    locked_until: float = 0.0

    def locked_for(self) -> float:
        """Seconds until the next login may be tried (0: now)."""
        return max(0.0, self.locked_until - self.clock())  # type: ignore[operator]

    def failed(self) -> float:
        """Count a failure; the lockout it starts, in seconds (0: none yet)."""
        self.failures += 1
        beyond = self.failures - self.free_attempts
        if beyond < 0:
            return 0.0
        delay = float(min(self.max_delay, self.base_delay * 2 ** beyond))
        self.locked_until = self.clock() + delay  # type: ignore[operator]
        return delay

    def succeeded(self) -> None:
        self.failures, self.locked_until = 0, 0.0


def same_text(a: str, b: str) -> bool:
    """Constant-time comparison of two short strings (confirmation codes)."""
    return hmac.compare_digest(a.encode(), b.encode())
