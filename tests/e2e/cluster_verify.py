"""Produce-and-verify helpers of the cluster tests: what was acknowledged must be in the log,
exactly once, in order.

- ``ProducerFleet``: producer threads (confluent-kafka, ``acks=all``, ``enable.idempotence=true``),
  keyed records with a per-key sequence number in the value; every ACKNOWLEDGED record (delivery
  callback without error) is recorded with the partition and offset the broker returned.
- ``read_log``: reads every partition of a topic from the beginning (``assign`` + earliest, no
  consumer group) up to the high watermarks queried first.
- ``check_log``: the pure check of a read log against the acknowledgements (unit-tested on
  synthetic data in test_cluster_harness.py); ``verify_topic`` = ``read_log`` + ``check_log``.

Record format (one place; ``encode_value`` / ``decode_value``):
  key   = b"p<producer>-k<key index:04d>"          (each key is produced by exactly one thread)
  value = key + b"|" + b"%010d" % seq + b"|" + padding   (seq = 0, 1, 2, ... per key)
Key j of a producer always goes to partition j % partitions (explicit partition), so every
partition gets traffic and a key never changes partition.

Guarantees checked (``Report.problems`` categories):
  lost              an acknowledged record is not in the log
  duplicate record  a produced record (acknowledged or not) is in the log more than once
  misplaced         an acknowledged record is not at the partition/offset its ack named
  order             two records of one key appear in the log with decreasing sequence numbers
  duplicate offset  one partition offset was read twice / offsets not strictly increasing
  offset gap        (contiguous=True) a partition's offsets are not log-start .. high-watermark-1
  short read        a partition was not read up to its high watermark
  beyond end        an acknowledged offset is at or past the partition's high watermark
  key partition     a key appears in two partitions / not in the partition the fleet chose
  foreign record    a record in the log that no producer of this run produced
  acked twice       the client acknowledged one record twice with different positions
Records whose delivery failed (or whose outcome is unknown) may be present or absent, but at
most once, and in order.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterable

from cirrus_e2e import client_conf, consumer_conf

VALUE_RE = re.compile(rb"^(p\d+-k\d{4})\|(\d{10})\|")


def make_key(producer: int, index: int) -> bytes:
    return b"p%d-k%04d" % (producer, index)


def encode_value(key: bytes, seq: int, pad: bytes = b"") -> bytes:
    return key + b"|" + b"%010d" % seq + b"|" + pad


def decode_value(value: bytes | None) -> tuple[bytes, int] | None:
    """(key, seq) of a value written by encode_value; None for anything else."""
    if not value:
        return None
    m = VALUE_RE.match(value)
    if not m:
        return None
    return m.group(1), int(m.group(2))


@dataclass(frozen=True)
class Ack:
    """An acknowledged record. offset < 0: the client did not learn the offset."""

    key: bytes
    seq: int
    partition: int
    offset: int
    at: float = 0.0  # time.monotonic() of the delivery callback


@dataclass(frozen=True)
class Read:
    """A record read back from the log."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


# ---------------------------------------------------------------------------------------
# The check (pure)
# ---------------------------------------------------------------------------------------


@dataclass
class Report:
    n_read: int = 0
    n_acked: int = 0
    n_failed: int = 0
    n_unacked_present: int = 0
    end_offsets: dict[int, int] = field(default_factory=dict)
    problems: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def add(self, category: str, detail: str) -> None:
        self.problems[category].append(detail)

    @property
    def ok(self) -> bool:
        return not any(self.problems.values())

    def summary(self, examples: int = 5) -> str:
        lines = [f"read {self.n_read} records, {self.n_acked} acknowledged, {self.n_failed} failed deliveries, "
                 f"{self.n_unacked_present} unacknowledged records present"]
        for cat, items in sorted(self.problems.items()):
            if items:
                lines.append(f"  {cat}: {len(items)}, e.g. " + "; ".join(items[:examples]))
        return "\n".join(lines)

    def assert_ok(self, context: str = "") -> None:
        if not self.ok:
            msg = "log verification failed:\n" + self.summary()
            if context:
                msg += "\n" + context
            raise AssertionError(msg)


