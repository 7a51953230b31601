"""The object-store conformance suite of cirrus-storage (put, multipart, ranged reads,
footer reads, list, delete) run against the real S3-compatible server."""

import uuid

from cirrus_e2e import run_cargo_suite


def test_storage_conformance_against_real_s3(seaweedfs):
    env = dict(seaweedfs.env, CIRRUS_TEST_S3_URL=f"s3://{seaweedfs.bucket}/conformance-{uuid.uuid4().hex[:8]}")
    run_cargo_suite(["-p", "cirrus-storage", "--test", "conformance"], env, "the S3 conformance test", timeout=600)
