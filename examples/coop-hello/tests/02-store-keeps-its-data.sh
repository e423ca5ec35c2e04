#!/bin/sh
# The store appends a line per start to a file in its volume. After an upgrade from a previous
# release (which restarted it), both lines must be there: the data survived the upgrade.
set -eu
container=$(docker ps -q -f "label=com.docker.swarm.service.name=${SEATRIAL_STACK}_store" | head -n 1)
[ -n "$container" ] || { echo "no running container for ${SEATRIAL_STACK}_store" >&2; exit 1; }
boots=$(docker exec "$container" cat /data/boots | wc -l)
echo "store has started $boots time(s) on this volume (previous release: ${SEATRIAL_PREVIOUS_VERSION:-none})"
if [ -n "${SEATRIAL_PREVIOUS_VERSION:-}" ]; then
  [ "$boots" -ge 2 ]
else
  [ "$boots" -ge 1 ]
fi
