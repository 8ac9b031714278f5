"""The recorder's settings: ``custody recorder --config FILE`` reads a TOML file.

Every setting is a top-level key with a documented default (see
``docs/configuration.md``); recording categories are ``[categories.NAME]``
tables. Parsing is strict because a mistyped key on a device in the field would
otherwise silently fall back to a default: every invalid value or unknown key
raises :class:`ConfigError`, whose message names the file and the key::

    >>> config = RecorderConfig.from_toml('segment_seconds = 30\\nvideo = "640x360@15"')
    >>> config.segment_seconds, config.width, config.fps, config.effective_keyframe_interval
    (30.0, 640, 15, 12)
    >>> RecorderConfig.from_toml("segment_seconds = 0", source="recorder.toml")
    Traceback (most recent call last):
    ...
    device.config.ConfigError: recorder.toml: segment_seconds: must be between 1 and 600, got 0
    >>> RecorderConfig.from_toml("segment_second = 5")
    Traceback (most recent call last):
    ...
    device.config.ConfigError: segment_second: unknown setting; did you mean "segment_seconds"?

A scenario's ``[device]`` table changes settings by the same names, checked the
same way, with :meth:`RecorderConfig.with_overrides`.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

from device.muxer import DEFAULT_FLAC_BLOCK_SAMPLES, fragment_trigger_us
from hardware.board import DEFAULT_BOARD, board_names

MIB = 1024 * 1024

# A device id and a category name end up in file names, ledger entries and MQTT
# topic levels, so they are kept to characters that are safe in all three.
_DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_CATEGORY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_VIDEO = re.compile(r"(\d+)x(\d+)@(\d+)")


class ConfigError(ValueError):
    """A settings file or override is invalid.

    ``key`` is the setting at fault (``segment_seconds``, ``categories.scene.retention_days``),
    ``problem`` what is wrong with it, ``source`` the file (or other origin) it came from.
    """

    def __init__(self, key: str, problem: str, source: str = "") -> None:
        self.key = key
        self.problem = problem
        self.source = source
        super().__init__(": ".join(part for part in (source, key, problem) if part))


class _Invalid(Exception):
    """A value checker's complaint; the caller adds the source (and the key, unless given)."""

    def __init__(self, problem: str, key: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.key = key


@dataclass(frozen=True)
class VideoMode:
    """The camera's picture size and frame rate, written ``WIDTHxHEIGHT@FPS``.

    >>> VideoMode.parse("1280x720@30")
    VideoMode(width=1280, height=720, fps=30)
    >>> str(VideoMode(640, 360, 15))
    '640x360@15'
    """

    width: int
    height: int
    fps: int

    @classmethod
    def parse(cls, text: str) -> VideoMode:
        """Parse ``"1280x720@30"``; raises ValueError saying what is wrong."""
        match = _VIDEO.fullmatch(text)
        if not match:
            raise ValueError(
                f'must look like "1280x720@30" (WIDTHxHEIGHT@FPS), got {show_value(text)}'
            )
        width, height, fps = (int(group) for group in match.groups())
        for name, size in (("width", width), ("height", height)):
            # The H.264 encoder works in 2x2 chroma blocks: odd sizes get cropped or rejected.
            if not 64 <= size <= 4096 or size % 2:
                raise ValueError(f"{name} must be even and between 64 and 4096, got {size}")
        if not 1 <= fps <= 60:
            raise ValueError(f"fps must be between 1 and 60, got {fps}")
        return cls(width, height, fps)

    def __str__(self) -> str:
        return f"{self.width}x{self.height}@{self.fps}"


@dataclass(frozen=True)
class Category:
    """A recording category (Art. 11 and the checklist): when to record and how long to keep."""

    name: str
    retention_days: int
    description: str
    starts: str = ""
    stops: str = ""


# The checklist's two classes. Retention follows the paper files (Art. 11), which
# is the unit's decision; ten years is only a placeholder the unit should set.
DEFAULT_CATEGORIES: tuple[Category, ...] = (
    Category(
        name="scene",
        retention_days=3650,
        description="Administrative inspection or investigation on site",
        starts="entering the site",
        stops="leaving the site",
    ),
    Category(
        name="meeting",
        retention_days=3650,
        description="Administrative penalty or hearing",
        starts="the hearing opens",
        stops="the hearing closes",
    ),
)

# Keys of a [categories.NAME] table; the first two are required.
CATEGORY_KEYS: tuple[str, ...] = ("retention_days", "description", "starts", "stops")
_REQUIRED_CATEGORY_KEYS = ("retention_days", "description")


# A GOP is at most about this long (less the margin the muxer's fragment trigger
# takes), as when a fragment was a GOP; fragments are shorter now (MAX_FRAGMENT_US).
MAX_GOP_US = 1_000_000


def max_keyframe_interval(fps: int, audio_rate: int | None) -> int:
    """The longest GOP, in frames, that fits in one fragment.

    A power cut loses at most one fragment (≤ 1 s), and a fragment decodes on its own
    only if it starts at a keyframe; so a whole GOP must fit in one. The muxer cuts
    a fragment early, at :func:`device.muxer.fragment_trigger_us` (about 0.8 s at
    48 kHz audio, less with 16 kHz audio's longer FLAC blocks or at low frame
    rates), and the GOP must not be longer than that.

    >>> max_keyframe_interval(30, 48_000), max_keyframe_interval(30, 16_000)
    (24, 12)
    """
    trigger_us = fragment_trigger_us(
        Fraction(fps), audio_rate, DEFAULT_FLAC_BLOCK_SAMPLES, MAX_GOP_US
    )
    return max(1, trigger_us * fps // 1_000_000)


@dataclass(frozen=True)
class RecorderConfig:
    """The recorder's validated settings; build one with :meth:`from_toml` or :meth:`from_file`.

    The constructor does not check its arguments: the parsing methods are the gate.

    >>> RecorderConfig().video, RecorderConfig().category
    (VideoMode(width=1280, height=720, fps=30), 'scene')
    """

    device_id: str = ""
    store: Path | None = None
    key_file: Path | None = None
    trust_file: Path | None = None
    otp_state_dir: Path | None = None
    control_socket: Path = Path("/run/custody/recorder.sock")
    hardware: str = "pi"
    board: str = DEFAULT_BOARD
    segment_seconds: float = 60.0
    pre_record_seconds: float = 30.0
    pre_record_audio: bool = True
    video: VideoMode = VideoMode(1280, 720, 30)
    video_bitrate: int = 4_000_000
    keyframe_interval: int | None = None
    overlay: bool = True
    audio_rate: int = 48_000
    category: str = "scene"
    categories: tuple[Category, ...] = DEFAULT_CATEGORIES
    queue_seconds: float = 10.0
    language: str = "zh"
    battery_low_minutes: float = 20.0
    battery_critical_minutes: float = 3.0
    storage_reserve_bytes: int = 64 * MIB
    voice_note_reserve_seconds: float = 300.0
    voice_note_max_seconds: float = 60.0
    overdue_warn_hours: float = 20.0
    overdue_hours: float = 24.0
    technicians_file: Path | None = None
    log_file: Path = Path("/var/lib/custody/device.log")
    console_idle_seconds: float = 300.0
    reboot_command: str = "systemctl reboot"
    poweroff_command: str = "systemctl poweroff"
    dock_url: str = ""
    dock_detect: str = "input"
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_ca_file: Path | None = None
    offload_chunk_bytes: int = 8 * MIB
    mqtt_broker: str = ""
    mqtt_status_seconds: float = 10.0
    sim_epoch_unix_ns: int | None = None
    # Where the settings came from, for messages; not a setting.
    source: str = field(default="", compare=False, repr=False)

    @classmethod
    def from_toml(
        cls, text: str, source: str = "", base_dir: str | os.PathLike[str] | None = None
    ) -> RecorderConfig:
        """Parse and check settings TOML; unset settings keep their defaults.

        Relative paths are taken relative to ``base_dir`` when it is given.
        """
        try:
            table = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("", f"not valid TOML: {exc}", source) from exc
        return cls(source=source)._layered(table, source, base_dir)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> RecorderConfig:
        """Read a settings file. Relative paths in it are relative to the file's folder.

        (The recorder runs under systemd from ``/``; resolving against the file
        keeps a config and the keys beside it working wherever they are installed.)
        """
        source = os.fspath(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError("", f"cannot read settings file: {exc}", source) from exc
        return cls.from_toml(text, source, base_dir=Path(path).parent)

    def with_overrides(
        self,
        overrides: Mapping[str, Any],
        source: str = "",
        base_dir: str | os.PathLike[str] | None = None,
    ) -> RecorderConfig:
        """These settings with some changed, by the same flat names and checks as a file.

        A ``categories`` table replaces the whole set of categories, as in a file.

        >>> RecorderConfig().with_overrides({"segment_seconds": 5}).segment_seconds
        5.0
        """
        return self._layered(dict(overrides), source, base_dir)

    def _layered(
        self, table: dict[str, Any], source: str, base_dir: str | os.PathLike[str] | None
    ) -> RecorderConfig:
        values: dict[str, Any] = {}
        for key, raw in table.items():
            setting = SETTINGS.get(key)
            if setting is None:
                hint = did_you_mean(key, SETTINGS) or (
                    " (settings are top-level keys; the only tables are [categories.NAME])"
                    if isinstance(raw, dict) else " (see docs/configuration.md)"
                )
                raise ConfigError(key, "unknown setting" + hint, source)
            try:
                values[key] = setting.check(raw)
            except _Invalid as exc:
                raise ConfigError(exc.key or key, exc.problem, source) from None
            values[key] = _resolve(values[key], setting.kind, base_dir)
        config = replace(self, **values)
        _check_consistency(config, set(values), source)
        return config

    # -- derived values ------------------------------------------------------------------

    @property
    def width(self) -> int:
        return self.video.width

    @property
    def height(self) -> int:
        return self.video.height

    @property
    def fps(self) -> int:
        return self.video.fps

    @property
    def effective_keyframe_interval(self) -> int:
        """``keyframe_interval`` if set, else the longest GOP that fits in one fragment."""
        if self.keyframe_interval is not None:
            return self.keyframe_interval
        return max_keyframe_interval(self.fps, self.audio_rate)

    def category_named(self, name: str) -> Category:
        """The category called ``name``; KeyError if there is none."""
        for category in self.categories:
            if category.name == name:
                return category
        raise KeyError(name)

    @property
    def default_category(self) -> Category:
        return self.category_named(self.category)

    def require_identity(self) -> None:
        """Raise ConfigError naming every identity setting a real recorder lacks.

        >>> RecorderConfig(device_id="DEV-1").require_identity()
        Traceback (most recent call last):
        ...
        device.config.ConfigError: store, key_file, trust_file: must be set for a real recorder
        """
        missing = [name for name in IDENTITY_SETTINGS if not getattr(self, name)]
        if missing:
            raise ConfigError(", ".join(missing), "must be set for a real recorder", self.source)

    def to_toml(self) -> str:
        """These settings as a commented TOML file that parses back to equal settings.

        Settings without a value are written as comments.
        """
        lines = ["# Custody recorder settings; each is described in docs/configuration.md.", ""]
        for setting in SETTINGS.values():
            if setting.name == "categories":
                continue
            lines.append(f"# {setting.meaning} ({setting.allowed})")
            value = getattr(self, setting.name)
            if value is None:
                lines.append(f"# {setting.name} =")
            else:
                lines.append(f"{setting.name} = {toml_value(value)}")
            lines.append("")
        for category in self.categories:
            lines.append(f"[categories.{category.name}]")
            for key in CATEGORY_KEYS:
                lines.append(f"{key} = {toml_value(getattr(category, key))}")
            lines.append("")
        return "\n".join(lines)


def defaults_toml() -> str:
    """Every setting at its documented default, as a commented TOML file."""
    return RecorderConfig().to_toml()


def load_config(path: str | os.PathLike[str]) -> RecorderConfig:
    """Same as :meth:`RecorderConfig.from_file`."""
    return RecorderConfig.from_file(path)


# -- showing values in messages and TOML -----------------------------------------------


def toml_value(value: Any) -> str:
    """A value the way TOML writes it: ``true``, ``60``, ``"pi"``, ``"1280x720@30"``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path | VideoMode):
        # JSON's string escapes are all valid TOML basic-string escapes.
        return json.dumps(str(value), ensure_ascii=False)
    raise TypeError(f"no TOML form for {value!r}")


def show_value(value: Any) -> str:
    """A user's value in a message, as they would have written it in TOML (``"60"``, ``0``)."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, float):
        return repr(value)  # 48000.0, not 48000: the type may be the problem
    try:
        return toml_value(value)
    except TypeError:
        return repr(value)


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """``; did you mean "segment_seconds"?`` for the closest known word, or nothing.

    >>> did_you_mean("segment_second", ["segment_seconds", "video"])
    '; did you mean "segment_seconds"?'
    """
    close = difflib.get_close_matches(word, list(known), n=1)
    return f'; did you mean "{close[0]}"?' if close else ""


# -- checkers: raw TOML value -> typed value, or _Invalid -------------------------------

Checker = Callable[[Any], Any]


def _number(low: float, high: float) -> Checker:
    def check(raw: Any) -> float:
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
            raise _Invalid(f"must be a number, got {show_value(raw)}")
        if not low <= raw <= high:
            raise _Invalid(f"must be between {toml_value(low)} and {toml_value(high)}, "
                           f"got {show_value(raw)}")
        return float(raw)

    return check


def _integer(low: int, high: int | None = None) -> Checker:
    def check(raw: Any) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise _Invalid(f"must be a whole number, got {show_value(raw)}")
        if high is None and raw < low:
            raise _Invalid(f"must be at least {low}, got {raw}")
        if high is not None and not low <= raw <= high:
            raise _Invalid(f"must be between {low} and {high}, got {raw}")
        return raw

    return check


def _boolean(raw: Any) -> bool:
    if not isinstance(raw, bool):
        raise _Invalid(f"must be true or false (a TOML boolean, no quotes), got {show_value(raw)}")
    return raw


def _choice(*options: Any) -> Checker:
    def check(raw: Any) -> Any:
        # 48000 == 48000.0 and True == 1 in Python; the type must match too.
        if not any(type(raw) is type(option) and raw == option for option in options):
            listed = ", ".join(toml_value(option) for option in options)
            raise _Invalid(f"must be one of {listed}, got {show_value(raw)}")
        return raw

    return check


def _string(raw: Any) -> str:
    if not isinstance(raw, str):
        raise _Invalid(f"must be a string, got {show_value(raw)}")
    return raw


def _path(raw: Any) -> Path:
    if not isinstance(raw, str) or not raw or "\0" in raw:
        raise _Invalid(f"must be a path (a non-empty string), got {show_value(raw)}")
    return Path(raw)


def _dock_url(raw: Any) -> str:
    text = _string(raw)
    if text and not re.fullmatch(r"https://[A-Za-z0-9.\-\[\]:]+(:\d{1,5})?/?", text):
        raise _Invalid(f"must be https://HOST:PORT (or empty), got {show_value(raw)}")
    return text


def _broker_url(raw: Any) -> str:
    text = _string(raw)
    if text and not re.fullmatch(r"mqtts://[A-Za-z0-9.\-\[\]:]+(:\d{1,5})?/?", text):
        raise _Invalid(f"must be mqtts://HOST:PORT (TLS; or empty), got {show_value(raw)}")
    return text


def _device_id(raw: Any) -> str:
    text = _string(raw)
    if text and not _DEVICE_ID.fullmatch(text):
        raise _Invalid(
            f"must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit, "
            f"got {show_value(text)}"
        )
    return text


def _board(raw: Any) -> str:
    text = _string(raw)
    if _is_board_file(text):
        return text  # a board file; hardware.board reads and checks it when the recorder starts
    shipped = board_names()
    if text not in shipped:
        raise _Invalid(
            f"no shipped board named {show_value(text)}{did_you_mean(text, shipped)} "
            f"(shipped: {', '.join(shipped)}; or give a path to a .toml board file)"
        )
    return text


def _video(raw: Any) -> VideoMode:
    try:
        return VideoMode.parse(_string(raw))
    except ValueError as exc:
        raise _Invalid(str(exc)) from None


def _categories(raw: Any) -> tuple[Category, ...]:
    if not isinstance(raw, dict):
        raise _Invalid(f"must be a table of [categories.NAME] tables, got {show_value(raw)}")
    if not raw:
        raise _Invalid("must define at least one category")
    return tuple(_category(name, table) for name, table in raw.items())


def _category(name: str, table: Any) -> Category:
    key = f"categories.{name}"
    if not _CATEGORY_NAME.fullmatch(name):
        raise _Invalid("a category name is 1-64 letters, digits, '_' or '-'", key)
    if not isinstance(table, dict):
        raise _Invalid(f"must be a table, got {show_value(table)}", key)
    for field_name in table:
        if field_name not in CATEGORY_KEYS:
            problem = "unknown key" + did_you_mean(field_name, CATEGORY_KEYS)
            raise _Invalid(problem, f"{key}.{field_name}")
    for field_name in _REQUIRED_CATEGORY_KEYS:
        if field_name not in table:
            raise _Invalid("missing (every category needs one)", f"{key}.{field_name}")
    retention = table["retention_days"]
    if isinstance(retention, bool) or not isinstance(retention, int) or retention <= 0:
        raise _Invalid(
            f"must be a whole number of days above 0, got {show_value(retention)}",
            f"{key}.retention_days",
        )
    texts = {}
    for field_name in ("description", "starts", "stops"):
        value = table.get(field_name, "")
        if not isinstance(value, str):
            raise _Invalid(f"must be a string, got {show_value(value)}", f"{key}.{field_name}")
        texts[field_name] = value
    return Category(name=name, retention_days=retention, **texts)


def _resolve(value: Any, kind: str, base_dir: str | os.PathLike[str] | None) -> Any:
    """Make a relative path relative to ``base_dir`` (the settings file's folder)."""
    if base_dir is None:
        return value
    if kind == "path" and not value.is_absolute():
        return Path(base_dir) / value
    if kind == "board" and _is_board_file(value) and not Path(value).is_absolute():
        return str(Path(base_dir) / value)
    return value


def _is_board_file(board: str) -> bool:
    """Whether a ``board`` value is a file path rather than a shipped board's name."""
    return board.endswith(".toml") or "/" in board


# -- the settings --------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One top-level key of a settings file: how to check it and what it means."""

    name: str
    check: Checker
    allowed: str
    meaning: str
    kind: str = "value"  # "path" and "board" values are resolved against the file's folder


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting("device_id", _device_id, "letters, digits, . _ -; required for a recorder",
                "The device's stable id (its serial), as in its ledger"),
        Setting("store", _path, "path; required for a recorder",
                "The evidence folder: the ledger and sealed segments; on a filesystem that keeps "
                "extended attributes (ext4 does)", "path"),
        Setting("key_file", _path, "path; required for a recorder",
                "The device's Ed25519 signing key, wrapped by the board's OTP secret "
                "(custody-wrapped-key/1; docs/hardware.md, Key custody)", "path"),
        Setting("trust_file", _path, "path; required for a recorder",
                "The unit's trust file (trust.json)", "path"),
        Setting("otp_state_dir", _path, "path; the simulator only",
                "Where the simulated board keeps its OTP secret: never inside the store (a Pi "
                "reads its OTP through the firmware)", "path"),
        Setting("control_socket", _path, "path",
                "Unix socket the recorder takes commands on", "path"),
        Setting("hardware", _choice("pi", "sim"), '"pi" or "sim"',
                "Real Raspberry Pi hardware, or the simulator"),
        Setting("board", _board, "shipped board name or path to a board .toml",
                "Which pins and chips the device has (hardware/boards)", "board"),
        Setting("segment_seconds", _number(1, 600), "1 to 600",
                "Length of one sealed segment, in seconds"),
        Setting("pre_record_seconds", _number(0, 120), "0 to 120",
                "Seconds of video kept before the record press (0: none)"),
        Setting("pre_record_audio", _boolean, "true or false",
                "Keep audio in the pre-record buffer too"),
        Setting("video", _video, "WIDTHxHEIGHT@FPS; even 64-4096; fps 1-60",
                "Camera picture size and frame rate"),
        Setting("video_bitrate", _integer(100_000, 25_000_000), "100000 to 25000000",
                "H.264 bitrate, bits per second"),
        Setting("keyframe_interval", _integer(1, 600),
                "1 to the longest GOP that fits in a fragment",
                "Frames from one keyframe to the next (the GOP)"),
        Setting("overlay", _boolean, "true or false",
                "Burn time, device id and officer id into the picture"),
        Setting("audio_rate", _choice(16_000, 44_100, 48_000), "16000, 44100 or 48000",
                "Microphone sample rate, Hz"),
        Setting("category", _string, "a name in categories",
                "Category a recording gets unless the officer picks another"),
        Setting("categories", _categories, "[categories.NAME] tables",
                "Recording categories: retention and when to record"),
        Setting("queue_seconds", _number(1, 60), "1 to 60",
                "Depth of the queues between capture, muxing and sealing, in seconds of media"),
        Setting("language", _choice("zh", "en"), '"zh" or "en"',
                "Language of the voice-note prompt"),
        Setting("battery_low_minutes", _number(1, 240), "1 to 240",
                "Warn the officer when this many minutes of battery are left"),
        Setting("battery_critical_minutes", _number(1, 240), "1 to 240, below battery_low_minutes",
                "At this many minutes left, seal and stop with a declared battery interruption"),
        Setting("storage_reserve_bytes", _integer(0), "0 or more",
                "Free space kept back so the ledger and a final seal always fit"),
        Setting("voice_note_reserve_seconds", _number(5, 3600),
                "5 to 3600, at least voice_note_max_seconds",
                "Storage kept back for voice notes, in seconds of audio"),
        Setting("voice_note_max_seconds", _number(5, 300), "5 to 300",
                "Longest voice note the officer may speak"),
        Setting("overdue_warn_hours", _number(1, 24), "1 to 24, below overdue_hours",
                "Warn the officer to dock when media not yet offloaded is this many hours old"),
        Setting("overdue_hours", _number(1, 24), "1 to 24",
                "Media not offloaded after this long is overdue (Art. 10: 24 hours)"),
        Setting("technicians_file", _path, "path; required for the console",
                "The technicians' console credentials (scrypt hashes only, docs/console.md)",
                "path"),
        Setting("log_file", _path, "path",
                "The device's log: console logins, failures and actions, and the recorder's "
                "messages", "path"),
        Setting("console_idle_seconds", _number(1, 3600), "1 to 3600",
                "The serial console logs a technician out after this long without input"),
        Setting("reboot_command", _string, "a command line",
                "What the console's reboot runs once the recorder has sealed and stopped"),
        Setting("poweroff_command", _string, "a command line",
                "What the console's shutdown runs once the recorder has sealed and stopped"),
        Setting("dock_url", _dock_url, 'https://HOST:PORT, or "" for none',
                "The dock's offload server; unset: the device never offloads"),
        Setting("dock_detect", _choice("input", "link"), '"input" or "link"',
                "How the device knows it is docked: the dock-detect input, or the dock "
                "answering at dock_url"),
        Setting("tls_cert_file", _path, "path; needed with dock_url",
                "The device's TLS client certificate (tls/devices/<id>.crt)", "path"),
        Setting("tls_key_file", _path, "path; needed with dock_url",
                "The device's TLS key, apart from its ledger key (tls/devices/<id>.key)",
                "path"),
        Setting("tls_ca_file", _path, "path; needed with dock_url",
                "The unit's CA certificate the dock's certificate must chain to", "path"),
        Setting("offload_chunk_bytes", _integer(64 * 1024, 64 * MIB), "65536 to 67108864",
                "Bytes per upload request: the most a dropped link makes the device send again"),
        Setting("mqtt_broker", _broker_url, 'mqtts://HOST:PORT, or "" for none',
                "The unit's MQTT broker the device publishes its status to (with the TLS "
                "files above; docs/mqtt.md); unset: no MQTT"),
        Setting("mqtt_status_seconds", _number(1, 3600), "1 to 3600",
                "How often the device publishes its status (state, battery, storage, "
                "offload) to mqtt_broker"),
        Setting("sim_epoch_unix_ns", _integer(0), "0 or more",
                "Simulated camera's epoch, Unix ns (custody sim); unset: now"),
    )
}

# The settings a real recorder cannot run without (see RecorderConfig.require_identity).
IDENTITY_SETTINGS: tuple[str, ...] = ("device_id", "store", "key_file", "trust_file")


def _check_consistency(config: RecorderConfig, changed: set[str], source: str) -> None:
    """Checks between settings. The message names the key this layer set, if only one was."""

    def blame(dependent: str, other: str) -> str:
        return other if other in changed and dependent not in changed else dependent

    def fail(dependent: str, other: str, dependent_problem: str, other_problem: str) -> None:
        key = blame(dependent, other)
        problem = dependent_problem if key == dependent else other_problem
        raise ConfigError(key, f"{problem}, got {toml_value(getattr(config, key))}", source)

    c = config
    if not c.battery_critical_minutes < c.battery_low_minutes:
        fail("battery_critical_minutes", "battery_low_minutes",
             f"must be below battery_low_minutes ({toml_value(c.battery_low_minutes)})",
             f"must be above battery_critical_minutes ({toml_value(c.battery_critical_minutes)})")
    if not c.overdue_warn_hours < c.overdue_hours:
        fail("overdue_warn_hours", "overdue_hours",
             f"must be below overdue_hours ({toml_value(c.overdue_hours)})",
             f"must be above overdue_warn_hours ({toml_value(c.overdue_warn_hours)})")
    if not c.voice_note_reserve_seconds >= c.voice_note_max_seconds:
        fail("voice_note_reserve_seconds", "voice_note_max_seconds",
             f"must hold at least one full voice note "
             f"(voice_note_max_seconds = {toml_value(c.voice_note_max_seconds)})",
             f"must fit in voice_note_reserve_seconds "
             f"({toml_value(c.voice_note_reserve_seconds)})")
    names = [category.name for category in c.categories]
    if c.category not in names:
        key = blame("category", "categories")
        hint = did_you_mean(c.category, names)
        if key == "category":
            raise ConfigError(key, f"no category named {show_value(c.category)}{hint} "
                              f"(defined: {', '.join(names)})", source)
        raise ConfigError(key, f"must define the default category {show_value(c.category)} "
                          f"(or set category to one of {', '.join(names)})", source)
    if c.keyframe_interval is not None:
        longest = max_keyframe_interval(c.fps, c.audio_rate)
        if c.keyframe_interval > longest:
            why = f"at {c.fps} fps and {c.audio_rate} Hz audio a GOP of at most {longest} frames"
            why += " fits in one fragment"
            key = "keyframe_interval"
            if key not in changed and changed & {"video", "audio_rate"}:
                key = "video" if "video" in changed else "audio_rate"
                problem = f"{why}, but keyframe_interval is {c.keyframe_interval}"
                raise ConfigError(key, f"{problem}, got {toml_value(getattr(c, key))}", source)
            raise ConfigError(key, f"must be at most {longest} ({why}), "
                              f"got {c.keyframe_interval}", source)


def setting_names() -> tuple[str, ...]:
    """Every top-level setting, in documentation order."""
    return tuple(SETTINGS)
