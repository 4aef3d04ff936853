"""Best-effort telemetry on a ZeroMQ PUB socket: topics `job.<id>` and `engine.<variant_id>`.

Each message is two frames: the topic, then one small JSON object with `topic`, `kind` and `ts`
(Unix seconds) plus the event's fields. Sends never block: when a subscriber is slow the message is
dropped and counted. State never travels here (ARCHITECTURE.md): it is in the gRPC replies.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import zmq

log = logging.getLogger(__name__)

SEND_HWM = 10_000


class Publisher:
    """A PUB socket bound to `endpoint` (None: telemetry disabled, publish is a no-op)."""

    def __init__(self, endpoint: str | None):
        self._lock = threading.Lock()  # zmq sockets are not thread-safe; jobs and engines share this one
        self.dropped = 0
        self._ctx: zmq.Context[Any] | None = None
        self._sock: zmq.Socket[Any] | None = None
        self.endpoint = ""
        if endpoint:
            self._ctx = zmq.Context()
            self._sock = self._ctx.socket(zmq.PUB)
            self._sock.setsockopt(zmq.SNDHWM, SEND_HWM)
            self._sock.setsockopt(zmq.LINGER, 0)
            try:
                self._sock.bind(endpoint)
            except zmq.ZMQError as e:
                self.close()
                raise OSError(f"cannot bind the telemetry socket to {endpoint!r}: {e}") from e
            self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def publish(self, topic: str, kind: str, fields: dict[str, Any]) -> None:
        """Send one message on `topic`; never raises, never blocks."""
        if self._sock is None:
            return
        payload = json.dumps({**fields, "topic": topic, "kind": kind, "ts": fields.get("ts", time.time())}, default=str)
        with self._lock:
            try:
                self._sock.send_multipart([topic.encode(), payload.encode()], flags=zmq.NOBLOCK)
            except zmq.Again:
                self.dropped += 1
            except zmq.ZMQError as e:  # closed during shutdown, or similar: telemetry is best-effort
                self.dropped += 1
                log.debug("telemetry send failed: %s", e)

    def close(self) -> None:
        """Close the socket and its context."""
        with self._lock:
            if self._sock is not None:
                self._sock.close(linger=0)
                self._sock = None
            if self._ctx is not None:
                self._ctx.term()
                self._ctx = None


def job_topic(job_id: str) -> str:
    """Topic of a job's progress messages."""
    return f"job.{job_id}"


def engine_topic(variant_id: str) -> str:
    """Topic of a loaded variant's engine counters."""
    return f"engine.{variant_id}"
