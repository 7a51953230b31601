"""Cluster-mode harness: a real etcd, the shared SeaweedFS S3 server and N ``cirrus`` brokers
(the release binary) with ``--etcd-endpoints``, as docs/spec "cluster mode" defines them.

Fixture (conftest.py): ``cluster(n=3, **options) -> Cluster`` (a ``ClusterFactory``); every
process it started is SIGKILLed at teardown (process groups), etcd last. Options:

    session_ttl="3s", flush_interval="100ms", durability=None ("local"|"object": --durability),
    unclean_failover=None / auto_rebalance=None (bool: --unclean-failover / --auto-rebalance,
    None = the broker's default), extra_args=[...], env={...}, start=True,
    binary=/launcher= (the self-check points these at a fake broker), admin_binary=

Per broker (``ClusterBroker``, a conftest ``Broker``): ``broker_id``, ``bootstrap`` (Kafka),
``admin_addr``, ``data_dir``; ``start()``, ``stop()`` (SIGTERM, wait, exit 0), ``kill9()``,
``sigstop()`` / ``sigcont()``, ``restart()`` (same id, ports and data dir),
``admin(*args) -> AdminResult(rc, stdout, stderr)``, ``metadata()`` (raw Kafka Metadata v1 of
THAT broker), ``metrics()``.

Per cluster (``Cluster``): ``brokers``, ``broker(id)``, ``live()`` (running and not stopped),
``bootstrap()``, ``admin(*args)`` (through a live broker), ``create_topic(name, n, config)``,
``leaders(topic)``, ``wait_brokers(ids)``, ``wait_online(topic, n, owners=)``,
``wait_leaders(topic, n, pred, what)``, ``wait_admin_cluster(ids, offline=0)``, ``admin_brokers()`` / ``admin_partitions(topic)`` /
``admin_controller()`` (parsed ``cirrus admin cluster`` / ``topics describe``), ``diagnostics()``
(log tails for assertion messages), ``close()``.

Every wait is bounded and its AssertionError carries the brokers' log tails. Processes are
started with ``setpriv --pdeathsig KILL`` (main thread only), so even a hard pytest timeout
leaves no broker behind.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, NamedTuple

import pytest

from cirrus_e2e import free_port, kafka_request, recv_frame, split_hostport
from conftest import (Broker, Etcd, SeaweedFS, Store, _kill_group, cirrus_binary, parent_death_prefix, s3_store,
                      start_etcd, tail, unique_prefix)

DEFAULT_SESSION_TTL = "3s"
DEFAULT_FLUSH_INTERVAL = "100ms"


def parse_duration_s(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*", text)
    if not m:
        raise ValueError(f"bad duration {text!r}")
    v = float(m.group(1))
    return {"ms": v / 1000, "s": v, None: v, "m": v * 60}[m.group(2)]


# ---------------------------------------------------------------------------------------
# Raw Kafka Metadata v1 (answers of ONE broker, no client-side caching or routing)
# ---------------------------------------------------------------------------------------


@dataclass
class PartitionMeta:
    error: int
    leader: int
    replicas: list[int]
    isr: list[int]


@dataclass
class TopicMeta:
    error: int
    partitions: dict[int, PartitionMeta]


@dataclass
class MetadataView:
    brokers: dict[int, tuple[str, int]]
    controller_id: int
    topics: dict[str, TopicMeta]

    def leaders(self, topic: str) -> dict[int, int]:
        t = self.topics.get(topic)
        return {} if t is None else {p: pm.leader for p, pm in t.partitions.items()}


class _Reader:
    def __init__(self, buf: bytes, pos: int = 0):
        self.buf, self.pos = buf, pos

    def _take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise ValueError(f"metadata response truncated at byte {self.pos}")
        vals = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return vals[0]

    def i8(self) -> int:
        return self._take(">b")

    def i16(self) -> int:
        return self._take(">h")

    def i32(self) -> int:
        return self._take(">i")

    def string(self) -> str | None:
        n = self.i16()
        if n < 0:
            return None
        if self.pos + n > len(self.buf):
            raise ValueError("metadata response truncated in a string")
        s = self.buf[self.pos:self.pos + n].decode()
        self.pos += n
        return s

    def array(self, item: Callable[[], object]) -> list:
        n = self.i32()
        return [] if n < 0 else [item() for _ in range(n)]


def encode_metadata_request_v1(correlation_id: int, topics: list[str] | None = None) -> bytes:
    """Metadata v1 request; topics None = all topics (null array)."""
    if topics is None:
        body = struct.pack(">i", -1)
    else:
        body = struct.pack(">i", len(topics)) + b"".join(
            struct.pack(">h", len(t.encode())) + t.encode() for t in topics)
    return kafka_request(3, 1, correlation_id, body)


def decode_metadata_response_v1(frame: bytes, correlation_id: int | None = None) -> MetadataView:
    r = _Reader(frame)
    corr = r.i32()
    if correlation_id is not None and corr != correlation_id:
        raise ValueError(f"Metadata: correlation id {corr} != {correlation_id}")

    def broker():
        node, host, port = r.i32(), r.string(), r.i32()
        r.string()  # rack
        return node, (host, port)

    brokers = dict(r.array(broker))
    controller = r.i32()

    def partition():
        err, idx, leader = r.i16(), r.i32(), r.i32()
        replicas, isr = r.array(r.i32), r.array(r.i32)
        return idx, PartitionMeta(err, leader, replicas, isr)

    def topic():
        err, name = r.i16(), r.string()
        r.i8()  # is_internal
        return name, TopicMeta(err, dict(r.array(partition)))

    topics = dict(r.array(topic))
    return MetadataView(brokers=brokers, controller_id=controller, topics=topics)


_corr = iter(range(1, 1 << 30))
_corr_lock = threading.Lock()


def fetch_metadata(bootstrap: str, topics: list[str] | None = None, timeout: float = 5.0) -> MetadataView:
    """One Metadata v1 round trip to exactly this broker."""
    with _corr_lock:
        corr = next(_corr)
    with socket.create_connection(split_hostport(bootstrap), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(encode_metadata_request_v1(corr, topics))
        return decode_metadata_response_v1(recv_frame(s), corr)


# ---------------------------------------------------------------------------------------
# `cirrus admin` output (tables)
# ---------------------------------------------------------------------------------------


class AdminResult(NamedTuple):
    rc: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"rc={self.rc}\n--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"


def _norm(h: str) -> str:
    return re.sub(r"[^a-z0-9/]+", "_", h.lower()).strip("_")


def _tokens(line: str, wide: bool) -> list[tuple[int, int, str]]:
    """(start, end, text) of the cells of a line: separated by 2+ spaces (wide) or by any space."""
    pattern = r"\S+(?: \S+)*" if wide else r"\S+"
    return [(m.start(), m.end(), m.group()) for m in re.finditer(pattern, line)]


def parse_table(text: str, required: Iterable[Iterable[str]]) -> list[dict[str, str]]:
    """Rows of the first aligned table in ``text`` whose header has, for every entry of
    ``required``, one of its aliases (names normalized: lower case, other chars -> "_", so
    "MOVING TO" -> "moving_to"). Returns dicts keyed by the normalized header names.

    Cells are separated by 2+ spaces (as `cirrus admin` renders: multi-word headers such as
    "MOVING TO" and values such as "1.5 KiB/s" stay whole); if no header matches that way,
    by single spaces. Each data cell goes to the header column it overlaps most (works for
    left- and right-aligned columns). Borders made of | + - = are ignored; the table ends at
    the first blank line after its rows. Raises ValueError."""
    required = [tuple(_norm(a) for a in alts) for alts in required]
    lines = [re.sub(r"[|│┃]", " ", ln.rstrip("\n")) for ln in text.splitlines()]
    for wide in (True, False):
        for hi, line in enumerate(lines):
            heads = [(a, b, _norm(t)) for a, b, t in _tokens(line, wide)]
            names = {h for _, _, h in heads}
            if not heads or not all(any(a in names for a in alts) for alts in required):
                continue
            seen: Counter = Counter()
            for i, (hs, he, h) in enumerate(heads):  # repeated names: b/s, b/s_2
                seen[h] += 1
                if seen[h] > 1:
                    heads[i] = (hs, he, f"{h}_{seen[h]}")
            return _table_rows(lines[hi + 1:], heads, wide)
    raise ValueError(f"no table with columns {required} in:\n{text}")


def _table_rows(lines: list[str], heads: list[tuple[int, int, str]], wide: bool) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for ln in lines:
        if not ln.strip():
            if rows:
                break
            continue
        if re.fullmatch(r"[\s\-=+─━┼┿╋]*", ln):
            continue
        toks = _tokens(ln, wide)

        def overlap(tok, h):
            return min(tok[1], h[1]) - max(tok[0], h[0])

        if len(toks) == len(heads) and any(all(overlap(t, h) <= 0 for h in heads) for t in toks):
            row = {h: t for (_, _, h), (_, _, t) in zip(heads, toks)}  # not aligned: by position
        else:
            row = {}
            for tok in toks:
                best = max(heads, key=lambda h: (overlap(tok, h), -abs((tok[0] + tok[1]) - (h[0] + h[1]))))
                row[best[2]] = (row[best[2]] + " " + tok[2]) if best[2] in row else tok[2]
        rows.append(row)
    return rows


def col(row: dict[str, str], *aliases: str) -> str | None:
    for a in aliases:
        a = _norm(a)
        if a in row:
            return row[a]
    return None


TRUE_WORDS = {"yes", "true", "y", "1", "live", "alive", "up", "online", "draining", "✓", "✔", "x", "*"}


def truthy(v: str | None) -> bool:
    return v is not None and v.strip().lower() in TRUE_WORDS


def to_int(v: str | None) -> int | None:
    if v is None:
        return None
    m = re.fullmatch(r"\s*(-?\d+)\s*", v)
    return int(m.group(1)) if m else None


BROKER_ID = ("id", "broker", "broker_id", "node", "node_id")
ADDRESS = ("address", "addr", "host", "kafka", "endpoint")
LIVE = ("live", "alive", "status", "state")
DRAINING = ("draining", "drain", "drained")
PARTITIONS = ("partitions", "parts", "owned", "partition_count")
PART_INDEX = ("partition", "index", "p", "part")
OWNER = ("owner", "broker", "leader")
ONLINE = ("online", "status", "state", "available")
MOVING_TO = ("moving_to", "moving", "moving_to_broker", "target")


def parse_admin_brokers(text: str) -> dict[int, dict]:
    """``cirrus admin cluster`` -> {broker id: {"address", "live", "draining", "partitions", "row"}}."""
    rows = parse_table(text, [BROKER_ID, PARTITIONS])
    out = {}
    for row in rows:
        bid = to_int(col(row, *BROKER_ID))
        if bid is None:
            continue
        live_v = col(row, *LIVE)
        out[bid] = {
            "address": col(row, *ADDRESS),
            "live": None if live_v is None else (truthy(live_v) and "dead" not in live_v.lower()),
            "draining": truthy(col(row, *DRAINING)) if col(row, *DRAINING) is not None else None,
            "partitions": to_int(col(row, *PARTITIONS)),
            "row": row,
        }
    if not out:
        raise ValueError(f"no broker rows in:\n{text}")
    return out


def parse_admin_controller(text: str) -> int | None:
    m = re.search(r"controller(?:[ _-]?id)?\s*[:=]?\s*(?:broker\s*)?(-?\d+)", text, re.IGNORECASE)
    return int(m.group(1)) if m else None


def parse_admin_offline(text: str) -> int | None:
    """The "offline partitions: N" figure of ``cirrus admin cluster``."""
    m = re.search(r"offline[ _-]partitions\s*[:=]\s*(\d+)", text, re.IGNORECASE)
    return int(m.group(1)) if m else None


def parse_admin_partitions(text: str) -> dict[int, dict]:
    """``cirrus admin topics describe T`` -> {partition: {"owner", "online", "moving_to", "row"}};
    owner None when the row does not name one (e.g. "-" or "offline")."""
    rows = parse_table(text, [PART_INDEX, OWNER])
    out = {}
    for row in rows:
        idx = to_int(col(row, *PART_INDEX))
        if idx is None:
            continue
        owner_v = col(row, *OWNER)
        online_v = col(row, *ONLINE)
        online = None
        if online_v is not None:
            online = truthy(online_v) and "offline" not in online_v.lower()
        if owner_v is not None and "offline" in owner_v.lower():
            online = False
        out[idx] = {"owner": to_int(owner_v), "online": online, "moving_to": to_int(col(row, *MOVING_TO)),
                    "row": row}
    if not out:
        raise ValueError(f"no partition rows in:\n{text}")
    return out


PROGRESS_RE = re.compile(r"moved (\d+)/(\d+) partitions \((\d+) remaining\) in ([\d.]+)s")


def last_progress(stderr: str) -> tuple[int, int, int, float] | None:
    """(done, total, remaining, seconds) of the last progress line of a long admin operation."""
    found = PROGRESS_RE.findall(stderr)
    if not found:
        return None
    d, t, r, s = found[-1]
    return int(d), int(t), int(r), float(s)


def run_admin(binary: Path, addr: str, args: Iterable[str], timeout: float, launcher: Iterable[str] = (),
              log_path: Path | None = None) -> AdminResult:
    """``<binary> admin --bootstrap-server ADDR ARGS...`` bounded by ``timeout`` (rc 124 and a
    note on stderr when it is exceeded; the process group is killed)."""
    cmd = [*launcher, str(binary), "admin", "--bootstrap-server", addr, *[str(a) for a in args]]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CIRRUS_", "AWS_"))}
    env.setdefault("RUST_LOG", "warn")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        _kill_group(proc, signal.SIGKILL)
        out, err = proc.communicate(timeout=10)
        rc = 124
        err = (err or b"") + f"\n<harness: killed after {timeout}s>".encode()
    res = AdminResult(rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))
    if log_path is not None:
        with open(log_path, "a") as f:
            f.write(f"\n$ {' '.join(cmd)}   # {time.monotonic() - t0:.2f}s\n{res}\n")
    return res


# ---------------------------------------------------------------------------------------
# Brokers
# ---------------------------------------------------------------------------------------


class ClusterBroker(Broker):
    """One cluster-mode broker. Flags: --broker-id, --etcd-endpoints, --object-store,
    --session-ttl, --flush-interval (+ the Broker's --kafka-listen, --metrics-listen,
    --admin-listen, --data-dir)."""

    def __init__(self, cluster: "Cluster", broker_id: int, workdir: Path, args: list[str],
                 env: dict[str, str], binary: Path | None = None, launcher: list[str] | None = None):
        self.cluster = cluster
        self.broker_id = broker_id
        self.paused = False
        flags = [
            "--broker-id", str(broker_id),
            "--etcd-endpoints", cluster.etcd.client_url,
            *cluster.store.flags,
            "--session-ttl", cluster.session_ttl,
            "--flush-interval", cluster.flush_interval,
            *args,
        ]
        super().__init__(workdir, args=flags, env=env, binary=binary, launcher=launcher)

    def __repr__(self) -> str:
        state = "paused" if self.paused else ("running" if self.running else "down")
        return f"<broker {self.broker_id} {self.bootstrap} {state}>"

    @property
    def live(self) -> bool:
        """Running and not SIGSTOPped (it can answer)."""
        return self.running and not self.paused

    def command(self) -> list[str]:
        return [*parent_death_prefix(), *super().command()]

    def start(self, timeout: float = 30.0) -> "ClusterBroker":
        self.paused = False
        super().start(timeout)
        return self

    def stop(self, timeout: float = 60.0) -> float:
        if self.paused:
            self.sigcont()
        return super().stop(timeout)

    def kill9(self) -> None:
        super().kill9()
        self.paused = False

    def _proc_state(self) -> str:
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, IndexError):
            return "?"

    def _wait_state(self, stopped: bool, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while (self._proc_state() in ("T", "t")) != stopped:
            if self.proc.poll() is not None:
                return
            assert time.monotonic() < deadline, (
                f"broker {self.broker_id} not {'stopped' if stopped else 'continued'} after {timeout}s "
                f"(state {self._proc_state()})")
            time.sleep(0.01)

    def sigstop(self) -> None:
        """SIGSTOP the process group; returns once the kernel reports the broker stopped."""
        assert self.running, f"broker {self.broker_id} is not running"
        os.killpg(self.proc.pid, signal.SIGSTOP)
        self.paused = True
        self._wait_state(stopped=True)

    def sigcont(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGCONT)
            self._wait_state(stopped=False)
        self.paused = False

    def restart(self, timeout: float = 30.0) -> "ClusterBroker":
        """Start again with the same id, ports and data dir (after stop() or kill9())."""
        if self.running:
            self.stop()
        return self.start(timeout)

    def cleanup(self) -> None:
        super().cleanup()
        self.paused = False

    def admin(self, *args, timeout: float = 60.0) -> AdminResult:
        return self.cluster.run_admin(self.admin_addr, args, timeout)

    def metadata(self, topics: list[str] | None = None, timeout: float = 5.0) -> MetadataView:
        return fetch_metadata(self.bootstrap, topics, timeout)

    def metrics(self, timeout: float = 5.0) -> str:
        with urllib.request.urlopen(self.metrics_url + "/metrics", timeout=timeout) as r:
            return r.read().decode("utf-8", "replace")


# ---------------------------------------------------------------------------------------
# Cluster
# ---------------------------------------------------------------------------------------


def _flag_bool(v: bool) -> str:
    return "true" if v else "false"


@dataclass
class Cluster:
    workdir: Path
    etcd: Etcd
    store: Store
    session_ttl: str = DEFAULT_SESSION_TTL
    flush_interval: str = DEFAULT_FLUSH_INTERVAL
    broker_args: list[str] = field(default_factory=list)
    broker_env: dict[str, str] = field(default_factory=dict)
    binary: Path | None = None
    launcher: list[str] | None = None
    admin_binary: Path | None = None
    admin_launcher: list[str] = field(default_factory=list)
    brokers: list[ClusterBroker] = field(default_factory=list)
    on_new_broker: Callable[[ClusterBroker], None] | None = None

    @property
    def ttl_s(self) -> float:
        return parse_duration_s(self.session_ttl)

    @property
    def admin_log(self) -> Path:
        return self.workdir / "admin.log"

    # -- brokers -----------------------------------------------------------------------
    def add_broker(self, start: bool = True, broker_id: int | None = None, args: list[str] | None = None,
                   timeout: float = 30.0) -> ClusterBroker:
        bid = len(self.brokers) if broker_id is None else broker_id
        assert all(b.broker_id != bid for b in self.brokers), f"broker id {bid} taken"
        b = ClusterBroker(self, bid, self.workdir / f"broker{bid}", args=self.broker_args + list(args or []),
                          env=dict(self.store.env, **self.broker_env), binary=self.binary, launcher=self.launcher)
        self.brokers.append(b)
        if self.on_new_broker:
            self.on_new_broker(b)
        if start:
            b.start(timeout)
        return b

    def broker(self, broker_id: int) -> ClusterBroker:
        for b in self.brokers:
            if b.broker_id == broker_id:
                return b
        raise KeyError(f"no broker {broker_id}")

    def live(self) -> list[ClusterBroker]:
        return [b for b in self.brokers if b.live]

    def live_ids(self) -> set[int]:
        return {b.broker_id for b in self.live()}

    def bootstrap(self, brokers: Iterable[ClusterBroker] | None = None) -> str:
        bs = list(brokers) if brokers is not None else self.live()
        assert bs, "no live broker"
        return ",".join(b.bootstrap for b in bs)

    # -- admin -------------------------------------------------------------------------
    def run_admin(self, addr: str, args: Iterable, timeout: float = 60.0) -> AdminResult:
        return run_admin(self.admin_binary or cirrus_binary(), addr, args, timeout, self.admin_launcher,
                         self.admin_log)

    def admin(self, *args, timeout: float = 60.0, via: ClusterBroker | None = None) -> AdminResult:
        b = via or next(iter(self.live()), None)
        assert b is not None, "no live broker to run `cirrus admin` through"
        return b.admin(*args, timeout=timeout)

    def admin_ok(self, *args, timeout: float = 60.0, via: ClusterBroker | None = None) -> AdminResult:
        res = self.admin(*args, timeout=timeout, via=via)
        assert res.rc == 0, f"`cirrus admin {' '.join(map(str, args))}` failed: {res}" + self.diagnostics()
        return res

    def admin_brokers(self) -> dict[int, dict]:
        res = self.admin_ok("cluster", timeout=20)
        try:
            return parse_admin_brokers(res.stdout)
        except ValueError as e:
            raise AssertionError(f"cannot parse `cirrus admin cluster` (update cluster_harness.parse_admin_brokers"
                                 f" if the format is right): {e}") from None

    def wait_admin_cluster(self, ids: Iterable[int] | None = None, offline: int | None = 0,
                           timeout: float = 30.0) -> dict[int, dict]:
        """Until `cirrus admin cluster` shows exactly ``ids`` (default: the live brokers) as live
        and ``offline`` offline partitions (None: not checked); returns the parsed rows."""
        want = set(self.live_ids() if ids is None else ids)

        def probe():
            res = self.admin("cluster", timeout=15)
            if res.rc != 0:
                return False, res
            rows = parse_admin_brokers(res.stdout)
            live = {i for i, r in rows.items() if r["live"] is not False}
            off = parse_admin_offline(res.stdout)
            state = {"live": sorted(live), "offline partitions": off, "stdout": res.stdout}
            return live == want and (offline is None or off == offline), (rows, state)

        rows, _ = self.wait_until(f"`cirrus admin cluster` to show live brokers {sorted(want)} and "
                                  f"{offline} offline partitions", probe, timeout, interval=0.5)
        return rows

    def admin_controller(self) -> int | None:
        return parse_admin_controller(self.admin_ok("cluster", timeout=20).stdout)

    def admin_partitions(self, topic: str) -> dict[int, dict]:
        res = self.admin_ok("topics", "describe", topic, timeout=20)
        try:
            return parse_admin_partitions(res.stdout)
        except ValueError as e:
            raise AssertionError(f"cannot parse `cirrus admin topics describe` (update "
                                 f"cluster_harness.parse_admin_partitions if the format is right): {e}") from None

    # -- Kafka side ----------------------------------------------------------------------
    def create_topic(self, name: str, partitions: int, config: dict[str, str] | None = None,
                     timeout: float = 30.0) -> None:
        """CreateTopics through the Kafka API (confluent AdminClient), then wait until every
        live broker shows every partition with a live owner."""
        from confluent_kafka.admin import AdminClient, NewTopic

        from cirrus_e2e import client_conf

        admin = AdminClient(client_conf(self.bootstrap()))
        futs = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1,
                                             config=dict(config or {}))],
                                   operation_timeout=timeout, request_timeout=timeout)
        try:
            futs[name].result(timeout=timeout)
        except Exception as e:  # noqa: BLE001 - reported with context
            raise AssertionError(f"CreateTopics {name} ({partitions} partitions, {config}) failed: {e!r}"
                                 + self.diagnostics()) from e
        self.wait_online(name, partitions, timeout=timeout)

    def views(self, topics: list[str] | None = None, brokers: Iterable[ClusterBroker] | None = None,
              timeout: float = 5.0) -> dict[int, MetadataView | Exception]:
        """Metadata as each (live) broker answers it; an exception in place of a failed answer."""
        out: dict[int, MetadataView | Exception] = {}
        for b in (list(brokers) if brokers is not None else self.live()):
            try:
                out[b.broker_id] = b.metadata(topics, timeout)
            except Exception as e:  # noqa: BLE001
                out[b.broker_id] = e
        return out

    def leaders(self, topic: str, via: ClusterBroker | None = None) -> dict[int, int]:
        b = via or self.live()[0]
        return b.metadata([topic]).leaders(topic)

    def wait_until(self, what: str, probe: Callable[[], tuple[bool, object]], timeout: float,
                   interval: float = 0.2):
        """Polls probe() -> (done, state) until done; returns the state. Exceptions of probe
        count as not done. On timeout: AssertionError with the last state and log tails."""
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            try:
                done, last = probe()
                if done:
                    return last
            except AssertionError:
                raise
            except Exception as e:  # noqa: BLE001 - not there yet
                last = e
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; last state: {last!r}"
                                     + self.diagnostics())
            time.sleep(interval)

    def wait_brokers(self, ids: Iterable[int] | None = None, timeout: float = 30.0) -> dict[int, tuple[str, int]]:
        """Until every live broker's Metadata lists exactly ``ids`` (default: the live brokers),
        each at its own Kafka address."""
        want = set(self.live_ids() if ids is None else ids)
        addr = {b.broker_id: split_hostport(b.bootstrap) for b in self.brokers}

        def probe():
            views = self.views([])
            state = {bid: (v if isinstance(v, Exception) else sorted(v.brokers)) for bid, v in views.items()}
            ok = bool(views) and all(
                not isinstance(v, Exception) and set(v.brokers) == want
                and all(v.brokers[i] == addr[i] for i in want if i in addr)
                for v in views.values())
            return ok, state

        self.wait_until(f"brokers {sorted(want)} in every live broker's Metadata", probe, timeout)
        return {i: addr[i] for i in want if i in addr}

    def wait_leaders(self, topic: str, partitions: int, pred: Callable[[dict[int, int]], bool], what: str,
                     timeout: float = 30.0, brokers: Iterable[ClusterBroker] | None = None) -> dict[int, int]:
        """Until every live broker (or ``brokers``) answers the same leader map for all
        ``partitions`` partitions and pred(map) holds; returns the map."""
        def probe():
            views = self.views([topic], brokers)
            maps = {}
            for bid, v in views.items():
                if isinstance(v, Exception):
                    return False, {bid: v}
                maps[bid] = v.leaders(topic)
            distinct = {tuple(sorted(m.items())) for m in maps.values()}
            if len(distinct) != 1:
                return False, maps
            m = next(iter(maps.values()))
            return (len(m) == partitions and pred(m)), m

        return self.wait_until(f"{topic}: {what}", probe, timeout)

    def wait_online(self, topic: str, partitions: int, timeout: float = 30.0,
                    owners: Iterable[int] | None = None) -> dict[int, int]:
        """Until all partitions have a leader among ``owners`` (default: the live brokers),
        consistently on every live broker; returns {partition: leader}."""
        allowed = set(self.live_ids() if owners is None else owners)
        return self.wait_leaders(topic, partitions, lambda m: all(l in allowed for l in m.values()),
                                 f"all {partitions} partitions online on {sorted(allowed)}", timeout)

    @staticmethod
    def counts(leaders: dict[int, int]) -> Counter:
        return Counter(leaders.values())

    # -- diagnostics / teardown ---------------------------------------------------------
    def diagnostics(self, per_log: int = 3000) -> str:
        parts = ["\n===== cluster diagnostics ====="]
        for b in self.brokers:
            state = "paused" if b.paused else ("running" if b.running else
                                               f"exited {b.proc.returncode if b.proc else 'never started'}")
            parts.append(f"--- broker {b.broker_id} ({state}) log tail {b.log_path} ---\n{tail(b.log_path, per_log)}")
        parts.append(f"--- etcd log tail ---\n{tail(self.etcd.log_path, 1000)}")
        if self.admin_log.exists():
            parts.append(f"--- admin calls (tail) ---\n{tail(self.admin_log, per_log)}")
        return "\n".join(parts)

    def close(self) -> None:
        """SIGKILL every broker (SIGSTOPped ones too), then stop etcd. Idempotent."""
        errors = []
        for b in self.brokers:
            try:
                b.cleanup()
            except Exception as e:  # noqa: BLE001 - go on with the others
                errors.append(e)
        self.etcd.stop()
        if errors:
            raise errors[0]


class ClusterFactory:
    """The ``cluster`` fixture: ``cluster(n=3, **options) -> Cluster`` (see module doc)."""

    def __init__(self, request: pytest.FixtureRequest, tmp_path: Path):
        self.request, self.tmp_path = request, tmp_path
        self.clusters: list[Cluster] = []
        self._all_brokers: list[Broker] = []
        self._logs: list[tuple[str, Path]] = []
        request.node._cirrus_brokers = self._all_brokers
        request.node._cirrus_extra_logs = self._logs

    def __call__(self, n: int = 3, *, session_ttl: str = DEFAULT_SESSION_TTL,
                 flush_interval: str = DEFAULT_FLUSH_INTERVAL, durability: str | None = None,
                 unclean_failover: bool | None = None, auto_rebalance: bool | None = None,
                 extra_args: list[str] | None = None, env: dict[str, str] | None = None,
                 seaweedfs: SeaweedFS | None = None, start: bool = True, timeout: float = 60.0,
                 binary: Path | None = None, launcher: list[str] | None = None,
                 admin_binary: Path | None = None, admin_launcher: list[str] | None = None) -> Cluster:
        idx = len(self.clusters)
        workdir = self.tmp_path / f"cluster{idx}"
        workdir.mkdir(parents=True, exist_ok=True)
        sw = seaweedfs or self.request.getfixturevalue("seaweedfs")
        self.request.node._cirrus_seaweedfs = sw
        store = s3_store(sw, unique_prefix(self.request))
        args = list(extra_args or [])
        if durability is not None:
            args += ["--durability", durability]
        if unclean_failover is not None:
            args += ["--unclean-failover", _flag_bool(unclean_failover)]
        if auto_rebalance is not None:
            args += ["--auto-rebalance", _flag_bool(auto_rebalance)]
        etcd = start_etcd(workdir / "etcd")
        c = Cluster(workdir=workdir, etcd=etcd, store=store, session_ttl=session_ttl, flush_interval=flush_interval,
                    broker_args=args, broker_env=dict(env or {}), binary=binary, launcher=launcher,
                    admin_binary=admin_binary, admin_launcher=list(admin_launcher or []),
                    on_new_broker=self._all_brokers.append)
        self.clusters.append(c)
        self._logs += [(f"etcd of cluster {idx}", etcd.log_path), (f"admin calls of cluster {idx}", c.admin_log)]
        for _ in range(n):
            c.add_broker(start=start)
        if start and n:
            c.wait_brokers(timeout=timeout)
        return c

    def close_all(self) -> None:
        errors = []
        for c in self.clusters:
            try:
                c.close()
            except Exception as e:  # noqa: BLE001
                errors.append(e)
        if errors:
            raise errors[0]
