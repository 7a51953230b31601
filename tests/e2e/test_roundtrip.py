"""Produce / consume round trips with real clients: confluent-kafka (librdkafka 2.16),
kafka-python (pure Python) and kcat (Debian's librdkafka 2.0.2)."""

import json
import shutil
import subprocess
import threading
import time
from collections import defaultdict

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from cirrus_e2e import (client_conf, consume_all, consumer_conf, create_topic, high_watermarks, produce_all,
                        producer_conf, wait_topic)

BASE_TS = 1_700_000_000_000  # ms; explicit CreateTime timestamps


def make_records(n: int, n_keys: int):
    """(key, value, headers, timestamp, None). value = "<key>|<per-key seq>|<global i>|pad"."""
    for i in range(n):
        k = i % n_keys
        seq = i // n_keys
        key = b"key-%05d" % k
        value = b"%s|%06d|%07d|" % (key, seq, i) + (b"%08x" % (i * 2654435761 % 2**32)) * 8
        headers = [("h-index", b"%d" % i), ("h-bin", bytes([i % 256, 0, 255, (i >> 8) % 256]) + b"\x00end")]
        yield key, value, headers, BASE_TS + i * 7, None


def test_roundtrip_confluent_100k(broker_factory, store):
    b = broker_factory(store=store)
    topic, partitions, n, n_keys = "roundtrip", 6, 100_000, 1_000
    create_topic(b.bootstrap, topic, partitions)

    sent = {}  # value -> (key, headers, ts)
    acked = {}  # value -> (partition, offset)
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
        else:
            acked[msg.value()] = (msg.partition(), msg.offset())

    p = Producer(producer_conf(b.bootstrap, **{"queue.buffering.max.messages": 200_000}))
    recs = list(make_records(n, n_keys))
    for key, value, headers, ts, _ in recs:
        sent[value] = (key, headers, ts)
    t0 = time.monotonic()
    produce_all(p, topic, recs, on_delivery)
    assert p.flush(90) == 0, "producer did not drain within 90 s"
    produce_s = time.monotonic() - t0
    assert not errors, f"{len(errors)} delivery errors, first: {errors[:3]}"
    assert len(acked) == n

    # Offsets handed out by the broker: per partition contiguous from 0.
    by_part = defaultdict(list)
    for part, off in acked.values():
        by_part[part].append(off)
    assert set(by_part) <= set(range(partitions))
    assert len(by_part) == partitions, f"keys should spread over all partitions: {sorted(by_part)}"
    for part, offs in by_part.items():
        assert sorted(offs) == list(range(len(offs))), f"partition {part}: acked offsets not 0..n-1"

    t0 = time.monotonic()
    msgs = consume_all(b.bootstrap, topic, partitions, expected=n, timeout=120)
    consume_s = time.monotonic() - t0
    assert len(msgs) == n

    seen_offsets = defaultdict(list)
    per_key_seq = defaultdict(list)
    key_partition = {}
    for m in msgs:
        v = m.value()
        assert v in sent, f"unexpected record {v[:40]!r}"
        key, headers, ts = sent[v]
        assert m.key() == key
        assert (m.partition(), m.offset()) == acked[v], "record read at another offset than acked"
        assert m.headers() == headers, f"headers differ at {m.partition()}/{m.offset()}"
        assert m.timestamp() == (1, ts), f"timestamp differs at {m.partition()}/{m.offset()}: {m.timestamp()}"
        seen_offsets[m.partition()].append(m.offset())
        per_key_seq[key].append(int(v.split(b"|")[1]))
        assert key_partition.setdefault(key, m.partition()) == m.partition(), "a key moved partitions"
    for part, offs in seen_offsets.items():
        assert offs == list(range(len(offs))), f"partition {part}: offsets read not contiguous from 0"
    assert len(per_key_seq) == n_keys
    for key, seqs in per_key_seq.items():
        assert seqs == list(range(n // n_keys)), f"{key!r}: per-key order broken"
    # Nothing beyond what was acked: the high watermarks add up to n.
    hw = high_watermarks(b.bootstrap, topic, partitions)
    assert {part: hi for part, (lo, hi) in hw.items()} == {part: len(o) for part, o in by_part.items()}
    assert all(lo == 0 for lo, hi in hw.values())
    print(f"[{store.kind}] produced {n} in {produce_s:.1f}s, consumed in {consume_s:.1f}s")


def test_auto_created_topic(broker_factory, tmp_path):
    b = broker_factory(args=["--default-partitions", "3"])
    topic = "auto-created"
    p = Producer(producer_conf(b.bootstrap))
    acked, errors = [], []
    p.produce(topic, key=b"k", value=b"first", on_delivery=lambda e, m: (errors if e else acked).append(e or m))
    assert p.flush(30) == 0
    assert not errors, errors
    md = wait_topic(b.bootstrap, topic, partitions=3)
    assert sorted(md.partitions) == [0, 1, 2]
    for i in range(30):
        p.produce(topic, key=b"k%d" % i, value=b"v%d" % i, on_delivery=lambda e, m: (errors if e else acked).append(e or m))
    assert p.flush(30) == 0
    assert not errors, errors
    msgs = consume_all(b.bootstrap, topic, 3, expected=31, timeout=30)
    assert sorted(m.value() for m in msgs) == sorted([b"first"] + [b"v%d" % i for i in range(30)])
    # The topic is listed by a fresh admin client too.
    assert topic in AdminClient(client_conf(b.bootstrap)).list_topics(timeout=10).topics


def test_roundtrip_kafka_python(broker_factory):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition as KTP
    from kafka.admin import KafkaAdminClient, NewTopic as KNewTopic

    b = broker_factory()
    topic, partitions, n = "kafka-python", 2, 2_000
    admin = KafkaAdminClient(bootstrap_servers=b.bootstrap, request_timeout_ms=30000)
    try:
        admin.create_topics([KNewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        admin.close()
    wait_topic(b.bootstrap, topic, partitions)

    prod = KafkaProducer(bootstrap_servers=b.bootstrap, acks="all", linger_ms=5, request_timeout_ms=30000)
    futures = []
    for i in range(n):
        futures.append(prod.send(
            topic, key=b"kp-%03d" % (i % 50), value=b"value-%05d" % i, partition=i % partitions,
            headers=[("idx", b"%d" % i), ("bin", b"\x00\xff")], timestamp_ms=BASE_TS + i))
    prod.flush(timeout=60)
    metas = [f.get(timeout=30) for f in futures]
    prod.close(timeout=10)
    for i, md in enumerate(metas):
        assert md.partition == i % partitions
    for part in range(partitions):
        assert sorted(md.offset for md in metas if md.partition == part) == list(range(n // partitions))

    cons = KafkaConsumer(bootstrap_servers=b.bootstrap, group_id=None, enable_auto_commit=False,
                         auto_offset_reset="earliest", consumer_timeout_ms=1000)
    try:
        cons.assign([KTP(topic, part) for part in range(partitions)])
        for part in range(partitions):
            cons.seek(KTP(topic, part), 0)
        got = []
        deadline = time.monotonic() + 60
        while len(got) < n and time.monotonic() < deadline:
            for recs in cons.poll(timeout_ms=1000).values():
                got.extend(recs)
    finally:
        cons.close()
    assert len(got) == n
    for r in got:
        i = int(r.value.split(b"-")[1])
        assert r.partition == i % partitions and r.offset == i // partitions
        assert r.key == b"kp-%03d" % (i % 50)
        assert list(r.headers) == [("idx", b"%d" % i), ("bin", b"\x00\xff")]
        assert r.timestamp == BASE_TS + i and r.timestamp_type == 0


def test_roundtrip_kcat(broker_factory):
    kcat = shutil.which("kcat")
    assert kcat, "kcat missing (tests/run.sh installs it)"
    b = broker_factory()
    topic, n = "kcat-topic", 500
    common = [kcat, "-b", b.bootstrap, "-X", "broker.address.family=v4", "-X", "socket.timeout.ms=10000"]

    # Metadata with the old librdkafka (ApiVersions negotiation, Metadata).
    md = subprocess.run(common + ["-L", "-J"], capture_output=True, text=True, timeout=30)
    assert md.returncode == 0, md.stderr
    assert json.loads(md.stdout)["brokers"], md.stdout

    lines = "".join(f"k{i % 10}:kcat-value-{i:04d}\n" for i in range(n))
    prod = subprocess.run(common + ["-P", "-t", topic, "-K", ":", "-H", "origin=kcat", "-X", "acks=all"],
                          input=lines, capture_output=True, text=True, timeout=60)
    assert prod.returncode == 0, f"kcat -P failed: {prod.stderr}"

    cons = subprocess.run(common + ["-C", "-t", topic, "-e", "-o", "beginning", "-q",
                                    "-f", "%p|%o|%k|%s|%h\n"],
                          capture_output=True, text=True, timeout=60)
    assert cons.returncode == 0, f"kcat -C failed: {cons.stderr}"
    rows = [line.split("|") for line in cons.stdout.splitlines() if line]
    assert len(rows) == n, f"kcat read {len(rows)} of {n}; stderr: {cons.stderr[-2000:]}"
    per_part = defaultdict(list)
    for part, off, key, value, hdrs in rows:
        per_part[int(part)].append((int(off), key, value))
        assert hdrs == "origin=kcat"
        assert key == "k%d" % (int(value.rsplit("-", 1)[1]) % 10)
    for part, items in per_part.items():
        assert [o for o, _, _ in items] == list(range(len(items)))
    # Every value exactly once, and per key in the order written.
    assert sorted(v for items in per_part.values() for _, _, v in items) == [f"kcat-value-{i:04d}" for i in range(n)]
    per_key = defaultdict(list)
    for items in per_part.values():
        for _, k, v in items:
            per_key[k].append(v)
    for k, vs in per_key.items():
        assert vs == sorted(vs), f"key {k}: out of order"


def test_consumer_tails_new_records(broker_factory):
    """A consumer positioned at the end sees records produced later (long-poll fetch)."""
    b = broker_factory()
    topic = "tail"
    create_topic(b.bootstrap, topic, 1)
    c = Consumer(consumer_conf(b.bootstrap, **{"fetch.wait.max.ms": 500}))
    c.assign([TopicPartition(topic, 0, 0)])
    got = []

    def reader():
        deadline = time.monotonic() + 30
        while len(got) < 10 and time.monotonic() < deadline:
            for m in c.consume(num_messages=100, timeout=0.5):
                if not m.error():
                    got.append(m.value())

    th = threading.Thread(target=reader)
    th.start()
    time.sleep(2)  # consumer is now waiting at offset 0 of an empty partition
    p = Producer(producer_conf(b.bootstrap))
    for i in range(10):
        p.produce(topic, value=b"late-%d" % i)
    assert p.flush(30) == 0
    th.join(40)
    c.close()
    assert got == [b"late-%d" % i for i in range(10)]
