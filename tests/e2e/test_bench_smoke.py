"""The load generator (tests/bench, librdkafka) runs end to end against a broker it starts
itself, and its report carries the figures BENCHMARKS.md is built from."""

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cirrus_binary() -> Path:
    if os.environ.get("CIRRUS_BIN"):
        return Path(os.environ["CIRRUS_BIN"])
    return Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")).resolve() / "release" / "cirrus"


def test_load_generator_reports_every_figure(tmp_path):
    bench = cirrus_binary().parent / "cirrus-bench"
    assert bench.exists(), f"{bench} is missing: tests/run.sh builds it"
    out = tmp_path / "report.json"
    proc = subprocess.run(
        [str(bench), "--broker-bin", str(cirrus_binary()), "--broker-data-dir", str(tmp_path / "broker"),
         "--profile", "custom", "--partitions", "3", "--record-size", "512", "--rate", "2000",
         "--duration", "3s", "--consumer-groups", "2", "--broker-arg=--flush-interval=100ms",
         "--output", str(out)],
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.loads(out.read_text())
    assert r["errors"] == 0
    assert r["sent"] == 6000 and r["acked"] == 6000, (r["sent"], r["acked"])
    # Two live consumers saw every record.
    assert r["consumed_records"] >= 2 * r["acked"], r["consumed_records"]
    lat = r["produce_latency"]
    assert lat["count"] == 6000 and 0 < lat["p50_ms"] <= lat["p99_ms"] <= lat["max_ms"], lat
    assert r["end_to_end_latency"]["count"] >= 12000
    assert r["broker"]["broker_cpu_seconds"] > 0 and r["broker"]["broker_peak_rss_mib"] > 0, r["broker"]
    s3 = r["object_store"]
    # 3 s at 100 ms flushes: objects were cut by time, one metadata write each.
    assert s3["objects_committed"] >= 5 and s3["puts"] >= s3["objects_committed"], s3
    assert s3["metadata_writes_per_second"] > 0 and s3["cost_usd_per_gb"] > 0, s3
    assert r["object_sizes_bytes"]["count"] == s3["objects_committed"], (r["object_sizes_bytes"], s3)
