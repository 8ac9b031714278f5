"""Every kind of finding the verifier reports: its severity and what it means.

This table is the single source: the verifier takes each finding's severity
from it, and docs/format.md ("Findings") lists the same rows — a test compares
the two, so the page cannot drift from the code. A new kind is one new row
here and one on the page.

Severities: ``error`` makes the verdict broken; ``unexplained`` makes it
intact_unexplained_gaps; ``warning`` and ``info`` are reported only.
"""

from __future__ import annotations

from dataclasses import dataclass

ERROR, UNEXPLAINED, WARNING, INFO = "error", "unexplained", "warning", "info"
SEVERITIES = (ERROR, UNEXPLAINED, WARNING, INFO)


@dataclass(frozen=True)
class FindingKind:
    severity: str
    meaning: str


FINDING_KINDS: dict[str, FindingKind] = {k: FindingKind(s, m) for k, s, m in (
    # --- files: what the store reader met on disk
    ("not_a_regular_file", ERROR, "a link, FIFO, device or directory where a file belongs "
     "(never read)"),
    ("not_a_directory", ERROR, "a link or a file where a folder belongs (never followed)"),
    ("file_too_large", ERROR, "a file above its size bound (never read whole)"),
    ("unreadable_file", ERROR, "a file of the store that could not be read"),
    ("torn_ledger_file", WARNING, "a `ledger.torn-*` file: a line a power cut tore, moved "
     "aside by the device at its next start"),
    ("ignored_trust_file", INFO, "a trust file inside the store; never used to check it"),
    # --- archives
    ("ledger_missing", ERROR, "a `devices/<id>/` folder with no ledger"),
    ("stray_ledger", ERROR, "a ledger at the archive's root, outside `devices/<id>/`"),
    ("store_name_mismatch", ERROR, "a store whose folder name is not its ledger's device id"),
    ("duplicate_store", ERROR, "two stores in one archive hold ledgers of the same device"),
    ("diverging_ledgers", ERROR, "two ledgers of one device differ at the same seq"),
    # --- ledger lines
    ("empty_ledger", ERROR, "the ledger has no entries"),
    ("malformed_entry", ERROR, "a line that is not a valid envelope and entry"),
    ("duplicate_key", ERROR, "a JSON object with a key twice (two parsers would read two "
     "different entries)"),
    ("torn_write", WARNING, "the last line has no newline: a write torn by a power cut; "
     "its bytes are kept"),
    # --- identity and signatures
    ("unknown_device", ERROR, "the ledger's device is not in the trust file"),
    ("no_genesis", ERROR, "the ledger does not start with `provisioned` at seq 0"),
    ("second_genesis", ERROR, "a `provisioned` entry after seq 0"),
    ("wrong_unit", ERROR, "provisioned for another unit than the trust file's"),
    ("wrong_archive_key", WARNING, "the device encrypts to an archive key the trust file "
     "does not name"),
    ("foreign_entry", ERROR, "an entry of another device"),
    ("untrusted_key", ERROR, "the device's current key is not listed for it in the trust file"),
    ("untrusted_signature", ERROR, "the entry is not signed by the device's current key"),
    ("bad_signature", ERROR, "the signature does not verify: the entry was altered"),
    ("bad_key_rotation", ERROR, "a `key_rotated` whose `new_key` is not its key's id"),
    # --- chain
    ("missing_entries", ERROR, "seq jumps: entries are missing"),
    ("seq_out_of_order", ERROR, "an entry comes before one it should follow"),
    ("prev_mismatch", ERROR, "`prev` is not the SHA-256 of the previous entry's payload"),
    ("replayed_entry", ERROR, "the same payload appears twice"),
    # --- time
    ("monotonic_rollback", ERROR, "`monotonic_ns` went back within one boot"),
    ("clock_rollback", ERROR, "`utc_ns` went back within one boot with no `time_sync`"),
    ("undeclared_boot", ERROR, "the boot id changed while a recording was open and no "
     "interruption of it declares the cut"),
    ("capture_after_signing", ERROR, "a segment's last capture is later than its own "
     "entry's time"),
    ("bad_time_statement", ERROR, "a `time_sync` statement that is not a valid dock-signed "
     "time statement for this step"),
    ("large_dock_offset", WARNING, "a dock said the device's clock was off by more than "
     "300 s (`MAX_DOCK_STEP_NS`); the dock and whether the step was applied are named"),
    # --- recordings
    ("bad_link", ERROR, "an entry names a recording or interruption that does not exist"),
    ("segment_after_stop", ERROR, "a segment of a recording after its `record_stop`"),
    ("overlap", ERROR, "a segment starts at or before the previous one's last capture"),
    ("undeclared_gap", ERROR, "a gap between segments that no interruption declares"),
    ("undeclared_audio_gap", ERROR, "a segment holds less audio than its time (a hole in "
     "its sound) and no interruption declares it"),
    ("open_recording", WARNING, "the ledger ends with a recording neither stopped nor "
     "interrupted: what a cut-off tail leaves"),
    ("unexplained_interruption", UNEXPLAINED, "an interruption with no voice note of at "
     "least 0.5 s of speech"),
    ("silent_voice_note", WARNING, "a voice note with less than 0.5 s of speech"),
    # --- media
    ("media_missing", ERROR, "a sealed media file is missing, and no receipt covers it"),
    ("media_truncated", ERROR, "a media file is shorter than sealed"),
    ("media_size", ERROR, "a media file is longer than sealed"),
    ("media_hash", ERROR, "a media file's SHA-256 is not the sealed one"),
    ("replayed_media", ERROR, "two entries seal the same file, the same bytes or the same "
     "segment header: footage replayed under a new entry"),
    ("offloaded", INFO, "a missing media file that a valid receipt archived: freed against it"),
    ("unsealed_media", WARNING, "a file in `media/` that no entry seals"),
    # --- receipts
    ("bad_receipt", ERROR, "a receipt that is unreadable, wrongly signed or for another device"),
    ("receipt_mismatch", ERROR, "a receipt's `head` is not this ledger's entry `last_seq`, "
     "or an embedded receipt does not end before its own entry"),
    ("tail_cut", ERROR, "a receipt names entries beyond the ledger's end: its tail is gone"),
    ("other_device_receipt", WARNING, "a receipt kept beside the store is for another device"),
    # --- an archive's own records: its logs' checkpoints, tombstones (docs/archive.md)
    ("ledger_rewritten", ERROR, "the archived ledger is not the history a checkpoint signed "
     "by a dock or the archive (and cosigned by the device) fixed"),
    ("ledger_truncated", ERROR, "a checkpoint covers more entries than the archived ledger has"),
    ("bad_checkpoint", ERROR, "a checkpoint no dock or archive key signed, or a device "
     "cosignature that fails"),
    ("not_cosigned", WARNING, "the newest checkpoint of a device's log has no cosignature "
     "by the device"),
    ("no_checkpoint", WARNING, "the archive holds no checkpoint of this device's log yet"),
    ("archive_media_missing", ERROR, "a sealed file gone from the archive with no tombstone "
     "accounting for it"),
    ("deleted", INFO, "a file deleted from the archive under a valid tombstone naming who "
     "and why"),
    ("bad_tombstone", ERROR, "a tombstone that is unreadable, wrongly signed or for another "
     "device"),
    ("tombstone_file_present", WARNING, "a file that has a tombstone is still in the archive"),
    ("audit_rewritten", ERROR, "the archive's audit log is not the one a checkpoint of a "
     "device's log anchored (records edited, removed or re-chained)"),
    # --- evidence packages (docs/archive.md)
    ("no_proof", ERROR, "an entry of a package without its tlog proof"),
    ("bad_proof", ERROR, "a tlog proof that does not prove the entry under a checkpoint "
     "signed by a dock or the archive and cosigned by the device"),
    ("recovered_media", INFO, "a recovered segment: the device signed its sealed bytes, and "
     "the package's plaintext is what they decrypt to"),
    ("stray_proof", INFO, "a proof for an entry that is not in the package"),
    # --- a dock's check of a new range of a ledger (protocol/verify_range.py)
    ("media_reused", ERROR, "one file sealed by two entries of a range a device offloads"),
    ("empty_range", ERROR, "a device offloaded a range with no entries"),
    # --- the device's own declarations
    ("ledger_gap", ERROR, "the device declares entries gone from its ledger (cut back while "
     "it was off): its high-water mark had gone further (a warning in a range the dock "
     "takes in: it archives the range and alerts)"),
    # --- forward compatibility
    ("unknown_kind", INFO, "an entry kind this verifier does not know: kept, not interpreted"),
    ("unknown_value", INFO, "a value outside a listed set (a newer phase, reason, source): "
     "kept, reported"),
)}


def severity_of(kind: str) -> str:
    return FINDING_KINDS[kind].severity


@dataclass
class Finding:
    """One thing the verifier found. ``file``/``line`` say where, when known."""

    seq: int | None
    kind: str
    message: str
    severity: str = ""  # from FINDING_KINDS when not given
    file: str | None = None
    line: int | None = None

    def __post_init__(self) -> None:
        if not self.severity:
            self.severity = severity_of(self.kind)
