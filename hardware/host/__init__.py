"""The machine's own services every layer may use: durable files, systemd's notifications.

Standard library only, and nothing of ours: ``protocol/`` must stay pure and
``daemon/`` may import neither ``device/`` nor the Pi's devices, so what they
share lives here, the one part of ``hardware/`` the dock may import
(import-linter holds it, docs/architecture.md).
"""
