#!/usr/bin/env bash
# Make a fresh Debian 12 machine ready to run seatrial and its tests, idempotently:
# install the Docker engine and busybox-static when missing, start dockerd when no engine answers,
# initialise a single-node swarm when this engine is not a manager, and build the fixture images.
# Exits non-zero (never "skips") when any of that cannot be done.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

need_pkgs=()
command -v dockerd >/dev/null 2>&1 || need_pkgs+=(docker.io)
dpkg -s busybox-static >/dev/null 2>&1 || need_pkgs+=(busybox-static)
# libfaketime: the server tests run one server with a clock an hour ahead (leases must not care).
dpkg -s libfaketime >/dev/null 2>&1 || need_pkgs+=(faketime)
command -v curl >/dev/null 2>&1 || need_pkgs+=(curl)
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)
# groff: the test that `seatrial man` is a man page groff reads without warnings.
command -v groff >/dev/null 2>&1 || need_pkgs+=(groff-base)
# podman: the test that seatrial refuses a Podman engine (no Swarm) with exit 3.
command -v podman >/dev/null 2>&1 || need_pkgs+=(podman)
# seatrial's own image (scripts/build-image.sh): a static musl build (musl-gcc compiles ring's and
# SQLite's C), git, docker and curl with their libraries copied in,
# objcopy (binutils) to split the debug info off.
command -v musl-gcc >/dev/null 2>&1 || need_pkgs+=(musl-tools)
command -v git >/dev/null 2>&1 || need_pkgs+=(git)
command -v objcopy >/dev/null 2>&1 || need_pkgs+=(binutils)
dpkg -s ca-certificates >/dev/null 2>&1 || need_pkgs+=(ca-certificates)
# The two-node cluster of the cluster tests (scripts/cluster.sh): network namespaces and veth
# pairs (iproute2), nsenter/unshare (util-linux), pkill (procps).
command -v ip >/dev/null 2>&1 || need_pkgs+=(iproute2)
command -v nsenter >/dev/null 2>&1 || need_pkgs+=(util-linux)
command -v pkill >/dev/null 2>&1 || need_pkgs+=(procps)
# The systemd unit's test checks it with systemd-analyze.
command -v systemd-analyze >/dev/null 2>&1 || need_pkgs+=(systemd)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq || die "apt-get update failed; is a Debian mirror reachable?"
  as_root apt-get install -y -qq "${need_pkgs[@]}" >/dev/null || die "apt-get install ${need_pkgs[*]} failed"
fi

# promtool, for the test of deploy/prometheus/seatrial.rules.yml: Debian ships it in
# `prometheus` (without its recommends: the tool, not a running Prometheus and its exporters).
if ! command -v promtool >/dev/null 2>&1; then
  log "installing prometheus (for promtool)"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq || die "apt-get update failed; is a Debian mirror reachable?"
  as_root apt-get install -y -qq --no-install-recommends prometheus >/dev/null || die "apt-get install prometheus failed"
fi

engine_answers() { timeout 10 docker info >/dev/null 2>&1; }

if ! engine_answers; then
  log "no Docker engine answers; starting dockerd"
  command -v dockerd >/dev/null 2>&1 || die "dockerd is not installed"
  mkdir -p /var/log
  # setsid: the daemon must not die with this shell or its process group.
  as_root setsid dockerd >/var/log/seatrial-dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 1 120); do
    engine_answers && break
    sleep 0.5
  done
  engine_answers || { tail -n 30 /var/log/seatrial-dockerd.log >&2 || true; die "dockerd did not answer within 60 s (log above, full log in /var/log/seatrial-dockerd.log)"; }
  log "dockerd is up"
fi

swarm_state=$(docker info --format '{{.Swarm.LocalNodeState}}/{{.Swarm.ControlAvailable}}' 2>/dev/null || echo unknown)
case "$swarm_state" in
  active/true) ;;
  inactive/*)
    log "initialising a single-node swarm"
    docker swarm init --advertise-addr 127.0.0.1 >/dev/null || die "docker swarm init failed"
    ;;
  *) die "this engine is in swarm state '$swarm_state' and is not a manager; run seatrial against a manager node" ;;
esac

# The store's tests run against PostgreSQL too: a local cluster with a `seatrial` role and a
# `seatrial_test` database (URL: postgres://seatrial:seatrial@127.0.0.1:5432/seatrial_test).
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  log "installing postgresql"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq || die "apt-get update failed; is a Debian mirror reachable?"
  as_root apt-get install -y -qq --no-install-recommends postgresql >/dev/null || die "apt-get install postgresql failed"
fi
pg_answers() { timeout 5 su postgres -c "psql -qAtc 'SELECT 1'" >/dev/null 2>&1; }
if ! pg_answers; then
  cluster=$(pg_lsclusters -h 2>/dev/null | awk 'NR==1 {print $1" "$2}')
  [ -n "$cluster" ] || die "postgresql is installed but has no cluster (pg_createcluster 15 main)"
  log "starting PostgreSQL cluster $cluster"
  # shellcheck disable=SC2086
  as_root pg_ctlcluster $cluster start || die "cannot start PostgreSQL cluster $cluster (see /var/log/postgresql/)"
  for _ in $(seq 1 60); do pg_answers && break; sleep 0.5; done
  pg_answers || die "PostgreSQL did not answer within 30 s (see /var/log/postgresql/)"
fi
su postgres -c "psql -qAtc \"SELECT 1 FROM pg_roles WHERE rolname = 'seatrial'\"" | grep -q 1 \
  || su postgres -c "psql -qc \"CREATE ROLE seatrial LOGIN CREATEDB PASSWORD 'seatrial'\"" >/dev/null \
  || die "cannot create the PostgreSQL role seatrial"
su postgres -c "psql -qAtc \"SELECT 1 FROM pg_database WHERE datname = 'seatrial_test'\"" | grep -q 1 \
  || su postgres -c "createdb -O seatrial seatrial_test" || die "cannot create the database seatrial_test"
# The gate's migration tests create roles and scratch databases and load production-like schema
# snapshots (tables owned by other roles), which needs a superuser of its own: `seatrial_admin`
# (URL: postgres://seatrial_admin:seatrial_admin@127.0.0.1:5432/postgres; local test cluster only).
su postgres -c "psql -qAtc \"SELECT 1 FROM pg_roles WHERE rolname = 'seatrial_admin'\"" | grep -q 1 \
  || su postgres -c "psql -qc \"CREATE ROLE seatrial_admin LOGIN SUPERUSER PASSWORD 'seatrial_admin'\"" >/dev/null \
  || die "cannot create the PostgreSQL role seatrial_admin"

# The dashboard's browser test drives Debian's headless Chromium through chromedriver.
if ! command -v chromedriver >/dev/null 2>&1 || ! [ -x /usr/bin/chromium ]; then
  log "installing chromium and chromium-driver (for the dashboard's browser test)"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq || die "apt-get update failed; is a Debian mirror reachable?"
  as_root apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null \
    || die "apt-get install chromium chromium-driver failed"
fi
/usr/bin/chromium --version >/dev/null 2>&1 || die "chromium is installed but does not run"

"$here/fixtures/images/build.sh" || die "building the fixture images failed"
log "ready: engine $(docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})'), swarm manager, fixture images built"
