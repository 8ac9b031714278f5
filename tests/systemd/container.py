"""A real systemd (the host's, Debian 12's 252) booted as PID 1 in a container.

The machine's own PID 1 is not systemd, so the shipped units are booted the way
ADR 0055 says: ``systemd-nspawn --boot`` over a small tree that has only an
``/etc`` and ``/var`` of its own, made by the install scripts (``--root``), and
the host's ``/usr`` overlaid read-only under it (Debian 12 is merged-/usr, so
that is the whole OS). Commands run inside through ``nsenter`` into the
container's namespaces; no D-Bus or systemd is needed on the host.

    with BootedSystem(tree, binds=["/srv/store:/var/lib/custody"]) as system:
        system.run("systemctl", "is-active", "custody-recorder.service")
        system.poweroff()

Leaving the ``with`` stops the container if it still runs (halt, then SIGKILL),
and nothing it mounted outlives it: its mounts live in its own namespace.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.prefix)  # this worktree's venv: the code the units run
NSPAWN = shutil.which("systemd-nspawn")

#: The marks of a test that boots a container: slow, and only where nspawn is.
BOOTS_A_CONTAINER = [
    pytest.mark.slow,
    pytest.mark.skipif(NSPAWN is None, reason="systemd-nspawn is not installed "
                       "(Debian: systemd-container, in the Makefile's APT_PACKAGES)"),
]
#: Where systemd-nspawn keeps a container's mount-propagation folder on the host; it
#: refuses to remove it when /run is not a tmpfs (as here), so we do.
PROPAGATE = Path("/run/systemd/nspawn/propagate")
#: The container gets the unified cgroup hierarchy (cgroup2, as Raspberry Pi OS Bookworm
#: and Debian 12 boot with) although the host has the hybrid one: under cgroup v1 a
#: container's systemd is never told that a service's cgroup emptied, and waits out
#: TimeoutStopSec on every stop (ADR 0055).
#: nspawn keeps CAP_SYS_TIME out of a container's bounding set; the recorder's unit keeps
#: it (a dock's time statement, a technician's clock set), so the container must have
#: it to run that unit as a Pi does. Nothing in these tests sets the clock.
CAPABILITIES = ["--capability=CAP_SYS_TIME"]
ENV = {**os.environ, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}


class BootError(RuntimeError):
    """The container did not boot, or did not stop, in time (its console log attached)."""


def make_tree(tree: Path) -> Path:
    """An empty OS tree whose /usr is the host's (overlaid at boot): the symlinks of a
    merged-/usr system, os-release (nspawn's test for an OS tree) and a machine id,
    so it boots as an installed system rather than into the first-boot wizard."""
    for sub in ("usr", "etc", "var", "opt", "srv"):
        (tree / sub).mkdir(parents=True, exist_ok=True)
    for link in ("bin", "sbin", "lib", "lib64"):
        (tree / link).symlink_to(f"usr/{link}")
    shutil.copy("/usr/lib/os-release", tree / "etc/os-release")
    subprocess.run(["systemd-machine-id-setup", f"--root={tree}"], check=True,
                   capture_output=True)
    return tree


def install_venv(tree: Path) -> Path:
    """``/opt/custody/.venv`` as ``make_venv`` makes it (Debian's python3 -m venv), with
    this worktree's installed packages instead of a fresh ``pip install``: its
    site-packages (bind-mounted at the same path) are added by a .pth file, and
    ``bin/custody`` is the venv's own entry point under the container's python."""
    venv = tree / "opt/custody/.venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", venv], check=True)
    [site] = (venv / "lib").glob("python3*/site-packages")
    [ours] = (VENV / "lib").glob("python3*/site-packages")
    (site / "custody-worktree.pth").write_text(f"import site; site.addsitedir({str(ours)!r})\n")
    entry = (VENV / "bin/custody").read_text().split("\n", 1)[1]
    (venv / "bin/custody").write_text("#!/opt/custody/.venv/bin/python3\n" + entry)
    (venv / "bin/custody").chmod(0o755)
    shutil.rmtree(venv / "share", ignore_errors=True)
    (venv / "share").symlink_to(VENV / "share")  # the built prompts
    return venv


def worktree_binds() -> list[str]:
    """What the tree's venv needs from the host: this worktree (the editable install,
    and its venv inside it), read-only."""
    assert VENV.is_relative_to(ROOT), VENV
    return [f"--bind-ro={ROOT}"]


class BootedSystem:
    """systemd as PID 1 of a container over ``tree`` (see the module's docstring)."""

    def __init__(self, tree: Path, *, binds: list[str] = (), log: Path | None = None,
                 name: str | None = None):
        self.tree = tree
        self.name = name or f"custody-{os.getpid()}-{int(time.monotonic() * 1000) % 100000}"
        self.binds = [f"--bind={b}" for b in binds]
        self.log_path = log or tree.with_name(tree.name + "-console.log")
        self.process: subprocess.Popen | None = None
        self.leader: int | None = None

    # --- life ------------------------------------------------------------------------

    def boot(self, timeout: float = 60) -> BootedSystem:
        """Boot, and wait until systemd has finished starting (running or degraded)."""
        assert NSPAWN, "systemd-nspawn is not installed (Debian: systemd-container)"
        argv = [NSPAWN, "--quiet", "--register=no", "--keep-unit", f"--machine={self.name}",
                f"--directory={self.tree}", "--private-network", *CAPABILITIES,
                f"--overlay-ro=/usr:{self.tree / 'usr'}:/usr", *worktree_binds(),
                *self.binds, "--boot"]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, env=ENV,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while self.leader is None:
            self.leader = self._find_leader()
            self._check_alive(deadline, "to start systemd")
            time.sleep(0.05)
        while True:
            state = self.run("systemctl", "is-system-running", "--wait", check=False,
                             timeout=max(1.0, deadline - time.monotonic())).stdout.strip()
            if state in ("running", "degraded"):
                return self
            self._check_alive(deadline, f"to finish starting (state {state!r})")
            time.sleep(0.1)

    def poweroff(self, timeout: float = 90) -> int:
        """``systemctl poweroff`` inside, and wait for the container to end: its exit code."""
        self.run("systemctl", "poweroff", check=False)
        return self.wait(timeout)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise BootError(f"{self.name} did not stop in {timeout} s\n{self.console()}") from None

    def close(self) -> None:
        """Stop the container if it is still there, then forget its host folder."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # nspawn: halt the container
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        propagate = PROPAGATE / self.name
        if propagate.is_dir() and not os.path.ismount(propagate):
            shutil.rmtree(propagate, ignore_errors=True)

    def __enter__(self) -> BootedSystem:
        try:
            return self.boot()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- inside ----------------------------------------------------------------------

    def run(self, *argv: str, check: bool = True, timeout: float = 60,
            input: str | None = None) -> subprocess.CompletedProcess:
        """A command inside the container (its mounts, PIDs, network, hostname)."""
        assert self.leader is not None
        r = subprocess.run(["nsenter", "-t", str(self.leader), "-m", "-u", "-i", "-n", "-p",
                            "--", *argv], capture_output=True, text=True, timeout=timeout,
                           input=input)
        if check and r.returncode != 0:
            raise subprocess.CalledProcessError(r.returncode, argv, r.stdout, r.stderr)
        return r

    def journal(self, *args: str) -> str:
        return self.run("journalctl", "--no-pager", "-o", "short-monotonic", *args,
                        check=False).stdout

    def console(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    # --- helpers ---------------------------------------------------------------------

    def _find_leader(self) -> int | None:
        """The container's PID 1 (systemd), a child of systemd-nspawn."""
        assert self.process is not None
        for task in Path(f"/proc/{self.process.pid}/task").glob("*/children"):
            for pid in task.read_text().split():
                try:
                    if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                        return int(pid)
                except FileNotFoundError:
                    continue
        return None

    def _check_alive(self, deadline: float, what: str) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise BootError(f"{self.name} ended (exit {self.process.returncode}) before "
                            f"it managed {what}\n{self.console()}")
        if time.monotonic() > deadline:
            raise BootError(f"{self.name} took too long {what}\n{self.console()}")
