"""Consumer groups end to end with real clients, confluent-kafka (librdkafka) and kafka-python:

- members sharing 12 partitions without overlap while the group grows 2 -> 3, one member
  leaves cleanly, one is SIGKILLed (its session times out) and one joins; every record is
  consumed, each new owner of a partition resumes at the committed offset, and records are
  consumed twice only at or after the last commit (single node; the classic protocol with
  both libraries, eager and cooperative-sticky, and KIP-848's consumer protocol);
- committed offsets resume a new consumer exactly where the group stopped (both libraries);
- in a 3-broker cluster, kill -9 of the group coordinator's broker mid-run: the group moves to
  another coordinator and recovers, committed offsets are intact (classic and KIP-848).

Members run in subprocesses (tests/e2e/group_worker.py) so they can be SIGKILLed; each logs its
assignments, consumed records and commits as JSON lines, which the checks below replay.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

from cirrus_e2e import client_conf, create_topic, kafka_request, producer_conf, recv_frame, split_hostport

HERE = Path(__file__).resolve().parent
WORKER = HERE / "group_worker.py"
PARTS = 12
LIBS = ["confluent", "kafka-python"]
# Broker flags: a short first-rebalance delay keeps the tests quick; the consumer protocol's
# session (a broker setting in KIP-848) is as short as the classic members' 6 s.
BROKER_ARGS = ["--group-initial-rebalance-delay", "500ms", "--group-consumer-session-timeout", "6s",
               "--group-consumer-heartbeat-interval", "1s"]


# ---------------------------------------------------------------------------------------
# Members in subprocesses
# ---------------------------------------------------------------------------------------


class Worker:
    """One group member process (group_worker.py) and its event log."""

    def __init__(self, tmp: Path, name: str, lib: str, bootstrap: str, group: str, topic: str,
                 session_ms: int = 6000, commit_every: int = 1, protocol: str = "eager"):
        self.name = name
        self.log_path = tmp / f"{name}.jsonl"
        self.out_path = tmp / f"{name}.out"
        cmd = [sys.executable, str(WORKER), "--lib", lib, "--bootstrap", bootstrap, "--group", group,
               "--topic", topic, "--log", str(self.log_path), "--name", name, "--session-ms", str(session_ms),
               "--commit-every", str(commit_every), "--protocol", protocol]
        with open(self.out_path, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, cwd=HERE)

    def events(self) -> list[dict]:
        if not self.log_path.exists():
            return []
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                break  # a line being written
            ev["w"] = self.name
            out.append(ev)
        return out

    def assignment(self) -> set[int] | None:
        """The current assignment (None while it has none: before the first, after a revoke)."""
        current = None
        for ev in self.events():
            if ev["ev"] == "assign":
                current = (current or set()) | set(ev["parts"]) if ev.get("incremental") else set(ev["parts"])
            elif ev["ev"] == "revoke" and ev.get("incremental"):
                current = (current or set()) - set(ev["parts"])
            elif ev["ev"] in ("revoke", "closed"):
                current = None
        return current or None

    def consumed(self) -> int:
        return sum(len(ev["recs"]) for ev in self.events() if ev["ev"] == "msgs")

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def term(self, timeout: float = 30.0) -> None:
        """SIGTERM: the member closes its consumer (leaves the group) and exits."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} did not exit within {timeout}s of SIGTERM\n{self.diagnostics()}")
        assert any(ev["ev"] == "closed" for ev in self.events()), f"{self.name} did not close\n{self.diagnostics()}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)

    def diagnostics(self) -> str:
        out = self.out_path.read_text(errors="replace")[-3000:] if self.out_path.exists() else ""
        evs = [e for e in self.events() if e["ev"] != "msgs"][-15:]
        return f"--- {self.name} (rc={self.proc.poll()}) stdout ---\n{out}\n--- last events ---\n" + \
            "\n".join(json.dumps(e) for e in evs)


@pytest.fixture
def workers(tmp_path):
    """Factory of Worker processes; every one is SIGKILLed at teardown."""
    made: list[Worker] = []

    def make(name: str, *args, **kw) -> Worker:
        w = Worker(tmp_path, name, *args, **kw)
        made.append(w)
        return w

    try:
        yield make
    finally:
        for w in made:
            w.kill()


