#!/usr/bin/env bash
# The engine's floor of an in-place update: a one-service app of the slow-first-boot fixture on
# an already seeded volume (seatrial-fixture/slowseed:1, healthcheck every 1 s, Swarm's default
# update_config: stop-first, monitor 5 s) gets `docker service update --env-add ...`, and its
# event stream tells
#   - floor:     update started → the replaced task's container is healthy,
#   - completed: update started → Swarm marks the update `completed` (after the monitor period),
# the two moments an upgrade stage can wait for. Median of ROUNDS (default 5) updates.
#   bench/update-floor.sh            # prints a Markdown table
# Also sourced by bench/quick.sh (UPDATE_FLOOR_ONLY_FUNCS=1) for `update_floor`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# update_floor <rounds>: prints "<floor median ms> <completed median ms>"
update_floor() {
  local rounds=$1 svc=bench-update-floor vol=bench-update-floor-data i
  docker service rm "$svc" >/dev/null 2>&1 || true
  while docker ps -aq --filter "label=com.docker.swarm.service.name=$svc" | grep -q .; do sleep 0.1; done
  docker volume rm "$vol" >/dev/null 2>&1 || true
  docker service create --quiet --detach --name "$svc" --env SEED_SECONDS=0 \
    --mount "type=volume,source=$vol,target=/data" --endpoint-mode dnsrr \
    seatrial-fixture/slowseed:1 >/dev/null 2>&1
  until [ "$(docker service ps -q --filter desired-state=running "$svc" | head -n1 |
             xargs -r docker inspect -f '{{.Status.ContainerStatus.ContainerID}}' 2>/dev/null |
             xargs -r docker inspect -f '{{.State.Health.Status}}' 2>/dev/null)" = healthy ]; do
    sleep 0.2
  done
  local -a floors completes
  for i in $(seq 1 "$rounds"); do
    local since until line
    since=$(date +%s.%N)
    docker service update --quiet --detach --env-add "BENCH_ROUND=$i" "$svc" >/dev/null
    until docker service inspect -f '{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}' "$svc" | grep -qx completed; do
      sleep 0.2
    done
    until=$(date +%s.%N)
    # The update's start is our request (the first service event); then the first healthy
    # container of the service and the event that says `completed`.
    line=$(docker events --since "$since" --until "$until" \
        --format '{{.TimeNano}} {{.Type}} {{.Action}} {{index .Actor.Attributes "com.docker.swarm.service.name"}} {{index .Actor.Attributes "updatestate.new"}}' |
      awk -v s="$svc" '
        $2=="service" && !u {u=$1}
        $2=="container" && $3=="health_status:" && $4=="healthy" && $5==s && u && !h {h=$1}
        $2=="service" && $NF=="completed" && u && !c {c=$1}
        END { if (u && h && c) printf "%d %d", (h-u)/1000000, (c-u)/1000000; else print "NA NA" }')
    floors+=("${line% *}"); completes+=("${line#* }")
    echo "update round $i: replaced task healthy after ${floors[-1]} ms, update completed after ${completes[-1]} ms" >&2
  done
  docker service rm "$svc" >/dev/null
  while docker ps -aq --filter "label=com.docker.swarm.service.name=$svc" | grep -q .; do sleep 0.1; done
  docker volume rm "$vol" >/dev/null 2>&1 || true
  echo "$(median "${floors[@]}") $(median "${completes[@]}")"
}

median() { printf '%s\n' "$@" | { grep -v NA || true; } | sort -n | awk '{a[NR]=$1} END {if (!NR) print "NA"; else print (NR%2 ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2))}'; }

if [ "${UPDATE_FLOOR_ONLY_FUNCS:-0}" != 1 ]; then
  rounds=${ROUNDS:-5}
  scripts/setup.sh >/dev/null 2>&1 || scripts/setup.sh
  read -r floor completed < <(update_floor "$rounds")
  cat <<MD
| in-place update of one service (median of $rounds, ms) | time | vs floor |
|---|---:|---:|
| floor: update started → replaced task healthy | $floor | 1.00× |
| Swarm marks the update \`completed\` | $completed | $(awk -v a="$completed" -v b="$floor" 'BEGIN { printf "%.2f", a / b }')× |
MD
fi
