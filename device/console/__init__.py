"""The technicians' serial maintenance console (``custody console --port DEVICE``).

A process of its own, beside the recorder: it speaks a router-style line
interface to the technician over a serial port (pyserial, 115200 8N1) and talks
to the recorder through its control socket. What needs no recorder (the log,
the ledger and its verification, keys, storage, version) works while the
recorder is down; every change is signed into the ledger by the recorder as a
``console_action`` entry.

- :mod:`device.console.credentials` — technicians' scrypt hashes, the login throttle
- :mod:`device.console.terminal` — line editing over a byte stream
- :mod:`device.console.session` — banner, login, the command loop
- :mod:`device.console.commands` — the commands, console side
- :mod:`device.console.selftest` — the self-test's checks
- :mod:`device.console.maintenance` — the recorder's side: control-socket commands
- :mod:`device.console.cli` — ``custody console``

See docs/console.md.
"""
