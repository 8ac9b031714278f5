"""``custody hw capture``: camera + microphone into one MP4 that ffprobe and PyAV accept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from fractions import Fraction

import av
import numpy as np
import pytest

from custody_cli import main as custody
from hardware.board import detect_pi_model
from hardware.camera import CameraConfig
from hardware.capture import Mp4Writer
from hardware.frames import AudioBlock
from hardware.sim.camera import SimCamera
from hardware.sim.pattern import read_frame_index
from hardware.sim.signals import dominant_frequency, to_int16, tone_frequency

RATE = 48_000


def probe(ffprobe: str, path) -> dict:
    out = subprocess.run(
        [ffprobe, "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
        capture_output=True, text=True,
    )
    assert out.returncode == 0 and out.stderr == "", out.stderr
    return json.loads(out.stdout)


def decode(path) -> tuple[list, np.ndarray]:
    with av.open(str(path)) as container:
        # (presentation time in frame periods, frame index read from the picture)
        pictures = [
            (round(f.pts * f.time_base * 30), read_frame_index(f))
            for f in container.decode(video=0)
        ]
    with av.open(str(path)) as container:
        audio = [f.to_ndarray().reshape(-1) for f in container.decode(audio=0)]
    return pictures, np.concatenate(audio) if audio else np.zeros(0, np.int16)


def test_capture_command_on_the_simulator(tmp_path, ffprobe) -> None:
    out = tmp_path / "check.mp4"
    env = dict(os.environ, CUSTODY_HW="sim")
    run = subprocess.run(
        [sys.executable, "-m", "custody_cli", "hw", "capture", "--seconds", "2",
         "--out", str(out), "--size", "320x180", "--officer-id", "4711", "--json"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    info = probe(ffprobe, out)
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    audio = next(s for s in info["streams"] if s["codec_type"] == "audio")
    assert (video["codec_name"], video["width"], video["height"]) == ("h264", 320, 180)
    assert (audio["codec_name"], int(audio["sample_rate"]), audio["channels"]) == ("flac", RATE, 1)
    assert float(info["format"]["duration"]) == pytest.approx(2.0, abs=0.05)

    pictures, samples = decode(out)
    indices = [index for _, index in pictures]
    # Every frame index from the first to the last, exactly once, in order.
    assert indices == list(range(indices[0], indices[-1] + 1))
    assert len(indices) == 60 == report["video_frames"]
    assert (report["first_index"], report["last_index"]) == (indices[0], indices[-1])
    assert [pts for pts, _ in pictures] == list(range(60))
    # Audio covers the video exactly, sample for sample.
    assert len(samples) == 2 * RATE == report["audio_samples"]
    # And lines up with it: the tone says which second since the epoch each stretch
    # of audio was captured in; frame index / fps says when the file starts.
    start_s = indices[0] / 30
    checked = 0
    for k in range(0, len(samples) - 4800, 4800):
        t0, t1 = start_s + k / RATE, start_s + (k + 4800) / RATE
        if int(t0) != int(t1) or t0 - int(t0) < 0.01:
            continue  # straddles (or nearly) a step
        freq = dominant_frequency(samples[k : k + 4800], RATE)
        assert abs(freq - tone_frequency(int(t0))) <= 10, f"audio at {t0:.2f} s"
        checked += 1
    assert checked >= 15


@pytest.mark.skipif(detect_pi_model() is not None, reason="this is a Pi: the camera exists")
def test_capture_on_pi_backend_off_a_pi_says_why(tmp_path, capsys) -> None:
    code = custody(
        ["hw", "capture", "--seconds", "1", "--out", str(tmp_path / "x.mp4"), "--backend", "pi"]
    )
    assert code == 1
    assert "picamera2" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()


def test_capture_records_real_audio_from_the_null_sink(tmp_path, pulse_null_sink, ffprobe, capsys):
    out = tmp_path / "real-audio.mp4"
    tone = to_int16(0.5 * np.sin(2 * np.pi * 1500 * np.arange(8 * RATE) / RATE))
    player = pulse_null_sink.play(tone, RATE, wait=False)  # longer than the capture
    try:
        time.sleep(0.2)
        code = custody(
            ["hw", "capture", "--seconds", "1.5", "--out", str(out), "--backend", "sim",
             "--size", "320x180", "--mic", "sounddevice"]
        )
    finally:
        player.terminate()
        player.wait()
    assert code == 0, capsys.readouterr().err
    info = probe(ffprobe, out)
    assert {s["codec_name"] for s in info["streams"]} == {"h264", "flac"}
    pictures, samples = decode(out)
    assert len(pictures) == 45
    assert len(samples) == int(1.5 * RATE)
    assert abs(dominant_frequency(samples[RATE // 4 :], RATE) - 1500) < 3


def test_writer_keeps_gaps_as_gaps(tmp_path, ffprobe) -> None:
    config = CameraConfig(width=320, height=180, fps=30, keyframe_interval=10)
    with SimCamera(config, realtime=False) as camera:
        camera.start()
        frames = [camera.read(5) for _ in range(30)]
    kept = frames[:12] + frames[15:]  # three frames lost in the middle
    out = tmp_path / "gaps.mp4"
    with Mp4Writer(out, fps=30) as writer:
        t0 = frames[0].timestamp_us
        for frame in kept:
            writer.add_video(frame)
        # 1 s of audio in 20 ms blocks, with 100 ms missing after 0.4 s.
        for k in range(50):
            if 20 <= k < 25:
                continue
            block = np.full(960, 1000, np.int16)
            writer.add_audio(AudioBlock(block, t0 + k * 20_000, RATE))
    assert writer.audio_gap_samples == 5 * 960
    probe(ffprobe, out)
    pictures, samples = decode(out)
    first = frames[0].index
    assert [i for _, i in pictures] == [f.index for f in kept]
    assert [pts for pts, _ in pictures] == [f.index - first for f in kept]  # a hole at 12-14
    assert len(samples) == RATE
    assert np.all(samples[20 * 960 : 25 * 960] == 0) and np.all(samples[: 20 * 960] == 1000)


def test_writer_waits_for_a_keyframe_and_refuses_time_going_back(tmp_path) -> None:
    config = CameraConfig(width=320, height=180, fps=30, keyframe_interval=5)
    with SimCamera(config, realtime=False) as camera:
        camera.start()
        frames = [camera.read(5) for _ in range(12)]
    writer = Mp4Writer(tmp_path / "k.mp4", fps=30, audio_rate=None)
    for frame in frames[1:]:
        writer.add_video(frame)
    assert writer.skipped_before_keyframe == 4 and writer.first_index == frames[5].index
    with pytest.raises(ValueError):
        writer.add_video(frames[7])
    writer.close()
    with av.open(str(tmp_path / "k.mp4")) as container:
        assert container.streams.video[0].average_rate == Fraction(30)
        assert len(list(container.decode(video=0))) == 7
