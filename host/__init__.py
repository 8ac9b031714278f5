"""The host system's services every layer may use: durable files, systemd's notifications.

Standard library only, and nothing of ours: ``protocol/`` must stay pure and
``daemon/`` may not import ``device/`` or ``hardware/``, so what they share
with each other lives here (import-linter holds it, docs/architecture.md).
"""
