"""Fixtures of tests/hardware/host/: the power-loss layer, and a socket systemd would listen on."""

from tests.hardware.host.test_sdnotify import notify_socket  # noqa: F401 (a fixture)
from tests.test_fuselayer import layer  # noqa: F401 (a fixture: a mounted LazyLayer)
