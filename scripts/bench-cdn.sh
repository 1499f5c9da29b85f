#!/usr/bin/env bash
# Benchmark `millions cdn` against Varnish and nginx's proxy_cache on cached small
# objects (issue 23, docs/BENCHMARKS.md "CDN edge").
#
#   bash scripts/bench-cdn.sh      # after: cargo build --release -p millions
#
# One origin: nginx serving BENCH_OBJECTS files of BENCH_SIZE bytes with
# `Cache-Control: public, max-age=3600`. In front of it, in turn and configured
# alike (a 256 MiB memory store, no access log, BENCH_THREADS threads or worker
# processes, HTTP/1.1 keep-alive): our edge, Varnish (apt-get install varnish) and
# nginx with proxy_cache (its cache in /dev/shm). Each edge is warmed (every object
# fetched once, then checked to be a hit), then wrk (closed loop) cycles through
# the objects: throughput at BENCH_CONN connections, and latency at one
# connection. The edges run in BENCH_ROUNDS interleaved rounds; medians are
# reported, as ratios to Varnish and nginx of the same run. wrk runs on the same
# machine: the figures compare the edges with one another, not with a real network.
#
# Environment (all optional):
#   BENCH_OBJECTS=1000  BENCH_SIZE=1024  BENCH_DURATION=6s  BENCH_ROUNDS=3
#   BENCH_CONN=64  BENCH_THREADS=2  MILLIONS=target/release/millions
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OBJECTS="${BENCH_OBJECTS:-1000}"
SIZE="${BENCH_SIZE:-1024}"
DURATION="${BENCH_DURATION:-6s}"
ROUNDS="${BENCH_ROUNDS:-3}"
CONN="${BENCH_CONN:-64}"
THREADS="${BENCH_THREADS:-2}"
MILLIONS="${MILLIONS:-$ROOT/target/release/millions}"

say() { echo "bench-cdn: $*" >&2; }
die() { say "$*"; exit 1; }
for tool in nginx varnishd wrk curl python3; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install nginx varnish wrk curl python3)"
done
[ -x "$MILLIONS" ] || die "$MILLIONS is missing: cargo build --release -p millions"

WORK="$(mktemp -d /tmp/millions-bench-cdn.XXXXXX)"
chmod 755 "$WORK"  # Varnish's workers run as its own user and read the VCL
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -f "$WORK/varnish.pid" ] && kill "$(cat "$WORK/varnish.pid")" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK" /dev/shm/millions-bench-cdn-cache
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ORIGIN_PORT=$(free_port); OURS_PORT=$(free_port); OURS_ADMIN=$(free_port); VARNISH_PORT=$(free_port)
NGINX_PORT=$(free_port)

# The objects.
mkdir -p "$WORK/www/obj"
python3 - "$WORK/www/obj" "$OBJECTS" "$SIZE" <<'EOF'
import os, sys
d, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    with open(os.path.join(d, str(i)), "wb") as f:
        f.write(os.urandom(size))
EOF

# The origin.
cat > "$WORK/origin.conf" <<EOF
daemon off; worker_processes 1; pid $WORK/origin.pid; error_log $WORK/origin.err;
events { worker_connections 1024; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$ORIGIN_PORT;
    root $WORK/www;
    location /obj/ { add_header Cache-Control "public, max-age=3600"; default_type application/octet-stream; }
  }
}
EOF
nginx -c "$WORK/origin.conf" -p "$WORK" & PIDS+=($!)

# Our edge.
cat > "$WORK/cdn.toml" <<EOF
listen = "127.0.0.1:$OURS_PORT"
admin = "127.0.0.1:$OURS_ADMIN"
origin = "127.0.0.1:$ORIGIN_PORT"
memory_bytes = $((256 << 20))
threads = $THREADS
EOF
RUST_LOG=warn "$MILLIONS" cdn --config "$WORK/cdn.toml" > "$WORK/cdn.log" 2>&1 & PIDS+=($!)

# Varnish: the origin as its backend, a memory store of the same size.
cat > "$WORK/default.vcl" <<EOF
vcl 4.1;
backend origin { .host = "127.0.0.1"; .port = "$ORIGIN_PORT"; }
EOF
varnishd -a "127.0.0.1:$VARNISH_PORT" -f "$WORK/default.vcl" -s "malloc,256m" -n "$WORK/varnish" \
    -P "$WORK/varnish.pid" -p thread_pools="$THREADS" > "$WORK/varnish.log" 2>&1 \
    || die "varnishd did not start: $(cat "$WORK/varnish.log")"

