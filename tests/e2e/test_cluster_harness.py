"""Checks of the cluster harness itself, runnable before the broker has cluster mode:

- etcd + SeaweedFS start, answer, and are torn down; broker processes of a ``Cluster`` (here the
  fake broker of selfcheck_fake_broker.py) get the cluster flags and survive stop / kill -9 /
  SIGSTOP / SIGCONT / restart, and ``close()`` kills them all, SIGSTOPped ones too;
- ``admin()`` returns (rc, stdout, stderr) and is bounded in time (a fake ``cirrus admin``);
- the raw Metadata v1 codec, the ``cirrus admin`` table parsers;
- ``check_log`` (the exactly-once / order verifier) on synthetic logs, one per failure kind;
- ``ProducerFleet`` + ``verify_topic`` end to end against the single-node broker (this one
  needs the release binary, as the other e2e tests do).
"""

from __future__ import annotations

import base64
import json
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from cirrus_e2e import create_topic, producer_conf
from cluster_harness import (decode_metadata_response_v1, encode_metadata_request_v1, fetch_metadata, last_progress,
                             parse_admin_brokers, parse_admin_controller, parse_admin_offline,
                             parse_admin_partitions, parse_duration_s,
                             parse_table, run_admin)
from cluster_verify import Ack, ProducerFleet, Read, check_log, decode_value, encode_value, make_key, verify_topic
from conftest import parent_death_prefix

# The fake broker of test_harness_selfcheck.py, made robust to SIGTERM right after SIGCONT.
FAKE = Path(__file__).with_name("selfcheck_fake_cluster_broker.py")

