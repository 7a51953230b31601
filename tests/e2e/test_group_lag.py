"""Consumer lag and the group admin commands, with real clients (confluent-kafka):

- single node: a group's lag in records and in time, as `cirrus admin groups describe` shows
  it (Kafka's kafka-consumer-groups columns) and as the cirrus_consumer_group_lag_* metrics
  expose it; `groups list`; `groups reset-offsets` is refused while the group has members,
  is a dry run without --execute, and with it moves the committed offsets to an offset, the
  earliest, a datetime and a shift, which the next consumer of the group starts from;
- 3-broker cluster: describe, list and reset asked through a broker that is not the group's
  coordinator (forwarded), with log-end offsets of partitions owned by every broker, and
  the lag series summed over brokers cover each partition once.
"""

from __future__ import annotations

import re
import time
import urllib.request

import pytest

from cirrus_e2e import client_conf, create_topic, producer_conf
from cluster_harness import cirrus_binary, parse_table, run_admin
from test_groups import find_coordinator, wait_until

LAG_ARGS = ["--consumer-lag-interval", "1s", "--group-initial-rebalance-delay", "0s"]


def produce(bootstrap: str, topic: str, partition: int, n: int, tag: str) -> None:
    from confluent_kafka import Producer

    p = Producer(producer_conf(bootstrap))
    for i in range(n):
        p.produce(topic, value=f"{tag}-{i}".encode(), partition=partition)
    assert p.flush(30) == 0