def check_log(acked: Iterable[Ack], read: Iterable[Read], *,
              produced: set[tuple[bytes, int]] | None = None,
              failed: Iterable[tuple[bytes, int]] = (),
              end_offsets: dict[int, int] | None = None,
              start_offsets: dict[int, int] | None = None,
              key_partitions: Callable[[bytes], int | None] | None = None,
              contiguous: bool = True) -> Report:
    """Checks a log read back (``read``, in the order the consumer delivered it) against the
    acknowledgements. ``produced``: every (key, seq) handed to the client (None: no
    foreign-record check). ``end_offsets`` / ``start_offsets``: high watermark / log start per
    partition at read time (None: not checked). ``key_partitions(key)``: the partition the
    producer chose for a key (None: unknown)."""
    acked = list(acked)
    read = list(read)
    rep = Report(n_read=len(read), n_failed=len(list(failed)), end_offsets=dict(end_offsets or {}))

    # The acknowledgements themselves.
    ack_by_id: dict[tuple[bytes, int], Ack] = {}
    for a in acked:
        ident = (a.key, a.seq)
        prev = ack_by_id.get(ident)
        if prev is not None:
            if (prev.partition, prev.offset) != (a.partition, a.offset) and min(prev.offset, a.offset) >= 0:
                rep.add("acked twice", f"{a.key!r}#{a.seq} at {prev.partition}/{prev.offset} and {a.partition}/{a.offset}")
            continue
        ack_by_id[ident] = a
    rep.n_acked = len(ack_by_id)
    if end_offsets is not None:
        for a in ack_by_id.values():
            if a.offset >= 0 and a.partition in end_offsets and a.offset >= end_offsets[a.partition]:
                rep.add("beyond end", f"{a.key!r}#{a.seq} acked at {a.partition}/{a.offset}, "
                                      f"high watermark {end_offsets[a.partition]}")

    # Offsets per partition, in delivery order.
    by_part: dict[int, list[Read]] = defaultdict(list)
    for r in read:
        by_part[r.partition].append(r)
    at_pos: dict[tuple[int, int], Read] = {}
    for part, recs in sorted(by_part.items()):
        last = None
        for r in recs:
            if (part, r.offset) in at_pos:
                rep.add("duplicate offset", f"{part}/{r.offset} read twice")
                continue
            if last is not None and r.offset <= last:
                rep.add("duplicate offset", f"{part}: offset {r.offset} after {last}")
            at_pos[(part, r.offset)] = r
            last = r.offset if last is None else max(last, r.offset)
    parts = set(by_part) | set(end_offsets or {})
    for part in sorted(parts):
        offs = sorted({r.offset for r in by_part.get(part, [])})
        start = (start_offsets or {}).get(part, offs[0] if offs else 0)
        end = (end_offsets or {}).get(part)
        if end is not None and (offs[-1] + 1 if offs else start) < end:
            rep.add("short read", f"partition {part} read up to {offs[-1] if offs else None}, high watermark {end}")
        if contiguous and offs:
            want_end = offs[-1] + 1 if end is None else max(end, offs[-1] + 1)
            if offs != list(range(start, want_end)) or offs[0] != start:
                missing = sorted(set(range(start, want_end)) - set(offs))
                rep.add("offset gap", f"partition {part}: {len(offs)} offsets in {start}..{want_end - 1}, "
                                      f"missing e.g. {missing[:5]}")

    # Records: identity, duplicates, key placement, order per key.
    pos_of: dict[tuple[bytes, int], list[tuple[int, int]]] = defaultdict(list)
    key_part: dict[bytes, int] = {}
    per_key: dict[bytes, list[tuple[int, int]]] = defaultdict(list)  # key -> [(offset, seq)]
    for (part, off), r in sorted(at_pos.items()):
        dec = decode_value(r.value)
        if dec is None or (r.key is not None and r.key != dec[0]):
            rep.add("foreign record", f"{part}/{off}: key {r.key!r} value {(r.value or b'')[:40]!r}")
            continue
        key, seq = dec
        if produced is not None and (key, seq) not in produced:
            rep.add("foreign record", f"{part}/{off}: {key!r}#{seq} was never produced")
        pos_of[(key, seq)].append((part, off))
        if key_part.setdefault(key, part) != part:
            rep.add("key partition", f"{key!r} in partitions {key_part[key]} and {part}")
        if key_partitions is not None:
            want = key_partitions(key)
            if want is not None and want != part:
                rep.add("key partition", f"{key!r}#{seq} at {part}/{off}, produced to partition {want}")
        per_key[key].append((off, seq))
    for ident, positions in pos_of.items():
        if len(positions) > 1:
            rep.add("duplicate record", f"{ident[0]!r}#{ident[1]} at {positions}")
        if ident not in ack_by_id:
            rep.n_unacked_present += 1
    for key, items in per_key.items():
        items.sort()
        for (o1, s1), (o2, s2) in zip(items, items[1:]):
            if s2 <= s1:
                rep.add("order", f"{key!r}: seq {s1} at offset {o1} before seq {s2} at offset {o2}")

    # Every acknowledged record exactly where it was acknowledged.
    for ident, a in sorted(ack_by_id.items()):
        positions = pos_of.get(ident)
        if not positions:
            rep.add("lost", f"{a.key!r}#{a.seq} acked at {a.partition}/{a.offset}")
            continue
        if a.offset >= 0 and (a.partition, a.offset) not in positions:
            other = at_pos.get((a.partition, a.offset))
            held = decode_value(other.value) if other is not None else None
            rep.add("misplaced", f"{a.key!r}#{a.seq} acked at {a.partition}/{a.offset}, found at {positions}; "
                                 f"that offset holds {held}")
        elif a.offset < 0 and positions[0][0] != a.partition:
            rep.add("misplaced", f"{a.key!r}#{a.seq} acked in partition {a.partition}, found at {positions}")
    return rep