FAKE_ADMIN = r'''
import json, sys, time
args = sys.argv[1:]
assert args[0] == "admin" and args[1] == "--bootstrap-server", args
rest = args[3:]
if rest[:1] == ["sleep"]:
    time.sleep(float(rest[1]))
if rest[:1] == ["exit"]:
    print("error: asked to fail", file=sys.stderr)
    sys.exit(int(rest[1]))
print(json.dumps({"addr": args[2], "args": rest}))
print("moved 3/10 partitions (7 remaining) in 0.5s", file=sys.stderr)
print("moved 10/10 partitions (0 remaining) in 1.25s", file=sys.stderr)
'''


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def _etcd_kv(url: str, op: str, body: dict) -> dict:
    req = urllib.request.Request(f"{url}/v3/kv/{op}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


# ---------------------------------------------------------------------------------------
# Processes: etcd, SeaweedFS, brokers, admin
# ---------------------------------------------------------------------------------------


@pytest.mark.s3
def test_cluster_infra_and_broker_lifecycle_with_fake(cluster, tmp_path):
    fake_admin = tmp_path / "fake_admin.py"
    fake_admin.write_text(FAKE_ADMIN)
    c = cluster(0, binary=FAKE, launcher=[sys.executable], admin_binary=fake_admin,
                admin_launcher=[sys.executable])

    # etcd is up and takes writes; the S3 prefix is empty and writable.
    assert c.etcd.healthy()
    _etcd_kv(c.etcd.client_url, "put", {"key": _b64(b"/selfcheck"), "value": _b64(b"ok")})
    kvs = _etcd_kv(c.etcd.client_url, "range", {"key": _b64(b"/selfcheck")})["kvs"]
    assert base64.b64decode(kvs[0]["value"]) == b"ok"
    assert c.store.list_objects() == []
    prefix = c.store.url.split("/", 3)[3]
    c.store.s3.client().put_object(Bucket=c.store.s3.bucket, Key=f"{prefix}/probe", Body=b"x")
    assert c.store.list_objects() == [("probe", 1)]

    b0, b1 = c.add_broker(), c.add_broker()
    assert [b.broker_id for b in c.brokers] == [0, 1]
    cmd = b0.command()
    flag = {cmd[i]: cmd[i + 1] for i in range(len(cmd) - 1) if cmd[i].startswith("--")}
    assert flag["--broker-id"] == "0" and flag["--admin-listen"] == b0.admin_addr
    assert flag["--etcd-endpoints"] == c.etcd.client_url
    assert flag["--object-store"] == c.store.url and c.store.url.startswith("s3://cirrus-e2e/")
    assert flag["--session-ttl"] == "3s" and flag["--flush-interval"] == "100ms"
    assert flag["--data-dir"] == str(b0.data_dir) and flag["--kafka-listen"] == b0.bootstrap
    assert b0.environment()["AWS_ENDPOINT_URL"] == c.store.s3.endpoint
    if parent_death_prefix():
        assert cmd[:3] == parent_death_prefix()
    assert len({b0.kafka_port, b0.metrics_port, b0.admin_port, b1.kafka_port, b1.metrics_port, b1.admin_port}) == 6
    assert b0.livez() and b1.livez()
    assert c.bootstrap() == f"{b0.bootstrap},{b1.bootstrap}"

    # SIGSTOP / SIGCONT
    b0.sigstop()
    assert _state(b0.proc.pid) == "T" and b0.paused and not b0.live
    assert not b0.livez()
    assert c.live() == [b1] and c.bootstrap() == b1.bootstrap
    b0.sigcont()
    b0.wait_ready(10)
    assert b0.live and _state(b0.proc.pid) != "T"

    # kill -9, restart on the same id, ports and data dir
    ports = (b1.kafka_port, b1.metrics_port, b1.admin_port)
    b1.kill9()
    assert not b1.running and b1.proc.returncode == -9
    b1.restart(timeout=15)
    assert (b1.kafka_port, b1.metrics_port, b1.admin_port) == ports and b1.broker_id == 1
    assert (b1.data_dir / "wal/fake.wal").read_text() == "start\nstart\n"
    # stop() of a SIGSTOPped broker continues it first, then SIGTERM -> exit 0
    b1.sigstop()
    assert b1.stop() < 10 and not b1.running
    b1.restart(timeout=15)

    # admin(): rc, stdout, stderr; bounded
    res = b0.admin("cluster")
    assert res.rc == 0 and json.loads(res.stdout) == {"addr": b0.admin_addr, "args": ["cluster"]}
    assert last_progress(res.stderr) == (10, 10, 0, 1.25)
    rc, out, err = c.admin("exit", "3")
    assert rc == 3 and "error: asked to fail" in err
    t0 = time.monotonic()
    res = c.admin("sleep", "30", timeout=1.5)
    assert res.rc == 124 and "killed after 1.5s" in res.stderr and time.monotonic() - t0 < 10
    assert "admin --bootstrap-server" in c.admin_log.read_text()
    with pytest.raises(AssertionError, match=r"failed: rc=3"):
        c.admin_ok("exit", "3")

    # Waits are bounded and carry the logs (the fake speaks no Metadata).
    t0 = time.monotonic()
    with pytest.raises(AssertionError, match=r"(?s)timed out after 1.0s waiting for brokers.*fake cirrus ready"):
        c.wait_brokers(timeout=1.0)
    assert time.monotonic() - t0 < 15
    with pytest.raises(AssertionError, match=r"(?s)waiting for `cirrus admin cluster`.*no table with columns"):
        c.wait_admin_cluster({0, 1}, timeout=1.0)

    # Teardown kills everything, a SIGSTOPped broker included, then etcd.
    b0.sigstop()
    pids = [b.proc.pid for b in c.brokers] + [c.etcd.proc.pid]
    c.close()
    time.sleep(0.2)
    assert all(_gone(p) for p in pids), [(p, _gone(p)) for p in pids]
    assert not c.etcd.healthy()
    c.close()  # idempotent


def test_parent_death_signal_reaps_orphans():
    """What protects us from a hard pytest timeout: children die with their parent."""
    if not parent_death_prefix():
        pytest.skip("setpriv not installed")
    script = ("import subprocess, os, sys; sys.path.insert(0, %r); from conftest import parent_death_prefix; "
              "p = subprocess.Popen(parent_death_prefix() + ['sleep', '60'], start_new_session=True); "
              "print(p.pid, flush=True); import time; time.sleep(0.3); os._exit(0)") % str(Path(__file__).parent)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    pid = int(out.stdout.strip())
    deadline = time.monotonic() + 5
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(pid), f"orphan {pid} survived its parent"


def test_run_admin_missing_binary_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        run_admin(tmp_path / "nope", "127.0.0.1:1", ["cluster"], timeout=5)


def test_parse_duration():
    assert parse_duration_s("3s") == 3 and parse_duration_s("100ms") == 0.1 and parse_duration_s("2m") == 120


# ---------------------------------------------------------------------------------------
# Metadata v1 codec
# ---------------------------------------------------------------------------------------


def _s(text: str | None) -> bytes:
    if text is None:
        return struct.pack(">h", -1)
    return struct.pack(">h", len(text.encode())) + text.encode()


def _metadata_v1_response(corr: int, brokers, controller: int, topics) -> bytes:
    out = struct.pack(">i", corr) + struct.pack(">i", len(brokers))
    for node, host, port, rack in brokers:
        out += struct.pack(">i", node) + _s(host) + struct.pack(">i", port) + _s(rack)
    out += struct.pack(">i", controller) + struct.pack(">i", len(topics))
    for err, name, parts in topics:
        out += struct.pack(">h", err) + _s(name) + struct.pack(">b", 0) + struct.pack(">i", len(parts))
        for perr, idx, leader, replicas in parts:
            out += struct.pack(">hii", perr, idx, leader)
            out += struct.pack(">i", len(replicas)) + b"".join(struct.pack(">i", r) for r in replicas)
            out += struct.pack(">i", len(replicas)) + b"".join(struct.pack(">i", r) for r in replicas)
    return out


def test_metadata_v1_codec():
    frame = _metadata_v1_response(
        42, [(0, "127.0.0.1", 9001, None), (2, "127.0.0.1", 9003, "r1")], 2,
        [(0, "t", [(0, 0, 2, [2]), (0, 1, 0, [0]), (5, 2, -1, [])]), (3, "gone", [])])
    md = decode_metadata_response_v1(frame, 42)
    assert md.brokers == {0: ("127.0.0.1", 9001), 2: ("127.0.0.1", 9003)} and md.controller_id == 2
    assert md.leaders("t") == {0: 2, 1: 0, 2: -1} and md.topics["t"].partitions[2].error == 5
    assert md.topics["gone"].error == 3 and md.leaders("absent") == {}
    with pytest.raises(ValueError, match="correlation"):
        decode_metadata_response_v1(frame, 43)
    with pytest.raises(ValueError, match="truncated"):
        decode_metadata_response_v1(frame[:-3], 42)
    req = encode_metadata_request_v1(7, ["t"])
    assert struct.unpack(">ihhi", req[:12]) == (len(req) - 4, 3, 1, 7)
    assert req.endswith(struct.pack(">i", 1) + _s("t"))
    assert encode_metadata_request_v1(7).endswith(struct.pack(">i", -1))


# ---------------------------------------------------------------------------------------
# `cirrus admin` tables
# ---------------------------------------------------------------------------------------

CLUSTER_PLAIN = """\
ID  ADDRESS          LIVE  DRAINING  PARTITIONS  IN B/S   OUT B/S
0   127.0.0.1:9092   yes   no        4           1024.0   0.0
1   127.0.0.1:9093   yes   no        5           0.0      0.0
2   127.0.0.1:9094   yes   yes       0           0.0      0.0

controller: 1
"""

CLUSTER_PIPES = """\
Cluster: 3 brokers, 12 partitions (0 offline)
| broker | address        | live | draining | partitions | in bytes/s | out bytes/s |
|--------|----------------|------|----------|------------|------------|-------------|
|      0 | 127.0.0.1:9092 | true | false    |          6 |     1500.5 |         0.0 |
|      1 | 127.0.0.1:9093 | no   | false    |          6 |        0.0 |         0.0 |
controller id = 0
"""

DESCRIBE = """\
topic t (4 partitions, topic id 0b4c...)
PARTITION  STREAM_ID  OWNER  EPOCH  MOVING_TO  ONLINE  LOG_START  HIGH_WATERMARK
0          17         1      0      -          yes     0          120
1          18         2      3      0          no      0          -1
2          19         0      1      -          true    0          55
3          20         -      0      -          false   0          -1
"""


def test_parse_admin_cluster_tables():
    rows = parse_admin_brokers(CLUSTER_PLAIN)
    assert {i: (r["address"], r["live"], r["draining"], r["partitions"]) for i, r in rows.items()} == {
        0: ("127.0.0.1:9092", True, False, 4), 1: ("127.0.0.1:9093", True, False, 5),
        2: ("127.0.0.1:9094", True, True, 0)}
    assert parse_admin_controller(CLUSTER_PLAIN) == 1
    rows = parse_admin_brokers(CLUSTER_PIPES)
    assert {i: (r["address"], r["live"], r["draining"], r["partitions"]) for i, r in rows.items()} == {
        0: ("127.0.0.1:9092", True, False, 6), 1: ("127.0.0.1:9093", False, False, 6)}
    assert (rows[0]["row"]["in_bytes/s"], rows[0]["row"]["out_bytes/s"]) == ("1500.5", "0.0")
    assert parse_admin_controller(CLUSTER_PIPES) == 0
    assert parse_admin_controller("no leader") is None
    with pytest.raises(ValueError, match="no table"):
        parse_admin_brokers("error: unavailable")


def test_parse_admin_describe_table():
    parts = parse_admin_partitions(DESCRIBE)
    assert {p: (r["owner"], r["online"], r["moving_to"]) for p, r in parts.items()} == {
        0: (1, True, None), 1: (2, False, 0), 2: (0, True, None), 3: (None, False, None)}
    # Right-aligned numbers with a different count of tokens than headers.
    t = parse_table("  P   OWNER  MOVING TO\n  0       1          -\n 11       2          0\n", [("p",), ("owner",)])
    assert [(r["p"], r["owner"], r["moving_to"]) for r in t] == [("0", "1", "-"), ("11", "2", "0")]
    # Single-space separated, not aligned: by position.
    t = parse_table("id owner\n0 1\n10 2\n", [("id",), ("owner",)])
    assert [(r["id"], r["owner"]) for r in t] == [("0", "1"), ("10", "2")]
    # Repeated header names get a suffix.
    t = parse_table("ID  B/S  B/S\n 0    1    2\n", [("id",)])
    assert t == [{"id": "0", "b/s": "1", "b/s_2": "2"}]


def render_table(columns, rows) -> str:
    """Python mirror of broker/src/admin_cli.rs render_table: cells separated by two spaces,
    "L" columns padded right, "R" columns padded left, no trailing spaces."""
    widths = [max([len(name)] + [len(r[i]) for r in rows]) for i, (name, _) in enumerate(columns)]
    out = []
    for row in [[n for n, _ in columns]] + rows:
        cells = [(c.ljust(w) if a == "L" else c.rjust(w)) for c, w, (_, a) in zip(row, widths, columns)]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out) + "\n"


