"""``custody dock --config FILE``: the dock service systemd runs.

It checks the settings (a bad value exits 2 naming the key), starts the
offload server, tells systemd it is ready, pings the watchdog while the event
loop answers (a stuck loop stops the pings, and systemd restarts the dock), and
on SIGTERM stops taking requests and exits (hardware/host/service.py, as the recorder).
An upload cut off by the stop is resumed by the device from what the dock made
durable.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from daemon.dock.config import DockConfig, DockConfigError
from daemon.dock.server import DockServer
from daemon.events import DockEvents
from daemon.mqtt.dock_events import MqttDockEvents
from daemon.mqtt.publisher import DockPublisher
from hardware.host.sdnotify import SystemdNotifier
from hardware.host.service import ServiceLife
from protocol.keys import SigningKey
from protocol.store_reader import read_trust

log = logging.getLogger("custody.dock")


def mqtt_events(config: DockConfig) -> tuple[DockPublisher, MqttDockEvents]:
    """The dock's publisher and the events that attest each offload over MQTT."""
    assert config.mqtt is not None
    trust = read_trust(config.trust_file)
    key = SigningKey.from_pem(Path(config.key_file).read_bytes())
    publisher = config.mqtt.publisher(trust.unit, config.dock_id, key.signer())
    publisher.start()
    return publisher, MqttDockEvents(publisher, trust)


async def serve(config: DockConfig, events: DockEvents | None = None,
                notifier: SystemdNotifier | None = None) -> int:
    publisher = None
    if events is None and config.mqtt is not None:
        publisher, mqtt = mqtt_events(config)
        # What was archived while the dock was down (a crash before attesting) first.
        await asyncio.to_thread(mqtt.catch_up, Path(config.archive))
        events = mqtt
    server = DockServer(config, events)
    loop = asyncio.get_running_loop()
    life = ServiceLife(lambda: _loop_answers(loop, (life.interval or 2) / 2), notifier)
    try:
        with life:
            port = await server.start()
            # The port on one line of its own, for whoever started the dock on port 0.
            print(f"listening {config.listen_host} {port}", flush=True)
            life.ready(f"dock {config.dock_id} on port {port}")
            await life.wait_async()
    finally:
        await server.stop()
        if publisher is not None:  # what is still queued stays in the outbox for next time
            await asyncio.to_thread(events.close)
            await asyncio.to_thread(publisher.flush, 5)
            await asyncio.to_thread(publisher.close)
    return 0


def _loop_answers(loop: asyncio.AbstractEventLoop, within: float) -> bool:
    """The event loop runs a task within ``within`` seconds: a stuck loop stops the pings."""
    asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result(within)
    return True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="the dock's TOML settings")
    parser.add_argument("--log-level", default="INFO")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = DockConfig.from_file(args.config)
        config.require()
    except DockConfigError as e:
        print(f"custody dock: {e}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(serve(config))
    except (OSError, ValueError) as e:  # a port in use, a key that is not the dock's
        print(f"custody dock: {e}", file=sys.stderr)
        return 2
