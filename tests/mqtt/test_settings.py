"""The dock's [mqtt] settings: defaults, and a bad value named by its key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from daemon.mqtt.client import MqttSettingsError
from daemon.mqtt.settings import MqttSettings
from tests.conftest import DEVICE, DOCK, Unit
from tests.mosquitto import UnitPKI


def table(pki: UnitPKI, tmp_path: Path, **extra) -> dict:
    ca, cert, key = pki.client(DOCK)
    text = (f'broker = "mqtts://127.0.0.1:8883"\nca = "{ca}"\ncert = "{cert}"\n'
            f'key = "{key}"\noutbox = "{tmp_path / "outbox.db"}"\n')
    text += "".join(f"{k} = {v}\n" for k, v in extra.items())
    return tomllib.loads(text)


def test_defaults_and_a_publisher(unit_pki: UnitPKI, unit: Unit, tmp_path: Path):
    s = MqttSettings.from_table(table(unit_pki, tmp_path))
    assert (s.ack_timeout_s, s.keepalive_s, s.session_expiry_s) == (10.0, 20, 604800)
    assert s.connection().identity == DOCK
    pub = s.publisher("test-unit", DOCK, unit.dock_key.signer())
    assert pub.ack_timeout_s == 10.0
    pub.outbox.close()


@pytest.mark.parametrize("change, message", [
    ({"broker": '"mqtt://h:1883"'}, "dock.toml: mqtt.broker: broker 'mqtt://h:1883': use mqtts"),
    ({"ack_timeout_s": 0}, "mqtt.ack_timeout_s: must be between 0.1 and 600.0, got 0"),
    ({"keepalive_s": 2.5}, "mqtt.keepalive_s: must be a whole number between"),
    ({"keepalive": 20}, 'mqtt.keepalive: unknown setting; did you mean "keepalive_s"?'),
    ({"ca": '"/nonexistent/ca.crt"'}, "mqtt.ca: /nonexistent/ca.crt: no such file"),
    ({"session_expiry_s": "true"}, "mqtt.session_expiry_s: expected a number"),
])
def test_a_bad_value_names_its_key(unit_pki: UnitPKI, tmp_path: Path, change, message):
    t = table(unit_pki, tmp_path)
    t.update(tomllib.loads("".join(f"{k} = {v}\n" for k, v in change.items())))
    with pytest.raises(MqttSettingsError, match=message.replace("(", r"\(").replace(
            "?", r"\?").replace(".", r"\.")):
        MqttSettings.from_table(t, source="dock.toml")


def test_a_missing_key_and_the_wrong_certificate(unit_pki: UnitPKI, unit: Unit,
                                                  tmp_path: Path):
    t = table(unit_pki, tmp_path)
    del t["outbox"]
    with pytest.raises(MqttSettingsError, match="mqtt.outbox: required"):
        MqttSettings.from_table(t)
    t = table(unit_pki, tmp_path)
    _, t["cert"], t["key"] = map(str, unit_pki.client(DEVICE))
    with pytest.raises(MqttSettingsError, match="not dock 'DOCK-01'"):
        MqttSettings.from_table(t).publisher("test-unit", DOCK, unit.dock_key.signer())
