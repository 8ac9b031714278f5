"""A device's status reporter in its own process, for the test that kills it (``kill -9``).

    python -m tests.mqtt.status_child HOST PORT UNIT CA CERT KEY

Publishes a fixed recorder status every 0.2 s; prints ``published`` once the
broker has acknowledged the first, then waits to be killed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from daemon.mqtt.client import MqttConnection
from device.status_report import StatusReporter

STATUS = {"state": "recording", "recording": 7, "officer": "PC-0042", "free_bytes": 123456,
          "battery": {"percent": 81.0, "minutes_left": 240, "charging": False},
          "offload": {"state": "offloading", "files_done": 2, "files_total": 5,
                      "bytes_done": 10, "bytes_total": 50, "rate_bytes_per_s": 1.5}}


def main(host: str, port: str, unit: str, ca: str, cert: str, key: str) -> None:
    connection = MqttConnection(host, int(port), Path(ca), Path(cert), Path(key))
    reporter = StatusReporter(connection, unit, lambda: STATUS, interval_s=0.2).start()
    while reporter.published == 0:
        time.sleep(0.05)
    print("published", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main(*sys.argv[1:])
