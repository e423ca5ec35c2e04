#!/bin/sh
# The dashboard and the API answer, and the server runs as the image's non-root user.
set -eu
curl -fsS --max-time 10 "$SEATRIAL_URL/healthz" | grep -qx ok
page=$(curl -fsS --max-time 10 "$SEATRIAL_URL/")
echo "$page" | grep -q "seatrial" || { echo "GET / is not the dashboard" >&2; exit 1; }
curl -fsS --max-time 10 "$SEATRIAL_URL/api/runs" | grep -q '"runs"'
container=$(docker ps -q -f "label=com.docker.swarm.service.name=${SEATRIAL_STACK}_app" | head -n 1)
[ -n "$container" ] || { echo "no running container for ${SEATRIAL_STACK}_app" >&2; exit 1; }
uid=$(docker inspect -f '{{.State.Pid}}' "$container" | xargs -I{} stat -c %u /proc/{})
echo "the server runs as uid $uid"
[ "$uid" = 10001 ]
