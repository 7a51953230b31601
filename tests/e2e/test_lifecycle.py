"""The storage lifecycle against the real S3 server (SeaweedFS), with real clients:

- retention.ms: once the records' timestamps are older than the retention, the log start
  moves past them, the objects that held them leave the bucket, ListOffsets(earliest)
  follows, a consumer at a deleted offset gets OFFSET_OUT_OF_RANGE (or resets to the
  earliest as configured), and all of it survives a restart;
- retention.bytes keeps a partition within its budget, whole runs at a time;
- DeleteRecords from a real admin client moves the log start;
- `cirrus admin storage` shows usage by topic and orphans;
- kill -9 (abort at a named fault point) between an object's PUT and its commit, in the
  middle of deleting dead objects and of the orphan sweep: no acknowledged record is lost
  or duplicated, and the next run deletes what was left.
"""

from __future__ import annotations

import re
import time
import urllib.request

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from cirrus_e2e import client_conf, consumer_conf, high_watermarks, producer_conf, wait_topic
from cluster_harness import cirrus_binary, run_admin

HOUR_MS = 3600 * 1000

# Fast lifecycle rounds; the orphan sweep off unless a test turns it on.
LIFECYCLE_ARGS = [
    "--flush-interval", "100ms",
    "--retention-check-interval", "300ms",
    "--object-delete-grace", "3s",
    "--orphan-gc-interval", "0s",
]
# Sweep every second; orphans are objects unreferenced for 3 s (delete grace 1 s).
SWEEP_ARGS = [
    "--flush-interval", "100ms",
    "--retention-check-interval", "300ms",
    "--object-delete-grace", "1s",
    "--orphan-gc-interval", "1s",
    "--orphan-grace", "3s",
]


def create_topic_with(bootstrap: str, topic: str, partitions: int, config: dict[str, str]) -> None:
    admin = AdminClient(client_conf(bootstrap))
    futs = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config)],
                               operation_timeout=30, request_timeout=30)
    futs[topic].result(timeout=30)
    wait_topic(bootstrap, topic, partitions)


def produce(bootstrap: str, topic: str, n: int, tag: str, timestamp_ms: int | None = None,
            partition: int = 0, start: int = 0) -> list[tuple[int, bytes]]:
    """n records acks=all; returns (offset, value) of every acknowledged one."""
    acked: list[tuple[int, bytes]] = []
    errors: list[str] = []

    def on_delivery(err, msg):
        if err is None:
            acked.append((msg.offset(), msg.value()))
        else:
            errors.append(str(err))

    p = Producer(producer_conf(bootstrap, **{"message.timeout.ms": 30000}))
    for i in range(start, start + n):
        kwargs = {"timestamp": timestamp_ms} if timestamp_ms is not None else {}
        p.produce(topic, value=f"{tag}-{i:05d}-".encode() + b"x" * 100, partition=partition,
                  on_delivery=on_delivery, **kwargs)
    p.flush(40)
    assert not errors, errors[:3]
    return acked


def watermarks(bootstrap: str, topic: str, partition: int = 0) -> tuple[int, int]:
    return high_watermarks(bootstrap, topic, partition + 1)[partition]


