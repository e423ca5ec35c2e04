#!/usr/bin/env bash
# Benchmark: `seatrial serve` idle memory, and dashboard/API latency under a steady 200 requests/s
# with 10,000 runs in its SQLite store (each with 4 stages and 20 log lines).
#   - idle RSS: VmRSS of the server 5 s after start, empty store; and after the load
#   - latency: open-loop load (bench/serve-load.py; latency from each request's scheduled start)
#     per route, side by side with /healthz on the same server (no I/O: the floor of the HTTP
#     stack and the load generator itself)
#   bench/serve-load.sh            # RATE=200 SECONDS=20 to change
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rate=${RATE:-200}
secs=${SECONDS_EACH:-20}
cargo build --release --locked --quiet -p seatrial
bin=$(realpath "${CARGO_TARGET_DIR:-target}")/release/seatrial
data=$(mktemp -d)
port=18686
cleanup() { [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT

SEATRIAL_DATA_DIR=$data SEATRIAL_LISTEN=127.0.0.1:$port SEATRIAL_LOG=warn "$bin" serve 2>"$data/serve.log" &
pid=$!
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
sleep 5
rss_idle=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")

# 10,000 finished runs straight into the store (terminal states only: nothing gets claimed).
python3 - "$data/seatrial.db" <<'PY'
import sqlite3, sys, time, random
db = sqlite3.connect(sys.argv[1], timeout=30)
now = int(time.time() * 1000)
states = ["passed"] * 6 + ["failed"] * 2 + ["errored", "cancelled", "timed_out"]
runs, stages, logs = [], [], []
for i in range(1, 10001):
    st = random.choice(states); mode = "quick" if i % 5 == 0 else "cold"
    created = now - (10001 - i) * 60000
    runs.append((f"recipes/app{i % 40}", "main", mode, "api", st, 1, created, created + 1000, created + 90000, f"tbench-{i:06x}"))
for i in range(1, 10001):
    for k, name in enumerate(["prepare", "install", "serve", "teardown"], 1):
        stages.append((i, k, name, "pass", "2026-11-24T00:00:00Z", 1000 * k, f"{name} detail for run {i}"))
    for k in range(1, 21):
        logs.append((i, k, now, f"log line {k} of run {i}: waiting for convergence"))
db.executemany("INSERT INTO runs (recipe, reference, mode, trigger_kind, state, attempt, created_at_ms, started_at_ms, finished_at_ms, stack) VALUES (?,?,?,?,?,?,?,?,?,?)", runs)
db.executemany("INSERT INTO stages VALUES (?,?,?,?,?,?,?)", stages)
db.executemany("INSERT INTO logs VALUES (?,?,?,?)", logs)
db.commit()
PY

base="http://127.0.0.1:$port"
routes=("/healthz" "/" "/?state=failed&mode=cold" "/api/runs" "/api/runs/5000" "/runs/5000" "/api/runs/5000/log" "/queue" "/metrics")
declare -a rows
for r in "${routes[@]}"; do
  out=$(python3 bench/serve-load.py "$base$r" "$rate" "$secs")
  echo "$r: $out" >&2
  rows+=("$r|$out")
done
rss_loaded=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")

floor_p99=$(printf '%s\n' "${rows[0]#*|}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["p99_ms"])')
echo
echo "| route (${rate} req/s for ${secs} s, 10k runs) | p50 ms | p99 ms | p99 vs /healthz | p99 vs 20 ms aim | errors |"
echo "|---|---:|---:|---:|---:|---:|"
for row in "${rows[@]}"; do
  r=${row%%|*}; j=${row#*|}
  python3 - "$r" "$j" "$floor_p99" <<'PY'
import json, sys
r, j, floor = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3])
print(f"| `{r}` | {j['p50_ms']} | {j['p99_ms']} | {j['p99_ms']/floor:.2f}× | {j['p99_ms']/20:.2f}× | {j['errors']}/{j['sent']} |")
PY
done
echo
echo "Idle RSS (empty store, 5 s after start): $((rss_idle / 1024)) MiB ($(awk -v a="$rss_idle" 'BEGIN {printf "%.2f", a / 1024 / 30}')× the 30 MB aim); after the load: $((rss_loaded / 1024)) MiB."
