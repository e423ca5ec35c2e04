#!/usr/bin/env python3
"""Open-loop load generator for bench/serve-load.sh: GET <url> at a fixed rate for a duration,
latency measured from each request's *scheduled* start (no coordinated omission).
Prints JSON: {"url", "rate", "sent", "errors", "p50_ms", "p99_ms", "max_ms"}."""
import http.client, json, sys, threading, time, urllib.parse

url, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
u = urllib.parse.urlsplit(url)
path = u.path + ("?" + u.query if u.query else "")
lat, errors, lock = [], [0], threading.Lock()
local = threading.local()

def conn():
    c = getattr(local, "c", None)
    if c is None:
        c = local.c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    return c

def one(scheduled):
    delay = scheduled - time.perf_counter()
    if delay > 0:
        time.sleep(delay)
    try:
        c = conn()
        c.request("GET", path)
        r = c.getresponse(); r.read()
        ok = 200 <= r.status < 300
    except Exception:
        local.c = None
        ok = False
    took = (time.perf_counter() - scheduled) * 1000
    with lock:
        lat.append(took)
        if not ok:
            errors[0] += 1

n = int(rate * seconds)
start = time.perf_counter() + 0.2
workers = 16
def worker(k):
    for i in range(k, n, workers):
        one(start + i / rate)
threads = [threading.Thread(target=worker, args=(k,)) for k in range(workers)]
for t in threads: t.start()
for t in threads: t.join()
lat.sort()
q = lambda p: round(lat[min(len(lat) - 1, int(p * len(lat)))], 2)
print(json.dumps({"url": url, "rate": rate, "sent": len(lat), "errors": errors[0],
                  "p50_ms": q(0.50), "p99_ms": q(0.99), "max_ms": round(lat[-1], 2)}))
