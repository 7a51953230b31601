"""kill -9 in the middle of a produce stream: every acknowledged record survives, at its offset;
then a graceful stop empties the WAL into few, large objects."""

import math
import os
import threading
import time

from confluent_kafka import Producer

from cirrus_e2e import consume_all, create_topic, high_watermarks, producer_conf

TARGET_BYTES = 1 << 20  # --object-target-bytes 1MiB
FLUSH_S = 5.0  # --flush-interval 5s: long, so objects are cut by size, not by time
BATCH_MSGS = 50  # librdkafka batch.num.messages: at least n/50 produce batches


class BackgroundProducer(threading.Thread):
    """Produces acks=all without pause until stopped; records every acknowledged record."""

    def __init__(self, bootstrap: str, topic: str, partitions: int):
        super().__init__(daemon=True)
        self.topic, self.partitions = topic, partitions
        self.producer = Producer(producer_conf(bootstrap, **{
            "linger.ms": 2,
            "batch.num.messages": BATCH_MSGS,
            "message.timeout.ms": 45000,  # outlives the crash + restart, so retries can land
            "queue.buffering.max.messages": 20000,
            "retry.backoff.ms": 100,
            "reconnect.backoff.ms": 100,
            "reconnect.backoff.max.ms": 1000,
        }))
        self.lock = threading.Lock()
        self.acked: list[tuple[int, int, bytes]] = []
        self.failed: list[str] = []
        self.sent = 0
        self.payload_bytes = 0
        self.stop_evt = threading.Event()
        self.remaining = None

    def _cb(self, err, msg):
        with self.lock:
            if err is None:
                self.acked.append((msg.partition(), msg.offset(), msg.value()))
            else:
                self.failed.append(str(err))

    @property
    def n_acked(self) -> int:
        with self.lock:
            return len(self.acked)

    def run(self):
        i = 0
        while not self.stop_evt.is_set():
            value = b"%09d:" % i + os.urandom(150).hex().encode()
            key = b"k%04d" % (i % 1000)
            while not self.stop_evt.is_set():
                try:
                    self.producer.produce(self.topic, key=key, value=value, partition=i % self.partitions,
                                          on_delivery=self._cb)
                    self.sent += 1
                    self.payload_bytes += len(key) + len(value)
                    break
                except BufferError:
                    self.producer.poll(0.05)
            self.producer.poll(0)
            i += 1
        self.remaining = self.producer.flush(60)

    def wait_acked(self, n: int, timeout: float, broker) -> None:
        deadline = time.monotonic() + timeout
        while self.n_acked < n:
            assert time.monotonic() < deadline, (
                f"only {self.n_acked}/{n} acked after {timeout}s (failed: {len(self.failed)} {self.failed[:3]})")
            assert broker.running, f"broker died:\n{broker.log()}"
            time.sleep(0.05)


def verify_acked(bootstrap: str, topic: str, partitions: int, acked):
    """Every acked (partition, offset, value) is read back at that offset; offsets are contiguous."""
    by_pos = {}
    for part, off, value in acked:
        prev = by_pos.setdefault((part, off), value)
        assert prev == value, f"offset {part}/{off} was acknowledged twice with different records"
    hw = high_watermarks(bootstrap, topic, partitions)
    for (part, off) in by_pos:
        assert off < hw[part][1], f"acked {part}/{off} is past the high watermark {hw[part]}"
    msgs = consume_all(bootstrap, topic, partitions, end_offsets={p: hi for p, (lo, hi) in hw.items()},
                       timeout=120)
    got = {}
    for m in msgs:
        got[(m.partition(), m.offset())] = m.value()
    for part in range(partitions):
        offs = sorted(o for (p, o) in got if p == part)
        assert offs == list(range(hw[part][1])), f"partition {part}: offsets read are not 0..{hw[part][1]}-1"
    missing = [(p, o) for (p, o) in by_pos if (p, o) not in got]
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {missing[:5]}"
    wrong = [(p, o) for (p, o), v in by_pos.items() if got[(p, o)] != v]
    assert not wrong, f"{len(wrong)} acknowledged offsets hold another record, e.g. {wrong[:5]}"
    return len(got)


def test_kill9_mid_stream_then_graceful(broker_factory, store):
    args = ["--object-target-bytes", "1MiB", "--flush-interval", "5s"]
    b = broker_factory(store=store, args=args)
    topic, partitions = "crash", 4
    create_topic(b.bootstrap, topic, partitions)
    t_start = time.monotonic()
    lifetimes = 1

    prod = BackgroundProducer(b.bootstrap, topic, partitions)
    prod.start()
    try:
        prod.wait_acked(15_000, timeout=90, broker=b)
        b.kill9()
        acked_at_kill = prod.n_acked
        time.sleep(0.5)
        b.restart()
        lifetimes += 1
        prod.wait_acked(acked_at_kill + 10_000, timeout=90, broker=b)
    finally:
        prod.stop_evt.set()
        prod.join(90)
    assert not prod.is_alive(), "producer thread did not finish"
    assert prod.remaining == 0, f"{prod.remaining} records still queued after flush"
    acked = list(prod.acked)
    print(f"[{store.kind}] sent {prod.sent}, acked {len(acked)} ({acked_at_kill} before kill -9), "
          f"failed {len(prod.failed)}")

    n_read = verify_acked(b.bootstrap, topic, partitions, acked)
    assert n_read >= len({(p, o) for p, o, _ in acked})

    # Graceful stop: the WAL is uploaded, objects are batched.
    b.stop()
    run_s = time.monotonic() - t_start
    wal = b.wal_files()
    wal_bytes = sum(s for _, s in wal)
    assert wal_bytes < prod.payload_bytes / 10, (
        f"after a graceful stop the WAL still holds {wal_bytes} bytes in {wal} "
        f"(produced {prod.payload_bytes} payload bytes)")

    objs = store.data_objects()
    stored = sum(s for _, s in objs)
    assert objs, f"no data objects in the {store.kind} store: {store.list_objects()[:20]}"
    basis = max(stored, prod.payload_bytes)
    bound = math.ceil(basis / TARGET_BYTES) + math.ceil(run_s / FLUSH_S) + 3 * lifetimes + 2
    min_batches = prod.sent // BATCH_MSGS
    print(f"[{store.kind}] {len(objs)} data objects, {stored} bytes stored, {prod.payload_bytes} payload bytes, "
          f"run {run_s:.1f}s, bound {bound}, >= {min_batches} produce batches")
    assert len(objs) <= bound, f"{len(objs)} objects for {basis} bytes: not batched by size (bound {bound})"
    assert len(objs) * 10 <= min_batches, f"{len(objs)} objects vs >= {min_batches} produce batches"

    # Everything is still there when served after a restart with an empty WAL.
    b.restart()
    assert verify_acked(b.bootstrap, topic, partitions, acked) == n_read
    b.stop()
