"""The recorder's settings file: defaults, strict checks that name the key, overrides, docs."""

from __future__ import annotations

import dataclasses
import doctest
import re
from pathlib import Path

import pytest

import device.config
from device.config import (
    CATEGORY_KEYS,
    DEFAULT_CATEGORIES,
    IDENTITY_SETTINGS,
    SETTINGS,
    Category,
    ConfigError,
    RecorderConfig,
    VideoMode,
    defaults_toml,
    load_config,
    max_keyframe_interval,
    setting_names,
    toml_value,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def config_error(text: str, source: str = "recorder.toml") -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        RecorderConfig.from_toml(text, source)
    return caught.value


def markdown_table(markdown: str, first_header: str) -> list[list[str]]:
    """The body rows of the table whose first header cell is ``first_header``."""
    lines = markdown.splitlines()
    for number, line in enumerate(lines):
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_header:
            rows = []
            for row in lines[number + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append([cell.strip() for cell in row.strip().strip("|").split("|")])
            return rows
    raise AssertionError(f"no table headed {first_header!r}")


def unquote(cell: str) -> str:
    return cell[1:-1] if cell.startswith("`") and cell.endswith("`") else cell


# -- defaults --------------------------------------------------------------------------


def test_an_empty_file_gives_the_documented_defaults() -> None:
    config = RecorderConfig.from_toml("")
    assert config == RecorderConfig()
    assert config.device_id == ""
    assert config.store is None and config.key_file is None and config.trust_file is None
    assert config.control_socket == Path("/run/custody/recorder.sock")
    assert (config.hardware, config.board) == ("pi", "pi4-cm3-waveshare")
    assert config.segment_seconds == 60
    assert (config.pre_record_seconds, config.pre_record_audio) == (30, True)
    assert (config.width, config.height, config.fps) == (1280, 720, 30)
    assert config.video_bitrate == 4_000_000
    assert config.keyframe_interval is None and config.effective_keyframe_interval == 24
    assert config.overlay is True
    assert config.audio_rate == 48_000
    assert config.category == "scene"
    assert [c.name for c in config.categories] == ["scene", "meeting"]
    assert config.default_category.starts == "entering the site"
    assert config.default_category.stops == "leaving the site"
    assert all(c.retention_days == 3650 for c in config.categories)
    assert config.queue_seconds == 10
    assert config.language == "zh"
    assert (config.battery_low_minutes, config.battery_critical_minutes) == (20, 3)
    assert config.storage_reserve_bytes == 64 * 1024 * 1024
    assert (config.voice_note_reserve_seconds, config.voice_note_max_seconds) == (300, 60)
    assert (config.overdue_warn_hours, config.overdue_hours) == (20, 24)
    assert config.sim_epoch_unix_ns is None


def test_a_full_file_is_read_into_typed_values() -> None:
    config = RecorderConfig.from_toml(
        """
        device_id = "BWC-0042"
        store = "/var/lib/custody/store"
        key_file = "/etc/custody/device.pem"
        trust_file = "/etc/custody/trust.json"
        hardware = "sim"
        segment_seconds = 2.5
        pre_record_audio = false
        video = "640x360@15"
        keyframe_interval = 5
        audio_rate = 16000
        language = "en"
        sim_epoch_unix_ns = 1_700_000_000_000_000_000
        """
    )
    assert config.device_id == "BWC-0042"
    assert config.store == Path("/var/lib/custody/store")
    assert isinstance(config.key_file, Path) and isinstance(config.trust_file, Path)
    assert config.hardware == "sim"
    assert config.segment_seconds == 2.5
    assert config.pre_record_audio is False
    assert config.video == VideoMode(640, 360, 15)
    assert config.effective_keyframe_interval == 5
    assert (config.audio_rate, config.language) == (16_000, "en")
    assert config.sim_epoch_unix_ns == 1_700_000_000_000_000_000
    config.require_identity()  # everything a real recorder needs is there


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        RecorderConfig().segment_seconds = 5  # type: ignore[misc]


def test_the_registry_and_the_dataclass_list_the_same_settings() -> None:
    fields = [f.name for f in dataclasses.fields(RecorderConfig) if f.name != "source"]
    assert fields == list(setting_names())


# -- every error names its key (and the file) ------------------------------------------

BAD_VALUES = [
    # (TOML, key named, words in the problem)
    ("segment_seconds = 0", "segment_seconds", "must be between 1 and 600, got 0"),
    ("segment_seconds = 601", "segment_seconds", "between 1 and 600"),
    ('segment_seconds = "60"', "segment_seconds", 'must be a number, got "60"'),
    ("segment_seconds = true", "segment_seconds", "must be a number, got true"),
    ("segment_seconds = nan", "segment_seconds", "must be a number"),
    ("segment_seconds = inf", "segment_seconds", "must be a number"),
    ("pre_record_seconds = -1", "pre_record_seconds", "between 0 and 120"),
    ("pre_record_seconds = 121", "pre_record_seconds", "between 0 and 120"),
    ('pre_record_audio = "true"', "pre_record_audio", 'true or false (a TOML boolean'),
    ("pre_record_audio = 1", "pre_record_audio", "true or false"),
    ('overlay = "no"', "overlay", "true or false"),
    ('video = "720p"', "video", 'must look like "1280x720@30"'),
    ('video = "1280x720"', "video", "WIDTHxHEIGHT@FPS"),
    ('video = "1281x720@30"', "video", "width must be even"),
    ('video = "1280x721@30"', "video", "height must be even"),
    ('video = "32x32@30"', "video", "between 64 and 4096"),
    ('video = "8192x720@30"', "video", "between 64 and 4096"),
    ('video = "1280x720@0"', "video", "fps must be between 1 and 60, got 0"),
    ('video = "1280x720@120"', "video", "fps must be between 1 and 60"),
    ('video = "1280x720@29.97"', "video", "WIDTHxHEIGHT@FPS"),
    ("video = 720", "video", "must be a string"),
    ("video_bitrate = 99_999", "video_bitrate", "between 100000 and 25000000"),
    ("video_bitrate = 25_000_001", "video_bitrate", "between 100000 and 25000000"),
    ("video_bitrate = 4e6", "video_bitrate", "must be a whole number, got 4000000.0"),
    ("keyframe_interval = 0", "keyframe_interval", "between 1 and"),
    ("keyframe_interval = 25", "keyframe_interval", "must be at most 24"),
    ("keyframe_interval = 12.5", "keyframe_interval", "whole number"),
    ("audio_rate = 22050", "audio_rate", "must be one of 16000, 44100, 48000, got 22050"),
    ("audio_rate = 48000.0", "audio_rate", "got 48000.0"),
    ('audio_rate = "48000"', "audio_rate", "must be one of"),
    ('hardware = "pc"', "hardware", 'must be one of "pi", "sim", got "pc"'),
    ('language = "fr"', "language", 'must be one of "zh", "en"'),
    ('board = "pi4-cm3-waveshar"', "board", 'did you mean "pi4-cm3-waveshare"?'),
    ('board = "pi5"', "board", "no shipped board named"),
    ("board = 4", "board", "must be a string"),
    ('device_id = "BWC 42"', "device_id", "letters, digits"),
    ('device_id = "a/b"', "device_id", "letters, digits"),
    ('device_id = "-x"', "device_id", "starting with a letter or digit"),
    ('device_id = "' + "x" * 65 + '"', "device_id", "1-64"),
    ('store = ""', "store", "must be a path"),
    ("key_file = 3", "key_file", "must be a path"),
    ("trust_file = []", "trust_file", "got an array"),
    ("control_socket = false", "control_socket", "must be a path"),
    ("queue_seconds = 0.5", "queue_seconds", "between 1 and 60"),
    ("queue_seconds = 61", "queue_seconds", "between 1 and 60"),
    ("battery_low_minutes = 0", "battery_low_minutes", "between 1 and 240"),
    ("battery_critical_minutes = 20", "battery_critical_minutes",
     "must be below battery_low_minutes (20), got 20"),
    ("battery_low_minutes = 2", "battery_low_minutes",
     "must be above battery_critical_minutes (3), got 2"),
    ("storage_reserve_bytes = -1", "storage_reserve_bytes", "at least 0"),
    ("storage_reserve_bytes = 1.5", "storage_reserve_bytes", "whole number"),
    ("voice_note_max_seconds = 4", "voice_note_max_seconds", "between 5 and 300"),
    ("voice_note_max_seconds = 301", "voice_note_max_seconds", "between 5 and 300"),
    ("voice_note_reserve_seconds = 30", "voice_note_reserve_seconds",
     "must hold at least one full voice note"),
    ("voice_note_reserve_seconds = 3601", "voice_note_reserve_seconds", "between 5 and 3600"),
    ("overdue_hours = 25", "overdue_hours", "between 1 and 24"),
    ("overdue_hours = 12", "overdue_hours", "must be above overdue_warn_hours (20), got 12"),
    ("overdue_warn_hours = 24", "overdue_warn_hours", "must be below overdue_hours (24)"),
    ("sim_epoch_unix_ns = -1", "sim_epoch_unix_ns", "at least 0"),
    ('sim_epoch_unix_ns = "now"', "sim_epoch_unix_ns", "whole number"),
    ('category = "traffic"', "category", 'no category named "traffic"'),
    ('category = "scen"', "category", 'did you mean "scene"?'),
    ("categories = 1", "categories", "must be a table"),
    ("[categories]", "categories", "at least one category"),
    ("[categories.scene]\nretention_days = 1", "categories.scene.description", "missing"),
    ('[categories.scene]\ndescription = "x"', "categories.scene.retention_days", "missing"),
    ('[categories.scene]\nretention_days = 0\ndescription = "x"',
     "categories.scene.retention_days", "above 0, got 0"),
    ('[categories.scene]\nretention_days = "10y"\ndescription = "x"',
     "categories.scene.retention_days", "whole number of days"),
    ('[categories.scene]\nretention_days = 10\ndescription = 3',
     "categories.scene.description", "must be a string"),
    ('[categories.scene]\nretention_days = 10\ndescription = "x"\nstops = false',
     "categories.scene.stops", "must be a string"),
    ('[categories.scene]\nretention_days = 10\ndescription = "x"\nkeep = 1',
     "categories.scene.keep", "unknown key"),
    ('[categories."a b"]\nretention_days = 10\ndescription = "x"', 'categories.a b',
     "category name"),
    ('[categories.traffic]\nretention_days = 10\ndescription = "x"', "categories",
     'must define the default category "scene"'),
]


@pytest.mark.parametrize(("text", "key", "problem"), BAD_VALUES)
def test_an_invalid_value_is_an_error_naming_the_file_and_the_key(
    text: str, key: str, problem: str
) -> None:
    error = config_error(text)
    assert error.key == key
    assert error.source == "recorder.toml"
    assert str(error).startswith(f"recorder.toml: {key}: ")
    assert problem in error.problem


def test_the_message_is_exactly_file_key_problem() -> None:
    assert str(config_error("segment_seconds = 0")) == (
        "recorder.toml: segment_seconds: must be between 1 and 600, got 0"
    )


@pytest.mark.parametrize(
    ("text", "key", "suggestion"),
    [
        ("segment_second = 5", "segment_second", "segment_seconds"),
        ("segments_seconds = 5", "segments_seconds", "segment_seconds"),
        ("prerecord_seconds = 5", "prerecord_seconds", "pre_record_seconds"),
        ("keyframe_intervall = 5", "keyframe_intervall", "keyframe_interval"),
        ("devid = 'x'", "devid", "device_id"),
        ("langauge = 'en'", "langauge", "language"),
        ("[category.scene]\nretention_days = 1", "category", None),
        ('[categories.scene]\nretention_day = 1\ndescription = "x"',
         "categories.scene.retention_day", "retention_days"),
    ],
)
def test_an_unknown_key_is_an_error_suggesting_the_closest_known_key(
    text: str, key: str, suggestion: str | None
) -> None:
    error = config_error(text)
    assert error.key == key
    if suggestion:
        assert str(error).endswith(f'did you mean "{suggestion}"?')


def test_an_unknown_key_with_nothing_close_points_to_the_docs() -> None:
    assert "docs/configuration.md" in str(config_error("zzzz = 1"))
    assert "top-level keys" in str(config_error("[recorder]\nsegment_seconds = 5"))


def test_invalid_toml_is_an_error_naming_the_file() -> None:
    error = config_error("segment_seconds = ")
    assert str(error).startswith("recorder.toml: not valid TOML")


# -- the keyframe interval ----------------------------------------------------------


@pytest.mark.parametrize("fps", [1, 2, 5, 10, 15, 24, 25, 30, 50, 60])
@pytest.mark.parametrize("audio_rate", [16_000, 44_100, 48_000])
def test_the_derived_keyframe_interval_is_the_longest_gop_under_the_muxers_fragment_cut(
    fps: int, audio_rate: int
) -> None:
    from fractions import Fraction

    from device.config import MAX_GOP_US
    from device.muxer import DEFAULT_FLAC_BLOCK_SAMPLES, fragment_trigger_us

    gop = max_keyframe_interval(fps, audio_rate)
    # The GOP budget of a one-second fragment (fragments are now shorter than a GOP).
    trigger_us = fragment_trigger_us(
        Fraction(fps), audio_rate, DEFAULT_FLAC_BLOCK_SAMPLES, MAX_GOP_US
    )
    assert gop >= 1
    assert gop == 1 or gop * 1_000_000 / fps <= trigger_us  # the GOP fits...
    assert (gop + 1) * 1_000_000 / fps > trigger_us  # ...and one more frame would not
    config = RecorderConfig.from_toml(f'video = "640x360@{fps}"\naudio_rate = {audio_rate}')
    assert config.effective_keyframe_interval == gop
    RecorderConfig.from_toml(f'video = "640x360@{fps}"\naudio_rate = {audio_rate}\n'
                             f"keyframe_interval = {gop}")
    with pytest.raises(ConfigError, match=f"keyframe_interval: must be at most {gop} "):
        RecorderConfig.from_toml(f'video = "640x360@{fps}"\naudio_rate = {audio_rate}\n'
                                 f"keyframe_interval = {gop + 1}")


def test_the_common_case_is_about_four_fifths_of_a_second() -> None:
    assert [max_keyframe_interval(fps, 48_000) for fps in (15, 25, 30, 60)] == [12, 20, 24, 48]


# -- overrides (a scenario's [device] table) -----------------------------------------


def test_overrides_change_only_the_named_settings_and_leave_the_base_alone() -> None:
    base = RecorderConfig.from_toml('device_id = "BWC-1"\nsegment_seconds = 30')
    changed = base.with_overrides({"segment_seconds": 5, "video": "640x360@15"}, "s.toml")
    assert (changed.segment_seconds, changed.fps, changed.device_id) == (5, 15, "BWC-1")
    assert base.segment_seconds == 30 and base.fps == 30
    assert base.with_overrides({}) == base


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"segment_seconds": 0}, "segment_seconds"),
        ({"pre_record_audio": "yes"}, "pre_record_audio"),
        ({"segment_secs": 5}, "segment_secs"),
        ({"video": "640x360"}, "video"),
        ({"battery_low_minutes": 2}, "battery_low_minutes"),
        ({"category": "meetin"}, "category"),
    ],
)
def test_overrides_are_checked_like_a_file(overrides: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        RecorderConfig().with_overrides(overrides, "s.toml")
    assert caught.value.key == key
    assert str(caught.value).startswith(f"s.toml: {key}: ")


def test_a_cross_check_names_the_setting_the_override_changed() -> None:
    base = RecorderConfig.from_toml("keyframe_interval = 24")
    with pytest.raises(ConfigError) as caught:
        base.with_overrides({"video": "640x360@15"})
    assert caught.value.key == "video"
    assert "at most 12 frames" in caught.value.problem
    with pytest.raises(ConfigError) as caught:
        base.with_overrides({"audio_rate": 16_000})
    assert caught.value.key == "audio_rate"


def test_categories_in_a_file_replace_the_defaults() -> None:
    config = RecorderConfig.from_toml(
        """
        category = "traffic"
        [categories.traffic]
        retention_days = 1825
        description = "Traffic stop"
        """
    )
    assert config.categories == (Category("traffic", 1825, "Traffic stop", "", ""),)
    assert config.default_category.retention_days == 1825
    with pytest.raises(KeyError):
        config.category_named("scene")


def test_overriding_categories_replaces_them_and_the_default_must_still_exist() -> None:
    traffic = {"traffic": {"retention_days": 30, "description": "Traffic stop"}}
    with pytest.raises(ConfigError, match="^categories: must define the default category"):
        RecorderConfig().with_overrides({"categories": traffic})
    config = RecorderConfig().with_overrides({"categories": traffic, "category": "traffic"})
    assert [c.name for c in config.categories] == ["traffic"]


# -- files and paths ---------------------------------------------------------------


def test_from_file_resolves_relative_paths_against_the_files_folder(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "recorder.toml"
    path.parent.mkdir()
    path.write_text(
        'device_id = "BWC-1"\nstore = "/var/lib/custody"\nkey_file = "keys/device.pem"\n'
        'trust_file = "trust.json"\nboard = "boards/mine.toml"\n'
    )
    config = load_config(path)
    assert config == RecorderConfig.from_file(str(path))
    assert config.store == Path("/var/lib/custody")
    assert config.key_file == tmp_path / "etc" / "keys" / "device.pem"
    assert config.trust_file == tmp_path / "etc" / "trust.json"
    assert config.board == str(tmp_path / "etc" / "boards" / "mine.toml")
    assert config.source == str(path)


def test_from_toml_keeps_relative_paths_as_written() -> None:
    assert RecorderConfig.from_toml('store = "evidence"').store == Path("evidence")


def test_an_error_in_a_file_names_the_file_path(tmp_path: Path) -> None:
    path = tmp_path / "recorder.toml"
    path.write_text("video_bitrate = 1\n")
    with pytest.raises(ConfigError) as caught:
        RecorderConfig.from_file(path)
    assert str(caught.value).startswith(f"{path}: video_bitrate: must be between")


def test_a_missing_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError, match="cannot read settings file") as caught:
        RecorderConfig.from_file(path)
    assert caught.value.source == str(path)


# -- identity ----------------------------------------------------------------------


@pytest.mark.parametrize("missing", [(), *[(name,) for name in IDENTITY_SETTINGS],
                                     IDENTITY_SETTINGS])
def test_require_identity_names_every_missing_identity_setting(missing: tuple[str, ...]) -> None:
    present = {
        "device_id": '"BWC-1"', "store": '"/s"', "key_file": '"/k.pem"', "trust_file": '"/t.json"'
    }
    text = "\n".join(f"{k} = {v}" for k, v in present.items() if k not in missing)
    config = RecorderConfig.from_toml(text, "recorder.toml")
    if not missing:
        config.require_identity()
        return
    with pytest.raises(ConfigError) as caught:
        config.require_identity()
    assert caught.value.key == ", ".join(missing)
    assert str(caught.value) == (
        f"recorder.toml: {', '.join(missing)}: must be set for a real recorder"
    )


# -- writing the defaults ----------------------------------------------------------


def test_the_defaults_file_parses_back_to_the_defaults_and_documents_every_setting() -> None:
    text = defaults_toml()
    assert RecorderConfig.from_toml(text) == RecorderConfig()
    for name in setting_names():
        if name != "categories":
            assert re.search(rf"^(# )?{name} =", text, re.MULTILINE), name
    assert "[categories.scene]" in text and "[categories.meeting]" in text


def test_any_settings_round_trip_through_to_toml() -> None:
    config = RecorderConfig.from_toml(
        """
        device_id = "BWC-7"
        store = "/var/lib/custody"
        segment_seconds = 2.5
        video = "640x360@15"
        keyframe_interval = 6
        overlay = false
        category = "meeting"
        sim_epoch_unix_ns = 0
        [categories.meeting]
        retention_days = 30
        description = "Hearing \\"A\\" — 听证"
        """
    )
    assert RecorderConfig.from_toml(config.to_toml()) == config


# -- the docs list what the code knows ---------------------------------------------


def test_the_settings_table_lists_every_setting_with_its_default_and_range() -> None:
    rows = markdown_table(DOC.read_text(), "Setting")
    assert [unquote(row[0]) for row in rows] == list(setting_names())
    defaults = RecorderConfig()
    for name, default, allowed, _meaning in rows:
        name = unquote(name)
        value = getattr(defaults, name)
        if name == "categories":
            expected = ", ".join(c.name for c in DEFAULT_CATEGORIES)
        else:
            expected = "unset" if value is None else f"`{toml_value(value)}`"
        assert default == expected, name
        assert allowed == SETTINGS[name].allowed, name


def test_the_category_tables_match_the_code() -> None:
    text = DOC.read_text()
    assert [unquote(row[0]) for row in markdown_table(text, "Key")] == list(CATEGORY_KEYS)
    documented = [
        Category(unquote(name), int(days), description, starts, stops)
        for name, days, starts, stops, description in markdown_table(text, "Category")
    ]
    assert tuple(documented) == DEFAULT_CATEGORIES


def test_the_keyframe_table_matches_the_code() -> None:
    rows = markdown_table(DOC.read_text(), "`video` fps")
    assert rows
    for fps, *gops in rows:
        expected = [max_keyframe_interval(int(fps), rate) for rate in (48_000, 44_100, 16_000)]
        assert [int(g) for g in gops] == expected, fps


def test_the_example_settings_file_is_valid() -> None:
    example = re.search(r"## Example\s+```toml\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert example
    config = RecorderConfig.from_toml(example.group(1), base_dir="/etc/custody")
    config.require_identity()
    assert config.key_file == Path("/etc/custody/keys/device.key")  # wrapped (custody otp)
    assert config.effective_keyframe_interval == 20


def test_the_docstring_examples_hold() -> None:
    result = doctest.testmod(device.config, raise_on_error=False)
    assert result.attempted > 0 and result.failed == 0