def commit(bootstrap: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    """A commit outside group management (generation -1), as admin tools do."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(client_conf(bootstrap, **{"group.id": group, "enable.auto.commit": False}))
    try:
        c.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False)
    finally:
        c.close()


def committed(bootstrap: str, group: str, topic: str, parts: int) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(client_conf(bootstrap, **{"group.id": group, "enable.auto.commit": False}))
    try:
        got = c.committed([TopicPartition(topic, p) for p in range(parts)], timeout=20)
        return {tp.partition: tp.offset for tp in got}
    finally:
        c.close()


def admin(addr: str, *args, expect_rc: int = 0):
    res = run_admin(cirrus_binary(), addr, args, timeout=60)
    assert res.rc == expect_rc, f"`cirrus admin {' '.join(map(str, args))}`: {res}"
    return res


def describe(addr: str, group: str) -> tuple[str, dict[tuple[str, int], dict[str, str]]]:
    out = admin(addr, "groups", "describe", group).stdout
    header = out.splitlines()[0]
    if "no committed offsets" in out:
        return header, {}
    rows = parse_table(out, [["topic"], ["current_offset"], ["log_end_offset"], ["lag"]])
    return header, {(r["topic"], int(r["partition"])): r for r in rows}


def lag_series(metrics_text: str, group: str) -> dict[tuple[str, str, int], float]:
    """{(metric, topic, partition): value} of cirrus_consumer_group_lag_{records,seconds}."""
    out = {}
    for m in re.finditer(r'^cirrus_consumer_group_lag_(records|seconds)\{([^}]*)\} (\S+)$', metrics_text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        if labels.get("group") == group:
            out[(m.group(1), labels["topic"], int(labels["partition"]))] = float(m.group(3))
    return out


def scrape(url: str) -> str:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        return r.read().decode()


def wait_for(what: str, pred, timeout: float = 30.0):
    return wait_until(what, pred, timeout)


@pytest.mark.timeout(240)
def test_lag_describe_metrics_and_reset_single_node(broker_factory):
    from confluent_kafka import Consumer, TopicPartition

    b = broker_factory(args=LAG_ARGS)
    topic, group = "lagged", "lag-group"
    create_topic(b.bootstrap, topic, 2)
    produce(b.bootstrap, topic, 0, 20, "early")
    time.sleep(1.5)
    t_mid = int(time.time() * 1000)
    time.sleep(0.2)
    produce(b.bootstrap, topic, 0, 10, "late")
    produce(b.bootstrap, topic, 1, 10, "p1")

    # An active member consumes and commits p0 at 10 and p1 at 10.
    c = Consumer(client_conf(b.bootstrap, **{"group.id": group, "enable.auto.commit": False,
                                             "auto.offset.reset": "earliest", "client.id": "lag-client"}))
    try:
        c.subscribe([topic])
        seen = {0: 0, 1: 0}
        deadline = time.monotonic() + 30
        while (seen[0] < 30 or seen[1] < 10) and time.monotonic() < deadline:
            for m in c.consume(num_messages=100, timeout=0.5):
                assert not m.error(), m.error()
                seen[m.partition()] += 1
        assert seen == {0: 30, 1: 10}, seen
        c.commit(offsets=[TopicPartition(topic, 0, 10), TopicPartition(topic, 1, 10)], asynchronous=False)

        header, rows = describe(b.admin_addr, group)
        assert header.startswith(f"group {group}: state Stable") and "1 member" in header, header
        p0, p1 = rows[(topic, 0)], rows[(topic, 1)]
        assert (p0["current_offset"], p0["log_end_offset"], p0["lag"]) == ("10", "30", "20"), p0
        assert (p1["current_offset"], p1["log_end_offset"], p1["lag"]) == ("10", "10", "0"), p1
        assert p1["lag_time"] == "0s" and p0["lag_time"] not in ("0s", "-"), (p0, p1)
        assert p0["client_id"] == "lag-client" and p0["consumer_id"] != "-", p0

        # The metrics: records exactly, seconds at least the age of record 10 (>= 1.5 s).
        series = wait_for("lag series", lambda: (lambda s: (
            s.get(("records", topic, 0)) == 20 and s.get(("records", topic, 1)) == 0, s))(
            lag_series(scrape(b.metrics_url), group)))
        assert series[("seconds", topic, 0)] >= 1.5 and series[("seconds", topic, 1)] == 0, series

        listed = admin(b.admin_addr, "groups", "list").stdout
        rows_l = {r["group"]: r for r in parse_table(listed, [["group"], ["state"]])}
        assert rows_l[group]["state"] == "Stable" and rows_l[group]["protocol_type"] == "consumer", listed

        refused = admin(b.admin_addr, "groups", "reset-offsets", group, "--all-topics", "--to-earliest",
                        "--execute", expect_rc=1)
        assert "active members" in refused.stderr, refused
    finally:
        c.close()

    # Inactive now: a dry run changes nothing, --execute does.
    dry = admin(b.admin_addr, "groups", "reset-offsets", group, "--topic", f"{topic}:0", "--to-offset", "25")
    assert "dry run" in dry.stdout and re.search(r"lagged\s+0\s+10\s+25", dry.stdout), dry.stdout
    assert committed(b.bootstrap, group, topic, 2) == {0: 10, 1: 10}
    admin(b.admin_addr, "groups", "reset-offsets", group, "--topic", f"{topic}:0", "--to-offset", "25", "--execute")
    assert committed(b.bootstrap, group, topic, 2) == {0: 25, 1: 10}
    _, rows = describe(b.admin_addr, group)
    assert rows[(topic, 0)]["lag"] == "5" and rows[(topic, 0)]["consumer_id"] == "-", rows

    # To a datetime: the first record produced after t_mid is offset 20 on p0; p1's are all later.
    admin(b.admin_addr, "groups", "reset-offsets", group, "--topic", topic, "--to-datetime",
          time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t_mid / 1000)) + f".{t_mid % 1000:03d}Z", "--execute")
    assert committed(b.bootstrap, group, topic, 2) == {0: 20, 1: 0}
    # Shifts clamp into [log start, log end]; offsets clamp too.
    admin(b.admin_addr, "groups", "reset-offsets", group, "--all-topics", "--shift-by", "-5", "--execute")
    assert committed(b.bootstrap, group, topic, 2) == {0: 15, 1: 0}
    admin(b.admin_addr, "groups", "reset-offsets", group, "--topic", f"{topic}:1", "--to-offset", "99", "--execute")
    assert committed(b.bootstrap, group, topic, 2) == {0: 15, 1: 10}
    admin(b.admin_addr, "groups", "reset-offsets", group, "--all-topics", "--to-earliest", "--execute")
    assert committed(b.bootstrap, group, topic, 2) == {0: 0, 1: 0}
    wait_for("lag after the reset", lambda: (lambda s: (s.get(("records", topic, 0)) == 30, s))(
        lag_series(scrape(b.metrics_url), group)))

    # The next member of the group starts where the reset put it.
    c = Consumer(client_conf(b.bootstrap, **{"group.id": group, "enable.auto.commit": False,
                                             "auto.offset.reset": "latest"}))
    try:
        c.subscribe([topic])
        first = {}
        deadline = time.monotonic() + 30
        while len(first) < 2 and time.monotonic() < deadline:
            for m in c.consume(num_messages=100, timeout=0.5):
                first.setdefault(m.partition(), m.offset())
        assert first == {0: 0, 1: 0}, first
    finally:
        c.close()

    # Bad input gets readable errors.
    res = admin(b.admin_addr, "groups", "reset-offsets", group, "--topic", "nope", "--to-latest", expect_rc=1)
    assert "topic nope does not exist" in res.stderr, res
    res = admin(b.admin_addr, "groups", "reset-offsets", group, "--topic", f"{topic}:7", "--to-latest", expect_rc=1)
    assert "has no partition 7" in res.stderr, res
    header, rows = describe(b.admin_addr, "never-seen")
    assert header.startswith("group never-seen: state Dead") and rows == {}, header


@pytest.mark.cluster
@pytest.mark.timeout(300)
def test_group_admin_is_forwarded_in_a_cluster(cluster):
    c = cluster(3, extra_args=LAG_ARGS)
    topic, group, parts = "lag-cluster", "lag-cluster-group", 6
    c.create_topic(topic, parts)
    leaders = c.wait_online(topic, parts)
    assert len(set(leaders.values())) == 3, f"partitions on every broker: {leaders}"
    bootstrap = c.bootstrap()
    for p in range(parts):
        produce(bootstrap, topic, p, 10 + p, f"p{p}")
    commit(bootstrap, group, topic, {p: p for p in range(parts)})

    err, coordinator = find_coordinator(c.broker(0).bootstrap, group)
    assert err == 0, err
    via = next(b for b in c.brokers if b.broker_id != coordinator)
    header, rows = describe(via.admin_addr, group)
    assert f"coordinator broker {coordinator}" in header and "state Empty" in header, header
    for p in range(parts):
        r = rows[(topic, p)]
        assert (r["current_offset"], r["log_end_offset"], r["lag"]) == (str(p), str(10 + p), "10"), r

    # Each partition's lag is exposed once, by its owner.
    def summed():
        totals: dict[int, list[float]] = {}
        for b in c.brokers:
            for (kind, t, p), v in lag_series(b.metrics(), group).items():
                if kind == "records" and t == topic:
                    totals.setdefault(p, []).append(v)
        return totals == {p: [10.0] for p in range(parts)}, totals
    wait_for("lag series from every owner", summed, timeout=30)

    listed = admin(via.admin_addr, "groups", "list").stdout
    rows_l = {r["group"]: r for r in parse_table(listed, [["group"], ["coordinator"]])}
    assert rows_l[group]["coordinator"] == str(coordinator), listed

    admin(via.admin_addr, "groups", "reset-offsets", group, "--all-topics", "--to-latest", "--execute")
    assert committed(bootstrap, group, topic, parts) == {p: 10 + p for p in range(parts)}
    _, rows = describe(via.admin_addr, group)
    assert all(rows[(topic, p)]["lag"] == "0" for p in range(parts)), rows

    # `topics describe` shows every partition's high watermark, not only the asked broker's.
    hwms = {p: r["row"]["high_watermark"] for p, r in c.admin_partitions(topic).items()}
    assert hwms == {p: str(10 + p) for p in range(parts)}, hwms
