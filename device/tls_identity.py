"""The device's TLS client identity, loaded from a key that exists only in memory.

The device's TLS key is stored on the card wrapped by the board's OTP secret
(``device/key_custody.py``, purpose ``tls``) and unwrapped in memory at start.
Python's ``ssl`` takes a private key only from a file name, so the key is
handed to it as a PEM **encrypted under a one-time random password**
(``BestAvailableEncryption``) in an anonymous memory file (``memfd_create``,
read through ``/proc/self/fd``), closed as soon as OpenSSL has read it. The
plaintext key never reaches a file system, and the encrypted copy lives only
as long as the call (ADR 0046).

    >>> # ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    >>> # load_client_identity(ctx, cert_file, load_tls_key(key_file, otp, device))
"""

from __future__ import annotations

import os
import secrets
import ssl
from pathlib import Path

from cryptography.hazmat.primitives import serialization


class TlsIdentityError(Exception):
    """The TLS key or certificate could not be loaded; names the file and why."""


def load_client_identity(ctx: ssl.SSLContext, cert_file: Path, key_pem: bytes) -> None:
    """Give ``ctx`` the certificate in ``cert_file`` and the private key ``key_pem``
    (PEM, unencrypted, in memory) without writing the key to any file system."""
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as e:
        raise TlsIdentityError(f"TLS key for {cert_file}: not a PEM private key ({e})") from e
    password = secrets.token_bytes(32)
    sealed = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.BestAvailableEncryption(password))
    fd = os.memfd_create("custody-tls-key", os.MFD_CLOEXEC)
    try:
        view = memoryview(sealed)
        while view:
            view = view[os.write(fd, view):]
        ctx.load_cert_chain(cert_file, f"/proc/self/fd/{fd}", password=password)
    except ssl.SSLError as e:
        raise TlsIdentityError(f"{cert_file}: does not go with the device's TLS key ({e})") \
            from e
    except OSError as e:
        raise TlsIdentityError(f"{cert_file}: {e.strerror or e}") from e
    finally:
        os.close(fd)