# nginx with proxy_cache.
mkdir -p /dev/shm/millions-bench-cdn-cache
cat > "$WORK/edge.conf" <<EOF
daemon off; worker_processes $THREADS; pid $WORK/edge.pid; error_log $WORK/edge.err;
events { worker_connections 4096; }
http {
  access_log off;
  proxy_cache_path /dev/shm/millions-bench-cdn-cache keys_zone=edge:16m max_size=256m inactive=1h;
  upstream origin { server 127.0.0.1:$ORIGIN_PORT; keepalive 32; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache edge;
      proxy_cache_lock on;
      add_header X-Cache \$upstream_cache_status;
    }
  }
}
EOF
nginx -c "$WORK/edge.conf" -p "$WORK" & PIDS+=($!)

wait_up() {
    for _ in $(seq 100); do
        curl -fsS -o /dev/null "http://127.0.0.1:$1/obj/0" 2>/dev/null && return 0
        sleep 0.1
    done
    die "nothing answers on port $1"
}
for port in $ORIGIN_PORT $OURS_PORT $VARNISH_PORT $NGINX_PORT; do wait_up "$port"; done

# Warm every edge: each object once, then the last one must be a hit.
for port in $OURS_PORT $VARNISH_PORT $NGINX_PORT; do
    python3 - "$port" "$OBJECTS" <<'EOF'
import http.client, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", port)
for i in range(n):
    c.request("GET", f"/obj/{i}")
    r = c.getresponse(); r.read()
    assert r.status == 200, (port, i, r.status)
c.request("GET", f"/obj/{n - 1}")
r = c.getresponse(); r.read()
# Ours and nginx say X-Cache: HIT; Varnish names two transactions in X-Varnish.
hit = (r.getheader("x-cache") or "").upper() == "HIT" or len((r.getheader("x-varnish") or "").split()) == 2
assert hit, (port, dict(r.getheaders()))
EOF
done

cat > "$WORK/cycle.lua" <<EOF
local n = $OBJECTS
local i = 0
request = function()
  i = (i + 7919) % n
  return wrk.format("GET", "/obj/" .. i)
end
EOF

run_wrk() { # port conns -> "rps p50_us p99_us"
    local threads=2; [ "$2" -lt 2 ] && threads=1
    wrk -t"$threads" -c"$2" -d"$DURATION" --latency -s "$WORK/cycle.lua" "http://127.0.0.1:$1" 2>&1 | python3 -c '
import re, sys
t = sys.stdin.read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
def us(p):
    m = re.search(r"^\s+" + p + r"%\s+([\d.]+)(us|ms|s)\s*$", t, re.M)
    v, u = float(m.group(1)), m.group(2)
    return v * {"us": 1, "ms": 1e3, "s": 1e6}[u]
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
assert not errors, "errors: " + errors.group(1)
print("%.0f %.0f %.0f" % (rps, us("50"), us("99")))'
}

say "origin :$ORIGIN_PORT, ours :$OURS_PORT, varnish :$VARNISH_PORT, nginx :$NGINX_PORT; $OBJECTS objects of $SIZE bytes"
declare -A RPS P50 P99
for round in $(seq "$ROUNDS"); do
    for edge in ours varnish nginx; do
        case $edge in ours) port=$OURS_PORT ;; varnish) port=$VARNISH_PORT ;; nginx) port=$NGINX_PORT ;; esac
        read -r rps _ _ < <(run_wrk "$port" "$CONN")
        read -r _ p50 p99 < <(run_wrk "$port" 1)
        RPS[$edge]+="$rps "; P50[$edge]+="$p50 "; P99[$edge]+="$p99 "
        say "round $round $edge: $rps req/s at $CONN connections; p50 ${p50} us p99 ${p99} us at 1"
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
echo "Cached ${SIZE}-byte objects ($OBJECTS of them), $ROUNDS rounds, medians ($(git rev-parse --short HEAD), $(nproc) CPUs):"
echo
echo "| edge | req/s at $CONN conns | ÷ Varnish | ÷ nginx | p50 at 1 conn | p99 at 1 conn |"
echo "|---|---:|---:|---:|---:|---:|"
v=$(echo "${RPS[varnish]}" | median); n=$(echo "${RPS[nginx]}" | median)
for edge in ours varnish nginx; do
    r=$(echo "${RPS[$edge]}" | median)
    python3 -c 'import sys; r, v, n, p50, p99, edge = sys.argv[1:]; print(f"| {edge} | {r} | {int(r)/int(v):.2f}× | {int(r)/int(n):.2f}× | {p50} µs | {p99} µs |")' \
        "$r" "$v" "$n" "$(echo "${P50[$edge]}" | median)" "$(echo "${P99[$edge]}" | median)" "$edge"
done
