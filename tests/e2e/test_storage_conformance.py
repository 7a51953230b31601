"""The object-store conformance suite of cirrus-storage (put, multipart, ranged reads,
footer reads, list, delete) run against the real S3-compatible server."""

import os
import subprocess
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_storage_conformance_against_real_s3(seaweedfs):
    env = dict(os.environ)
    env.update(seaweedfs.env)
    env["CIRRUS_TEST_S3_URL"] = f"s3://{seaweedfs.bucket}/conformance-{uuid.uuid4().hex[:8]}"
    proc = subprocess.run(
        ["cargo", "test", "-q", "-p", "cirrus-storage", "--test", "conformance", "--", "--nocapture"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-8000:]
    assert "skipped" not in out.lower(), f"the S3 conformance test did not run against the server:\n{out[-4000:]}"
