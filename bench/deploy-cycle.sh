#!/usr/bin/env bash
# Benchmark: deploy → converged → undeploy → gone, for the example recipe, seatrial against the
# docker CLI a user has today (`docker stack deploy --detach=false`, `docker stack rm`, then
# waiting until the stack's network is gone), alternating rounds in one run on one engine.
# Also reports the floor: how long the engine itself took from creating the service to the
# container's first healthy healthcheck (from its event stream), during seatrial's rounds.
#
#   bench/deploy-cycle.sh            # 5 rounds each (ROUNDS=n to change)
# Prints a Markdown table; BENCHMARKS.md holds the published figures.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rounds=${ROUNDS:-5}
recipe=examples/hello
scripts/setup.sh >/dev/null 2>&1 || scripts/setup.sh
cargo build --release --locked --quiet -p seatrial
bin=${CARGO_TARGET_DIR:-target}/release/seatrial

now_ms() { date +%s%3N; }
gone() { # <stack>: nothing of it left (untimed cleanup between rounds, so rounds start equal)
  while docker ps -aq --filter "label=com.docker.stack.namespace=$1" | grep -q .; do sleep 0.1; done
  docker volume ls -q --filter "label=com.docker.stack.namespace=$1" | xargs -r docker volume rm >/dev/null
  docker volume rm "$1_data" >/dev/null 2>&1 || true
}

declare -a ours_dep ours_rm cli_dep cli_rm floor
for i in $(seq 1 "$rounds"); do
  # seatrial
  t0=$(now_ms); since=$(date +%s.%N)
  "$bin" app deploy "$recipe" --name bench-ours >/dev/null 2>&1
  t1=$(now_ms)
  "$bin" app undeploy bench-ours --volumes >/dev/null 2>&1
  t2=$(now_ms); until=$(date +%s.%N)
  ours_dep+=($((t1 - t0))); ours_rm+=($((t2 - t1)))
  f=$(docker events --since "$since" --until "$until" --format '{{.TimeNano}} {{.Type}} {{.Action}} {{.Actor.Attributes.name}}' |
      awk '$2=="service" && $3=="create" && $4=="bench-ours_web" {c=$1}
           $2=="container" && $3=="health_status:" && $4=="healthy" && c && !h {h=$1}
           END { if (c && h) printf "%d", (h-c)/1000000; else print "NA" }')
  floor+=("$f")
  gone bench-ours

  # docker CLI
  t0=$(now_ms)
  docker stack deploy --detach=false -c "$recipe/compose.yml" bench-cli >/dev/null 2>&1
  t1=$(now_ms)
  docker stack rm bench-cli >/dev/null 2>&1
  while docker network ls -q --filter label=com.docker.stack.namespace=bench-cli | grep -q .; do sleep 0.1; done
  t2=$(now_ms)
  cli_dep+=($((t1 - t0))); cli_rm+=($((t2 - t1)))
  gone bench-cli
  echo "round $i: seatrial ${ours_dep[-1]}+${ours_rm[-1]} ms, docker CLI ${cli_dep[-1]}+${cli_rm[-1]} ms, floor ${floor[-1]} ms" >&2
done

median() { printf '%s\n' "$@" | { grep -v NA || true; } | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2))}'; }
od=$(median "${ours_dep[@]}"); orm=$(median "${ours_rm[@]}")
cd_=$(median "${cli_dep[@]}"); crm=$(median "${cli_rm[@]}")
fl=$(median "${floor[@]}")
ot=$((od + orm)); ct=$((cd_ + crm))
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
cat <<MD
| phase (median of $rounds rounds, ms) | seatrial | docker CLI | ratio |
|---|---:|---:|---:|
| deploy → converged | $od | $cd_ | $(ratio "$od" "$cd_")× |
| undeploy → gone | $orm | $crm | $(ratio "$orm" "$crm")× |
| **full cycle** | **$ot** | **$ct** | **$(ratio "$ot" "$ct")×** |

Floor (engine: service created → first healthy healthcheck): $fl ms; seatrial's deploy → converged
is $(ratio "$od" "$fl")× the floor (a service with a healthcheck counts once healthy; the 3 s window applies to services without one).
MD
