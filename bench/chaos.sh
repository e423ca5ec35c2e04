#!/usr/bin/env bash
# Reliability benchmark: kill `seatrial test` of examples/coop-hello (network, volume, secret,
# config) at random moments, many times, and count what stays on the engine:
#   - SIGTERM to the trial's process group at a random moment in its first 4 s → nothing may be
#     left, without the janitor;
#   - SIGKILL at a random moment in its first 3 s, then one `seatrial janitor` → nothing left;
#   - one SIGTERM delivered twice at once (`timeout` forwarding it) → teardown still runs.
# ROUNDS (default 50) per kind; the seed is printed (SEATRIAL_CHAOS_SEED repeats a series).
# The same tests run with 4 rounds in the suite (crates/seatrial/tests/chaos.rs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rounds=${ROUNDS:-50}
scripts/setup.sh >/dev/null
started=$(date +%s)
SEATRIAL_CHAOS_ROUNDS=$rounds cargo test --locked -p seatrial --test chaos -- --test-threads 1 --nocapture 2>&1 \
  | grep -E '^(chaos seed|test |test result|thread|  left|leaks)' || true
echo "rounds per kind: $rounds; took $(( $(date +%s) - started )) s"
