"""The board file's settings reach the recorder's devices."""

from __future__ import annotations

from dataclasses import replace

from device.config import RecorderConfig
from device.ledger import LedgerWriter, entry_clock
from device.recorder import Recorder
from hardware.board import load_board
from hardware.sim.factory import SimFactory
from tests.conftest import DEVICE, Unit


def test_the_boards_audio_settings_reach_the_microphone(unit: Unit):
    board = load_board()
    board = replace(board, audio=replace(board.audio, block=480, input_device="usb-mic"))
    config = RecorderConfig.from_toml("").with_overrides({
        "device_id": DEVICE, "store": str(unit.store), "hardware": "sim",
        "video": "320x180@10", "pre_record_seconds": 0})
    with SimFactory(board, camera_isolation="thread") as hw:
        ledger = LedgerWriter(unit.store, DEVICE, unit.device_key, entry_clock(hw.clock()))
        recorder = Recorder(config, hw, ledger, unit.archive_public, trust=unit.trust)
        try:
            recorder.start()
            assert recorder.microphone is not None
            mic = recorder.microphone.config
            assert (mic.block, mic.device, mic.rate) == (480, "usb-mic", config.audio_rate)
        finally:
            recorder.close()
            ledger.close()
