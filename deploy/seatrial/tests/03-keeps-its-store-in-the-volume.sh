#!/bin/sh
# The store lives in the data volume: the database file is there, owned by the server's user.
set -eu
container=$(docker ps -q -f "label=com.docker.swarm.service.name=${SEATRIAL_STACK}_app" | head -n 1)
owner=$(docker exec "$container" /bin/busybox stat -c %u /data/seatrial.db)
echo "/data/seatrial.db belongs to uid $owner"
[ "$owner" = 10001 ]
