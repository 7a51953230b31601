"""A consumer-group member for the end-to-end group tests, run as its own process (so a test
can SIGKILL it): subscribes to one topic in one group with a real client library, consumes,
commits synchronously after every batch, and logs every event as one JSON line (flushed):

    {"ev": "assign", "t": T, "parts": [...]}        partitions assigned (eager: the full set;
                                                    with "incremental": true, the ones added)
    {"ev": "revoke", "t": T, "parts": [...]}        (with "incremental": true, the ones taken)
    {"ev": "msgs", "t": T, "recs": [[p, o], ...]}   records consumed (before their commit)
    {"ev": "commit_try", "t": T, "offs": {p: next}}  about to commit these next offsets
    {"ev": "commit_ok", "t": T, "offs": {...}} / {"ev": "commit_fail", "t": T, "err": "..."}
    {"ev": "ready"} once subscribed, {"ev": "closed"} after a clean close

T is time.monotonic() (system-wide on Linux, so events of several workers can be ordered).
SIGTERM closes the consumer cleanly (it leaves the group); SIGKILL leaves it to the session
timeout.

    python group_worker.py --lib confluent|kafka-python --bootstrap H:P --group G --topic T --log PATH
        [--protocol eager|cooperative|consumer]

--protocol (confluent only): eager (classic protocol, range assignor), cooperative (classic
protocol, cooperative-sticky: incremental rebalances) or consumer (KIP-848's
ConsumerGroupHeartbeat with server-side assignment, incremental).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time

stop = False


def _on_term(signum, frame):  # noqa: ARG001 - signal handler signature
    global stop
    stop = True


class Log:
    def __init__(self, path: str):
        self.f = open(path, "a", buffering=1)

    def write(self, ev: str, **kw) -> None:
        kw["ev"] = ev
        kw["t"] = time.monotonic()
        self.f.write(json.dumps(kw) + "\n")
        self.f.flush()


def run_confluent(args, log: Log) -> None:
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    conf = {
        "bootstrap.servers": args.bootstrap,
        "broker.address.family": "v4",
        "group.id": args.group,
        "client.id": args.name,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        "topic.metadata.refresh.interval.ms": 2000,
    }
    if args.protocol == "consumer":
        # Sessions and heartbeats are the broker's settings in KIP-848.
        conf["group.protocol"] = "consumer"
    else:
        conf.update({"session.timeout.ms": args.session_ms, "heartbeat.interval.ms": 1000})
        if args.protocol == "cooperative":
            conf["partition.assignment.strategy"] = "cooperative-sticky"
    c = Consumer(conf)
    incremental = args.protocol != "eager"

    # Offsets consumed but not committed yet; dropped at a rebalance for the partitions
    # that may move (eager: all of them).
    offs: dict[int, int] = {}

    def on_assign(consumer, parts):
        if not incremental:
            offs.clear()
        log.write("assign", parts=sorted(p.partition for p in parts), incremental=incremental)

    def on_revoke(consumer, parts):
        for p in parts:
            offs.pop(p.partition, None)
        if not incremental:
            offs.clear()
        log.write("revoke", parts=sorted(p.partition for p in parts), incremental=incremental)

    c.subscribe([args.topic], on_assign=on_assign, on_revoke=on_revoke)
    log.write("ready")
    batches = 0
    try:
        while not stop:
            msgs = c.consume(num_messages=500, timeout=0.5)
            recs = []
            for m in msgs:
                if m.error():
                    log.write("error", err=str(m.error()))
                    continue
                recs.append([m.partition(), m.offset()])
                offs[m.partition()] = m.offset() + 1
            if not recs:
                continue
            log.write("msgs", recs=recs)
            batches += 1
            if batches % args.commit_every:
                continue
            log.write("commit_try", offs=offs)
            try:
                c.commit(offsets=[TopicPartition(args.topic, p, o) for p, o in offs.items()], asynchronous=False)
                log.write("commit_ok", offs=offs)
            except KafkaException as e:
                log.write("commit_fail", err=str(e), offs=offs)
            offs.clear()
    finally:
        c.close()
        log.write("closed")


def run_kafka_python(args, log: Log) -> None:
    from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError
    from kafka.structs import OffsetAndMetadata

    # Offsets consumed but not committed yet; dropped at a rebalance (the partitions may move).
    offs: dict[int, int] = {}

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            offs.clear()
            log.write("revoke", parts=sorted(tp.partition for tp in revoked))

        def on_partitions_assigned(self, assigned):
            offs.clear()
            log.write("assign", parts=sorted(tp.partition for tp in assigned))

    c = KafkaConsumer(
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        client_id=args.name,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=args.session_ms,
        heartbeat_interval_ms=1000,
        metadata_max_age_ms=2000,
        request_timeout_ms=30000,
    )
    c.subscribe(topics=[args.topic], listener=Listener())
    log.write("ready")
    batches = 0
    try:
        while not stop:
            polled = c.poll(timeout_ms=500, max_records=500)
            recs = []
            for tp, records in polled.items():
                for r in records:
                    recs.append([tp.partition, r.offset])
                    offs[tp.partition] = r.offset + 1
            if not recs:
                continue
            log.write("msgs", recs=recs)
            batches += 1
            if batches % args.commit_every:
                continue
            log.write("commit_try", offs=offs)
            try:
                c.commit({TopicPartition(args.topic, p): OffsetAndMetadata(o, "", -1) for p, o in offs.items()})
                log.write("commit_ok", offs=offs)
            except KafkaError as e:
                log.write("commit_fail", err=repr(e), offs=offs)
            offs.clear()
    finally:
        c.close(autocommit=False)
        log.write("closed")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", choices=["confluent", "kafka-python"], required=True)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--name", default="worker")
    ap.add_argument("--session-ms", type=int, default=6000)
    ap.add_argument("--commit-every", type=int, default=1, help="commit after every N non-empty batches")
    ap.add_argument("--protocol", choices=["eager", "cooperative", "consumer"], default="eager")
    args = ap.parse_args()
    if args.lib != "confluent" and args.protocol != "eager":
        ap.error("--protocol cooperative|consumer needs --lib confluent")
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, _on_term)
    log = Log(args.log)
    if args.lib == "confluent":
        run_confluent(args, log)
    else:
        run_kafka_python(args, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
