#!/usr/bin/env bash
# Benchmark: a quick run vs a cold run of the same change on the slow-first-boot recipe
# (fixtures/recipes/slowseed-history.sh: the app seeds an empty volume for SEED_SECONDS=20
# before it turns healthy, and starts at once on a seeded one), alternating per round in one run
# on one engine:
#   quick: seatrial test <repo> --ref good-change --quick   (restore if needed, deploy the
#          canonical at 1.1.0+1, converge, serve, upgrade to the change, serve, tests, undeploy,
#          restore the known-good)
#   cold:  seatrial test <repo> --ref good-change           (install 1.1.0+1 on empty volumes:
#          the 20 s seeding, serve, upgrade, serve, tests, teardown)
# after one untimed `seatrial test <repo> --ref 1.1.0+1 --promote` that makes the canonical.
# Also: each run's upgrade stage (from its JSON report) against the engine's own floor of an
# in-place update (bench/update-floor.sh: update started → replaced task healthy, and → Swarm's
# `completed`).
#   bench/quick.sh            # 5 rounds each (ROUNDS=n to change); prints a Markdown table
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rounds=${ROUNDS:-5}
seed=${SEED_SECONDS:-20}
scripts/setup.sh >/dev/null 2>&1 || scripts/setup.sh
cargo build --release --locked --quiet -p seatrial
bin=${CARGO_TARGET_DIR:-target}/release/seatrial
work=$(mktemp -d)
export SEATRIAL_DATA_DIR=$work/data
repo=$work/slowseed-bench
cleanup() {
  "$bin" warm drop slowseed-bench >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
fixtures/recipes/slowseed-history.sh "$repo" 2>/dev/null

now_ms() { date +%s%3N; }
stage_ms() { # <report.json> <stage>: its duration in ms (NA when absent)
  python3 - "$1" "$2" <<'PY'
import json, sys
try:
    stages = json.load(open(sys.argv[1]))["stages"]
    print(next(s["duration_ms"] for s in stages if s["name"] == sys.argv[2]))
except Exception:
    print("NA")
PY
}
result_of() { python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r.get("mode"), r.get("result"))' "$1" 2>/dev/null || echo "no report"; }

echo "seeding the canonical (untimed, SEED_SECONDS=$seed)" >&2
if ! "$bin" test "$repo" --ref 1.1.0+1 --promote --env "SEED_SECONDS=$seed" --json "$work/promote.json" >"$work/promote.log" 2>&1; then
  cat "$work/promote.log" >&2
  echo "quick.sh: --promote failed; nothing to compare" >&2
  exit 1
fi

declare -a quick cold quick_up cold_up
for i in $(seq 1 "$rounds"); do
  t0=$(now_ms)
  "$bin" test "$repo" --ref good-change --quick --env "SEED_SECONDS=$seed" --json "$work/quick-$i.json" >"$work/quick-$i.log" 2>&1 || true
  t1=$(now_ms)
  quick+=($((t1 - t0))); quick_up+=("$(stage_ms "$work/quick-$i.json" upgrade)")

  t0=$(now_ms)
  "$bin" test "$repo" --ref good-change --env "SEED_SECONDS=$seed" --json "$work/cold-$i.json" >"$work/cold-$i.log" 2>&1 || true
  t1=$(now_ms)
  cold+=($((t1 - t0))); cold_up+=("$(stage_ms "$work/cold-$i.json" upgrade)")
  echo "round $i: quick ${quick[-1]} ms ($(result_of "$work/quick-$i.json"), upgrade ${quick_up[-1]} ms)," \
       "cold ${cold[-1]} ms ($(result_of "$work/cold-$i.json"), upgrade ${cold_up[-1]} ms)" >&2
done

UPDATE_FLOOR_ONLY_FUNCS=1 source bench/update-floor.sh
read -r floor completed < <(update_floor "$rounds")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "NA" || b == "NA" || b == 0) print "NA"; else printf "%.2f", a / b }'; }
q=$(median "${quick[@]}"); c=$(median "${cold[@]}")
qu=$(median "${quick_up[@]}"); cu=$(median "${cold_up[@]}")
cat <<MD
| good-change on slowseed (SEED_SECONDS=$seed; median of $rounds rounds, ms) | time | cold / this |
|---|---:|---:|
| seatrial test --quick | $q | $(ratio "$c" "$q")× |
| seatrial test (cold) | $c | 1.00× |

| upgrade of one service (median, ms) | time | vs floor |
|---|---:|---:|
| quick run's upgrade stage | $qu | $(ratio "$qu" "$floor")× |
| cold run's upgrade stage | $cu | $(ratio "$cu" "$floor")× |
| engine floor: update started → replaced task healthy | $floor | 1.00× |
| Swarm marks the update \`completed\` (monitor 5 s) | $completed | $(ratio "$completed" "$floor")× |
MD
