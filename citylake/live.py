"""Live alerts out to an MQTT broker: each alert as a retained QoS 1 message on ``<topic>/<alert id>``, so a subscriber
(joining late, or after a restart of the watcher) sees each alert's latest state once, and a repeat is harmless."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import paho.mqtt.client as paho

from citylake.h3_index.errors import CitylakeError
from citylake.ingestion.mqtt import Broker, stop_on_signals

PUBLISH_TIMEOUT_S = 10


class BrokerAway(CitylakeError, ConnectionError):
    """The alerts broker cannot be reached or did not take a message (the watcher keeps the alert and tries again)."""


class AlertPublisher:
    def __init__(self, broker: str, topic: str, /) -> None:
        self.address, self.topic = Broker.parse(broker), topic.rstrip("/")
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"citylake-watch-{uuid.uuid4().hex[:8]}",
                                  protocol=paho.MQTTv5)
        try:
            self.client.connect(self.address.host, self.address.port, keepalive=30)
        except OSError as err:
            raise BrokerAway(f"cannot connect to the broker {self.address} ({err}); is it running?") from None
        self.client.loop_start()

    def send(self, alert: dict) -> None:
        body = json.dumps(alert, default=_iso).encode()
        sent = self.client.publish(f"{self.topic}/{alert['alert_id']}", body, qos=1, retain=True)
        try:
            sent.wait_for_publish(PUBLISH_TIMEOUT_S)
        except (RuntimeError, ValueError):
            pass
        if not sent.is_published():
            raise BrokerAway(f"the broker {self.address} did not take alert {alert['alert_id']} within {PUBLISH_TIMEOUT_S}s")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _iso(value):
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    raise TypeError(type(value).__name__)


__all__ = ["AlertPublisher", "BrokerAway", "stop_on_signals"]
