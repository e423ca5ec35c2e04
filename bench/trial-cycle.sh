#!/usr/bin/env bash
# Benchmark: the full cold cycle of the example recipe (install → serve → teardown → gone):
#   seatrial:   seatrial test examples/hello            (prepare, install, serve, teardown)
#   docker CLI: docker stack deploy --detach=false, curl the published port, docker stack rm,
#               then wait until the stack's network is gone
# alternating rounds in one run on one engine, plus the floor: the engine's own time from
# service creation to the first healthy healthcheck (its event stream, during seatrial's rounds).
# examples/hello's service has a healthcheck, so seatrial counts it converged once healthy (its
# stability window applies only to services without one) and checks after serving that it stayed up.
#   bench/trial-cycle.sh            # 5 rounds each (ROUNDS=n to change)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rounds=${ROUNDS:-5}
recipe=examples/hello
scripts/setup.sh >/dev/null 2>&1 || scripts/setup.sh
cargo build --release --locked --quiet -p seatrial
bin=${CARGO_TARGET_DIR:-target}/release/seatrial
export SEATRIAL_DATA_DIR=$(mktemp -d)
trap 'rm -rf "$SEATRIAL_DATA_DIR"' EXIT

now_ms() { date +%s%3N; }
quiet_gone() { # <stack>: untimed cleanup so every round starts equal
  while docker ps -aq --filter "label=com.docker.stack.namespace=$1" | grep -q .; do sleep 0.1; done
  docker volume ls -q --filter "label=com.docker.stack.namespace=$1" | xargs -r docker volume rm >/dev/null
  docker volume rm "$1_data" >/dev/null 2>&1 || true
}
floor_of() { # <since> <until>: service create → first healthy, in ms
  docker events --since "$1" --until "$2" --format '{{.TimeNano}} {{.Type}} {{.Action}} {{.Actor.Attributes.name}}' |
    awk '$2=="service" && $3=="create" && !c {c=$1}
         $2=="container" && $3=="health_status:" && $4=="healthy" && c && !h {h=$1}
         END { if (c && h) printf "%d", (h-c)/1000000; else print "NA" }'
}

declare -a ours cli floor
for i in $(seq 1 "$rounds"); do
  since=$(date +%s.%N); t0=$(now_ms)
  "$bin" test "$recipe" >/dev/null 2>&1
  t1=$(now_ms); until=$(date +%s.%N)
  ours+=($((t1 - t0))); floor+=("$(floor_of "$since" "$until")")

  t0=$(now_ms)
  docker stack deploy --detach=false -c "$recipe/compose.yml" bench-cli >/dev/null 2>&1
  curl -fsS --retry 30 --retry-connrefused --retry-delay 0 -o /dev/null http://127.0.0.1:18080/
  docker stack rm bench-cli >/dev/null 2>&1
  while docker network ls -q --filter label=com.docker.stack.namespace=bench-cli | grep -q .; do sleep 0.1; done
  t1=$(now_ms)
  cli+=($((t1 - t0)))
  quiet_gone bench-cli
  echo "round $i: seatrial ${ours[-1]} ms, docker CLI ${cli[-1]} ms, floor ${floor[-1]} ms" >&2
done

median() { printf '%s\n' "$@" | { grep -v NA || true; } | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2))}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
o=$(median "${ours[@]}"); c=$(median "${cli[@]}"); f=$(median "${floor[@]}")
cat <<MD
| cold cycle (median of $rounds rounds, ms) | time | vs docker CLI | vs floor |
|---|---:|---:|---:|
| seatrial test (defaults) | $o | $(ratio "$o" "$c")× | $(ratio "$o" "$f")× |
| docker CLI (deploy --detach=false, curl, stack rm, network gone) | $c | 1.00× | $(ratio "$c" "$f")× |
| floor (engine: service created → first healthy) | $f | | 1.00× |
MD