def wait_until(what: str, pred, timeout: float, context=lambda: "", interval: float = 0.2):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        ok, last = pred()
        if ok:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last}\n{context()}")


def wait_shared(members: list[Worker], timeout: float = 60.0, context=lambda: "") -> dict[str, set[int]]:
    """Until `members` hold disjoint assignments covering all PARTS partitions and each has
    consumed since; returns them."""
    def probe():
        assigned = {w.name: w.assignment() for w in members}
        if any(a is None for a in assigned.values()):
            return False, assigned
        union = set().union(*assigned.values())
        disjoint = sum(len(a) for a in assigned.values()) == len(union)
        return disjoint and union == set(range(PARTS)), assigned

    assigned = wait_until(f"{[w.name for w in members]} to share {PARTS} partitions", probe, timeout,
                          lambda: context() + "\n".join(w.diagnostics() for w in members))
    for w in members:
        assert w.running, w.diagnostics()
    return assigned


# ---------------------------------------------------------------------------------------
# Producer and checks
# ---------------------------------------------------------------------------------------


class Feeder:
    """Produces to every partition round robin from a thread until stopped; records acks."""

    def __init__(self, bootstrap: str, topic: str, rate: float = 200.0):
        from confluent_kafka import Producer

        self.topic, self.rate = topic, rate
        self.producer = Producer(producer_conf(bootstrap, **{"linger.ms": 5}))
        self.acked: set[tuple[int, int]] = set()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.sent = 0

    def _on_delivery(self, err, msg):
        if err is not None:
            self.errors.append(str(err))
        else:
            self.acked.add((msg.partition(), msg.offset()))

    def _run(self):
        i = 0
        while not self._stop.is_set():
            try:
                self.producer.produce(self.topic, value=b"v%d" % i, partition=i % PARTS, on_delivery=self._on_delivery)
                i += 1
            except BufferError:
                pass
            self.producer.poll(0)
            time.sleep(1.0 / self.rate)
        self.sent = i

    def start(self) -> "Feeder":
        self._thread.start()
        return self

    def stop(self, timeout: float = 60.0) -> None:
        self._stop.set()
        self._thread.join(10)
        remaining = self.producer.flush(timeout)
        assert remaining == 0, f"{remaining} records not delivered within {timeout}s"
        assert not self.errors, f"delivery errors: {self.errors[:5]}"
        assert len(self.acked) == self.sent, (len(self.acked), self.sent)


def consumed_set(members: list[Worker]) -> set[tuple[int, int]]:
    return {(p, o) for w in members for ev in w.events() if ev["ev"] == "msgs" for p, o in ev["recs"]}


