"""Benchmark: frames and audio samples lost or duplicated at segment boundaries.

    .venv/bin/python benchmarks/rollover.py [--boundaries 120] [--seed 1]
                                            [--recorder-seconds 15] [--recorder-prerecord 3]
                                            [--no-recorder]

Two checks, both decoding what was written with PyAV and reading every frame's
index from its picture (:func:`hardware.frame_index.read_frame_index`):

1. **Segmenter** (``device.segmenter.Segmenter``, the exact class the recorder's mux
   thread uses). Real H.264 from the simulated camera's encoder loop
   (:func:`hardware.sim.camera.encoder_loop`: libx264, test picture, 320x180@30,
   keyframe interval 6, plus randomly forced IDRs so cuts fall at irregular
   places) and PCM blocks of random size (256..2048 samples) whose delivery lags
   their capture by a random 0..150 ms, so audio arrives late, early and in
   bursts relative to video; video capture times jitter by ±1 ms. Audio sample
   timestamps are sample-exact, as :class:`hardware.microphone.SampleClock`
   gives them. Every sample carries its own position (value = n * 40503 mod
   2**16, a permutation), so each decoded sample says which source sample it
   is. Segments are cut at the first keyframe 0.3 s after the segment's start
   (≥ ``--boundaries`` boundaries) and kept in memory.
2. **Recorder** (unless ``--no-recorder``): the real ``device.recorder.Recorder``
   in this process on ``SimFactory`` (camera isolation "thread", real-time,
   320x180@30, keyframe interval 10, ``segment_seconds = 1``) waits until its
   pre-record buffer holds ``--recorder-prerecord`` s (3: longer than a
   segment, so the pre-record itself is cut into segments, as on a device set
   to 30 s of pre-record and segments shorter than that) and 1 s more (so the
   buffer no longer starts at the camera's very first keyframe), records
   ``--recorder-seconds``; the sealed segments are decrypted with the unit's
   archive key and decoded. Every frame index must appear once. Audio is the
   simulator's tone, a known function of the absolute sample number: each
   segment's first sample number is located near where its decoded
   timestamps put it and confirmed by an exact match of the segment's whole
   PCM; then the recording's audio must run without gap or overlap from the
   first frame's capture time (±1 sample) to the last frame's (less 0.1 s for
   the stop), so a missing or repeated sample at any boundary — or a segment
   with no audio — counts. Fewer boundaries (about one per second), but
   through the whole pipeline: pre-record, capture queue, mux thread,
   sealing, ledger.

``lost`` / ``duplicated`` are frames + samples, over both checks; the
per-kind and per-check numbers are alongside. The goal is 0 and 0; ``ok``
(and the exit status) also requires every segment to decode as expected. The
last line is JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import itertools
import json
import queue
import sys
import tempfile
import threading
import time
from pathlib import Path

import av
import numpy as np

from device.segmenter import Segmenter
from hardware.camera import CameraConfig
from hardware.frames import AudioBlock, VideoFrame
from hardware.sim.camera import EncoderJob, encoder_loop
from hardware.sim.pattern import read_frame_index

RATE = 48_000
_MUL = 40503  # odd, so n -> n * _MUL mod 2**16 is a permutation
_INV = pow(_MUL, -1, 1 << 16)


# --- decoding and counting -----------------------------------------------------------


def decode_segment(data: bytes) -> tuple[list[int], np.ndarray, dict]:
    """Frame indices (from the pictures), the PCM and the first PTS of each track."""
    indices: list[int] = []
    pcm: list[np.ndarray] = []
    first: dict = {}
    with av.open(io.BytesIO(data)) as container:
        for frame in container.decode(*container.streams):
            if isinstance(frame, av.VideoFrame):
                first.setdefault("video", frame.time)
                try:
                    indices.append(read_frame_index(frame))
                except ValueError:
                    indices.append(-1)  # unreadable: counts as lost (its index is missing)
            else:
                first.setdefault("audio", frame.time)
                pcm.append(frame.to_ndarray().reshape(-1))
    samples = np.concatenate(pcm).astype(np.int16) if pcm else np.zeros(0, np.int16)
    return indices, samples, first


def count(seen: np.ndarray, expected: range) -> tuple[int, int, int]:
    """(lost, duplicated, foreign) of the identities ``seen`` against ``expected``."""
    seen = np.asarray(seen, dtype=np.int64)
    inside = (seen >= expected.start) & (seen < expected.stop)
    hits = np.bincount(seen[inside] - expected.start, minlength=len(expected))
    return (int(np.count_nonzero(hits == 0)), int(np.sum(hits[hits > 1] - 1)),
            int(np.count_nonzero(~inside)))


# --- 1. the Segmenter with real H.264 and jittered audio -----------------------------


def identity_pcm(first: int, count_: int) -> np.ndarray:
    n = np.arange(first, first + count_, dtype=np.int64)
    return (((n * _MUL) & 0xFFFF) - 32768).astype(np.int16)


def sample_numbers(pcm: np.ndarray) -> np.ndarray:
    """Each decoded sample's source sample number (unwrapped; exact while gaps < 0.68 s)."""
    if not len(pcm):
        return np.zeros(0, np.int64)
    residue = (((pcm.astype(np.int64) + 32768) * _INV) & 0xFFFF)
    step = (np.diff(residue) + 32768) % 65536 - 32768
    return residue[0] + np.concatenate(([0], np.cumsum(step)))


