"""Graceful stop (SIGTERM) and --durability object."""

import re
import time

from confluent_kafka import Producer

from cirrus_e2e import consume_all, create_topic, high_watermarks, producer_conf
from conftest import DATA_OBJECT_RE, list_dir_objects


def _produce(bootstrap, topic, values, partitions=1, **conf):
    p = Producer(producer_conf(bootstrap, **conf))
    acked, errors = [], []

    def cb(err, msg):
        (errors if err else acked).append(err or (msg.partition(), msg.offset(), msg.value()))

    for i, v in enumerate(values):
        p.produce(topic, key=b"k%d" % (i % 7), value=v, partition=i % partitions, on_delivery=cb)
        p.poll(0)
    assert p.flush(60) == 0
    assert not errors, errors[:5]
    return acked


def test_sigterm_exits_0_and_restart_keeps_everything(broker_factory, store):
    b = broker_factory(store=store, args=["--flush-interval", "250ms"])
    topic, partitions, n = "graceful", 3, 5_000
    create_topic(b.bootstrap, topic, partitions)
    acked = _produce(b.bootstrap, topic, [b"graceful-%05d" % i for i in range(n)], partitions)
    assert len(acked) == n

    took = b.stop()
    assert took < 30, f"graceful stop took {took:.1f}s"
    assert store.data_objects(), f"nothing uploaded to the {store.kind} store on shutdown"
    wal_bytes = sum(s for _, s in b.wal_files())
    assert wal_bytes < 64 * 1024, f"WAL still holds {wal_bytes} bytes after a graceful stop: {b.wal_files()}"

    b.restart()
    hw = high_watermarks(b.bootstrap, topic, partitions)
    assert {p: hi for p, (_, hi) in hw.items()} == {p: n // partitions + (1 if p < n % partitions else 0)
                                                     for p in range(partitions)}
    msgs = consume_all(b.bootstrap, topic, partitions, expected=n, timeout=60)
    assert sorted((m.partition(), m.offset(), m.value()) for m in msgs) == sorted(acked)
    # The topic's metadata survived too.
    more = _produce(b.bootstrap, topic, [b"after-restart"], partitions)
    assert more == [(0, hw[0][1], b"after-restart")]
    b.stop()


def test_default_data_dir_layout(broker_factory):
    """No --object-store: objects go to <data-dir>/objects; WAL under wal/, metadata in meta.redb."""
    b = broker_factory()
    topic = "layout"
    create_topic(b.bootstrap, topic, 2)
    _produce(b.bootstrap, topic, [b"layout-%04d" % i for i in range(2_000)], 2)
    assert (b.data_dir / "wal").is_dir(), "no <data-dir>/wal"
    assert list((b.data_dir / "wal").glob("*.wal")), "no WAL segment while running"
    b.stop()
    assert (b.data_dir / "meta.redb").is_file(), "no <data-dir>/meta.redb"
    objs = list_dir_objects(b.data_dir / "objects")
    data = [k for k, _ in objs if DATA_OBJECT_RE.search(k)]
    assert data, f"no data/<4 hex>/<writer>-<seq>.obj under <data-dir>/objects: {objs[:20]}"
    assert all(re.fullmatch(r"data/[0-9a-f]{4}/[^/]+-[^/]+\.obj", k) for k in data), data[:10]
    b.restart()
    msgs = consume_all(b.bootstrap, topic, 2, expected=2_000, timeout=60)
    assert sorted(m.value() for m in msgs) == [b"layout-%04d" % i for i in range(2_000)]
    b.stop()


def test_durability_object_acks_after_upload(broker_factory, store):
    b = broker_factory(store=store, args=["--durability", "object", "--flush-interval", "100ms"])
    topic = "durable"
    create_topic(b.bootstrap, topic, 1)
    before = store.data_objects()
    counts = []
    for i in range(5):
        t0 = time.monotonic()
        acked = _produce(b.bootstrap, topic, [b"durable-%d" % i], **{"linger.ms": 0})
        ack_s = time.monotonic() - t0
        assert acked == [(0, i, b"durable-%d" % i)]
        # The ack came after the upload: the new object is already listable.
        now = store.data_objects()
        assert len(now) > len(counts[-1] if counts else before), (
            f"record {i} acknowledged (after {ack_s:.2f}s) but no new data object in the {store.kind} store: {now}")
        counts.append(now)
    # Crash right after the acks: nothing acknowledged is lost.
    b.kill9()
    b.restart()
    msgs = consume_all(b.bootstrap, topic, 1, timeout=60)
    assert [(m.offset(), m.value()) for m in msgs] == [(i, b"durable-%d" % i) for i in range(5)]
    b.stop()


def test_durability_object_batches_concurrent_acks(broker_factory, store):
    """Many in-flight records share uploads: far fewer objects than records."""
    b = broker_factory(store=store, args=["--durability", "object", "--flush-interval", "200ms"])
    topic, n = "durable-batch", 5_000
    create_topic(b.bootstrap, topic, 2)
    t0 = time.monotonic()
    acked = _produce(b.bootstrap, topic, [b"db-%05d" % i for i in range(n)], 2, **{"linger.ms": 5})
    took = time.monotonic() - t0
    assert len(acked) == n
    objs = store.data_objects()
    assert objs, "acks arrived but no data object exists"
    print(f"[{store.kind}] {n} records acked in {took:.2f}s using {len(objs)} data objects")
    assert len(objs) < n / 20, f"{len(objs)} objects for {n} records: uploads are not shared"
    b.stop()