def check_group_log(members: list[Worker], acked: set[tuple[int, int]]) -> dict:
    """Replays every member's events in time order and checks:
    - every acknowledged record was consumed;
    - whenever a member starts consuming a partition after an assignment, it starts at the
      group's committed offset: at least the last confirmed commit, at most the last attempted
      one (a killed member may have died between its commit and its log line); a member that
      kept the partition through the rebalance may also go on where it was (kafka-python
      keeps the position of retained partitions);
    - a record consumed again is at or after the partition's last confirmed commit."""
    events = sorted((ev for w in members for ev in w.events()), key=lambda e: e["t"])
    confirmed: dict[int, int] = defaultdict(int)
    attempted: dict[int, int] = defaultdict(int)
    pending: dict[str, set[int]] = defaultdict(set)
    held: dict[str, set[int]] = defaultdict(set)
    retained: dict[str, set[int]] = defaultdict(set)
    last: dict[tuple[str, int], int] = {}
    seen: dict[tuple[int, int], int] = defaultdict(int)
    spans = 0
    duplicates = 0
    for ev in events:
        kind, w = ev["ev"], ev["w"]
        if kind == "assign" and ev.get("incremental"):
            # Only the added partitions: each starts at the committed offset.
            pending[w] |= set(ev["parts"])
            retained[w] -= set(ev["parts"])
            held[w] |= set(ev["parts"])
        elif kind == "revoke" and ev.get("incremental"):
            pending[w] -= set(ev["parts"])
            held[w] -= set(ev["parts"])
        elif kind == "assign":
            pending[w] = set(ev["parts"])
            retained[w] = pending[w] & held[w]
            held[w] = set(ev["parts"])
        elif kind == "commit_try":
            for p, o in ev["offs"].items():
                attempted[int(p)] = max(attempted[int(p)], o)
        elif kind == "commit_ok":
            for p, o in ev["offs"].items():
                confirmed[int(p)] = max(confirmed[int(p)], o)
        elif kind == "msgs":
            for p, o in ev["recs"]:
                if p in pending[w]:
                    pending[w].discard(p)
                    spans += 1
                    lo, hi = confirmed[p], max(attempted[p], confirmed[p])
                    went_on = p in retained[w] and last.get((w, p), -2) + 1 == o
                    assert lo <= o <= hi or went_on, (
                        f"{w} started partition {p} at offset {o}; the committed offset was "
                        f"{lo} (last attempted {hi}), its own last offset {last.get((w, p))}")
                last[(w, p)] = o
                if seen[(p, o)]:
                    duplicates += 1
                    assert o >= confirmed[p], (
                        f"{w} consumed {p}/{o} again, before the partition's last commit {confirmed[p]}")
                seen[(p, o)] += 1
    missing = acked - set(seen)
    assert not missing, f"{len(missing)} acknowledged records never consumed, e.g. {sorted(missing)[:10]}"
    return {"records": len(acked), "consumed": sum(seen.values()), "duplicates": duplicates, "spans": spans}


def wait_all_consumed(members: list[Worker], acked: set[tuple[int, int]], timeout: float = 60.0):
    def probe():
        missing = acked - consumed_set(members)
        return not missing, f"{len(missing)} missing, e.g. {sorted(missing)[:5]}"

    wait_until("every acknowledged record to be consumed", probe, timeout,
               lambda: "\n".join(w.diagnostics() for w in members))


def wait_progress(w: Worker, more: int = 20, timeout: float = 30.0) -> None:
    start = w.consumed()
    wait_until(f"{w.name} to consume {more} more records", lambda: (w.consumed() >= start + more, w.consumed()),
               timeout, w.diagnostics)


# ---------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------


# (client library, group protocol): the classic protocol eager (both libraries) and
# cooperative-sticky (incremental), and KIP-848's consumer protocol (server-side assignment).
MODES = [("confluent", "eager"), ("kafka-python", "eager"), ("confluent", "cooperative"),
         ("confluent", "consumer")]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("lib,protocol", MODES, ids=[f"{lib}-{p}" for lib, p in MODES])
def test_members_share_partitions_through_join_leave_and_kill(broker_factory, workers, lib, protocol):
    b = broker_factory(args=BROKER_ARGS)
    topic, group = f"shared-{lib}-{protocol}", f"group-{lib}-{protocol}"
    create_topic(b.bootstrap, topic, PARTS)
    feeder = Feeder(b.bootstrap, topic).start()
    mk = lambda name, **kw: workers(name, lib, b.bootstrap, group, topic, protocol=protocol, **kw)  # noqa: E731

    # w2 commits every 4th batch only: when it is killed, what it consumed since its last
    # commit is consumed again by the next owners.
    w1, w2 = mk("w1"), mk("w2", commit_every=4)
    shares = wait_shared([w1, w2], context=b.log)
    print(f"[{lib}/{protocol}] 2 members: {shares}")
    wait_progress(w1)
    wait_progress(w2)

    w3 = mk("w3")
    shares = wait_shared([w1, w2, w3], context=b.log)
    print(f"[{lib}/{protocol}] 3 members: {shares}")
    assert all(len(s) == 4 for s in shares.values()), shares
    wait_progress(w3)

    w1.term()  # leaves the group cleanly
    shares = wait_shared([w2, w3], context=b.log)
    print(f"[{lib}/{protocol}] after w1 left: {shares}")
    wait_progress(w2)

    t_kill = time.monotonic()
    w2.kill()  # its session (6 s) must time out
    shares = wait_shared([w3], timeout=45, context=b.log)
    print(f"[{lib}/{protocol}] w2 evicted {time.monotonic() - t_kill:.1f}s after SIGKILL: {shares}")
    # Session 6 s, heartbeats every 1 s: not before 5 s after the kill.
    assert time.monotonic() - t_kill >= 4.5, "the killed member was evicted before its session timeout"

    w4 = mk("w4")
    shares = wait_shared([w3, w4], context=b.log)
    print(f"[{lib}/{protocol}] after w4 joined: {shares}")
    wait_progress(w4)

    feeder.stop()
    members = [w1, w2, w3, w4]
    wait_all_consumed(members, feeder.acked)
    w3.term()
    w4.term()
    stats = check_group_log(members, feeder.acked)
    print(f"[{lib}/{protocol}] {stats}")
    # Partition handovers checked: eager moves everything at every rebalance; incremental
    # protocols keep what stays (sticky), so fewer partitions change hands.
    assert stats["spans"] >= (PARTS * 3 if protocol == "eager" else PARTS * 2), stats


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    from confluent_kafka import Producer

    p = Producer(producer_conf(bootstrap))
    for v in values:
        p.produce(topic, value=v, partition=0)
    assert p.flush(30) == 0