def test_parse_admin_output_in_the_cli_layout():
    cluster_out = "controller: broker 2\ntopics: 1  partitions: 12  offline partitions: 4\n\n" + render_table(
        [("ID", "R"), ("ADDRESS", "L"), ("ADMIN", "L"), ("LIVE", "L"), ("DRAINING", "L"), ("PARTITIONS", "R"),
         ("MOVING IN", "R"), ("MOVING OUT", "R"), ("BYTES IN", "R"), ("BYTES OUT", "R")],
        [["0", "127.0.0.1:40001", "127.0.0.1:40011", "yes", "no", "4", "0", "1", "1.5 KiB/s", "0 B/s"],
         ["1", "127.0.0.1:40002", "127.0.0.1:40012", "yes", "yes", "0", "0", "0", "0 B/s", "12.0 MiB/s"],
         ["12", "127.0.0.1:40003", "-", "no", "no", "4", "1", "0", "0 B/s", "0 B/s"]])
    rows = parse_admin_brokers(cluster_out)
    assert {i: (r["address"], r["live"], r["draining"], r["partitions"]) for i, r in rows.items()} == {
        0: ("127.0.0.1:40001", True, False, 4), 1: ("127.0.0.1:40002", True, True, 0),
        12: ("127.0.0.1:40003", False, False, 4)}
    assert rows[0]["row"]["bytes_in"] == "1.5 KiB/s" and rows[1]["row"]["bytes_out"] == "12.0 MiB/s"
    assert rows[0]["row"]["moving_out"] == "1" and rows[12]["row"]["admin"] == "-"
    assert parse_admin_controller(cluster_out) == 2
    assert parse_admin_controller("controller: none\n") is None
    assert parse_admin_offline(cluster_out) == 4 and parse_admin_offline("nothing") is None

    describe_out = ("topic: t\nid: 6f1c\nconfigs: cirrus.durability=object\npartitions: 3 (1 offline)\n\n"
                    + render_table(
                        [("PARTITION", "R"), ("STREAM ID", "R"), ("OWNER", "R"), ("EPOCH", "R"), ("MOVING TO", "R"),
                         ("ONLINE", "L"), ("LOG START", "R"), ("HIGH WATERMARK", "R")],
                        [["0", "1", "1", "0", "-", "yes", "0", "120"],
                         ["1", "2", "2", "3", "0", "no", "0", "unknown"],
                         ["10", "11", "-", "0", "-", "no", "0", "unknown"]]))
    parts = parse_admin_partitions(describe_out)
    assert {p: (r["owner"], r["online"], r["moving_to"]) for p, r in parts.items()} == {
        0: (1, True, None), 1: (2, False, 0), 10: (None, False, None)}
    assert parts[0]["row"]["high_watermark"] == "120" and parts[1]["row"]["stream_id"] == "2"


