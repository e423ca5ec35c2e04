#!/usr/bin/env bash
# A real two-node Docker Swarm on this one machine, for seatrial's cluster tests and benchmark:
#
#   scripts/cluster.sh up     # start it (idempotent); prints the manager's DOCKER_HOST
#   scripts/cluster.sh down   # remove every trace of it (idempotent)
#   scripts/cluster.sh status # what runs
#   scripts/cluster.sh host-state  # the host engine's objects (the test command checks they stay)
#
# Each node is its own dockerd in its own network namespace (c1, c2) with its own hostname, data
# root, exec root and socket; a veth pair joins the namespaces (10.77.0.1 and 10.77.0.2). c1 is
# the manager (unix:///run/docker-c1.sock), c2 a worker (unix:///run/docker-c2.sock). Images are
# copied from the host's engine (`docker save | docker -H … load`): the fixture images and
# seatrial's own image when built, or those named in CLUSTER_IMAGES. The host's own engine and
# its swarm are not touched.
#
# Why nsenter + unshare and not `ip netns exec`: the latter remounts /sys, and dockerd then finds
# no cgroups (docs: ../shared/brief/platform.md).
set -euo pipefail

NODES=(c1 c2)
SUBNET_PREFIX=10.77.0
LOG_DIR=/var/log/seatrial-cluster
log() { printf 'cluster: %s\n' "$*" >&2; }
die() { printf 'cluster: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (network namespaces and dockerd)"

sock() { echo "/run/docker-$1.sock"; }
addr() { echo "$SUBNET_PREFIX.${1#c}"; }
node_docker() { local n=$1; shift; docker -H "unix://$(sock "$n")" "$@"; }
answers() { timeout 5 docker -H "unix://$(sock "$1")" info >/dev/null 2>&1; }
daemon_pid() {
  local f="/run/docker-$1.pid"
  [ -s "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && cat "$f"
}

net_up() {
  for n in "${NODES[@]}"; do
    [ -e "/var/run/netns/$n" ] || ip netns add "$n"
    ip -n "$n" link set lo up
  done
  if ! ip -n c1 link show sc-c1 >/dev/null 2>&1; then
    ip link del sc-c1 2>/dev/null || true
    ip link add sc-c1 type veth peer name sc-c2
    ip link set sc-c1 netns c1
    ip link set sc-c2 netns c2
  fi
  for n in "${NODES[@]}"; do
    ip -n "$n" addr replace "$(addr "$n")/24" dev "sc-$n"
    ip -n "$n" link set "sc-$n" up
  done
}

start_node() {
  local n=$1
  if answers "$n"; then return 0; fi
  if daemon_pid "$n" >/dev/null; then
    log "$n: dockerd runs but does not answer; restarting it"
    stop_node "$n"
  fi
  mkdir -p "$LOG_DIR" "/var/lib/docker-$n"
  log "$n: starting dockerd (log: $LOG_DIR/$n.log)"
  # setsid: the daemon must outlive this shell. Its own bridge addresses do not clash with the
  # host's: each namespace has its own routes.
  setsid nsenter --net="/var/run/netns/$n" unshare --uts sh -c \
    "hostname $n && exec dockerd --data-root /var/lib/docker-$n --exec-root /run/docker-$n \
       -H unix://$(sock "$n") --pidfile /run/docker-$n.pid" \
    >>"$LOG_DIR/$n.log" 2>&1 </dev/null &
  for _ in $(seq 1 120); do
    answers "$n" && return 0
    sleep 0.5
  done
  tail -n 30 "$LOG_DIR/$n.log" >&2 || true
  die "$n: dockerd did not answer within 60 s (log above)"
}

stop_node() {
  local n=$1 pid
  if pid=$(daemon_pid "$n"); then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  # Whatever the daemon left: its containerd and shims, then its mounts.
  pkill -KILL -f -- "/run/docker-$n/" 2>/dev/null || true
  for root in "/var/lib/docker-$n" "/run/docker-$n"; do
    if [ -d "$root" ]; then
      { grep -o " $root[^ ]*" /proc/mounts || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    fi
  done
  rm -rf "/var/lib/docker-$n" "/run/docker-$n" "/run/docker-$n.pid" "$(sock "$n")"
}

swarm_state() { node_docker "$1" info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || echo unknown; }

swarm_up() {
  if [ "$(swarm_state c1)" != active ]; then
    log "c1: swarm init"
    node_docker c1 swarm init --advertise-addr "$(addr c1)" >/dev/null
  fi
  if [ "$(swarm_state c2)" != active ]; then
    local token
    token=$(node_docker c1 swarm join-token -q worker)
    log "c2: joining the swarm"
    node_docker c2 swarm join --token "$token" "$(addr c1):2377" >/dev/null
  fi
  for _ in $(seq 1 60); do
    [ "$(node_docker c1 node ls --filter role=worker --format '{{.Status}}' | grep -c Ready)" -ge 1 ] && return 0
    sleep 0.5
  done
  die "the worker c2 is not Ready after 30 s: $(node_docker c1 node ls 2>&1)"
}

images() {
  if [ -n "${CLUSTER_IMAGES:-}" ]; then
    tr ' ' '\n' <<<"$CLUSTER_IMAGES"
  else
    docker images --format '{{.Repository}}:{{.Tag}}' | grep -E '^(seatrial-fixture/[^:]+|seatrial):' | grep -v ':<none>$' || true
  fi
}

copy_images() {
  local list
  list=$(images | sort -u)
  [ -n "$list" ] || { log "no images to copy"; return 0; }
  for n in "${NODES[@]}"; do
    local missing=()
    for i in $list; do
      local want have
      want=$(docker image inspect --format '{{.Id}}' "$i" 2>/dev/null) || die "image $i is not on this host's engine (build it first: scripts/setup.sh, scripts/build-image.sh)"
      have=$(node_docker "$n" image inspect --format '{{.Id}}' "$i" 2>/dev/null || true)
      [ "$want" = "$have" ] || missing+=("$i")
    done
    if [ ${#missing[@]} -gt 0 ]; then
      log "$n: loading ${missing[*]}"
      docker save "${missing[@]}" | node_docker "$n" load -q >/dev/null
    fi
  done
}

case "${1:-}" in
  up)
    command -v dockerd >/dev/null || die "dockerd is not installed (run scripts/setup.sh)"
    docker info >/dev/null 2>&1 || die "the host's engine does not answer (run scripts/setup.sh): it holds the images to copy"
    net_up
    for n in "${NODES[@]}"; do start_node "$n"; done
    swarm_up
    copy_images
    log "ready: manager c1 ($(addr c1)), worker c2 ($(addr c2))"
    echo "DOCKER_HOST=unix://$(sock c1)"
    ;;
  down)
    for n in "${NODES[@]}"; do stop_node "$n"; done
    for n in "${NODES[@]}"; do ip netns del "$n" 2>/dev/null || true; done
    log "down: no cluster daemon, namespace or data left"
    ;;
  host-state)
    # What of the host's own engine the cluster and the tests must leave as it was: its swarm,
    # and every service, container, network, volume, secret and config (images may be added).
    docker info --format 'swarm {{.Swarm.NodeID}} {{.Swarm.LocalNodeState}}'
    for kind in service network volume secret config; do
      docker "$kind" ls -q | sed "s/^/$kind /"
    done
    docker ps -aq --no-trunc | sed 's/^/container /'
    ;;
  status)
    for n in "${NODES[@]}"; do
      if answers "$n"; then
        echo "$n: up, swarm $(swarm_state "$n")"
      else
        echo "$n: down"
      fi
    done
    answers c1 && node_docker c1 node ls || true
    ;;
  *)
    echo "usage: $0 up|down|status|host-state" >&2
    exit 2
    ;;
esac