def wait_for(what: str, check, timeout: float = 30.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def read_from(bootstrap: str, topic: str, offset: int, reset: str, count: int,
              partition: int = 0, timeout: float = 30.0) -> tuple[list[tuple[int, bytes]], list]:
    """Assigns `offset` with auto.offset.reset=`reset`; returns ((offset, value) of up to
    `count` records, the errors seen)."""
    c = Consumer(consumer_conf(bootstrap, **{"auto.offset.reset": reset}))
    got: list[tuple[int, bytes]] = []
    errors = []
    try:
        c.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            for m in c.consume(num_messages=1000, timeout=0.5):
                if m.error():
                    errors.append(m.error())
                    if reset == "error":
                        return got, errors
                    continue
                got.append((m.offset(), m.value()))
    finally:
        c.close()
    return got, errors


def metric(url: str, name: str, labels: str = "") -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    assert m, f"{name}{labels} not on /metrics"
    return float(m.group(1))


def storage(addr: str) -> str:
    res = run_admin(cirrus_binary(), addr, ["storage"], timeout=60)
    assert res.rc == 0, f"`cirrus admin storage`: {res}"
    return res.stdout


def data_keys(store) -> set[str]:
    return {k for k, _ in store.data_objects()}


def test_retention_deletes_objects_and_moves_the_log_start(broker_factory, s3_only_store):
    b = broker_factory(s3_only_store, args=LIFECYCLE_ARGS)
    topic = "retained"
    create_topic_with(b.bootstrap, topic, 1, {"retention.ms": str(HOUR_MS)})

    # Records stamped two hours ago are past the retention as soon as they are in objects.
    old = produce(b.bootstrap, topic, 200, "old", timestamp_ms=int(time.time() * 1000) - 2 * HOUR_MS)
    assert sorted(o for o, _ in old) == list(range(200))
    wait_for("the log start to pass the old records", lambda: watermarks(b.bootstrap, topic)[0] == 200)
    # The dead objects wait out the 3 s delete grace: they are still in the bucket.
    doomed = data_keys(s3_only_store)
    assert doomed, "no data object held the old records"

    new = produce(b.bootstrap, topic, 10, "new")
    assert [o for o, _ in new] == list(range(200, 210))
    wait_for("the objects of the deleted records to leave the bucket",
             lambda: not (doomed & data_keys(s3_only_store)), timeout=30)
    assert watermarks(b.bootstrap, topic) == (200, 210)
    wait_for("the new records' object", lambda: data_keys(s3_only_store))

    # A consumer at a deleted offset: OFFSET_OUT_OF_RANGE, or a reset to the earliest.
    got, errors = read_from(b.bootstrap, topic, 0, "error", 1)
    assert not got and errors, (got, errors)
    assert errors[0].code() == KafkaError._AUTO_OFFSET_RESET, errors[0]
    assert "out of range" in errors[0].str().lower(), errors[0]
    got, errors = read_from(b.bootstrap, topic, 0, "earliest", 10)
    assert [o for o, _ in got] == list(range(200, 210)) and not errors, (got[:3], errors)
    assert [v for _, v in got] == [v for _, v in new]

    assert metric(b.metrics_url, "cirrus_log_start_moves_total", '{reason="retention"}') >= 1
    assert metric(b.metrics_url, "cirrus_objects_deleted_total", '{reason="dead"}') >= len(doomed)
    assert metric(b.metrics_url, "cirrus_object_deleted_bytes_total", '{reason="dead"}') > 0

    text = storage(b.admin_addr)
    row = re.search(rf"^{topic}\s+1\s+(\d+(?:\.\d)?) (B|KiB)$", text, re.M)
    assert row, text
    assert "orphans (unreferenced, older than 1h): 0 objects (0 B)" in text, text

    # The log start is durable: a restart keeps it and serves the rest.
    b.stop()
    b.start()
    assert watermarks(b.bootstrap, topic) == (200, 210)
    got, errors = read_from(b.bootstrap, topic, 0, "earliest", 10)
    assert [(o, v) for o, v in got] == new, (got[:3], errors)
    assert not (doomed & data_keys(s3_only_store))


def test_retention_bytes_keeps_the_newest_runs(broker_factory, s3_only_store):
    b = broker_factory(s3_only_store, args=LIFECYCLE_ARGS)
    topic = "sized"
    # Each round below is ~12 KiB of batches in its own run; keep at most ~2.5 rounds.
    create_topic_with(b.bootstrap, topic, 1, {"retention.bytes": "30000"})
    rounds = []
    for r in range(5):
        rounds.append(produce(b.bootstrap, topic, 100, f"r{r}", start=r * 100))
        wait_for(f"round {r} in an object", lambda: watermarks(b.bootstrap, topic)[1] == (r + 1) * 100)
        time.sleep(0.3)  # past the flush interval: the next round goes into another object
    low = wait_for("retention.bytes to move the log start",
                   lambda: (lambda lo: lo if lo >= 200 else None)(watermarks(b.bootstrap, topic)[0]))
    assert low <= 400, f"log start {low}: more was deleted than the budget requires"
    assert watermarks(b.bootstrap, topic)[1] == 500
    got, errors = read_from(b.bootstrap, topic, low, "error", 500 - low)
    assert not errors and [o for o, _ in got] == list(range(low, 500)), (errors, got[:3])
    expected = {o: v for rnd in rounds for o, v in rnd}
    assert all(expected[o] == v for o, v in got)


def test_delete_records_from_an_admin_client(broker_factory, s3_only_store):
    b = broker_factory(s3_only_store, args=LIFECYCLE_ARGS)
    topic = "trimmed"
    create_topic_with(b.bootstrap, topic, 2, {})
    produce(b.bootstrap, topic, 50, "p0", partition=0)
    produce(b.bootstrap, topic, 20, "p1", partition=1)
    admin = AdminClient(client_conf(b.bootstrap))
    futs = admin.delete_records([TopicPartition(topic, 0, 30), TopicPartition(topic, 1, -1)],
                                request_timeout=30, operation_timeout=30)
    lows = {tp.partition: f.result(timeout=30).low_watermark for tp, f in futs.items()}
    assert lows == {0: 30, 1: 20}, lows  # -1: up to the high watermark
    assert watermarks(b.bootstrap, topic, 0) == (30, 50)
    assert watermarks(b.bootstrap, topic, 1) == (20, 20)
    got, errors = read_from(b.bootstrap, topic, 0, "earliest", 20)
    assert [o for o, _ in got] == list(range(30, 50)) and not errors
    # An offset beyond the high watermark is refused per partition.
    futs = admin.delete_records([TopicPartition(topic, 0, 99)], request_timeout=30, operation_timeout=30)
    err = next(iter(futs.values())).exception(timeout=30)
    assert err is not None and err.args[0].code() == KafkaError.OFFSET_OUT_OF_RANGE, err
    assert metric(b.metrics_url, "cirrus_log_start_moves_total", '{reason="delete_records"}') == 2


def test_crash_between_upload_and_commit_leaves_an_orphan_the_sweep_deletes(broker_factory, s3_only_store):
    b = broker_factory(s3_only_store, args=SWEEP_ARGS, env={"CIRRUS_FAULT_POINT": "upload.before_commit"})
    topic = "uncommitted"
    create_topic_with(b.bootstrap, topic, 1, {})
    acked = produce(b.bootstrap, topic, 50, "a")
    wait_for("the broker to abort after the upload", lambda: not b.running, timeout=30)
    orphans = data_keys(s3_only_store)
    assert orphans, "the aborted upload left no object"

    b.extra_env.pop("CIRRUS_FAULT_POINT")
    b.start()
    # The WAL replay uploads the records again under the new incarnation; the first upload
    # is referenced by no index and the sweep deletes it once it is older than the grace.
    wait_for("the sweep to delete the orphan", lambda: not (orphans & data_keys(s3_only_store)), timeout=45)
    assert data_keys(s3_only_store), "the replayed records are in no object"
    assert metric(b.metrics_url, "cirrus_objects_deleted_total", '{reason="orphan"}') >= len(orphans)
    lo, hi = watermarks(b.bootstrap, topic)
    got, errors = read_from(b.bootstrap, topic, 0, "error", hi)
    assert not errors and lo == 0
    assert [o for o, _ in got] == list(range(hi)), "offsets lost or duplicated"
    assert set(acked) <= set(got), "an acknowledged record was lost"
    assert len({v for _, v in got}) == len(got), "a record was duplicated"


def test_crash_while_deleting_dead_objects_is_finished_by_the_next_run(broker_factory, s3_only_store):
    # Produce with retention asleep (first round in an hour), so the abort cannot
    # interrupt the producers; then restart with the fault point armed.
    sleepy = list(SWEEP_ARGS)
    sleepy[sleepy.index("--retention-check-interval") + 1] = "1h"
    b = broker_factory(s3_only_store, args=sleepy)
    topic = "half-deleted"
    create_topic_with(b.bootstrap, topic, 1, {"retention.ms": str(HOUR_MS)})
    produce(b.bootstrap, topic, 100, "old", timestamp_ms=int(time.time() * 1000) - 2 * HOUR_MS)
    wait_for("the old records in an object", lambda: data_keys(s3_only_store))
    doomed = data_keys(s3_only_store)
    time.sleep(0.3)  # past the flush interval: the new records go into another object
    new = produce(b.bootstrap, topic, 10, "new")
    b.stop()
    b.extra_args = [*s3_only_store.flags, *SWEEP_ARGS]
    b.extra_env["CIRRUS_FAULT_POINT"] = "gc.before_delete"
    b.start()
    # Retention moves the log start; after the delete grace the broker drops the objects
    # from its index, then aborts before deleting them.
    wait_for("the broker to abort before deleting", lambda: not b.running, timeout=30)
    assert doomed <= data_keys(s3_only_store), "deleted despite the fault point"

    b.extra_env.pop("CIRRUS_FAULT_POINT")
    b.start()
    # The restarted broker forgot its dead list: the objects are orphans now.
    wait_for("the next run to delete the objects", lambda: not (doomed & data_keys(s3_only_store)), timeout=45)
    assert watermarks(b.bootstrap, topic) == (100, 110)
    got, errors = read_from(b.bootstrap, topic, 0, "earliest", 10)
    assert got == new, (got[:3], errors)


def test_orphan_sweep_reports_then_deletes_after_a_crash(broker_factory, s3_only_store):
    store = s3_only_store
    s3 = store.s3.client()
    prefix = store.url.split("/", 3)[3]
    stray = f"{prefix}/data/ffff/stray-00000000000000000001.obj"
    s3.put_object(Bucket=store.s3.bucket, Key=stray, Body=b"never committed" * 100)

    no_sweep = list(SWEEP_ARGS)
    no_sweep[no_sweep.index("--orphan-gc-interval") + 1] = "0s"
    b = broker_factory(store, args=no_sweep)
    topic = "kept"
    create_topic_with(b.bootstrap, topic, 1, {})
    kept = produce(b.bootstrap, topic, 30, "k")
    wait_for("the records in an object", lambda: data_keys(store) - {"data/ffff/stray-00000000000000000001.obj"})
    time.sleep(3.5)  # the stray is older than the 3 s grace now
    text = wait_for("the report of the orphan",
                    lambda: (lambda t: t if "older than 3s): 1 objects (1.5 KiB)" in t else None)(storage(b.admin_addr)))
    assert re.search(rf"^{topic}\s+1\s+", text, re.M), text
    assert "data/ffff/stray-00000000000000000001.obj" in data_keys(store), "the report deleted it"

    # The sweep aborts right before deleting; the next one deletes.
    b.stop()
    b.extra_args = [*store.flags, *SWEEP_ARGS]
    b.extra_env["CIRRUS_FAULT_POINT"] = "orphans.before_delete"
    b.start()
    wait_for("the sweep to abort before deleting", lambda: not b.running, timeout=30)
    assert "data/ffff/stray-00000000000000000001.obj" in data_keys(store)
    b.extra_env.pop("CIRRUS_FAULT_POINT")
    b.start()
    wait_for("the sweep to delete the orphan",
             lambda: "data/ffff/stray-00000000000000000001.obj" not in data_keys(store), timeout=30)
    wait_for("the orphan gauge to fall to zero", lambda: metric(b.metrics_url, "cirrus_orphan_objects") == 0)
    got, errors = read_from(b.bootstrap, topic, 0, "error", 30)
    assert got == kept, (got[:3], errors)


# Object compaction: every acknowledged record is its own object (durability=object,
# 1 ms flushes), merged as soon as a round sees it.
COMPACTION_ARGS = [*SWEEP_ARGS[2:], "--flush-interval", "1ms",
                   "--compaction-interval", "500ms", "--compaction-min-age", "0s"]


def produce_one_by_one(bootstrap: str, topic: str, n: int, tag: str) -> list[tuple[int, bytes]]:
    """n records, each acknowledged before the next is sent: n objects."""
    acked = []
    p = Producer(producer_conf(bootstrap, **{"linger.ms": 0}))
    for i in range(n):
        def on_delivery(err, msg):
            assert err is None, err
            acked.append((msg.offset(), msg.value()))
        p.produce(topic, value=f"{tag}-{i:05d}".encode(), partition=0, on_delivery=on_delivery)
        assert p.flush(30) == 0
    return acked


def with_interval(args: list[str], interval: str) -> list[str]:
    out = list(args)
    out[out.index("--compaction-interval") + 1] = interval
    return out


def restart_to_abort_at(b, store, args: list[str], point: str) -> None:
    """Stops `b` (gracefully: everything produced is committed), restarts it with the
    rewrites on (first round 2 s after the start, once it is ready) and the fault point
    armed, and waits for it to abort there."""
    b.stop()
    b.extra_args = [*store.flags, *with_interval(args, "2s")]
    b.extra_env["CIRRUS_FAULT_POINT"] = point
    b.start()
    wait_for(f"the broker to abort at {point}", lambda: not b.running, timeout=30)
    b.extra_args = [*store.flags, *args]
    b.extra_env.pop("CIRRUS_FAULT_POINT")


def compaction_crash(broker_factory, store, point: str):
    # Produce with compaction off, so that the abort cannot interrupt the producer.
    b = broker_factory(store, args=with_interval(COMPACTION_ARGS, "0s"))
    topic = "compacted"
    create_topic_with(b.bootstrap, topic, 1, {"cirrus.durability": "object"})
    acked = produce_one_by_one(b.bootstrap, topic, 20, "c")
    assert [o for o, _ in acked] == list(range(20))
    restart_to_abort_at(b, store, COMPACTION_ARGS, point)
    before = data_keys(store)
    assert len(before) >= 20, before
    b.start()
    # The next rounds finish the work: one compacted object, the originals (and an
    # uncommitted copy) gone.
    wait_for("compaction to settle on one object", lambda: len(data_keys(store)) == 1, timeout=60)
    after = data_keys(store)
    if point == "compaction.after_commit":
        assert after <= before, "the committed rewrite should be the object kept"
    else:
        assert not (before & after), "the uncommitted copy or an original is still there"
    got, errors = read_from(b.bootstrap, topic, 0, "error", 20)
    assert not errors and got == acked, (got[:3], errors)
    assert metric(b.metrics_url, "cirrus_index_runs") == 1
    return b


def test_crash_before_a_compaction_commit_loses_nothing(broker_factory, s3_only_store):
    b = compaction_crash(broker_factory, s3_only_store, "compaction.before_commit")
    assert metric(b.metrics_url, "cirrus_objects_deleted_total", '{reason="orphan"}') >= 1, \
        "the uncommitted copy was not swept"


def test_crash_after_a_compaction_commit_loses_nothing(broker_factory, s3_only_store):
    compaction_crash(broker_factory, s3_only_store, "compaction.after_commit")


# Log compaction: cleaning runs every 500 ms round; tombstones live 8 s.
CLEANER_ARGS = [*SWEEP_ARGS, "--compaction-interval", "500ms"]
COMPACTED = {"cleanup.policy": "compact", "delete.retention.ms": "8000"}


def produce_table(bootstrap: str, topic: str, keys: int, rounds: int, tombstone_every: int) -> dict[bytes, tuple[int, bytes | None]]:
    """`rounds` updates of `keys` keys (round r of key i is "k{i}:{r}"); in the last round
    every `tombstone_every`-th key gets a tombstone (0: none). Returns key -> (offset, value) of the
    latest record of each key."""
    latest: dict[bytes, tuple[int, bytes | None]] = {}
    errors: list[str] = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            latest[msg.key()] = (msg.offset(), msg.value())

    p = Producer(producer_conf(bootstrap, **{"linger.ms": 20, "batch.num.messages": 1000}))
    for r in range(rounds):
        for i in range(keys):
            key = b"k%05d" % i
            tombstone = r == rounds - 1 and tombstone_every and i % tombstone_every == 0
            value = None if tombstone else b"k%05d:%d" % (i, r)
            while True:
                try:
                    p.produce(topic, key=key, value=value, partition=0, on_delivery=on_delivery)
                    break
                except BufferError:
                    p.poll(0.05)
        p.poll(0)
    assert p.flush(60) == 0
    assert not errors, errors[:3]
    return latest


def read_table(bootstrap: str, topic: str, end: int) -> list[tuple[int, bytes, bytes | None]]:
    """Every record from offset 0 to `end`, as (offset, key, value)."""
    c = Consumer(consumer_conf(bootstrap, **{"auto.offset.reset": "error"}))
    out = []
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for m in c.consume(num_messages=5000, timeout=0.5):
                assert not m.error(), m.error()
                out.append((m.offset(), m.key(), m.value()))
            if out and out[-1][0] >= end - 1:
                break
        else:
            raise AssertionError(f"read {len(out)} records of {topic}, last at {out[-1][0] if out else None}")
    finally:
        c.close()
    return out


def test_log_compaction_keeps_the_latest_value_per_key(broker_factory, s3_only_store):
    b = broker_factory(s3_only_store, args=CLEANER_ARGS)
    topic = "table"
    create_topic_with(b.bootstrap, topic, 1, COMPACTED)
    latest = produce_table(b.bootstrap, topic, keys=10_000, rounds=10, tombstone_every=20)
    assert watermarks(b.bootstrap, topic) == (0, 100_000)

    # Records without a key are refused on a compacted topic.
    p = Producer(producer_conf(b.bootstrap))
    failures = []
    p.produce(topic, value=b"no key", partition=0, on_delivery=lambda err, msg: failures.append(err))
    p.flush(30)
    assert failures and failures[0] is not None and failures[0].code() == KafkaError.INVALID_RECORD, failures

    wait_for("the cleaner to remove every superseded record",
             lambda: metric(b.metrics_url, "cirrus_log_cleaner_records_removed_total") >= 90_000, timeout=60)
    records = read_table(b.bootstrap, topic, 100_000)
    assert len(records) == 10_000, f"{len(records)} records after cleaning"
    got = {k: (o, v) for o, k, v in records}
    assert got == latest, "not exactly the latest record per key, at its offset"
    assert sum(1 for _, _, v in records if v is None) == 500
    assert watermarks(b.bootstrap, topic) == (0, 100_000), "cleaning moved the offsets"

    # A fetch that starts inside a gap gets the next surviving record.
    got, errors = read_from(b.bootstrap, topic, 12_345, "error", 1)
    assert not errors and got[0][0] == 90_000, (got, errors)  # k00000's tombstone

    # Tombstones vanish once delete.retention.ms has passed.
    live = {k: v for k, (o, v) in latest.items() if v is not None}
    wait_for("the tombstones to be cleaned away",
             lambda: len(read_table(b.bootstrap, topic, 100_000)) == len(live), timeout=60, interval=1.0)
    records = read_table(b.bootstrap, topic, 100_000)
    assert {k: v for _, k, v in records} == live
    assert metric(b.metrics_url, "cirrus_log_cleaner_cleanings_total") >= 2

    # The cleaned index survives a restart; the originals leave the bucket.
    b.stop()
    b.start()
    assert {k: v for _, k, v in read_table(b.bootstrap, topic, 100_000)} == live
    wait_for("the cleaned-away objects to leave the bucket", lambda: len(data_keys(s3_only_store)) <= 2, timeout=60)


def cleaner_crash(broker_factory, store, point: str):
    b = broker_factory(store, args=with_interval(CLEANER_ARGS, "0s"))
    topic = "crashy-table"
    create_topic_with(b.bootstrap, topic, 1, COMPACTED)
    latest = produce_table(b.bootstrap, topic, keys=300, rounds=5, tombstone_every=0)
    restart_to_abort_at(b, store, CLEANER_ARGS, point)
    b.start()
    wait_for("the next run to clean", lambda: len(read_table(b.bootstrap, topic, 1500)) == 300, timeout=60, interval=1.0)
    records = read_table(b.bootstrap, topic, 1500)
    assert {k: (o, v) for o, k, v in records} == latest
    assert watermarks(b.bootstrap, topic) == (0, 1500)


def test_crash_before_a_cleaning_commit_loses_nothing(broker_factory, s3_only_store):
    cleaner_crash(broker_factory, s3_only_store, "cleaner.before_commit")


def test_crash_after_a_cleaning_commit_loses_nothing(broker_factory, s3_only_store):
    cleaner_crash(broker_factory, s3_only_store, "cleaner.after_commit")