def test_progress_line():
    assert last_progress("moved 1/4 partitions (3 remaining) in 0.2s\nmoved 4/4 partitions (0 remaining) in 1.5s\n") \
        == (4, 4, 0, 1.5)
    assert last_progress("nothing") is None


# ---------------------------------------------------------------------------------------
# check_log on synthetic logs
# ---------------------------------------------------------------------------------------

K0, K1, K2 = make_key(0, 0), make_key(0, 1), make_key(0, 2)  # partitions 0, 1, 0 (2 partitions)


def _clean():
    """Keys K0, K2 on partition 0 interleaved, K1 on partition 1; 4 records per key; all acked."""
    read, acked = [], []
    off = {0: 0, 1: 0}
    for seq in range(4):
        for key, part in ((K0, 0), (K1, 1), (K2, 0)):
            v = encode_value(key, seq, b"pad")
            read.append(Read(part, off[part], key, v))
            acked.append(Ack(key, seq, part, off[part]))
            off[part] += 1
    return acked, read, {0: off[0], 1: off[1]}


def _check(acked, read, ends, **kw):
    produced = kw.pop("produced", {(a.key, a.seq) for a in acked} | {decode_value(r.value) for r in read
                                                                       if decode_value(r.value)})
    return check_log(acked, read, produced=produced, end_offsets=ends, start_offsets={p: 0 for p in ends},
                     key_partitions=lambda k: int(k[-4:]) % 2, **kw)