# ---------------------------------------------------------------------------------------
# Producers
# ---------------------------------------------------------------------------------------


def fleet_producer_conf(bootstrap: str, **extra) -> dict:
    conf = client_conf(
        bootstrap,
        **{
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.timeout.ms": 60000,
            "compression.type": "none",
            "queue.buffering.max.messages": 20000,
            "retry.backoff.ms": 100,
            "retry.backoff.max.ms": 1000,
            "reconnect.backoff.ms": 100,
            "reconnect.backoff.max.ms": 1000,
            "topic.metadata.refresh.interval.ms": 5000,
        },
    )
    conf.update(extra)
    return conf


class _ProducerThread(threading.Thread):
    def __init__(self, fleet: "ProducerFleet", index: int):
        super().__init__(daemon=True, name=f"fleet-producer-{index}")
        self.fleet, self.index = fleet, index
        self.keys = [make_key(fleet.producer_base + index, j)
                     for j in range(fleet.partitions * fleet.keys_per_partition)]
        self.next_seq = [0] * len(self.keys)
        self.sent = 0
        self.remaining_after_flush: int | None = None
        self.exc: BaseException | None = None

    def _on_delivery(self, err, msg) -> None:
        f = self.fleet
        dec = decode_value(msg.value())
        with f.lock:
            if dec is None:  # cannot happen: every value is encode_value's
                f.client_errors.append(f"delivery report for a foreign value {msg.value()[:40]!r}")
                return
            if err is None:
                f.acked.append(Ack(dec[0], dec[1], msg.partition(), msg.offset(), time.monotonic()))
            else:
                f.failed.append((dec[0], dec[1], str(err)))
                if err.fatal():
                    f.fatal.append(f"delivery: {err}")

    def _on_error(self, err) -> None:
        f = self.fleet
        with f.lock:
            if err.fatal():
                f.fatal.append(f"producer {self.index}: {err}")
            elif len(f.client_errors) < 200:
                f.client_errors.append(f"producer {self.index}: {err}")

    def run(self) -> None:
        from confluent_kafka import KafkaException, Producer

        f = self.fleet
        try:
            conf = fleet_producer_conf(f.bootstrap, **f.conf)
            conf["error_cb"] = self._on_error
            producer = Producer(conf)
            pad = os.urandom(max(0, f.value_bytes) // 2 + 1).hex().encode()[: max(0, f.value_bytes)]
            t0 = time.monotonic()
            j = 0
            while not f.stop_evt.is_set() and not f.fatal:
                if f.max_records is not None and self.sent >= f.max_records:
                    break
                if f.rate:
                    ahead = self.sent / f.rate - (time.monotonic() - t0)
                    if ahead > 0:
                        producer.poll(min(ahead, 0.05))
                        continue
                k = j % len(self.keys)
                key, seq = self.keys[k], self.next_seq[k]
                value = encode_value(key, seq, pad)
                try:
                    producer.produce(f.topic, key=key, value=value, partition=k % f.partitions,
                                     on_delivery=self._on_delivery)
                except BufferError:
                    producer.poll(0.05)
                    continue
                except KafkaException as e:
                    with f.lock:
                        f.fatal.append(f"produce() raised {e}")
                    break
                with f.lock:
                    f.produced.add((key, seq))
                self.next_seq[k] += 1
                self.sent += 1
                j += 1
                producer.poll(0)
            deadline = time.monotonic() + f.flush_timeout
            while True:  # flush in slices, so abort() cuts it short
                self.remaining_after_flush = producer.flush(1.0)
                if not self.remaining_after_flush or f.abort_evt.is_set() or time.monotonic() > deadline:
                    break
            if self.remaining_after_flush:
                # Outcome unknown: purge, so every record gets its (failed) delivery report.
                producer.purge()
                producer.flush(5)
        except BaseException as e:  # noqa: BLE001 - reported by the fleet
            self.exc = e


class ProducerFleet:
    """``producers`` threads producing to ``topic`` until stop() (or ``max_records`` each).

    ``rate``: records/s per thread (None: as fast as possible). Keys per thread:
    ``partitions * keys_per_partition``; key j goes to partition j % partitions. Threads are
    numbered from ``producer_base`` (give several fleets on one topic disjoint ranges).
    ``context``: called for extra text (broker log tails) in assertion messages."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, *, producers: int = 2,
                 keys_per_partition: int = 2, rate: float | None = 300.0, value_bytes: int = 100,
                 max_records: int | None = None, flush_timeout: float = 60.0, producer_base: int = 0,
                 conf: dict | None = None, context: Callable[[], str] | None = None):
        self.bootstrap, self.topic, self.partitions = bootstrap, topic, partitions
        self.keys_per_partition = keys_per_partition
        self.rate, self.value_bytes, self.max_records = rate, value_bytes, max_records
        self.flush_timeout = flush_timeout
        self.producer_base = producer_base
        self.conf = dict(conf or {})
        self.context = context
        self.lock = threading.Lock()
        self.stop_evt = threading.Event()
        self.abort_evt = threading.Event()
        self.acked: list[Ack] = []
        self.failed: list[tuple[bytes, int, str]] = []
        self.produced: set[tuple[bytes, int]] = set()
        self.fatal: list[str] = []
        self.client_errors: list[str] = []
        self.threads = [_ProducerThread(self, i) for i in range(producers)]
        self.started_at: float | None = None
        self.stopped = False

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> "ProducerFleet":
        self.started_at = time.monotonic()
        for t in self.threads:
            t.start()
        return self

    def stop(self, timeout: float | None = None) -> "ProducerFleet":
        """Stop producing, flush (bounded), join. Idempotent."""
        self.stop_evt.set()
        deadline = time.monotonic() + (timeout if timeout is not None else self.flush_timeout + 20)
        for t in self.threads:
            if t.ident is not None:
                t.join(max(0.1, deadline - time.monotonic()))
        alive = [t.name for t in self.threads if t.is_alive()]
        self.stopped = True
        assert not alive, f"producer threads did not finish: {alive}" + self._ctx()
        for t in self.threads:
            if t.exc is not None:
                raise AssertionError(f"{t.name} crashed: {t.exc!r}") from t.exc
        return self

    def abort(self, timeout: float = 15.0) -> None:
        """Failure path: stop without waiting for the flush; never raises."""
        self.abort_evt.set()
        self.stop_evt.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            if t.ident is not None:
                t.join(max(0.1, deadline - time.monotonic()))
        self.stopped = True

    def __enter__(self) -> "ProducerFleet":
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.stop()

    def join(self, timeout: float) -> "ProducerFleet":
        """For max_records fleets: wait until every thread produced and flushed."""
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.1, deadline - time.monotonic()))
        if any(t.is_alive() for t in self.threads):
            self.stop(timeout=30)
            raise AssertionError(f"producers not done after {timeout}s: {self.progress()}" + self._ctx())
        return self.stop(timeout=1)

    # -- state -------------------------------------------------------------------------
    def key_partition(self, key: bytes) -> int | None:
        m = re.match(rb"^p(\d+)-k(\d{4})$", key)
        if not m or not self.producer_base <= int(m.group(1)) < self.producer_base + len(self.threads):
            return None
        return int(m.group(2)) % self.partitions

    @property
    def n_acked(self) -> int:
        with self.lock:
            return len(self.acked)

    def acks_since(self, mark: int, partitions: Iterable[int] | None = None) -> Counter:
        """Acks per partition among acked[mark:] (mark = an earlier n_acked)."""
        with self.lock:
            tail = self.acked[mark:]
        wanted = None if partitions is None else set(partitions)
        return Counter(a.partition for a in tail if wanted is None or a.partition in wanted)

    def progress(self) -> str:
        with self.lock:
            return (f"sent {sum(t.sent for t in self.threads)}, acked {len(self.acked)}, "
                    f"failed {len(self.failed)} {[e for _, _, e in self.failed[:3]]}, fatal {self.fatal[:3]}, "
                    f"client errors {len(self.client_errors)} {self.client_errors[-3:]}")

    def _ctx(self) -> str:
        return ("\n" + self.context()) if self.context else ""

    def check_alive(self) -> None:
        assert not self.fatal, f"fatal producer error: {self.fatal[:3]}" + self._ctx()
        for t in self.threads:
            if t.exc is not None:
                raise AssertionError(f"{t.name} crashed: {t.exc!r}" + self._ctx())
        if not self.stop_evt.is_set() and self.max_records is None:
            dead = [t.name for t in self.threads if not t.is_alive()]
            assert not dead, f"producer threads exited early: {dead}; {self.progress()}" + self._ctx()

    def wait_acked(self, n: int, timeout: float, what: str = "") -> None:
        """Until at least n records in total are acknowledged."""
        deadline = time.monotonic() + timeout
        while self.n_acked < n:
            self.check_alive()
            assert time.monotonic() < deadline, (
                f"{what or 'produce'}: only {self.n_acked}/{n} acknowledged after {timeout}s; {self.progress()}"
                + self._ctx())
            time.sleep(0.05)

    def wait_progress(self, mark: int, per_partition: int, timeout: float,
                      partitions: Iterable[int] | None = None, what: str = "") -> None:
        """Until every partition (of ``partitions``, default all) has >= per_partition acks
        after ``mark`` (an earlier n_acked)."""
        parts = sorted(range(self.partitions) if partitions is None else set(partitions))
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            got = self.acks_since(mark, parts)
            short = {p: got[p] for p in parts if got[p] < per_partition}
            if not short:
                return
            assert time.monotonic() < deadline, (
                f"{what or 'produce'}: partitions without {per_partition} new acks after {timeout}s: {short}; "
                f"{self.progress()}" + self._ctx())
            time.sleep(0.05)

    def assert_clean(self, allow_failed: bool = False) -> None:
        """No fatal error; no failed delivery unless allowed; nothing left unflushed."""
        self.check_alive()
        if not allow_failed:
            assert not self.failed, (f"{len(self.failed)} deliveries failed, e.g. {self.failed[:3]}; "
                                     f"{self.progress()}" + self._ctx())
        left = [t.remaining_after_flush for t in self.threads if t.remaining_after_flush]
        if not allow_failed:
            assert not left, f"records still queued after flush: {left}" + self._ctx()


# ---------------------------------------------------------------------------------------
# Reading back
# ---------------------------------------------------------------------------------------


def watermarks(bootstrap: str, topic: str, partitions: int, timeout: float = 30.0) -> dict[int, tuple[int, int]]:
    """(low, high) per partition; retried per partition until ``timeout`` (ownership may be
    settling)."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    c = Consumer(consumer_conf(bootstrap))
    out: dict[int, tuple[int, int]] = {}
    deadline = time.monotonic() + timeout
    try:
        for p in range(partitions):
            while True:
                try:
                    out[p] = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
                    break
                except KafkaException as e:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"watermarks of {topic}/{p} unavailable after {timeout}s: {e}")
                    time.sleep(0.2)
    finally:
        c.close()
    return out


