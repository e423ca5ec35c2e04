#!/usr/bin/env bash
# Run seatrial on a fresh machine: make the machine ready (scripts/setup.sh), build the release
# binary, then run it with the given arguments, e.g.
#   scripts/run.sh app deploy examples/hello --name hello
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
cargo build --release --locked --quiet -p seatrial
exec target/release/seatrial "$@"
