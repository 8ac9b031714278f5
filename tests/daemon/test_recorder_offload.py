"""The real recorder docked on a stalled link: capture and sealing never wait for the dock."""

from __future__ import annotations

import time

from daemon import pki
from device.offload import Offloader, OffloadSettings, RecorderHost
from protocol.store_reader import MEDIA_DIR
from tests.conftest import DEVICE
from tests.daemon.dockkit import DockThread, LinkProxy, dock_config, verify_archive, wait_for
from tests.device.simrun import recorder_on_sim


def test_a_stalled_link_never_holds_up_capture_or_sealing(unit, tmp_path):
    dock = DockThread(dock_config(unit.keys, tmp_path / "archive"))
    proxy = LinkProxy(dock.port)
    proxy.flowing.clear()  # the link is up but nothing gets through
    settings = OffloadSettings(
        dock_url=proxy.url, tls_cert_file=pki.cert_path(unit.keys, "device", DEVICE),
        tls_key_file=pki.key_path(unit.keys, "device", DEVICE),
        tls_ca_file=pki.tls_dir(unit.keys) / pki.CA_CERT, chunk_bytes=64 * 1024, poll_s=0.2,
        timeout_s=2.0)
    try:
        with recorder_on_sim(unit, segment_seconds=1) as recorder:
            recorder.start()
            offloader = Offloader(settings, unit.store, DEVICE,
                                  RecorderHost(recorder, unit.device_key)).start()
            try:
                recorder.hardware.set_docked(True)  # the dock-detect input
                wait_for(lambda: recorder.docked, what="docked")
                recorder.press_record()
                time.sleep(5)
                recorder.press_record()
                wait_for(lambda: recorder.state.value == "standby", 20, "the stop")
                status = recorder.status()
                entries = unit.entries()
                rec = [e.entry.seq for e in entries if e.entry.kind == "record_start"][-1]
                frames = sum(e.entry.body.frames for e in entries
                             if e.entry.kind == "segment" and e.entry.body.recording == rec)
                assert frames >= 4 * 10, frames  # 5 s at 10 fps were captured and sealed
                assert status["dropped_frames"] == 0 and status["overflows"] == 0
                assert status["seal_failures"] == 0
                assert status["freed_files"] == 0  # nothing freed: no receipt got through
                assert offloader.status()["state"] in ("waiting", "undocked", "offloading")
                proxy.flowing.set()  # the link recovers: the offload completes on its own
                # Until this recording's files are freed (a count of freed files would also
                # count the fixture's earlier recording, and be reached by a first receipt
                # that covers only the range staged before the link stalled).
                wait_for(lambda: not [p for p in (unit.store / MEDIA_DIR).iterdir()
                                      if p.name.startswith(f"r{rec:06d}")], 60, "the offload")
            finally:
                offloader.close()
        report = verify_archive(tmp_path / "archive", DEVICE)
        assert not report.errors, [f.message for f in report.findings]
        assert not [p for p in (unit.store / MEDIA_DIR).iterdir()
                    if p.name.startswith(f"r{report.recordings[-1].recording:06d}")]
    finally:
        proxy.close()
        dock.stop()