def _cats(rep) -> set[str]:
    return {c for c, items in rep.problems.items() if items}


def test_check_log_clean_log_passes():
    acked, read, ends = _clean()
    rep = _check(acked, read, ends)
    assert rep.ok, rep.summary()
    assert (rep.n_read, rep.n_acked, rep.n_unacked_present) == (12, 12, 0)
    rep.assert_ok()
    # Offsets the client did not learn (-1) are fine as long as the record is there.
    rep = _check([Ack(a.key, a.seq, a.partition, -1) for a in acked], read, ends)
    assert rep.ok, rep.summary()
    # Consumer delivery order across partitions does not matter.
    rep = _check(acked, sorted(read, key=lambda r: (-r.partition, r.offset)), ends)
    assert rep.ok, rep.summary()


def test_check_log_unacked_records_may_be_present_or_absent():
    acked, read, ends = _clean()
    # Drop the ack of K1#3 (last of partition 1): present but unacknowledged -> fine.
    acked2 = [a for a in acked if (a.key, a.seq) != (K1, 3)]
    rep = _check(acked2, read, ends, failed=[(K1, 3)])
    assert rep.ok and rep.n_unacked_present == 1 and rep.n_failed == 1, rep.summary()
    # ... or absent (the partition then ends before it) -> fine.
    read2 = [r for r in read if not (r.partition == 1 and r.offset == 3)]
    rep = _check(acked2, read2, {0: ends[0], 1: 3})
    assert rep.ok, rep.summary()


@pytest.mark.parametrize("case", [
    "lost", "duplicate record", "misplaced", "order", "duplicate offset", "offset gap", "short read",
    "beyond end", "key partition", "foreign record", "acked twice", "unknown record"])
