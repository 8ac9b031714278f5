"""A dock publisher in its own process, for tests that kill it (``kill -9``).

    python -m tests.mqtt.dock_child CONFIG.json

CONFIG names the broker, the TLS files, the dock key, the outbox and, if any,
an attestation (``to_dict`` form) to queue. Prints ``queued <id>`` once the
attestation is in the outbox and ``online`` once connected, then waits to be
killed.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from daemon.mqtt.client import MqttConnection
from daemon.mqtt.publisher import DockPublisher
from daemon.provision import load_signing_key
from protocol.attestation import Attestation


def main(config_path: str) -> None:
    c = json.loads(Path(config_path).read_text())
    connection = MqttConnection(c["host"], c["port"], Path(c["ca"]), Path(c["cert"]),
                                Path(c["key"]))
    signer = load_signing_key(Path(c["dock_key"])).signer()
    pub = DockPublisher(connection, c["unit"], c["dock"], signer, Path(c["outbox"]))
    if c.get("attestation"):
        att = Attestation.from_dict(c["attestation"])
        print("queued", pub.attest(att), flush=True)
    pub.start()
    while True:
        if pub.connected:
            print("online", flush=True)
            break
        time.sleep(0.05)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main(sys.argv[1])
