"""``--sink mqtt://HOST:PORT/PREFIX?per=device|line|outlet&qos=1``: records published the way
devices publish them: one message per device (or line, or outlet) and batch, on its own topic.

A batch's records are grouped by the chosen column — ``device_id`` (the default for taps),
``route_id`` (``per=line``) or ``outlet_id`` (``per=outlet``, the default for top-ups) — and
each group is one message, a JSON array of its records, on ``PREFIX/<value>`` (PREFIX defaults
to ``cardtwin/<format>``; records without a value, such as online top-ups, on
``PREFIX/none``). With QoS 1 (the default) the batch is acknowledged once the broker has
acknowledged every message of it (PUBACK); QoS 0 counts a message as delivered when it is
written to the socket. A broker that cannot be reached, or does not acknowledge in time, is a
transient failure: the batch is published again (MQTT QoS 1 is at-least-once anyway; the
records' idempotency keys tell a subscriber what it has seen).

``mqtt://USER:PASSWORD@HOST:PORT/...`` logs in with that user (percent-encoded in the URL, as
any URL's user part); a broker that refuses the connection (bad user or password, not
authorised) is refused when the stream starts, with the broker's reason. The port defaults to
MQTT's own, 1883.
"""

from __future__ import annotations

import threading
import uuid
from urllib.parse import unquote, urlsplit

import numpy as np
import paho.mqtt.client as mqtt
import pyarrow as pa
import pyarrow.compute as pc

from traffic.encoding import Encoder
from traffic.sinks import (
    Batch,
    Outcome,
    Sink,
    SinkSetupError,
    TransientError,
    host_and_port,
    query_options,
    redacted,
)

GROUP_COLUMNS = {"device": "device_id", "line": "route_id", "outlet": "outlet_id"}


#: The topic of records without a device, line or outlet (online top-ups, broken records).
NO_GROUP = "none"


class MqttSink(Sink):
    """Messages per device, line or outlet on an MQTT broker (module docstring)."""

    concurrency = 1

    def __init__(self, url, options) -> None:
        super().__init__(url, options)
        parts = urlsplit(url)
        shown = redacted(url)
        self.host, self.port = host_and_port(url, 1883)
        query = query_options(url, ("per", "qos"))
        self.prefix = parts.path.strip("/") or f"cardtwin/{options.record_format}"
        if "#" in url or any(c in self.prefix for c in "+\0"):  # a "#" ends a URL's path
            raise SinkSetupError(
                f"--sink {shown!r}: the topic prefix holds a wildcard (+ or #, which are for "
                "subscribing) or a NUL; expected a plain topic such as cardtwin/taps"
            )
        default = "outlet" if options.record_format == "topups" else "device"
        per = query.get("per", default)
        if per not in GROUP_COLUMNS:
            raise SinkSetupError(f"--sink {shown!r}: per must be device, line or outlet")
        self.column = GROUP_COLUMNS[per]
        qos = query.get("qos", "1")
        if qos not in ("0", "1"):
            raise SinkSetupError(f"--sink {shown!r}: qos must be 0 or 1")
        self.qos = int(qos)
        self.timeout_s = options.timeout_s
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"cardtwin-{uuid.uuid4().hex[:12]}",
            protocol=mqtt.MQTTv311,
        )
        if parts.username is not None:
            password = unquote(parts.password) if parts.password is not None else None
            self.client.username_pw_set(unquote(parts.username), password)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self._connected = threading.Event()
        self._answered = threading.Event()  # the broker answered a connection (CONNACK)
        self._refusal: str | None = None  # why the broker refused the last connection
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self._connected.clear()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        """The broker's CONNACK: connected only if it accepted (a refusal, such as a bad
        password, also calls this)."""
        if reason_code.is_failure:
            self._refusal = str(reason_code)
            self._connected.clear()
        else:
            self._refusal = None
            self._connected.set()
        self._answered.set()

    def open(self, resume_state: dict | None) -> None:
        from traffic.records import stream_schema

        shown = redacted(self.url)
        if self.column not in stream_schema(self.options.record_format).names:
            raise SinkSetupError(
                f"--sink {shown}: {self.options.record_format} records have no {self.column}"
            )
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except (OSError, ValueError) as exc:
            raise SinkSetupError(f"--sink {shown}: {exc}") from None
        self.client.loop_start()
        self._answered.wait(self.timeout_s)
        if not self._connected.is_set():
            # Stop the client's own reconnecting before saying so.
            self.close()
            if self._refusal is not None:
                raise SinkSetupError(
                    f"--sink {shown}: the broker refused the connection: {self._refusal} "
                    "(the user and password are the URL's user part: "
                    "mqtt://USER:PASSWORD@HOST:PORT/...)"
                )
            raise SinkSetupError(
                f"--sink {shown}: the broker did not answer within --timeout {self.timeout_s:g} s"
            )

    def send(self, batch: Batch, encoder: Encoder) -> Outcome:
        if not self._connected.wait(self.timeout_s):
            refused = f" (it refused: {self._refusal})" if self._refusal else ""
            raise TransientError(f"not connected to the broker{refused}")
        table = batch.table
        # Group by the column's dictionary codes (no Python object per record).
        column = table.column(self.column).combine_chunks()
        if not pa.types.is_dictionary(column.type):
            column = pc.dictionary_encode(column)
        names = column.dictionary.cast(pa.string()).to_pylist()
        # Records without one (an online top-up has no outlet) go to the topic ``.../none``.
        codes = column.indices.fill_null(len(names)).to_numpy(zero_copy_only=False)
        names.append(NO_GROUP)
        order = np.argsort(codes, kind="stable")
        data, offsets = encoder.json_objects(table.take(pa.array(order)), ",")
        codes = codes[order]
        starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        ends = np.r_[starts[1:], len(codes)]
        infos = []
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            payload = b"[" + data[offsets[a] : offsets[b] - 1] + b"]"
            topic = f"{self.prefix}/{names[codes[a]]}"
            info = self.client.publish(topic, payload, qos=self.qos)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise TransientError(f"publish failed: {mqtt.error_string(info.rc)}")
            infos.append(info)
        for info in infos:
            try:
                info.wait_for_publish(timeout=self.timeout_s)
            except (RuntimeError, ValueError) as exc:
                raise TransientError(f"publish failed: {exc}") from exc
            if not info.is_published():
                raise TransientError("the broker did not acknowledge in time")
        return Outcome()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def describe(self) -> str:
        return f"mqtt://{self.host}:{self.port}/{self.prefix}/<{self.column}> (QoS {self.qos})"
