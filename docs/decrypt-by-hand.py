#!/usr/bin/env python3
"""Decrypt one custody-seg/1 file with the archive's secret key — a reference
written from docs/format.md section 7 alone, with nothing but `cryptography`.

    python3 docs/decrypt-by-hand.py archive-secret.key media/r000002-00000.cseg > out.mp4

`openssl enc` cannot open ChaCha20-Poly1305 (an AEAD), so this short script
stands beside docs/verify-by-hand.sh. It prints the plaintext (the MP4) on
stdout, "complete" or "INCOMPLETE (no final chunk)" on stderr, and exits 1 at
the first chunk that does not authenticate.
"""

import hashlib
import struct
import sys

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = b"CUSTODY-SEG/1\n"
HEADER = len(MAGIC) + 32 + 32  # magic, ephemeral X25519 public key, SHA-256 of archive key


def main(key_file: str, segment_file: str) -> int:
    # The archive secret key: unencrypted PKCS#8 PEM ("BEGIN PRIVATE KEY"), X25519.
    with open(key_file, "rb") as f:
        secret = serialization.load_pem_private_key(f.read(), password=None)
    archive_pub = secret.public_key().public_bytes(serialization.Encoding.Raw,
                                                   serialization.PublicFormat.Raw)
    with open(segment_file, "rb") as f:
        data = f.read()
    if len(data) < HEADER or not data.startswith(MAGIC):
        sys.exit("not a custody-seg/1 file")
    header = data[:HEADER]
    ephemeral_pub = header[len(MAGIC):len(MAGIC) + 32]
    if header[len(MAGIC) + 32:] != hashlib.sha256(archive_pub).digest():
        sys.exit("encrypted to another archive key")
    shared = secret.exchange(X25519PublicKey.from_public_bytes(ephemeral_pub))
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=ephemeral_pub + archive_pub,
               info=b"custody-seg/1 payload key").derive(shared)
    aead = ChaCha20Poly1305(key)
    pos, counter, final = HEADER, 0, False
    out = sys.stdout.buffer
    while pos + 4 <= len(data) and not final:
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        if pos + 4 + length > len(data):
            break  # a chunk cut short: everything before it is whole
        sealed = data[pos + 4:pos + 4 + length]
        for flag in (b"\x00", b"\x01"):  # a normal chunk, else the final one
            try:
                plain = aead.decrypt(counter.to_bytes(11, "big") + flag, sealed, header)
            except InvalidTag:
                continue
            final = flag == b"\x01"
            break
        else:
            print(f"chunk {counter}: authentication failed", file=sys.stderr)
            return 1
        out.write(plain)
        pos, counter = pos + 4 + length, counter + 1
    if final and pos != len(data):
        print("bytes after the final chunk", file=sys.stderr)
        return 1
    print("complete" if final else "INCOMPLETE (no final chunk)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