def read_log(bootstrap: str, topic: str, partitions: int, *, timeout: float = 60.0,
             end_offsets: dict[int, int] | None = None) -> tuple[list[Read], dict[int, tuple[int, int]]]:
    """Every record of every partition from the beginning up to the high watermark (queried
    first). Returns (records in delivery order, {partition: (low, high)})."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

    wm = watermarks(bootstrap, topic, partitions)
    if end_offsets is not None:
        wm = {p: (lo, end_offsets.get(p, hi)) for p, (lo, hi) in wm.items()}
    c = Consumer(consumer_conf(bootstrap, **{"fetch.wait.max.ms": 100, "topic.metadata.refresh.interval.ms": 2000}))
    out: list[Read] = []
    next_off = {p: lo for p, (lo, _) in wm.items()}
    transient: list[str] = []
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        deadline = time.monotonic() + timeout
        while any(next_off[p] < wm[p][1] for p in wm):
            if time.monotonic() > deadline:
                behind = {p: (next_off[p], wm[p][1]) for p in wm if next_off[p] < wm[p][1]}
                raise AssertionError(f"read_log({topic}): not at the high watermarks after {timeout}s; "
                                     f"(next, high) of lagging partitions: {dict(list(behind.items())[:10])}; "
                                     f"transient errors: {transient[-5:]}")
            for m in c.consume(num_messages=5000, timeout=0.5):
                err = m.error()
                if err is not None:
                    if err.fatal() or err.code() == KafkaError.OFFSET_OUT_OF_RANGE or not (
                            err.retriable() or err.code() in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
                                                              KafkaError._PARTITION_EOF)):
                        raise KafkaException(err)
                    transient.append(str(err))
                    continue
                out.append(Read(m.partition(), m.offset(), m.key(), m.value()))
                next_off[m.partition()] = max(next_off[m.partition()], m.offset() + 1)
    finally:
        c.close()
    return out, wm


def verify_topic(bootstrap: str, topic: str, partitions: int, fleets: Iterable[ProducerFleet], *,
                 timeout: float = 60.0, contiguous: bool = True, context: Callable[[], str] | None = None) -> Report:
    """Reads the whole topic back and checks it against the fleets' acknowledgements (the
    fleets must be stopped: their acks are final). Raises AssertionError with a summary."""
    fleets = list(fleets)
    assert all(f.stopped for f in fleets), "stop() the fleets before verifying"
    acked = [a for f in fleets for a in f.acked]
    produced = set().union(*(f.produced for f in fleets)) if fleets else set()
    failed = [(k, s) for f in fleets for k, s, _ in f.failed]

    def key_partitions(key: bytes) -> int | None:
        for f in fleets:
            p = f.key_partition(key)
            if p is not None:
                return p
        return None

    t0 = time.monotonic()
    read, wm = read_log(bootstrap, topic, partitions, timeout=timeout)
    rep = check_log(acked, read, produced=produced, failed=failed,
                    end_offsets={p: hi for p, (_, hi) in wm.items()},
                    start_offsets={p: lo for p, (lo, _) in wm.items()},
                    key_partitions=key_partitions, contiguous=contiguous)
    print(f"verify {topic}: {rep.summary().splitlines()[0]} (read in {time.monotonic() - t0:.1f}s)")
    rep.assert_ok(context() if context else "")
    return rep
