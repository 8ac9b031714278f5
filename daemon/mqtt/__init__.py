"""The unit's MQTT side: topics, the broker's configuration, the dock's publisher.

- :mod:`daemon.mqtt.topics` — the topic names, one place.
- :mod:`daemon.mqtt.broker_config` — Mosquitto configuration and ACL file.
- :mod:`daemon.mqtt.outbox` — the on-disk outbox (SQLite) of what must reach the broker.
- :mod:`daemon.mqtt.client` — paho-mqtt 2.x connection settings shared by every client.
- :mod:`daemon.mqtt.publisher` — the dock's publisher: attestations, alerts, status.
- :mod:`daemon.mqtt.watch` — the subscriber behind ``custody watch``.
"""
