"""A private PulseAudio server with a null sink: real-time audio on a PC with no sound card.

Whatever is played into the sink can be recorded, in real time, from its monitor
source - so the *real* sounddevice/PyAudio backends can be tested end to end::

    >>> with PulseNullSink() as pulse:                      # doctest: +SKIP
    ...     pulse.apply_env()         # PortAudio's default device is now the sink
    ...     mic = SoundDeviceMicrophone()
    ...     pulse.play(samples, 48000)    # pacat into the sink; the mic hears it

The server runs in its own temporary directory (socket, cookie, state) and is
stopped with the object; nothing touches a user's sound setup.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def pulseaudio_binary() -> str | None:
    return shutil.which("pulseaudio")


def reinit_portaudio() -> None:
    """Make an already loaded PortAudio re-read the ALSA setup (and see the sink).

    ALSA decides at initialisation whether its ``default`` device is PulseAudio
    (only if a server is reachable), so a PortAudio started before the server
    would not find it.
    """
    sd = sys.modules.get("sounddevice")
    if sd is not None:
        sd._terminate()
        sd._initialize()


class PulseNullSink:
    def __init__(self, *, rate: int = 48_000, sink: str = "vsink", startup_timeout: float = 10.0):
        self.rate = rate
        self.sink = sink
        self.startup_timeout = startup_timeout
        self.dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._saved_env: dict[str, str | None] = {}

    @property
    def socket(self) -> Path:
        assert self.dir is not None
        return self.dir / "native"

    @property
    def env(self) -> dict[str, str]:
        """What a client needs: the server, and the sink / its monitor as defaults."""
        return {
            "PULSE_SERVER": f"unix:{self.socket}",
            "PULSE_SINK": self.sink,
            "PULSE_SOURCE": f"{self.sink}.monitor",
        }

    def start(self) -> PulseNullSink:
        binary = pulseaudio_binary()
        if binary is None:
            raise FileNotFoundError("pulseaudio is not installed (apt install pulseaudio)")
        self.dir = Path(tempfile.mkdtemp(prefix="custody-pulse-"))
        script = self.dir / "test.pa"
        script.write_text(
            f"load-module module-native-protocol-unix auth-anonymous=1 socket={self.socket}\n"
            f"load-module module-null-sink sink_name={self.sink} rate={self.rate} channels=1\n"
        )
        env = dict(os.environ, XDG_RUNTIME_DIR=str(self.dir), HOME=str(self.dir))
        self._proc = subprocess.Popen(
            [binary, "-n", "-F", str(script), "--daemonize=no", "--exit-idle-time=-1",
             "--use-pid-file=no", "--log-target=stderr"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "pulseaudio.log", "wb"),  # noqa: SIM115 - child owns it
        )
        deadline = time.monotonic() + self.startup_timeout
        while not self.socket.exists():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                log = (self.dir / "pulseaudio.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"pulseaudio did not start:\n{log}")
            time.sleep(0.01)
        return self

    def apply_env(self) -> None:
        """Point this process's audio clients at the sink (undone by :meth:`restore_env`)."""
        for key, value in self.env.items():
            self._saved_env.setdefault(key, os.environ.get(key))
            os.environ[key] = value
        reinit_portaudio()

    def restore_env(self) -> None:
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()

    def play(
        self, samples: np.ndarray, rate: int | None = None, wait: bool = True
    ) -> subprocess.Popen[bytes]:
        """Play mono int16 samples into the sink with ``pacat`` (a separate client).

        With ``wait=False`` it returns at once; terminate the process to cut it short.
        """
        rate = rate or self.rate
        proc = subprocess.Popen(
            ["pacat", "--playback", "--raw", f"--device={self.sink}", "--format=s16le",
             f"--rate={rate}", "--channels=1", "--latency-msec=20"],
            env=dict(os.environ, **self.env),
            stdin=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        data = np.asarray(samples, dtype="<i2").tobytes()

        def feed() -> None:
            # pacat reads in real time, so this write lasts as long as the sound.
            assert proc.stdin is not None
            with contextlib.suppress(BrokenPipeError):  # terminated early on purpose
                proc.stdin.write(data)
                proc.stdin.close()

        if wait:
            feed()
            proc.wait(timeout=len(samples) / rate + 10)
        else:
            threading.Thread(target=feed, name="pacat-feed", daemon=True).start()
        return proc

    def stop(self) -> None:
        self.restore_env()
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=5)
                except subprocess.TimeoutExpired:  # pragma: no cover
                    self._proc.kill()
                    self._proc.wait()
            self._proc = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> PulseNullSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
