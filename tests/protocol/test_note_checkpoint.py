"""C2SP signed notes, checkpoints, cosignatures and tlog proofs; the device's cosigning."""

from __future__ import annotations

import base64
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol.archive_log import (
    CheckpointRefused,
    cosign_if_consistent,
    log_signer,
    open_device_checkpoint,
    tree_of,
)
from protocol.checkpoint import (
    Checkpoint,
    CheckpointError,
    CosignatureVerifier,
    Cosigner,
    TlogProof,
    check_extends,
    cosignature_message,
    open_checkpoint,
)
from protocol.keys import SigningKey
from protocol.merkle import leaf_hash
from protocol.note import Ed25519NoteSigner, Ed25519Verifier, Note, NoteError, key_id, verify_note
from tests.conftest import DEVICE

# The example of c2sp.org/signed-note, "Verifier keys".
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = ("This is an example message.\n\n\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1Y"
             "Eq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n").encode()


def test_the_signed_note_spec_example_verifies() -> None:
    verifier = Ed25519Verifier.from_vkey(SPEC_VKEY)
    assert verifier.vkey == SPEC_VKEY
    note = Note.from_bytes(SPEC_NOTE)
    assert note.text == "This is an example message.\n"
    assert verify_note(note, [verifier]) == ["example.com/foo"]
    assert note.to_bytes() == SPEC_NOTE
    altered = Note.from_bytes(SPEC_NOTE.replace(b"example message", b"exemplary message"))
    with pytest.raises(NoteError, match="does not verify"):
        verify_note(altered, [verifier])


def test_unknown_keys_are_ignored_but_a_note_needs_a_known_one() -> None:
    signer = Ed25519NoteSigner("example.com/other", Ed25519PrivateKey.generate())
    note = Note.from_bytes(SPEC_NOTE)
    note.signatures.insert(0, signer.sign(note.text))
    assert verify_note(note, [Ed25519Verifier.from_vkey(SPEC_VKEY)]) == ["example.com/foo"]
    with pytest.raises(NoteError, match="not signed by any known key"):
        verify_note(note, [Ed25519Verifier("example.com/foo", bytes(32))])


@pytest.mark.parametrize("bad", [
    b"no blank line\n\xe2\x80\x94 a AAAA\n", b"text\n\n", b"text\n\n-- a AAAAAAA=\n",
    b"te\x01xt\n\n\xe2\x80\x94 a AAAAAAA=\n", b"text\n\n\xe2\x80\x94 a+b AAAAAAA=\n",
])
def test_malformed_notes_are_refused(bad: bytes) -> None:
    with pytest.raises(NoteError):
        Note.from_bytes(bad)


def test_key_id_and_cosignature_key_id_differ_by_type_byte() -> None:
    public = bytes(range(32))
    assert key_id("w", 1, public) != key_id("w", 4, public)
    cosigner = Cosigner("witness.example/w1", Ed25519PrivateKey.generate())
    assert cosigner.verifier.key_id == key_id("witness.example/w1", 4, cosigner.verifier.public)


