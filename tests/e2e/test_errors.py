"""Error paths seen by real clients, and malformed frames on raw sockets."""

import socket
import struct
import threading
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from cirrus_e2e import (api_versions, api_versions_probe, client_conf, consume_all, consumer_conf, create_topic,
                        kafka_request, producer_conf, split_hostport, wait_closed)

UNKNOWN_TOPIC_CODES = {KafkaError._UNKNOWN_TOPIC, KafkaError.UNKNOWN_TOPIC_OR_PART}


def test_unknown_topic_metadata_without_auto_create(broker_factory):
    b = broker_factory(args=["--auto-create-topics", "false"])
    admin = AdminClient(client_conf(b.bootstrap))
    # librdkafka asks with allow_auto_topic_creation=true; the broker must refuse to create it.
    md = admin.list_topics(topic="no-such-topic", timeout=15)
    t = md.topics.get("no-such-topic")
    assert t is not None and t.error is not None, f"expected an error for the unknown topic, got {t}"
    assert t.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, t.error
    assert "no-such-topic" not in admin.list_topics(timeout=15).topics
    # Explicit creation still works.
    create_topic(b.bootstrap, "made-by-admin", 2)
    assert len(admin.list_topics(timeout=15).topics["made-by-admin"].partitions) == 2


def test_unknown_topic_produce_without_auto_create(broker_factory):
    b = broker_factory(args=["--auto-create-topics", "false"])
    p = Producer(producer_conf(b.bootstrap, **{
        "message.timeout.ms": 20000,
        "topic.metadata.propagation.max.ms": 1000,
    }))
    errs = []
    p.produce("no-such-topic", value=b"x", on_delivery=lambda e, m: errs.append(e))
    assert p.flush(30) == 0
    assert len(errs) == 1 and errs[0] is not None, f"delivery to an unknown topic succeeded: {errs}"
    assert errs[0].code() in UNKNOWN_TOPIC_CODES, f"unexpected error {errs[0]} (code {errs[0].code()})"
    assert "no-such-topic" not in AdminClient(client_conf(b.bootstrap)).list_topics(timeout=15).topics


def test_record_larger_than_message_max_bytes(broker_factory):
    b = broker_factory(args=["--message-max-bytes", "10000"])
    topic = "size-limit"
    create_topic(b.bootstrap, topic, 1)
    p = Producer(producer_conf(b.bootstrap, **{"message.max.bytes": 1_000_000, "linger.ms": 0}))
    res = []
    p.produce(topic, value=b"x" * 50_000, on_delivery=lambda e, m: res.append(("big", e, m)))
    assert p.flush(30) == 0
    p.produce(topic, value=b"y" * 1_000, on_delivery=lambda e, m: res.append(("small", e, m)))
    assert p.flush(30) == 0
    (tag1, err1, _), (tag2, err2, m2) = res
    assert tag1 == "big" and err1 is not None, "a 50 kB record was accepted with --message-max-bytes 10000"
    assert err1.code() == KafkaError.MSG_SIZE_TOO_LARGE, f"unexpected error {err1}"
    assert tag2 == "small" and err2 is None, f"a small record after the rejected one failed: {err2}"
    assert m2.offset() == 0, "the rejected record must not take an offset"
    msgs = consume_all(b.bootstrap, topic, 1, expected=1, timeout=30)
    assert [m.value() for m in msgs] == [b"y" * 1_000]


