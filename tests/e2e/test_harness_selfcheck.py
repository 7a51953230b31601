"""Checks of the harness itself (no cirrus binary needed): the S3 server, the stores, the
Broker helper's lifecycle (against a tiny fake broker), and the kcat client."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DATA_OBJECT_RE, Broker, BrokerError, file_store
from cirrus_e2e import api_versions_probe

FAKE = Path(__file__).with_name("selfcheck_fake_broker.py")


def test_seaweedfs_s3_put_list_get(seaweedfs, s3_only_store):
    s3 = seaweedfs.client()
    assert seaweedfs.bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    prefix = s3_only_store.url.split("/", 3)[3]
    key = f"{prefix}/data/00ab/writer1-000001.obj"
    s3.put_object(Bucket=seaweedfs.bucket, Key=key, Body=b"x" * 1234)
    s3.put_object(Bucket=seaweedfs.bucket, Key=f"{prefix}/meta/other", Body=b"y")
    assert s3.get_object(Bucket=seaweedfs.bucket, Key=key)["Body"].read() == b"x" * 1234
    assert s3_only_store.list_objects() == [("data/00ab/writer1-000001.obj", 1234), ("meta/other", 1)]
    assert s3_only_store.data_objects() == [("data/00ab/writer1-000001.obj", 1234)]
    # Credentials are enforced, so the broker's env really matters.
    import boto3
    from botocore.exceptions import ClientError

    bad = boto3.client("s3", endpoint_url=seaweedfs.endpoint, aws_access_key_id="nobody",
                       aws_secret_access_key="wrong", region_name="us-east-1")
    with pytest.raises(ClientError):
        bad.list_objects_v2(Bucket=seaweedfs.bucket, Prefix=prefix)
    env = s3_only_store.env
    assert env["AWS_ENDPOINT_URL"] == seaweedfs.endpoint and env["AWS_ALLOW_HTTP"] == "true"
    assert s3_only_store.flags == ["--object-store", s3_only_store.url]
    assert re.fullmatch(r"s3://cirrus-e2e/[a-z0-9-]+", s3_only_store.url)


def test_store_prefixes_are_unique(request, seaweedfs):
    from conftest import s3_store, unique_prefix

    a, b = s3_store(seaweedfs, unique_prefix(request)), s3_store(seaweedfs, unique_prefix(request))
    assert a.url != b.url
    assert a.list_objects() == [] and b.list_objects() == []


def test_file_store_listing(tmp_path):
    st = file_store(tmp_path / "objs")
    assert st.url.startswith("file:///") and st.url.endswith("/objs")
    (tmp_path / "objs/data/12ef").mkdir(parents=True)
    (tmp_path / "objs/data/12ef/w0-7.obj").write_bytes(b"abc")
    (tmp_path / "objs/data/12ef/tmp-upload").write_bytes(b"zz")
    assert st.data_objects() == [("data/12ef/w0-7.obj", 3)]
    assert len(st.list_objects()) == 2
    assert DATA_OBJECT_RE.search("prefix/data/abcd/9f1c-00000012.obj")
    assert not DATA_OBJECT_RE.search("data/ABCDE/w-1.obj")


def test_broker_helper_lifecycle_with_fake(tmp_path):
    b = Broker(tmp_path / "b", args=["--durability", "object"], env={"CIRRUS_X": "1"},
               binary=FAKE, launcher=[sys.executable])
    cmd = b.command()
    assert cmd[cmd.index("--kafka-listen") + 1] == b.bootstrap
    assert cmd[cmd.index("--data-dir") + 1] == str(b.data_dir)
    assert cmd[-2:] == ["--durability", "object"]
    assert b.environment()["CIRRUS_X"] == "1"
    try:
        b.start(timeout=15)
        assert b.livez()
        assert 18 in api_versions_probe(b.bootstrap)
        ports = (b.kafka_port, b.metrics_port)
        b.kill9()
        assert not b.running
        b.restart(timeout=15)  # same ports, same data dir
        assert (b.kafka_port, b.metrics_port) == ports
        assert (b.data_dir / "wal/fake.wal").read_text() == "start\nstart\n"
        assert b.stop() < 10
        assert "fake cirrus stopping" in b.log()
        assert b.log().count("===== start #") == 2
    finally:
        b.cleanup()


def test_broker_helper_reports_failures(tmp_path):
    # Nonzero exit on SIGTERM is reported with the log.
    b = Broker(tmp_path / "b1", args=["--exit-code-on-term", "3"], binary=FAKE, launcher=[sys.executable])
    try:
        b.start(timeout=15)
        with pytest.raises(BrokerError, match=r"exited with 3 after SIGTERM[\s\S]*fake cirrus ready"):
            b.stop()
    finally:
        b.cleanup()
    # A process that dies at start-up fails readiness at once, with its output.
    b = Broker(tmp_path / "b2", binary=Path("/bin/false"))
    with pytest.raises(BrokerError, match="exited with 1 while starting"):
        b.start(timeout=10)
    b.cleanup()


def test_kcat_is_installed():
    kcat = shutil.which("kcat")
    assert kcat, "kcat missing: tests/run.sh installs it with apt-get"
    out = subprocess.run([kcat, "-V"], capture_output=True, text=True, timeout=10).stdout
    assert "librdkafka" in out