def test_checkpoint_text_and_cosignature_message_are_the_specs() -> None:
    cp = Checkpoint("example.com/behind-the-sofa", 20852163,
                    base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="))
    assert cp.to_text() == ("example.com/behind-the-sofa\n20852163\n"
                            "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n")
    assert cosignature_message(cp.to_text(), 1679315147) == (
        b"cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n"
        b"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n")
    for bad in ("a\n01\n" + "A" * 43 + "=\n", "a\n1\n", "a\n1\nAAAA\n"):
        with pytest.raises(CheckpointError):
            Checkpoint.from_text(bad)


def _log(n: int):
    tree = tree_of([b"entry %d" % i for i in range(n)])
    signer = Ed25519NoteSigner("example.com/log", Ed25519PrivateKey.generate())
    return tree, signer


def _signed(tree, signer, size: int) -> Note:
    text = Checkpoint(signer.name, size, tree.root(size)).to_text()
    return Note(text, [signer.sign(text)])


def test_cosigned_checkpoint_and_tlog_proof_round_trip() -> None:
    tree, signer = _log(11)
    witness = Cosigner("witness.example/w1", Ed25519PrivateKey.generate())
    note = _signed(tree, signer, 11)
    note.signatures.append(witness.cosign(note.text, 1_790_000_000))
    proof = TlogProof(5, tree.inclusion_proof(5), note.to_bytes(), extra=b"seq 5")
    again = TlogProof.from_bytes(proof.to_bytes())
    assert again == proof
    assert proof.to_bytes().startswith(b"c2sp.org/tlog-proof@v1\nextra c2VxIDU=\nindex 5\n")
    opened = again.verify(leaf_hash(b"entry 5"), signer.verifier, [witness.verifier], quorum=1)
    assert opened.cosigned_by == {"witness.example/w1": 1_790_000_000}
    with pytest.raises(CheckpointError, match="inclusion"):
        again.verify(leaf_hash(b"entry 6"), signer.verifier, [witness.verifier], quorum=1)
    other = CosignatureVerifier("witness.example/w2", bytes(32))
    with pytest.raises(CheckpointError, match="0 of the 1"):
        again.verify(leaf_hash(b"entry 5"), signer.verifier, [other], quorum=1)


def test_a_forged_cosignature_or_timestamp_fails() -> None:
    tree, signer = _log(3)
    witness = Cosigner("witness.example/w1", Ed25519PrivateKey.generate())
    note = _signed(tree, signer, 3)
    sig = witness.cosign(note.text, 100)
    note.signatures.append(type(sig)(sig.name, sig.key_id, struct.pack(">Q", 101) +
                                     sig.signature[8:]))
    with pytest.raises(CheckpointError, match="cosignature by witness.example/w1"):
        open_checkpoint(note.to_bytes(), signer.verifier, [witness.verifier])


def test_check_extends_catches_a_fork_and_a_shrink() -> None:
    tree, signer = _log(20)
    old, new = Checkpoint("l", 12, tree.root(12)), Checkpoint("l", 20, tree.root(20))
    check_extends(old, new, tree.consistency_proof(12, 20))
    forked = tree_of([b"entry %d" % i if i != 4 else b"rewritten" for i in range(20)])
    with pytest.raises(CheckpointError, match="not consistent"):
        check_extends(old, Checkpoint("l", 20, forked.root()), forked.consistency_proof(12, 20))
    with pytest.raises(CheckpointError, match="shrank"):
        check_extends(new, old, [])


def test_device_cosigns_only_a_consistent_checkpoint_of_its_own_ledger(unit) -> None:
    trust, archive_key = unit.trust, SigningKey.from_pem(
        (unit.keys / "archive-signing.key").read_bytes())
    payloads = [e.payload for e in unit.entries()]
    signer = log_signer(trust, DEVICE, archive_key)

    def checkpoint(entries: list[bytes]) -> bytes:
        text = Checkpoint(signer.name, len(entries), tree_of(entries).root()).to_text()
        return Note(text, [signer.sign(text)]).to_bytes()

    first = cosign_if_consistent(None, checkpoint(payloads[:4]), [], unit.device_key,
                                 trust=trust, device=DEVICE, timestamp=1,
                                 ledger_payloads=payloads)
    opened = open_device_checkpoint(first.note, trust, DEVICE)
    assert list(opened.cosigned_by.values()) == [1] and opened.checkpoint.size == 4
    tree = tree_of(payloads)
    second = cosign_if_consistent(first.note, checkpoint(payloads), tree.consistency_proof(4),
                                  unit.device_key, trust=trust, device=DEVICE, timestamp=2,
                                  ledger_payloads=payloads)
    assert open_device_checkpoint(second.note, trust, DEVICE).checkpoint.size == len(payloads)
    # A log that rewrote entry 2: no consistent proof exists, and it is not the device's ledger.
    forged = [*payloads[:2], b"rewritten", *payloads[3:]]
    with pytest.raises(CheckpointRefused, match="not consistent"):
        cosign_if_consistent(first.note, checkpoint(forged), tree_of(forged).consistency_proof(4),
                             unit.device_key, trust=trust, device=DEVICE, timestamp=3)
    with pytest.raises(CheckpointRefused, match="not this device's ledger"):
        cosign_if_consistent(None, checkpoint(forged), [], unit.device_key, trust=trust,
                             device=DEVICE, timestamp=3, ledger_payloads=payloads)
    # A checkpoint not signed by the archive's key.
    rogue = Ed25519NoteSigner(signer.name, Ed25519PrivateKey.generate())
    text = Checkpoint(signer.name, len(payloads), tree.root()).to_text()
    with pytest.raises(CheckpointRefused, match="not signed by any known key"):
        cosign_if_consistent(None, Note(text, [rogue.sign(text)]).to_bytes(), [],
                             unit.device_key, trust=trust, device=DEVICE, timestamp=3)
