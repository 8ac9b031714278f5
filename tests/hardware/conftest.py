"""Fixtures for the hardware contract tests.

The simulator fixtures ship in the package (hardware.sim.fixtures) so other test
folders can use them too. ``pi_factory`` gives the real backends and skips, with
the reason, anywhere but on a Raspberry Pi (run those with ``pytest -m hardware``).
"""

from __future__ import annotations

import importlib.util
import shutil

import pytest

from hardware.board import detect_pi_model, load_board
from hardware.factory import PiFactory


def require_pi(what: str) -> None:
    model = detect_pi_model()
    if model is None:
        pytest.skip(f"{what} needs a Raspberry Pi; this machine is not one")


def require_module(module: str, why: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed ({why})")


@pytest.fixture
def pi_factory() -> PiFactory:
    require_pi("the real-backend contract")
    return PiFactory(load_board())


@pytest.fixture(scope="session")
def ffprobe() -> str:
    path = shutil.which("ffprobe")
    if path is None:
        pytest.skip("ffprobe is not installed (apt install ffmpeg)")
    return path