def test_check_log_detects(case):
    acked, read, ends = _clean()
    kw = {}
    want = case
    if case == "lost":  # K2#3 (partition 0, last offset 7) acked, not in the log; hw 7
        read = [r for r in read if not (r.partition == 0 and r.offset == 7)]
        ends = {0: 7, 1: ends[1]}
        acked = [a for a in acked if (a.key, a.seq) != (K2, 3)] + [Ack(K2, 3, 0, -1)]
    elif case == "duplicate record":  # K2#3 written twice (an idempotence failure)
        read.append(Read(0, 8, K2, encode_value(K2, 3)))
        ends = {0: 9, 1: ends[1]}
    elif case == "misplaced":  # acked at offset 1 (another record is there)
        acked = [Ack(a.key, a.seq, a.partition, 1 if (a.key, a.seq) == (K0, 0) else a.offset) for a in acked]
    elif case == "order":  # K0#1 and K0#2 swapped in the log; acks say so too
        i, j = read.index(Read(0, 2, K0, encode_value(K0, 1, b"pad"))), read.index(
            Read(0, 4, K0, encode_value(K0, 2, b"pad")))
        read[i] = Read(0, 2, K0, encode_value(K0, 2, b"pad"))
        read[j] = Read(0, 4, K0, encode_value(K0, 1, b"pad"))
        acked = [Ack(a.key, a.seq, a.partition, {(K0, 1): 4, (K0, 2): 2}.get((a.key, a.seq), a.offset))
                 for a in acked]
    elif case == "duplicate offset":
        read.append(read[0])
    elif case == "offset gap":  # offset 5 of partition 0 missing, its record was not acked
        gone = next(r for r in read if (r.partition, r.offset) == (0, 5))
        read.remove(gone)
        acked = [a for a in acked if (a.partition, a.offset) != (0, 5)]
    elif case == "short read":
        ends = {0: ends[0] + 3, 1: ends[1]}
    elif case == "beyond end":  # an ack at an offset the log never reached
        acked.append(Ack(K1, 4, 1, 4))
        want = "beyond end"
    elif case == "key partition":  # K0 (partition 0) found in partition 1
        read.append(Read(1, 4, K0, encode_value(K0, 4)))
        ends = {0: ends[0], 1: 5}
    elif case == "foreign record":
        read.append(Read(1, 4, b"x", b"not from the fleet"))
        ends = {0: ends[0], 1: 5}
    elif case == "unknown record":  # well-formed, but never produced
        read.append(Read(1, 4, K1, encode_value(K1, 99)))
        ends = {0: ends[0], 1: 5}
        kw["produced"] = {(a.key, a.seq) for a in acked}
        want = "foreign record"
    elif case == "acked twice":
        acked.append(Ack(K1, 0, 1, 3))
    rep = _check(acked, read, ends, **kw)
    assert want in _cats(rep), rep.summary()
    with pytest.raises(AssertionError, match=want):
        rep.assert_ok("ctx")


def test_check_log_contiguity_is_optional():
    acked, read, ends = _clean()
    read = [r for r in read if (r.partition, r.offset) != (0, 5)]
    acked = [a for a in acked if (a.partition, a.offset) != (0, 5)]
    assert _check(acked, read, ends, contiguous=False).ok


def test_value_format_roundtrip():
    v = encode_value(make_key(3, 17), 123456, b"zz|zz")
    assert v.startswith(b"p3-k0017|0000123456|") and decode_value(v) == (b"p3-k0017", 123456)
    assert decode_value(b"garbage") is None and decode_value(None) is None and decode_value(b"") is None
    f = ProducerFleet("127.0.0.1:1", "t", 12, producers=2, producer_base=4)
    assert [f.key_partition(k) for k in (b"p4-k0013", b"p5-k0000", b"p6-k0001", b"p3-k0001", b"x")] == [
        1, 0, None, None, None]
    assert [t.keys[:2] for t in f.threads] == [[b"p4-k0000", b"p4-k0001"], [b"p5-k0000", b"p5-k0001"]]


# ---------------------------------------------------------------------------------------
# Fleet + verifier + Metadata codec against the real single-node broker
# ---------------------------------------------------------------------------------------


