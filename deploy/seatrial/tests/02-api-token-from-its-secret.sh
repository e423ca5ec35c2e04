#!/bin/sh
# Writes need the API token, which the server reads from its Docker secret (SEATRIAL_API_TOKEN_FILE).
set -eu
code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 -X POST "$SEATRIAL_URL/api/runs/424242/cancel")
echo "cancel without a token -> $code"
[ "$code" = 401 ]
container=$(docker ps -q -f "label=com.docker.swarm.service.name=${SEATRIAL_STACK}_app" | head -n 1)
token=$(docker exec "$container" /bin/busybox cat /run/secrets/api_token)
code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 -X POST \
  -H "Authorization: Bearer $token" "$SEATRIAL_URL/api/runs/424242/cancel")
echo "cancel of a run that does not exist, with the secret's token -> $code"
[ "$code" = 404 ]