def _read_confluent(bootstrap: str, topic: str, group: str, expect: int, commit: bool) -> list[int]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(client_conf(bootstrap, **{"group.id": group, "enable.auto.commit": False,
                                           "auto.offset.reset": "earliest", "session.timeout.ms": 6000}))
    offsets: list[int] = []
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + 30
        while len(offsets) < expect and time.monotonic() < deadline:
            for m in c.consume(num_messages=100, timeout=0.5):
                assert not m.error(), m.error()
                offsets.append(m.offset())
        # Nothing beyond what is expected shows up.
        extra_until = time.monotonic() + 2
        while time.monotonic() < extra_until:
            for m in c.consume(num_messages=100, timeout=0.5):
                offsets.append(m.offset())
        if commit and offsets:
            c.commit(offsets=[TopicPartition(topic, 0, max(offsets) + 1)], asynchronous=False)
            committed = c.committed([TopicPartition(topic, 0)], timeout=10)
            assert committed[0].offset == max(offsets) + 1, committed
    finally:
        c.close()
    return offsets


def _read_kafka_python(bootstrap: str, topic: str, group: str, expect: int, commit: bool) -> list[int]:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                      auto_offset_reset="earliest", session_timeout_ms=6000, heartbeat_interval_ms=1000)
    offsets: list[int] = []
    try:
        c.subscribe(topics=[topic])
        deadline = time.monotonic() + 30
        while len(offsets) < expect and time.monotonic() < deadline:
            for records in c.poll(timeout_ms=500).values():
                offsets.extend(r.offset for r in records)
        extra_until = time.monotonic() + 2
        while time.monotonic() < extra_until:
            for records in c.poll(timeout_ms=500).values():
                offsets.extend(r.offset for r in records)
        if commit and offsets:
            tp = TopicPartition(topic, 0)
            c.commit({tp: OffsetAndMetadata(max(offsets) + 1, "", -1)})
            assert c.committed(tp) == max(offsets) + 1
    finally:
        c.close(autocommit=False)
    return offsets


@pytest.mark.timeout(180)
@pytest.mark.parametrize("lib", LIBS)
def test_committed_offsets_resume_a_new_consumer(broker_factory, lib):
    b = broker_factory(args=BROKER_ARGS)
    topic, group = f"resume-{lib}", f"resume-group-{lib}"
    create_topic(b.bootstrap, topic, 1)
    read = _read_confluent if lib == "confluent" else _read_kafka_python
    _produce(b.bootstrap, topic, [b"a%d" % i for i in range(5)])
    assert read(b.bootstrap, topic, group, 5, commit=True) == [0, 1, 2, 3, 4]
    _produce(b.bootstrap, topic, [b"b%d" % i for i in range(3)])
    assert read(b.bootstrap, topic, group, 3, commit=False) == [5, 6, 7]


