#!/usr/bin/env bash
# Benchmark (issue 17): deploy → converged → removed → gone on the two-node cluster
# (scripts/cluster.sh), seatrial against the docker CLI a user has today, paired by farm-bench:
#
# - seatrial: `seatrial app deploy` (converged: both tasks running and healthy, one per node),
#   `seatrial app undeploy` (returns when nothing of the stack is left on any node);
# - docker CLI: `docker stack deploy --detach=false`, `docker stack rm --detach=false`, then
#   polling both nodes every 100 ms until neither has a container or network of the stack.
#
# Both commands end with the same check of both nodes (through their own sockets): seatrial's
# must find nothing at once.
#
#   bench/cluster-cycle.sh          # RUNS=5 pairs (farm-bench -n)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs=${RUNS:-5}
cluster=$(scripts/cluster.sh up)
DOCKER_HOST=$(sed -n 's/^DOCKER_HOST=//p' <<<"$cluster")
export DOCKER_HOST
cargo build --release --locked --quiet -p seatrial
bin=$(realpath "${CARGO_TARGET_DIR:-target}/release/seatrial")
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT

# Polls both nodes until neither has a container or network of stack $1; prints how long that took.
cat >"$data/clean.sh" <<'SH'
#!/bin/sh
t0=$(date +%s%3N)
while :; do
  left=
  for n in c1 c2; do
    left=$left$(docker -H unix:///run/docker-$n.sock ps -aq --filter "label=com.docker.stack.namespace=$1")
    left=$left$(docker -H unix:///run/docker-$n.sock network ls -q --filter "name=$1_")
  done
  [ -z "$left" ] && break
  sleep 0.1
done
echo "$1: both nodes clean $(( $(date +%s%3N) - t0 )) ms after the command returned" >>"$2"
SH
chmod +x "$data/clean.sh"

ours="$bin app deploy bench/cluster --name cb-ours --data-dir $data/d && $bin app undeploy cb-ours --data-dir $data/d && $data/clean.sh cb-ours $data/waits"
cli="docker stack deploy --detach=false -c bench/cluster/compose.yml cb-cli && docker stack rm --detach=false cb-cli && $data/clean.sh cb-cli $data/waits"
farm-bench -n "$runs" --timeout 1200 --vs "sh -c '$cli >/dev/null 2>&1'" -- sh -c "$ours >/dev/null 2>&1"
echo "waits after each command returned (seatrial's must be ~0):"
sort "$data/waits" | uniq -c | sort -rn | head -20
