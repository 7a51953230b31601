"""Helpers shared by the end-to-end tests: ports, raw Kafka frames, client wrappers."""

from __future__ import annotations

import socket
import struct
import time
from collections import defaultdict

# ---------------------------------------------------------------------------------------
# Ports and raw Kafka frames
# ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def split_hostport(bootstrap: str) -> tuple[str, int]:
    host, port = bootstrap.rsplit(":", 1)
    return host, int(port)


def kafka_request(api_key: int, api_version: int, correlation_id: int, body: bytes = b"",
                  client_id: str = "cirrus-e2e") -> bytes:
    """A framed request with a v1 (non-flexible) header."""
    cid = client_id.encode()
    header = struct.pack(">hhih", api_key, api_version, correlation_id, len(cid)) + cid
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def recv_frame(sock: socket.socket) -> bytes:
    (size,) = struct.unpack(">i", recv_exact(sock, 4))
    if size < 0 or size > 64 * 1024 * 1024:
        raise ValueError(f"bad response size {size}")
    return recv_exact(sock, size)


def api_versions(sock: socket.socket, correlation_id: int = 7) -> dict[int, tuple[int, int]]:
    """ApiVersions v0 over an open socket: {api_key: (min, max)}; raises on a broker error."""
    sock.sendall(kafka_request(18, 0, correlation_id))
    resp = recv_frame(sock)
    corr, err, n = struct.unpack(">ihi", resp[:10])
    if corr != correlation_id:
        raise ValueError(f"ApiVersions: correlation id {corr} != {correlation_id}")
    if err != 0:
        raise ValueError(f"ApiVersions: error code {err}")
    out = {}
    for i in range(n):
        k, lo, hi = struct.unpack(">hhh", resp[10 + 6 * i: 16 + 6 * i])
        out[k] = (lo, hi)
    return out


def api_versions_probe(bootstrap: str, timeout: float = 2.0) -> dict[int, tuple[int, int]]:
    with socket.create_connection(split_hostport(bootstrap), timeout=timeout) as s:
        s.settimeout(timeout)
        return api_versions(s)


def wait_closed(sock: socket.socket, timeout: float) -> bool:
    """True if the peer closes (EOF or reset) within timeout; any bytes it sends are ignored."""
    sock.settimeout(0.5)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True
        if not data:
            return True
    return False


# ---------------------------------------------------------------------------------------
# confluent-kafka helpers
# ---------------------------------------------------------------------------------------


def client_conf(bootstrap: str, **extra) -> dict:
    conf = {
        "bootstrap.servers": bootstrap,
        "broker.address.family": "v4",
        "socket.timeout.ms": 10000,
    }
    conf.update(extra)
    return conf


def producer_conf(bootstrap: str, **extra) -> dict:
    conf = client_conf(
        bootstrap,
        **{
            "acks": "all",
            "enable.idempotence": False,
            "linger.ms": 5,
            "message.timeout.ms": 60000,
            "compression.type": "none",
        },
    )
    conf.update(extra)
    return conf


def consumer_conf(bootstrap: str, **extra) -> dict:
    # Partitions are assign()ed (no group management); librdkafka still wants a group.id.
    conf = client_conf(
        bootstrap,
        **{
            "group.id": "cirrus-e2e-unused",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "error",
            "enable.partition.eof": False,
        },
    )
    conf.update(extra)
    return conf


def create_topic(bootstrap: str, topic: str, partitions: int, timeout: float = 30.0) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(client_conf(bootstrap))
    futs = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)],
                               operation_timeout=timeout, request_timeout=timeout)
    futs[topic].result(timeout=timeout)
    wait_topic(bootstrap, topic, partitions, timeout)


def wait_topic(bootstrap: str, topic: str, partitions: int | None = None, timeout: float = 30.0):
    """Wait until metadata shows the topic (with that many partitions); returns its metadata."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(client_conf(bootstrap))
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=10)
        t = md.topics.get(topic)
        if t is not None and t.error is None and (partitions is None or len(t.partitions) == partitions):
            return t
        last = t
        time.sleep(0.2)
    raise AssertionError(f"topic {topic} not visible with {partitions} partitions after {timeout}s: {last}")


def high_watermarks(bootstrap: str, topic: str, partitions: int, timeout: float = 15.0) -> dict[int, tuple[int, int]]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(consumer_conf(bootstrap))
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout) for p in range(partitions)}
    finally:
        c.close()


def consume_all(bootstrap: str, topic: str, partitions: int, expected: int | None = None,
                end_offsets: dict[int, int] | None = None, timeout: float = 90.0, **conf):
    """Read every partition from offset 0 with assign(); returns the confluent Message list in
    delivery order. Stops when `expected` messages arrived, or when every partition reached its
    end offset (the high watermark, queried first, unless given)."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    if end_offsets is None and expected is None:
        end_offsets = {p: hi for p, (lo, hi) in high_watermarks(bootstrap, topic, partitions).items()}
    c = Consumer(consumer_conf(bootstrap, **conf))
    msgs = []
    next_off: dict[int, int] = defaultdict(int)
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        deadline = time.monotonic() + timeout

        def done() -> bool:
            if expected is not None:
                return len(msgs) >= expected
            return all(next_off[p] >= end for p, end in end_offsets.items())

        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"consume_all({topic}): timed out after {timeout}s with {len(msgs)} messages; "
                    f"expected={expected} end_offsets={end_offsets} reached={dict(next_off)}")
            for m in c.consume(num_messages=5000, timeout=0.5):
                if m.error():
                    raise KafkaException(m.error())
                msgs.append(m)
                next_off[m.partition()] = m.offset() + 1
    finally:
        c.close()
    return msgs


def produce_all(producer, topic: str, records, on_delivery) -> None:
    """produce() each (key, value, headers, timestamp, partition|None), backing off on a full queue."""
    for key, value, headers, ts, part in records:
        kwargs = {"key": key, "value": value, "headers": headers, "on_delivery": on_delivery}
        if ts is not None:
            kwargs["timestamp"] = ts
        if part is not None:
            kwargs["partition"] = part
        while True:
            try:
                producer.produce(topic, **kwargs)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)


def run_cargo_suite(args: list[str], env: dict[str, str], what: str, timeout: int = 540) -> str:
    """Runs `cargo test -q ARGS -- --nocapture` from the repository root with `env` added,
    asserts it passed and did not skip the part that needs the real server; returns the output."""
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        ["cargo", "test", "-q", *args, "--", "--nocapture"],
        cwd=root, env=dict(os.environ, **env), capture_output=True, text=True, timeout=timeout,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-8000:]
    assert "skipped" not in out.lower(), f"{what} did not run against the real server:\n{out[-4000:]}"
    return out
