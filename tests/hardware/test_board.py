"""Board files: the shipped ones load, and every malformed file names the key at fault."""

from __future__ import annotations

import json
import tomllib
from importlib import resources

import pytest

from custody_cli import main as custody
from hardware.board import (
    Board,
    BoardError,
    board_names,
    load_board,
    parse_board,
)


def shipped(name: str) -> dict:
    text = (resources.files("hardware") / "boards" / f"{name}.toml").read_text()
    return tomllib.loads(text)


def to_toml(data: dict) -> str:
    """Enough TOML writing for board tables (tomllib only reads)."""
    lines = []
    for section, table in data.items():
        lines.append(f"[{section}]")
        for key, value in table.items():
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines)


def test_shipped_boards_load_and_differ() -> None:
    names = board_names()
    assert {"pi4-cm3-waveshare", "pizero2w-cm3"} <= set(names)
    pi4, zero = load_board("pi4-cm3-waveshare"), load_board("pizero2w-cm3")
    assert isinstance(pi4, Board) and pi4.name == "pi4-cm3-waveshare"
    assert pi4.i2c.battery_gauge == 0x42 and zero.i2c.battery_gauge == 0x43
    assert (pi4.camera.width, pi4.camera.height) == (1920, 1080)
    assert zero.camera.width * zero.camera.height < pi4.camera.width * pi4.camera.height
    assert pi4.battery.cells == 2 and zero.battery.cells == 1
    pins = [getattr(pi4.pins, f) for f in pi4.pins.__slots__]
    assert len(set(pins)) == len(pins) == 8


def test_board_from_path_and_env(tmp_path, monkeypatch) -> None:
    data = shipped("pizero2w-cm3")
    data["board"]["name"] = "my-board"
    data["pins"]["buzzer"] = "GPIO16"  # the string form is accepted too
    path = tmp_path / "my.toml"
    path.write_text(to_toml(data))
    board = load_board(path)
    assert board.name == "my-board" and board.pins.buzzer == 16
    monkeypatch.setenv("CUSTODY_BOARD", str(path))
    assert load_board().name == "my-board"


def _error(data: dict) -> BoardError:
    with pytest.raises(BoardError) as info:
        parse_board(to_toml(data), source="test.toml")
    return info.value


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [
        (lambda d: d["pins"].update(buzzer=40), "pins.buzzer", "unknown pin"),
        (lambda d: d["pins"].update(buzzer="PIN7"), "pins.buzzer", "unknown pin"),
        (lambda d: d["pins"].update(status_led=0), "pins.status_led", "unknown pin"),
        (lambda d: d["pins"].update(vibration=17), "pins.vibration", "pins.record_button"),
        (lambda d: d["pins"].pop("dock_detect"), "pins.dock_detect", "missing device"),
        (lambda d: d["pins"].update(buzzer=18), "pins.buzzer", "I2S"),
        (lambda d: d["pins"].update(buzzer=3), "pins.buzzer", "I2C"),
        (lambda d: d["pins"].update(siren=12), "pins.siren", "unknown key"),
        (lambda d: d["camera"].update(fps="thirty"), "camera.fps", "integer"),
        (lambda d: d["camera"].update(width=0), "camera.width", "positive"),
        (lambda d: d["camera"].update(overlay="yes"), "camera.overlay", "true or false"),
        (lambda d: d["battery"].update(backend="lipo"), "battery.backend", "one of"),
        (lambda d: d["serial"].update(ports="ttyS0"), "serial.ports", "list"),
        (lambda d: d.update(gps={"port": "x"}), "gps", "unknown section"),
    ],
)
def test_malformed_board_names_the_offending_key(change, key, words) -> None:
    data = shipped("pi4-cm3-waveshare")
    change(data)
    error = _error(data)
    assert error.key == key
    assert key in str(error) and words in str(error) and "test.toml" in str(error)


def test_missing_pins_section_and_bad_toml() -> None:
    data = shipped("pi4-cm3-waveshare")
    del data["pins"]
    assert _error(data).key == "pins"
    with pytest.raises(BoardError) as info:
        parse_board("[pins\nrecord_button = 17")
    assert "not valid TOML" in str(info.value)
    with pytest.raises(BoardError) as info:
        load_board("no-such-board")
    assert "pi4-cm3-waveshare" in str(info.value)  # lists what exists


def test_usb_audio_frees_the_i2s_pins() -> None:
    data = shipped("pi4-cm3-waveshare")
    data["pins"]["buzzer"] = 18
    assert _error(data).key == "pins.buzzer"
    data["audio"]["interface"] = "usb"
    assert parse_board(to_toml(data)).pins.buzzer == 18


def test_cli_board_prints_and_rejects(tmp_path, capsys) -> None:
    assert custody(["hw", "board", "pizero2w-cm3"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["pins"]["record_button"] == 17 and printed["i2c"]["battery_gauge"] == 0x43
    data = shipped("pi4-cm3-waveshare")
    data["pins"]["marker_button"] = data["pins"]["record_button"]
    bad = tmp_path / "bad.toml"
    bad.write_text(to_toml(data))
    assert custody(["hw", "board", str(bad)]) == 2
    assert "pins.marker_button" in capsys.readouterr().err
