"""The unit's archive for the custodian (Art. 9-12): index, annotations,
retention, audit log, per-device Merkle logs, evidence packages.

Layout of an archive folder (docs/archive.md)::

    trust.json                          the unit's trust file
    devices/<device>/                   the dock's copy of each device store
    checkpoints/<device>/<size>.checkpoint   signed (and cosigned) log heads
    tombstones/<device>/<recording>.json     signed records of deleted media
    audit.jsonl                         hash-chained audit log
    index.sqlite                        the index (rebuilt from the above)
    archive.toml                        retention per category (optional)

:class:`daemon.archive.archive.Archive` is the façade the CLI and the web view use.
"""
