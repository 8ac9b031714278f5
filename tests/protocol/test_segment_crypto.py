"""custody-seg/1: a cut file decrypts to its whole chunks; any change is caught."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import ProtocolError
from protocol.keys import ArchiveSecretKey
from protocol.segment_crypto import (
    HEADER_SIZE,
    MAX_CHUNK_PLAINTEXT,
    SegmentEncryptor,
    decrypt_segment,
    read_layout,
)

ARCHIVE = ArchiveSecretKey.generate()


def encrypt(pieces: list[bytes], final: bool = True) -> bytes:
    enc = SegmentEncryptor(ARCHIVE.public_raw)
    out = [enc.header]
    for i, p in enumerate(pieces):
        out.append(enc.seal_chunk(p, final=final and i == len(pieces) - 1))
    return b"".join(out)


pieces = st.lists(st.binary(max_size=3000), min_size=1, max_size=6)


@given(pieces)
def test_round_trip(parts: list[bytes]):
    got = decrypt_segment(encrypt(parts), ARCHIVE)
    assert got.complete and got.plaintext == b"".join(parts) and got.chunks == len(parts)


@given(pieces, st.data())
@settings(max_examples=200)
def test_cut_anywhere_gives_whole_chunks_only(parts: list[bytes], data):
    stored = encrypt(parts)
    cut = data.draw(st.integers(HEADER_SIZE, len(stored) - 1))
    got = decrypt_segment(stored[:cut], ARCHIVE)
    assert not got.complete
    whole = len(read_layout(stored[:cut]).chunk_ends)
    assert got.plaintext == b"".join(parts[:whole])


@given(pieces, st.data())
@settings(max_examples=300)
def test_any_changed_byte_never_yields_wrong_plaintext(parts: list[bytes], data):
    stored = bytearray(encrypt(parts))
    pos = data.draw(st.integers(0, len(stored) - 1))
    stored[pos] ^= data.draw(st.integers(1, 255))
    try:
        got = decrypt_segment(bytes(stored), ARCHIVE)
    except ProtocolError:
        return
    # a changed length prefix can only make the file look cut short: then what
    # decrypts is a true prefix, and it is never "complete"
    assert not got.complete
    assert b"".join(parts).startswith(got.plaintext)


def test_dropped_and_reordered_chunks_fail():
    enc = SegmentEncryptor(ARCHIVE.public_raw)
    a, b, c = enc.seal_chunk(b"a" * 10), enc.seal_chunk(b"b" * 10), enc.seal_chunk(b"", True)
    for bad in (a + c, b + a + c, a + b + b + c, a + b + c + c):
        with pytest.raises(ProtocolError):
            decrypt_segment(enc.header + bad, ARCHIVE)
    assert decrypt_segment(enc.header + a + b + c, ARCHIVE).plaintext == b"a" * 10 + b"b" * 10


def test_another_archive_cannot_decrypt():
    with pytest.raises(ProtocolError, match="another archive"):
        decrypt_segment(encrypt([b"x"]), ArchiveSecretKey.generate())


def test_large_plaintext_is_chunked():
    enc = SegmentEncryptor(ARCHIVE.public_raw)
    data = bytes(range(256)) * 1000
    stored = enc.header + enc.seal(data, final=True)
    assert len(read_layout(stored).chunk_ends) == -(-len(data) // MAX_CHUNK_PLAINTEXT)
    assert decrypt_segment(stored, ARCHIVE).plaintext == data


def test_a_fresh_key_per_segment():
    assert encrypt([b"same"]) != encrypt([b"same"])