def find_coordinator(bootstrap: str, group: str, timeout: float = 5.0) -> tuple[int, int]:
    """Raw FindCoordinator v0 to one broker: (error code, coordinator node id)."""
    g = group.encode()
    body = struct.pack(">h", len(g)) + g
    with socket.create_connection(split_hostport(bootstrap), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(kafka_request(10, 0, 4242, body))
        frame = recv_frame(s)
    corr, err, node = struct.unpack(">ihi", frame[:10])
    assert corr == 4242
    return err, node


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(client_conf(bootstrap, **{"group.id": group, "enable.auto.commit": False}))
    try:
        parts = c.committed([TopicPartition(topic, p) for p in range(PARTS)], timeout=20)
        return {tp.partition: tp.offset for tp in parts}
    finally:
        c.close()


@pytest.mark.cluster
@pytest.mark.s3
@pytest.mark.timeout(300)
@pytest.mark.parametrize("protocol", ["eager", "consumer"])
def test_coordinator_broker_killed_group_recovers(cluster, workers, protocol):
    c = cluster(3, extra_args=BROKER_ARGS)
    topic, group = f"coord-kill-{protocol}", f"coord-kill-group-{protocol}"
    # durability=object: the dead broker's data partitions fail over too.
    c.create_topic(topic, PARTS, config={"cirrus.durability": "object"})
    bootstrap = c.bootstrap()
    feeder = Feeder(bootstrap, topic, rate=150).start()
    w1 = workers("w1", "confluent", bootstrap, group, topic, protocol=protocol)
    w2 = workers("w2", "confluent", bootstrap, group, topic, protocol=protocol)
    wait_shared([w1, w2], context=c.diagnostics)
    wait_progress(w1)
    wait_progress(w2)

    err, coordinator = find_coordinator(c.broker(0).bootstrap, group)
    assert err == 0 and coordinator in (0, 1, 2), (err, coordinator)
    before = wait_until("a commit on every partition",
                        lambda: (lambda o: (all(v > 0 for v in o.values()), o))(
                            committed_offsets(bootstrap, group, topic)), 30, c.diagnostics)
    victim = c.broker(coordinator)
    survivors = [b for b in c.brokers if b is not victim]
    victim.kill9()
    t_kill = time.monotonic()
    print(f"killed coordinator broker {coordinator}; committed before: {before}")

    # Another broker becomes the coordinator.
    def moved():
        try:
            e, node = find_coordinator(survivors[0].bootstrap, group)
        except OSError as ex:
            return False, repr(ex)
        return e == 0 and node != coordinator and node in {b.broker_id for b in survivors}, (e, node)

    _, new_coordinator = wait_until("a new coordinator", moved, c.ttl_s + 30, c.diagnostics)
    t_moved = time.monotonic()
    print(f"coordinator moved to broker {new_coordinator} {t_moved - t_kill:.1f}s after kill -9")

    # The group recovers: both members commit through the new coordinator and share all
    # partitions again (commits need the coordinator; fetching alone does not).
    def committing_again():
        ok = {w.name: any(ev["ev"] == "commit_ok" and ev["t"] > t_moved for ev in w.events()) for w in (w1, w2)}
        return all(ok.values()), ok

    wait_until("both members to commit through the new coordinator", committing_again, 60,
               lambda: c.diagnostics() + w1.diagnostics() + w2.diagnostics())
    wait_shared([w1, w2], timeout=60, context=c.diagnostics)
    rebalances = {w.name: sum(1 for ev in w.events() if ev["ev"] == "assign" and ev["t"] > t_kill) for w in (w1, w2)}
    print(f"group committing again {time.monotonic() - t_kill:.1f}s after kill -9; assignments since: {rebalances}")
    after = committed_offsets(survivors[0].bootstrap, group, topic)
    for p, o in before.items():
        assert after[p] >= o, f"partition {p}: committed offset went back from {o} to {after[p]}"

    feeder.stop()
    members = [w1, w2]
    wait_all_consumed(members, feeder.acked, timeout=90)
    w1.term()
    w2.term()
    stats = check_group_log(members, feeder.acked)
    print(f"stats: {stats}")