def test_fetch_offset_out_of_range(broker_factory):
    b = broker_factory()
    topic = "oor"
    create_topic(b.bootstrap, topic, 1)
    p = Producer(producer_conf(b.bootstrap))
    for i in range(10):
        p.produce(topic, value=b"v%d" % i)
    assert p.flush(30) == 0

    c = Consumer(consumer_conf(b.bootstrap, **{"auto.offset.reset": "error"}))
    try:
        c.assign([TopicPartition(topic, 0, 1000)])
        err = None
        deadline = time.monotonic() + 30
        while err is None and time.monotonic() < deadline:
            for m in c.consume(num_messages=10, timeout=0.5):
                assert m.error() is not None, f"got a record at offset {m.offset()} past the end"
                err = m.error()
        assert err is not None, "no error when fetching past the end with auto.offset.reset=error"
        # librdkafka reports it as _AUTO_OFFSET_RESET wrapping the broker's OFFSET_OUT_OF_RANGE.
        assert err.code() in (KafkaError.OFFSET_OUT_OF_RANGE, KafkaError._AUTO_OFFSET_RESET), err
        if err.code() == KafkaError._AUTO_OFFSET_RESET:
            assert "out of range" in err.str().lower(), err.str()
    finally:
        c.close()

    # Fetching exactly at the end (the high watermark) is not an error: it waits for data.
    c = Consumer(consumer_conf(b.bootstrap, **{"auto.offset.reset": "error", "fetch.wait.max.ms": 200}))
    try:
        c.assign([TopicPartition(topic, 0, 10)])
        end = time.monotonic() + 3
        while time.monotonic() < end:
            for m in c.consume(num_messages=10, timeout=0.5):
                assert False, f"unexpected {'error ' + str(m.error()) if m.error() else 'record'} at the end"
        # And offset 9 is the last record.
        c.assign([TopicPartition(topic, 0, 9)])
        got = []
        end = time.monotonic() + 15
        while not got and time.monotonic() < end:
            got = [m for m in c.consume(num_messages=10, timeout=0.5)]
        assert [(m.error(), m.offset(), m.value()) for m in got] == [(None, 9, b"v9")]
    finally:
        c.close()


def _raw(bootstrap):
    s = socket.create_connection(split_hostport(bootstrap), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def test_malformed_frames_close_only_that_connection(broker_factory):
    b = broker_factory()
    topic = "steady"
    create_topic(b.bootstrap, topic, 1)

    # A well-behaved client producing the whole time, on its own connection.
    stop = threading.Event()
    acked, errors = [], []

    def steady():
        p = Producer(producer_conf(b.bootstrap, **{"linger.ms": 0, "message.timeout.ms": 20000}))
        i = 0
        while not stop.is_set():
            p.produce(topic, value=b"steady-%d" % i,
                      on_delivery=lambda e, m: (errors if e else acked).append(e or m.offset()))
            p.flush(10)
            i += 1
            time.sleep(0.02)
        p.flush(20)

    th = threading.Thread(target=steady, daemon=True)
    th.start()
    try:
        # A raw client that keeps one healthy connection open across all the abuse.
        healthy = _raw(b.bootstrap)
        assert 18 in api_versions(healthy, correlation_id=1)

        cases = {
            "garbage after a length prefix": struct.pack(">i", 32) + bytes([0xFF] * 32),
            "unknown api key": kafka_request(0x7EEE, 0, 42, b"\x00" * 16),
            "negative length": struct.pack(">i", -5) + b"\x00" * 8,
            "huge length": struct.pack(">i", 0x7FFFFFF0) + b"\x00" * 64,
            "frame shorter than a header": struct.pack(">i", 3) + b"\x00\x12\x00",
        }
        for name, frame in cases.items():
            s = _raw(b.bootstrap)
            try:
                s.sendall(frame)
                assert wait_closed(s, 10), f"{name}: the broker kept the connection open"
            finally:
                s.close()
            assert b.running, f"{name}: the broker died\n{b.log()}"

        # Truncated frames, then the client goes away: nothing to answer, nothing must break.
        for _ in range(20):
            s = _raw(b.bootstrap)
            s.sendall(struct.pack(">i", 200) + kafka_request(18, 0, 5)[4:])  # says 200, sends ~20
            s.close()
            s = _raw(b.bootstrap)
            s.sendall(b"\x00\x00")  # half a length prefix
            s.shutdown(socket.SHUT_WR)
            assert wait_closed(s, 10), "a half length prefix then EOF: connection not closed"
            s.close()

        # The healthy raw connection and new connections still work.
        assert 18 in api_versions(healthy, correlation_id=2)
        healthy.close()
        assert 18 in api_versions_probe(b.bootstrap)
        n_before = len(acked)
        time.sleep(1.0)
        assert len(acked) > n_before, "the well-behaved producer stalled"
    finally:
        stop.set()
        th.join(30)
    assert not errors, f"the well-behaved producer saw errors: {errors[:5]}"
    assert acked == list(range(len(acked))), "steady producer offsets not contiguous"
    assert b.livez()
    msgs = consume_all(b.bootstrap, topic, 1, timeout=30)
    assert [m.value() for m in msgs] == [b"steady-%d" % i for i in range(len(acked))]
