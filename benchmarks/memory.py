"""Benchmark: the recorder agent's resident memory while recording 1280x720@30.

    .venv/bin/python benchmarks/memory.py            # ~45 s of recording, fits in 60 s
    .venv/bin/python benchmarks/memory.py --full     # 10 minutes, after a full pre-record

The real agent runs as a subprocess (``python -m custody_cli recorder --config
FILE``, ``hardware = "sim"``, which puts the simulated camera's encoder in its
own process, as a Pi's hardware encoder is outside the agent). A unit and a
device store are provisioned first (``daemon.provision``). Settings are the
device defaults (1280x720@30, 4 Mbit/s, 30 s pre-record, 48 kHz audio) except
``segment_seconds``: 10 in the short run, so that ~45 s of recording crosses
several segment boundaries (a per-segment leak shows), 60 (the default) with
``--full``.

Once the agent is in standby the benchmark presses record (with ``--full``,
only after the pre-record buffer is full, so its 30 s are in the figure), and
samples the *agent's* ``VmRSS`` from ``/proc/PID/status`` every 0.5 s — that
process only, not its camera child (whose RSS is reported separately). Then it
stops the recording, waits until everything is sealed, shuts the agent down
and runs ``custody verify STORE --json`` on the store.

- ``rss_mb_max``: the largest sample, standby included (``vm_hwm_mb``, the
  kernel's peak, catches spikes between samples). Goal ≤ 100.
- ``rss_growth_mb``: the median of the last 2 s of recording minus the median
  of the 2 s window starting at the baseline: 15 s into the recording in the
  short run, 60 s (minute 1) with ``--full``. Goal ≤ 5.
- ``verified``: ``custody verify`` exited 0 with verdict ``intact``.

Why the same code's figure moved by ~16 MB from run to run: not the
allocator (``RssAnon`` is the same to 1 MB in every run, with or without
``MALLOC_ARENA_MAX=2``) but the file-backed part (``RssFile``, the shared
libraries). At a page fault the kernel maps not only the page but what of the
file around it is already in the page cache, a whole cached folio at a time;
how big those folios are depends on how the file last came into the cache.
Read whole (readahead builds large folios) a fault on libavcodec maps ~280 KiB,
paged in by faults alone 64 KiB (measured here on a copy of libavcodec: 18
touches map 5.0 MiB against 1.1 MiB). So the agent's libavcodec, numpy,
libx265, … were 11 + 6 + 3 MiB resident in some runs and 3 + 3 + 0 in others
(``RssFile`` 57 against 40 MiB), whatever the code did. The benchmark
therefore first drops the agent's libraries from the page cache
(``posix_fadvise(DONTNEED)``; pages another process maps stay), so every run
starts where a booted device starts, its libraries paged in by its own
faults; ``--warm-cache`` skips that. It reports ``RssAnon``/``RssFile`` and
the largest mappings, in standby and at the high, so a change in either shows.

MB here is MiB (VmRSS is in KiB). The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from daemon.provision import create_unit, enrol_device
from device.config import RecorderConfig
from device.control import ControlClient, ControlError
from device.ledger import system_clock

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' own helpers
from simboard import simulated_board  # noqa: E402

DEVICE, OFFICER = "BENCH-MEM-1", "PC-BENCH"
GOAL_RSS_MB, GOAL_GROWTH_MB = 100, 5
INTERVAL = 0.5


def proc_status_kib(pid: int, *fields: str) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in fields:
                    out[key] = int(value.split()[0])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def largest_mappings(pid: int, n: int = 8) -> list[list[Any]]:
    """The ``n`` largest resident mappings of ``pid``, by file (anonymous ones as
    ``[anon]``, ``[heap]``, ``[stack]``), in MiB: what a run-to-run difference is made of."""
    by_name: dict[str, int] = {}
    name = "[anon]"
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                head = line.split()
                if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                    name = head[5] if len(head) > 5 else "[anon]"
                elif head and head[0] == "Rss:":
                    by_name[name] = by_name.get(name, 0) + int(head[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:n]
    return [[Path(k).name if k.startswith("/") else k, round(v / 1024, 1)] for k, v in top]


def drop_cached_libraries() -> int:
    """Drop the interpreter's and the installed packages' shared objects from the page
    cache, so the agent pages them in as a booted device does; the number of files."""
    import sysconfig

    roots = {Path(sysconfig.get_paths()[key]) for key in ("stdlib", "platstdlib", "purelib",
                                                        "platlib")}
    roots.add(Path(sysconfig.get_config_var("LIBDIR") or sys.base_prefix))
    dropped = 0
    for root in roots:
        for path in root.rglob("*.so*") if root.is_dir() else ():
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                dropped += 1
            finally:
                os.close(fd)
    return dropped


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # the fields after the ")" that ends the command name: state, ppid, ...
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def window_median(samples: list[tuple[float, float]], start: float, seconds: float) -> float:
    values = [rss for t, rss in samples if start <= t < start + seconds]
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--full", action="store_true",
                        help="10 minutes of recording after a full pre-record buffer")
    parser.add_argument("--seconds", type=float, help="recording time (45, or 600 with --full)")
    parser.add_argument("--segment-seconds", type=float,
                        help="segment length (10, or the default 60 with --full)")
    parser.add_argument("--video", default="1280x720@30")
    parser.add_argument("--warm-cache", action="store_true",
                        help="leave the libraries in the page cache as they are")
    args = parser.parse_args()
    seconds = args.seconds or (600.0 if args.full else 45.0)
    segment = args.segment_seconds or (60.0 if args.full else 10.0)
    baseline_at = 60.0 if args.full else 15.0

    with tempfile.TemporaryDirectory(prefix="custody-memory-") as tmp:
        root = Path(tmp)
        keys, store = root / "keys", root / "device"
        create_unit(keys, "bench", ["DOCK-01"])
        enrol_device(keys, DEVICE, store, system_clock(), officer=OFFICER, by="TECH-BENCH")
        config = RecorderConfig.from_toml("").with_overrides({
            "device_id": DEVICE, "store": str(store),
            **simulated_board(root, keys, DEVICE),
            "trust_file": str(keys / "trust.json"), "control_socket": str(root / "r.sock"),
            "hardware": "sim", "sim_epoch_unix_ns": time.time_ns(), "video": args.video,
            "segment_seconds": segment}, source="memory benchmark")
        (root / "recorder.toml").write_text(config.to_toml())
        log_path = root / "recorder.log"
        libraries_dropped = 0 if args.warm_cache else drop_cached_libraries()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "custody_cli", "recorder", "--config",
                 str(root / "recorder.toml")],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        client = ControlClient(config.control_socket, timeout=10)

        def status() -> dict[str, Any]:
            if proc.poll() is not None:
                raise RuntimeError(f"the agent exited with {proc.returncode}:\n"
                                   + log_path.read_text()[-3000:])
            try:
                return client.call("status")
            except ControlError:
                return {}

        def wait(test, timeout: float) -> dict[str, Any]:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                s = status()
                if s and test(s):
                    return s
                time.sleep(0.05)
            raise RuntimeError(f"timed out; agent log:\n{log_path.read_text()[-3000:]}")

        samples: list[tuple[float, float]] = []  # (seconds since the press, MiB)
        camera_rss: list[float] = []
        final: dict[str, Any] = {}
        try:
            wait(lambda s: s.get("state") == "standby", 30)
            if args.full:
                wait(lambda s: s["prerecord_seconds"] >= config.pre_record_seconds,
                     config.pre_record_seconds + 15)
            else:
                wait(lambda s: s["prerecord_seconds"] > 0, 15)
            standby_rss = proc_status_kib(proc.pid, "VmRSS")["VmRSS"] / 1024
            standby_split = proc_status_kib(proc.pid, "RssAnon", "RssFile", "RssShmem")
            standby_maps = largest_mappings(proc.pid)
            max_rss, max_maps, max_split = standby_rss, standby_maps, standby_split
            prerecord_at_press = status()["prerecord_seconds"]
            client.call("press", button="record")
            pressed = time.monotonic()
            next_at = pressed
            while (now := time.monotonic()) - pressed < seconds:
                rss = proc_status_kib(proc.pid, "VmRSS").get("VmRSS")
                if rss is None or proc.poll() is not None:
                    raise RuntimeError("the agent died:\n" + log_path.read_text()[-3000:])
                samples.append((now - pressed, rss / 1024))
                if rss / 1024 > max_rss + 1:  # a new high: what is it made of?
                    max_rss, max_maps = rss / 1024, largest_mappings(proc.pid)
                    max_split = proc_status_kib(proc.pid, "RssAnon", "RssFile", "RssShmem")
                if len(samples) % 10 == 1:  # the camera child and the queues, now and then
                    camera_rss.append(sum(proc_status_kib(c, "VmRSS").get("VmRSS", 0)
                                          for c in children(proc.pid)) / 1024)
                    s = status()
                    print(f"t={now - pressed:6.1f} s  agent {rss / 1024:6.1f} MiB  camera "
                          f"{camera_rss[-1]:6.1f} MiB  capture_queue {s['capture_queue']:4d}  "
                          f"seal_queue {s['seal_queue']:4d}  sealed {s['segments_sealed']}",
                          file=sys.stderr)
                next_at += INTERVAL
                time.sleep(max(0.0, next_at - time.monotonic()))
            hwm = proc_status_kib(proc.pid, "VmHWM")["VmHWM"] / 1024
            client.call("press", button="record")
            final = wait(lambda s: s["state"] == "standby" and s["capture_queue"] == 0
                         and s["seal_queue"] == 0, 60)
        finally:
            try:
                client.call("shutdown")
            except ControlError:
                proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                code = proc.wait()
            client.close()
        verify = subprocess.run([sys.executable, "-m", "custody_cli", "verify", str(store),
                                 "--json"], capture_output=True, text=True, timeout=120)
        try:
            report = json.loads(verify.stdout)
            verdict = report.get("verdict") if isinstance(report, dict) else None
        except json.JSONDecodeError:
            report, verdict = None, None
        recordings = report.get("recordings", []) if isinstance(report, dict) else []

    end = samples[-1][0]
    baseline = window_median(samples, baseline_at, 2.0)
    last = window_median(samples, end - 2.0, 2.5)
    result = {
        "rss_mb_max": round(max([standby_rss] + [r for _, r in samples]), 1),
        "rss_growth_mb": round(last - baseline, 2),
        "baseline": f"median of {baseline_at:g}-{baseline_at + 2:g} s into the recording",
        "rss_mb_baseline": round(baseline, 1), "rss_mb_end": round(last, 1),
        "rss_mb_standby": round(standby_rss, 1), "vm_hwm_mb": round(hwm, 1),
        "camera_process_rss_mb_max": round(max(camera_rss), 1) if camera_rss else None,
        "recorded_s": round(end, 1), "samples": len(samples),
        "prerecord_s_at_press": prerecord_at_press, "segment_seconds": segment,
        "segments_sealed": final.get("segments_sealed"), "bytes_sealed": final.get("bytes_sealed"),
        "dropped_frames": final.get("dropped_frames"), "overflows": final.get("overflows"),
        "last_error": final.get("last_error"), "agent_exit": code,
        "verified": verify.returncode == 0 and verdict == "intact",
        "verify_exit": verify.returncode, "verdict": verdict,
        "recordings": len(recordings), "video": args.video,
        "goals": {"rss_mb_max": GOAL_RSS_MB, "rss_growth_mb": GOAL_GROWTH_MB},
        # What varies from run to run: resident memory split anonymous / file-backed
        # (shared libraries), and the largest mappings, in standby and at the high.
        "rss_split_mb_standby": {k: round(v / 1024, 1) for k, v in standby_split.items()},
        "rss_split_mb_at_max": {k: round(v / 1024, 1) for k, v in max_split.items()},
        "largest_mappings_standby": standby_maps, "largest_mappings_at_max": max_maps,
        "page_cache": "as found" if args.warm_cache else
        f"libraries dropped first ({libraries_dropped} files)",
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    result["ok"] = (result["rss_mb_max"] <= GOAL_RSS_MB
                    and result["rss_growth_mb"] <= GOAL_GROWTH_MB and result["verified"])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