def encode_frames(config: CameraConfig, epoch_us: int, n: int, rng: np.random.Generator,
                  force_keyframe_p: float) -> list[VideoFrame]:
    frames: list[VideoFrame] = []
    stop, commands = threading.Event(), queue.Queue()

    def emit(frame: VideoFrame) -> None:
        frames.append(frame)
        if rng.random() < force_keyframe_p:
            commands.put(("keyframe",))
        if len(frames) >= n:
            stop.set()

    encoder_loop(EncoderJob(config, epoch_us, 0, realtime=False), emit, stop, commands)
    return frames[:n]


def segmenter_check(boundaries: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    fps, keyint, segment_us = 30, 6, 300_000
    config = CameraConfig(width=320, height=180, fps=fps, bitrate=600_000,
                          keyframe_interval=keyint, overlay=False)
    epoch_us = 10_000_000
    # A segment lasts at most segment_us + one GOP: enough frames for the boundaries.
    per_segment = -(-(segment_us * fps) // 1_000_000) + keyint
    t0 = time.perf_counter()
    frames = encode_frames(config, epoch_us, (boundaries + 1) * per_segment + keyint, rng, 0.04)
    encode_s = time.perf_counter() - t0
    frames = [dataclasses.replace(f, timestamp_us=f.timestamp_us + int(rng.integers(-1000, 1001)))
              for f in frames]

    # Audio from 50 ms before the first frame to 100 ms after the last one.
    audio_start_us = frames[0].timestamp_us - 50_000
    total = (frames[-1].timestamp_us + 100_000 - audio_start_us) * RATE // 1_000_000
    events: list[tuple[int, int, object]] = []  # (delivery time, tie-break, item)
    delivered = 0
    for f in frames:  # the encoder's latency varies, but frames leave it in order
        delivered = max(delivered, f.timestamp_us + int(rng.integers(0, 40_000)))
        events.append((delivered, 0, f))
    pos, delivered = 0, 0
    while pos < total:
        size = min(int(rng.integers(256, 2049)), total - pos)
        ts = audio_start_us + pos * 1_000_000 // RATE
        end = audio_start_us + (pos + size) * 1_000_000 // RATE
        delivered = max(delivered, end + int(rng.integers(0, 150_000)))
        events.append((delivered, 1, AudioBlock(identity_pcm(pos, size), ts, RATE)))
        pos += size
    events.sort(key=lambda e: (e[0], e[1]))

    sinks: list[io.BytesIO] = []

    def open_sink(n: int) -> io.BytesIO:
        assert n == len(sinks)
        sinks.append(io.BytesIO())
        return sinks[-1]

    t0 = time.perf_counter()
    segmenter = Segmenter(open_sink, width=config.width, height=config.height, fps=fps,
                          audio_rate=RATE, segment_us=segment_us)
    for _, _, item in events:
        if isinstance(item, VideoFrame):
            segmenter.add_video(item)
        else:
            segmenter.add_audio(item)  # type: ignore[arg-type]
    summaries = segmenter.close()
    mux_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    indices: list[int] = []
    pcm: list[np.ndarray] = []
    summary_mismatch = 0
    for sink, summary in zip(sinks, summaries, strict=True):
        got, samples, _ = decode_segment(sink.getvalue())
        summary_mismatch += (len(got) != summary.frames) + (len(samples) != summary.audio_samples)
        indices += got
        pcm.append(samples)
    decode_s = time.perf_counter() - t0
    numbers = sample_numbers(np.concatenate(pcm))
    lost_f, dup_f, bad_f = count(np.array(indices), range(frames[0].index, frames[-1].index + 1))
    lost_s, dup_s, bad_s = count(numbers, range(0, total))
    return {
        "boundaries": len(summaries) - 1, "frames": len(frames), "samples": total,
        "lost_frames": lost_f + bad_f, "duplicated_frames": dup_f,
        "lost_samples": lost_s, "duplicated_samples": dup_s, "foreign_samples": bad_s,
        "in_order": bool(np.all(np.diff(indices) > 0) and np.all(np.diff(numbers) > 0)),
        "segmenter_dropped": [segmenter.video_frames_dropped, segmenter.audio_samples_dropped],
        "summary_mismatches": int(summary_mismatch),
        "seconds": {"encode": round(encode_s, 2), "mux": round(mux_s, 2),
                    "decode": round(decode_s, 2)},
    }


# --- 2. the whole recorder on simulated hardware --------------------------------------


def locate_tone(pcm: np.ndarray, guess: int, search: int = RATE) -> tuple[int | None, int]:
    """Where ``pcm`` lies in the sim's tone: (absolute number of ``pcm[0]`` or None, and
    the longest prefix of ``pcm`` that is the tone somewhere near ``guess``).

    Candidates within ``search`` samples of ``guess`` whose first 64 samples match
    are tried nearest first; the whole of ``pcm`` must match.
    """
    from hardware.sim.signals import to_int16, tone

    low = max(0, guess - search)
    head = pcm[:64]
    reference = to_int16(tone(low, guess + search - low + len(head), RATE))
    windows = np.lib.stride_tricks.sliding_window_view(reference, len(head))
    hits = np.flatnonzero((windows == head).all(axis=1)) + low
    prefix = 0
    for first in sorted(hits.tolist(), key=lambda n: abs(n - guess))[:200]:
        differ = np.flatnonzero(pcm != to_int16(tone(first, len(pcm), RATE)))
        if not len(differ):
            return first, len(pcm)
        prefix = max(prefix, int(differ[0]))
    return None, prefix


def first_sample_at(time_us: int) -> int:
    """The first simulated sample captured at or after ``time_us`` from the epoch."""
    n = time_us * RATE // 1_000_000
    while n * 1_000_000 // RATE < time_us:
        n += 1
    return n


def recorder_check(seconds: float, pre_record: float) -> dict:
    from daemon.provision import (
        ARCHIVE_SECRET,
        create_unit,
        device_key_path,
        enrol_device,
        load_signing_key,
    )
    from device.config import RecorderConfig
    from device.ledger import LedgerWriter, entry_clock, system_clock
    from device.recorder import Recorder
    from hardware.sim.factory import SimFactory
    from protocol.envelope import parse_line, split_lines
    from protocol.keys import ArchiveSecretKey
    from protocol.segment_crypto import decrypt_segment
    from protocol.store_reader import LEDGER_NAME, MEDIA_DIR, read_trust

    fps = 30
    with tempfile.TemporaryDirectory(prefix="custody-rollover-") as tmp:
        keys, store = Path(tmp) / "keys", Path(tmp) / "device"
        create_unit(keys, "bench", ["DOCK-01"])
        enrol_device(keys, "BENCH-1", store, system_clock(), officer="PC-1")
        trust = read_trust(keys / "trust.json")
        archive_public = bytes.fromhex(trust.keys[trust.archive_encryption_key].public)
        config = RecorderConfig.from_toml("").with_overrides({
            "device_id": "BENCH-1", "store": str(store), "hardware": "sim",
            "video": f"320x180@{fps}", "segment_seconds": 1, "pre_record_seconds": pre_record,
            "video_bitrate": 600_000, "keyframe_interval": 10},
            source="rollover benchmark")
        with SimFactory(camera_isolation="thread") as hw:
            ledger = LedgerWriter(store, "BENCH-1",
                                  load_signing_key(device_key_path(keys, "BENCH-1")),
                                  entry_clock(hw.clock()))
            recorder = Recorder(config, hw, ledger, archive_public)
            recorder.start()
            deadline = time.monotonic() + pre_record + 10
            while (recorder.status()["prerecord_seconds"] < pre_record
                   and time.monotonic() < deadline):
                time.sleep(0.05)  # fill the pre-record buffer
            # ... and let it roll on past the camera's first pictures: audio that arrives
            # before the first keyframe is buffered is not kept (see the report), which
            # is about where a recording starts, not about its boundaries.
            time.sleep(1.0)
            prerecord_s = recorder.status()["prerecord_seconds"]
            recorder.start_recording("button")
            time.sleep(seconds)
            recorder.stop_recording("button")
            recorder.close()
            ledger.close()
            stats = recorder.stats
        archive = ArchiveSecretKey.from_pem((keys / ARCHIVE_SECRET).read_bytes())
        segments = [e.body for e in (parse_line(x).entry for x in
                                     split_lines((store / LEDGER_NAME).read_bytes()))
                    if e.kind == "segment"]
        indices: list[int] = []
        ranges: list[tuple[int, int]] = []  # the source samples each segment's audio is
        unmatched: list[dict] = []
        ledger_mismatch = total_samples = 0
        for seg in segments:
            data = (store / MEDIA_DIR / seg.media.file).read_bytes()
            got, pcm, first = decode_segment(decrypt_segment(data, archive).plaintext)
            ledger_mismatch += (len(got) != seg.frames) + (len(pcm) != seg.audio_samples)
            indices += got
            total_samples += len(pcm)
            if not len(pcm) or not got:
                continue  # a segment without audio shows as a gap in the coverage below
            # The first frame's capture time is known from its index; the audio's
            # first sample lies (audio PTS - video PTS) from it.
            frame_us = got[0] * 1_000_000 // fps
            start_us = frame_us + round((first["audio"] - first["video"]) * 1e6)
            n0, prefix = locate_tone(pcm, start_us * RATE // 1_000_000)
            if n0 is None:  # not the tone throughout: say where it stops being it
                unmatched.append({"segment": seg.index, "samples": len(pcm),
                                  "tone_until_sample": prefix})
            else:
                ranges.append((n0, n0 + len(pcm)))
        lost_f, dup_f, bad_f = (count(np.array(indices), range(min(indices), max(indices) + 1))
                                if indices else (0, 0, 0))
        lost_s = dup_s = head_s = tail_s = 0
        gaps: list[int] = []  # samples missing (> 0) or repeated (< 0) at each boundary
        if indices and ranges:
            # The recording's audio must cover its video: from the first frame's capture
            # time (the pre-record is cut there) to the last frame's end.
            want_from = first_sample_at(min(indices) * 1_000_000 // fps)
            want_to = first_sample_at((max(indices) + 1) * 1_000_000 // fps)
            # (The start may differ by one sample: the pre-record is cut by the block's
            # timestamp, which is rounded to the µs, not by the sample's exact time.)
            lost_s += max(0, ranges[0][0] - want_from - 1)
            head_s = ranges[0][0] - want_from
            # The end is the stop, not a boundary: when the two capture threads saw the
            # stop may differ by a few blocks. Only more than 0.1 s counts as lost.
            tail_s = want_to - ranges[-1][1]
            lost_s += max(0, tail_s - RATE // 10)
            for (_, end), (start, _) in itertools.pairwise(ranges):
                lost_s += max(0, start - end)
                dup_s += max(0, end - start)
                if start != end:
                    gaps.append(start - end)
        elif indices:
            lost_s = len(indices) * RATE // fps  # no audio at all
    return {
        "boundaries": max(0, len(segments) - 1), "frames": len(indices),
        "samples": total_samples, "lost_frames": lost_f + bad_f, "duplicated_frames": dup_f,
        "lost_samples": lost_s, "duplicated_samples": dup_s,
        "segments_not_matching_tone": len(unmatched), "not_matching": unmatched,
        "ledger_mismatches": ledger_mismatch,
        "in_order": bool(np.all(np.diff(indices) > 0)),
        "prerecord_s": prerecord_s, "audio_start_vs_first_frame_samples": head_s,
        "audio_end_short_of_video_samples": tail_s, "audio_gaps_at_boundaries": gaps,
        "recorder_dropped": [stats.dropped_frames, stats.dropped_samples],
        "recorder_error": stats.last_error,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--boundaries", type=int, default=120,
                        help="at least this many segment boundaries through the Segmenter")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--recorder-seconds", type=float, default=15.0)
    parser.add_argument("--recorder-prerecord", type=float, default=3.0,
                        help="pre-record seconds, buffered in full before the press")
    parser.add_argument("--no-recorder", action="store_true")
    args = parser.parse_args()
    t0 = time.perf_counter()
    seg = segmenter_check(args.boundaries, args.seed)
    print(f"segmenter: {json.dumps(seg)}", file=sys.stderr)
    rec = (None if args.no_recorder
           else recorder_check(args.recorder_seconds, args.recorder_prerecord))
    if rec is not None:
        print(f"recorder: {json.dumps(rec)}", file=sys.stderr)
    parts = [p for p in (seg, rec) if p is not None]
    lost = sum(p["lost_frames"] + p["lost_samples"] for p in parts)
    duplicated = sum(p["duplicated_frames"] + p["duplicated_samples"] for p in parts)
    problems = sum(p.get("foreign_samples", 0) + p.get("summary_mismatches", 0)
                   + p.get("segments_not_matching_tone", 0) + p.get("ledger_mismatches", 0)
                   + (not p["in_order"]) for p in parts)
    ok = lost == 0 and duplicated == 0 and problems == 0 and seg["boundaries"] >= args.boundaries
    print(json.dumps({
        "lost": lost, "duplicated": duplicated,
        "boundaries": sum(p["boundaries"] for p in parts),
        "frames": sum(p["frames"] for p in parts), "samples": sum(p["samples"] for p in parts),
        "lost_frames": sum(p["lost_frames"] for p in parts),
        "duplicated_frames": sum(p["duplicated_frames"] for p in parts),
        "lost_samples": sum(p["lost_samples"] for p in parts),
        "duplicated_samples": sum(p["duplicated_samples"] for p in parts),
        "other_problems": problems, "ok": ok, "segmenter": seg, "recorder": rec,
        "seconds": round(time.perf_counter() - t0, 1)}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
