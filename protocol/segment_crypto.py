"""custody-seg/1: a media segment encrypted to the archive's X25519 key.

Design (after age's STREAM construction, built only from ``cryptography``):

- a fresh ephemeral X25519 key per segment; the payload key is
  HKDF-SHA256(X25519(ephemeral, archive), salt = ephemeral_pub || archive_pub,
  info = "custody-seg/1 payload key");
- the plaintext is cut into chunks of at most 64 KiB, each sealed with
  ChaCha20-Poly1305 under nonce = 11-byte big-endian chunk counter || final flag
  (1 on the last chunk, else 0), with the header as associated data;
- a chunk is stored as its 4-byte big-endian ciphertext length, then the
  ciphertext (plaintext + 16-byte tag). The writer may end a chunk early (at
  each MP4 fragment) so that what reached the disk is always whole chunks.

So a file cut short decrypts up to its last complete chunk (reported as
incomplete), while a changed, dropped, reordered or appended chunk fails
authentication. The device holds only the archive's public key: it cannot
decrypt its own footage. Byte layout: docs/format.md.

Everything here is pure: bytes in, bytes out.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from protocol.errors import ProtocolError
from protocol.keys import ArchiveSecretKey, fingerprint, raw_public

SCHEME = "custody-seg/1"
MAGIC = b"CUSTODY-SEG/1\n"
HEADER_SIZE = len(MAGIC) + 32 + 32
MAX_CHUNK_PLAINTEXT = 64 * 1024
TAG_SIZE = 16
_LENGTH = struct.Struct(">I")
STORED_CHUNK_MAX = _LENGTH.size + MAX_CHUNK_PLAINTEXT + TAG_SIZE


def stored_chunk_size(plaintext_size: int) -> int:
    """Bytes a chunk of ``plaintext_size`` takes in the file: length prefix, ciphertext, tag."""
    return _LENGTH.size + plaintext_size + TAG_SIZE


_INFO = b"custody-seg/1 payload key"


def _payload_key(shared: bytes, ephemeral_pub: bytes, recipient_pub: bytes) -> bytes:
    if shared == bytes(32):
        raise ProtocolError("segment header: ephemeral key is a low-order point")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=ephemeral_pub + recipient_pub,
                info=_INFO)
    return hkdf.derive(shared)


def _nonce(counter: int, final: bool) -> bytes:
    if counter >= 1 << 88:
        raise ProtocolError("segment: too many chunks")
    return counter.to_bytes(11, "big") + (b"\x01" if final else b"\x00")


class SegmentEncryptor:
    """Encrypts one segment, chunk by chunk, to the archive's public key.

    >>> archive = ArchiveSecretKey.generate()
    >>> enc = SegmentEncryptor(archive.public_raw)
    >>> data = enc.header + enc.seal_chunk(b"fragment 1") + enc.seal_chunk(b"", final=True)
    >>> decrypt_segment(data, archive).plaintext
    b'fragment 1'
    """

    def __init__(self, recipient_public: bytes, _ephemeral: X25519PrivateKey | None = None):
        if len(recipient_public) != 32:
            raise ProtocolError("archive public key must be 32 bytes")
        # _ephemeral is for test vectors only; a device always draws a fresh key.
        ephemeral = _ephemeral or X25519PrivateKey.generate()
        ephemeral_pub = raw_public(ephemeral.public_key())
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient_public))
        self._aead = ChaCha20Poly1305(_payload_key(shared, ephemeral_pub, recipient_public))
        self.header = MAGIC + ephemeral_pub + bytes.fromhex(fingerprint(recipient_public))
        self._counter = 0
        self._finished = False

    def seal_chunk(self, plaintext: bytes | bytearray | memoryview,
                   final: bool = False) -> bytes:
        """The stored bytes of one chunk (length prefix + ciphertext)."""
        out = bytearray(stored_chunk_size(len(plaintext)))
        self.seal_chunk_into(plaintext, out, final)
        return bytes(out)

    def seal_chunk_into(self, plaintext: bytes | bytearray | memoryview,
                        out: bytearray | memoryview, final: bool = False) -> int:
        """The same, written into ``out``; returns how many bytes of it are the chunk.

        For a writer that reuses its buffers rather than allocating a chunk's
        worth of fresh memory each time.

        >>> enc = SegmentEncryptor(ArchiveSecretKey.generate().public_raw)
        >>> enc.seal_chunk_into(b"abc", bytearray(STORED_CHUNK_MAX))
        23
        """
        if self._finished:
            raise ValueError("segment already finished")
        if len(plaintext) > MAX_CHUNK_PLAINTEXT:
            raise ValueError(f"a chunk holds at most {MAX_CHUNK_PLAINTEXT} bytes")
        size = stored_chunk_size(len(plaintext))
        if len(out) < size:
            raise ValueError(f"a chunk of {len(plaintext)} bytes needs {size} bytes of room")
        view = memoryview(out)
        _LENGTH.pack_into(view, 0, size - _LENGTH.size)
        self._aead.encrypt_into(_nonce(self._counter, final), plaintext, self.header,
                                view[_LENGTH.size:size])
        self._counter += 1
        self._finished = final
        return size

    def seal(self, plaintext: bytes, final: bool = False) -> bytes:
        """Any amount of plaintext as one or more chunks."""
        out = []
        for start in range(0, max(len(plaintext), 1), MAX_CHUNK_PLAINTEXT):
            piece = plaintext[start:start + MAX_CHUNK_PLAINTEXT]
            last = final and start + MAX_CHUNK_PLAINTEXT >= len(plaintext)
            out.append(self.seal_chunk(piece, final=last))
        return b"".join(out)


@dataclass(frozen=True)
class SegmentLayout:
    """Where the chunks of a stored segment lie, read without any key."""

    chunk_ends: list[int]  # offset just after each complete chunk
    whole_size: int  # bytes up to the end of the last complete chunk
    trailing: int  # bytes after that (a chunk cut short)


def read_layout(data: bytes) -> SegmentLayout:
    """Find the complete chunks of a (possibly cut-short) stored segment.

    The device uses this after a power cut: it keeps ``whole_size`` bytes.
    """
    if len(data) < HEADER_SIZE or not data.startswith(MAGIC):
        raise ProtocolError(f"not a {SCHEME} segment (bad header)")
    pos, ends = HEADER_SIZE, []
    while pos + _LENGTH.size <= len(data):
        (n,) = _LENGTH.unpack_from(data, pos)
        if n < TAG_SIZE or n > MAX_CHUNK_PLAINTEXT + TAG_SIZE:
            raise ProtocolError(f"chunk {len(ends)}: impossible length {n}")
        if pos + _LENGTH.size + n > len(data):
            break
        pos += _LENGTH.size + n
        ends.append(pos)
    return SegmentLayout(ends, pos, len(data) - pos)


@dataclass(frozen=True)
class DecryptedSegment:
    plaintext: bytes
    complete: bool  # the final chunk was present: nothing was cut off
    chunks: int


def decrypt_segment(data: bytes, archive: ArchiveSecretKey) -> DecryptedSegment:
    """Decrypt a stored segment. Raises :class:`ProtocolError` on any tampering.

    A file cut short (no final chunk) decrypts to its complete chunks with
    ``complete=False``; whether that is acceptable is the ledger's to say
    (``recovered`` segments only).
    """
    layout = read_layout(data)
    header = data[:HEADER_SIZE]
    ephemeral_pub = header[len(MAGIC):len(MAGIC) + 32]
    if header[len(MAGIC) + 32:] != bytes.fromhex(archive.fingerprint):
        raise ProtocolError("segment is encrypted to another archive key")
    try:
        shared = archive.private.exchange(X25519PublicKey.from_public_bytes(ephemeral_pub))
    except ValueError as e:
        raise ProtocolError("segment header: bad ephemeral key") from e
    aead = ChaCha20Poly1305(_payload_key(shared, ephemeral_pub, archive.public_raw))
    out, start, complete = [], HEADER_SIZE, False
    for i, end in enumerate(layout.chunk_ends):
        if complete:
            raise ProtocolError(f"chunk {i}: data after the final chunk")
        ct = data[start + _LENGTH.size:end]
        try:
            out.append(aead.decrypt(_nonce(i, False), ct, header))
        except InvalidTag:
            try:
                out.append(aead.decrypt(_nonce(i, True), ct, header))
            except InvalidTag as e:
                raise ProtocolError(f"chunk {i}: authentication failed (changed, dropped "
                                    "or reordered)") from e
            complete = True
        start = end
    if complete and layout.trailing:
        raise ProtocolError("data after the final chunk")
    return DecryptedSegment(b"".join(out), complete, len(layout.chunk_ends))

