#!/usr/bin/env bash
# The test command (README quick start, and what CI runs): make the machine ready (Docker engine,
# single-node swarm, fixture images), then check formatting and lints and run every test against
# the real engine. Fails — never skips — when something the tests need cannot be had.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh
# The PostgreSQL that setup.sh started; the store and server tests fail (never skip) without it.
export SEATRIAL_TEST_POSTGRES_URL=${SEATRIAL_TEST_POSTGRES_URL:-postgres://seatrial:seatrial@127.0.0.1:5432/seatrial_test}
# A superuser of that server for the gate's migration tests (roles, scratch databases).
export SEATRIAL_TEST_POSTGRES_ADMIN_URL=${SEATRIAL_TEST_POSTGRES_ADMIN_URL:-postgres://seatrial_admin:seatrial_admin@127.0.0.1:5432/postgres}
echo "test: cargo fmt --check" >&2
cargo fmt --all --check
echo "test: cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
# seatrial's own image: its test (crates/seatrial/tests/image.rs) and the trial of the seatrial
# recipe (deploy/seatrial) run this image.
echo "test: scripts/build-image.sh" >&2
scripts/build-image.sh
# A real two-node swarm beside the host's engine for the cluster tests (crates/seatrial/tests/
# cluster*.rs); always taken down again. The host's engine must come out of the whole run as it
# went in: no object left behind by any test, its swarm untouched by the cluster's.
echo "test: scripts/cluster.sh up" >&2
host_before=$(scripts/cluster.sh host-state)
trap 'scripts/cluster.sh down' EXIT
cluster=$(scripts/cluster.sh up)
SEATRIAL_TEST_CLUSTER=$(sed -n 's/^DOCKER_HOST=//p' <<<"$cluster")
[ -n "$SEATRIAL_TEST_CLUSTER" ] || { echo "test: scripts/cluster.sh up named no manager" >&2; exit 1; }
export SEATRIAL_TEST_CLUSTER
export SEATRIAL_TEST_CLUSTER_WORKER=unix:///run/docker-c2.sock
echo "test: cargo test" >&2
cargo test --workspace --locked
scripts/cluster.sh down
trap - EXIT
host_after=$(scripts/cluster.sh host-state)
if [ "$host_before" != "$host_after" ]; then
  echo "test: the host's engine changed during the tests (before → after):" >&2
  diff <(echo "$host_before") <(echo "$host_after") >&2 || true
  exit 1
fi