def test_fleet_and_verifier_against_single_node_broker(broker_factory):
    from confluent_kafka import Producer

    b = broker_factory(args=["--flush-interval", "100ms"])
    topic, parts = "fleet", 4
    create_topic(b.bootstrap, topic, parts)
    md = fetch_metadata(b.bootstrap, [topic])
    (node,) = md.brokers
    assert md.brokers[node] == ("127.0.0.1", b.kafka_port)
    assert md.leaders(topic) == {p: node for p in range(parts)}
    assert fetch_metadata(b.bootstrap).topics.keys() >= {topic}

    with ProducerFleet(b.bootstrap, topic, parts, producers=2, rate=400) as fleet:
        fleet.wait_acked(1500, timeout=30)
        mark = fleet.n_acked
        fleet.wait_progress(mark, 20, timeout=30)
        # kill -9 and restart under load: the verifier must still find everything acked.
        b.kill9()
        b.restart()
        mark = fleet.n_acked
        fleet.wait_progress(mark, 20, timeout=60, what="after the restart")
    fleet.assert_clean(allow_failed=True)
    acks_by_part = {a.partition for a in fleet.acked}
    assert acks_by_part == set(range(parts))
    rep = verify_topic(b.bootstrap, topic, parts, [fleet])
    assert rep.n_acked == fleet.n_acked and rep.n_read >= rep.n_acked
    print(f"fleet: {fleet.progress()}")

    # A second fleet on the same topic (disjoint producer numbers) verifies together.
    with ProducerFleet(b.bootstrap, topic, parts, producers=1, rate=None, max_records=400,
                       producer_base=2) as fleet2:
        fleet2.join(60)
    fleet2.assert_clean()
    verify_topic(b.bootstrap, topic, parts, [fleet, fleet2])

    # The verifier notices a record nobody in the run produced.
    p = Producer(producer_conf(b.bootstrap))
    p.produce(topic, key=b"intruder", value=b"not from the fleet", partition=1)
    assert p.flush(30) == 0
    with pytest.raises(AssertionError, match="foreign record: 1"):
        verify_topic(b.bootstrap, topic, parts, [fleet, fleet2])


SHIM = r'''
import os, sys
real = sys.argv[1]
args, drop = [], {"--etcd-endpoints", "--session-ttl", "--unclean-failover", "--auto-rebalance"}
it = iter(sys.argv[2:])
for a in it:
    if a in drop:
        next(it)
    elif a == "--broker-id":
        args += ["--node-id", next(it)]
    else:
        args.append(a)
os.execv(real, [real] + args)
'''


def test_cluster_helpers_against_single_node_shim(cluster, tmp_path):
    """The Cluster helpers on a real broker: a 1-broker 'cluster' whose binary is the
    single-node cirrus behind a shim that drops the cluster-only flags (the single node
    serves the admin API too, on the --admin-listen it keeps)."""
    from cluster_harness import cirrus_binary

    if not cirrus_binary().exists():
        pytest.fail(f"{cirrus_binary()} does not exist: build it with `cargo build --release -p cirrus-broker`")
    shim = tmp_path / "shim.py"
    shim.write_text(SHIM)
    # Broker.command() = launcher + [binary, flags...]: python shim.py <real cirrus> flags...
    c = cluster(1, binary=cirrus_binary(), launcher=[sys.executable, str(shim)], auto_rebalance=False)
    b = c.broker(0)
    assert c.wait_brokers({0}) == {0: ("127.0.0.1", b.kafka_port)}
    c.create_topic("shim", 4, config={"cirrus.durability": "object"})
    assert c.wait_online("shim", 4) == {0: 0, 1: 0, 2: 0, 3: 0}
    assert c.leaders("shim") == {0: 0, 1: 0, 2: 0, 3: 0}

    with ProducerFleet(c.bootstrap(), "shim", 4, producers=2, rate=300, context=c.diagnostics) as fleet:
        fleet.wait_acked(600, timeout=30)
        b.kill9()
        b.restart()
        c.wait_online("shim", 4)
        b.sigstop()
        assert c.live() == [] and c.views() == {}
        time.sleep(0.5)
        b.sigcont()
        fleet.wait_progress(fleet.n_acked, 20, timeout=60, what="after kill -9 and SIGSTOP")
    fleet.assert_clean(allow_failed=True)
    verify_topic(c.bootstrap(), "shim", 4, [fleet], context=c.diagnostics)

    # A wait that cannot succeed times out on time, with the broker's log in the message.
    t0 = time.monotonic()
    with pytest.raises(AssertionError, match=r"(?s)timed out after 1.5s waiting for shim: never.*broker 0 \(running\)"):
        c.wait_leaders("shim", 4, lambda m: False, "never", timeout=1.5)
    assert time.monotonic() - t0 < 10
    took = b.stop()
    assert took < 30 and c.live() == []
