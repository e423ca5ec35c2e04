#!/bin/sh
# The app answers at the address seatrial probed, with the fixture's page.
set -eu
body=$(curl -fsS --max-time 10 "$SEATRIAL_URL/")
echo "GET $SEATRIAL_URL/ -> $body"
echo "$body" | grep -q "seatrial fixture web"
