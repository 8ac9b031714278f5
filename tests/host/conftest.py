"""Fixtures of tests/host/: the power-loss layer of tests/test_fuselayer.py."""

from tests.test_fuselayer import layer  # noqa: F401 (a fixture: a mounted LazyLayer)
