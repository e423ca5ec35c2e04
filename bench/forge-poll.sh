#!/usr/bin/env bash
# Benchmark: one poll cycle of `seatrial serve` against the fake Gitea with 200 enrolled
# repositories, 10 open PRs each, no new comments, 50 ms answer latency. Reports requests per
# cycle (aim: one per repository) and the cycle time (aim: under 10 s).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo test --release --locked -q -p seatrial --test forge -- --ignored --nocapture poll_cycle_benchmark 2>&1 \
  | grep '^|'
