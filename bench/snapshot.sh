#!/usr/bin/env bash
# Benchmark: snapshot + restore of a 1 GiB volume (seatrial's engine: GNU tar from the local
# mountpoint or the archive API of a never-started helper → sha256-checked tar file → unpacked
# into the local mountpoint, or into a recreated volume through the archive API, both timed)
# against copying the same
# volume with `tar -C <mountpoint> -cf - . | tar -xf -` into a scratch directory on the same
# host, alternating per round in one run on one engine. Also checks that the restores are exact
# and that the process's peak RSS stays bounded (the volume is streamed, never held in memory).
#
#   bench/snapshot.sh            # 3 rounds (ROUNDS=n to change); needs root (reads the mountpoint)
# Prints a Markdown table; BENCHMARKS.md holds the published figures.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh >/dev/null 2>&1 || scripts/setup.sh
ROUNDS=${ROUNDS:-3} cargo test --release --locked --quiet -p seatrial-engine --test snapshot \
  -- --ignored --exact bench_snapshot_restore_1gib --nocapture --test-threads 1
