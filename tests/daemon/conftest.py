"""Fixtures of the dock's tests: a unit of two devices and a dock on a free loopback port."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.daemon.dockkit import DockThread, dock_config, make_unit


@pytest.fixture
def world(tmp_path: Path):
    keys, devices = make_unit(tmp_path, devices=2)
    dock = DockThread(dock_config(keys, tmp_path / "archive"))
    yield keys, devices, dock, tmp_path / "archive"
    dock.stop()
    for d in devices:
        d.host.close()
