#!/usr/bin/env bash
# What watching the system costs (issue 15): the controller's CPU and memory while
# it scrapes every node of the default topology into its history, beside
# Prometheus scraping the same nodes at the same interval from the configuration
# `millions up` writes (the anchor); then a web server's CPU per request with its
# request logging on (the default, `info`) and off (`RUST_LOG=warn`).
#
#   bash scripts/bench-dashboard.sh    # after: cargo build --release -p millions
#
# It starts its own stack (the `default` preset on ranges of its own), lets both
# scrapers run BENCH_SETTLE, then reads /proc over BENCH_DURATION: CPU time of the
# controller's own process (it also supervises, probes health and serves the API)
# and of Prometheus, and each one's resident memory at the end; then the same for
# the controller started with `--scrape-interval 1h` (no scrape in the window), so
# scraping's own share is the difference.
# The logging part loads one web server's cached profile read with wrk through
# its own address, the stack started once with each log level.
#
# Environment (all optional):
#   BENCH_DURATION=60   seconds measured   BENCH_SETTLE=20   seconds before
#   BENCH_LOAD=10s      wrk duration per log level
#   BENCH_BUILD=1  (0: do not run cargo build)   BENCH_KEEP=0 (1: keep the run directory)
#   MILLIONS=target/release/millions
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DURATION="${BENCH_DURATION:-60}"
SETTLE="${BENCH_SETTLE:-20}"
LOAD="${BENCH_LOAD:-10s}"
MILLIONS="${MILLIONS:-$ROOT/target/release/millions}"

say() { printf 'bench-dashboard: %s\n' "$*" >&2; }
die() { printf 'bench-dashboard: error: %s\n' "$*" >&2; exit 1; }

# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"
require "apt-get install prometheus wrk python3 curl" prometheus wrk python3 curl
build_millions
own_stack bench-dashboard 127.0.233 127.0.234
RUN="$HOME_DIR"
PROM_PID=""
stop_prometheus() { [ -n "$PROM_PID" ] && kill "$PROM_PID" 2>/dev/null && wait "$PROM_PID" 2>/dev/null; PROM_PID=""; }
trap 'stop_prometheus; own_stack_cleanup' EXIT

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
controller_pid() {
    "$MILLIONS" status --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["controller"]["pid"])'
}

# --- 1. The controller's scraping beside Prometheus's -------------------------
say "starting the default topology"
"$MILLIONS" up --topology "$HOME_DIR/topology.toml" >/dev/null
wait_whole healthy
CONTROL=$(controller_pid)
PROM_DIR="$HOME_DIR/prometheus"
[ -f "$PROM_DIR/prometheus.yml" ] || die "millions up wrote no $PROM_DIR/prometheus.yml"
INTERVAL=$(awk '/scrape_interval:/ { print $2; exit }' "$PROM_DIR/prometheus.yml")
TARGETS=$(python3 -c 'import json, sys; print(sum(len(g["targets"]) for g in json.load(open(sys.argv[1]))))' "$PROM_DIR/targets.json")
PROM_PORT=$(port)
prometheus --config.file="$PROM_DIR/prometheus.yml" --storage.tsdb.path="$RUN/prometheus-data" \
    --web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn >"$RUN/prometheus.log" 2>&1 &
PROM_PID=$!
wait_http "127.0.0.1:$PROM_PORT" /-/ready
say "both scrape $TARGETS nodes every $INTERVAL; settling ${SETTLE}s, then measuring ${DURATION}s"
sleep "$SETTLE"
c0=$(cpu_ticks "$CONTROL"); p0=$(cpu_ticks "$PROM_PID")
sleep "$DURATION"
c1=$(cpu_ticks "$CONTROL"); p1=$(cpu_ticks "$PROM_PID")
c_rss=$(rss_kb "$CONTROL"); p_rss=$(rss_kb "$PROM_PID")
up_targets=$(curl -fs "http://127.0.0.1:$PROM_PORT/api/v1/targets?state=active" | python3 -c '
import json, sys
t = json.load(sys.stdin)["data"]["activeTargets"]
print(sum(1 for x in t if x["health"] == "up"), len(t))')
stop_prometheus

# The controller's own work without scraping (an interval longer than the run),
# so that what scraping costs is the difference.
"$MILLIONS" down >/dev/null
"$MILLIONS" up --topology "$HOME_DIR/topology.toml" --scrape-interval 1h >/dev/null
wait_whole healthy
CONTROL=$(controller_pid)
say "the controller without scraping: settling ${SETTLE}s, then measuring ${DURATION}s"
sleep "$SETTLE"
b0=$(cpu_ticks "$CONTROL")
sleep "$DURATION"
b1=$(cpu_ticks "$CONTROL")
b_rss=$(rss_kb "$CONTROL")
"$MILLIONS" down >/dev/null
"$MILLIONS" up --topology "$HOME_DIR/topology.toml" >/dev/null
wait_whole healthy

# --- 2. A web server's CPU per request, request logging on and off -----------
# web_cpu_per_request: "req/s µs-per-request" for wrk against one web server of
# the running stack (its cached profile read).
web_cpu_per_request() {
    local web pid t0 t1 rps
    web=$(addr_of dc1-web-1)
    pid=$("$MILLIONS" status --json | python3 -c '
import json, sys
print(next(n["pid"] for n in json.load(sys.stdin)["nodes"] if n["name"] == "dc1-web-1"))')
    curl -fs -o /dev/null -X POST "http://$web/api/v1/users" -H 'content-type: application/json' \
        -d '{"username":"watched","password":"watched-password-1"}' || true
    wrk -t1 -c8 -d2s "http://$web/api/v1/users/watched" >/dev/null
    t0=$(cpu_ticks "$pid")
    rps=$(wrk -t1 -c8 -d"$LOAD" "http://$web/api/v1/users/watched" | awk '/^Requests\/sec/ { print $2 }')
    t1=$(cpu_ticks "$pid")
    python3 -c 'import sys
rps, ticks, secs = float(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3].rstrip("s"))
print(f"{rps:.0f} {ticks * 10_000 / (rps * secs):.1f}")' "$rps" "$((t1 - t0))" "$LOAD"
}
say "web server CPU per request, request logging on (info)"
read -r on_rps on_us <<<"$(web_cpu_per_request)"
"$MILLIONS" down >/dev/null
say "again with RUST_LOG=warn (no request lines)"
RUST_LOG=warn "$MILLIONS" up --topology "$HOME_DIR/topology.toml" >/dev/null
wait_whole healthy
read -r off_rps off_us <<<"$(web_cpu_per_request)"

python3 - "$DURATION" "$c0" "$c1" "$p0" "$p1" "$c_rss" "$p_rss" "$b0" "$b1" "$b_rss" "$INTERVAL" "$TARGETS" "$up_targets" \
    "$on_rps" "$on_us" "$off_rps" "$off_us" "$(git rev-parse --short HEAD)" "$(nproc)" <<'PY'
import sys
(dur, c0, c1, p0, p1, c_rss, p_rss, b0, b1, b_rss, interval, targets, up, on_rps, on_us, off_rps, off_us, commit, cpus) = sys.argv[1:]
dur = float(dur)
c_cores, p_cores = (int(c1) - int(c0)) / 100 / dur, (int(p1) - int(p0)) / 100 / dur
c_mb, p_mb = int(c_rss) / 1024, int(p_rss) / 1024
b_cores, b_mb = (int(b1) - int(b0)) / 100 / dur, int(b_rss) / 1024
s_cores = max(c_cores - b_cores, 0.0)
print(f"\nWatching the default topology ({targets} nodes scraped every {interval}; Prometheus saw {up.split()[0]} of {up.split()[1]} up), {dur:.0f} s, {commit}, {cpus} CPUs\n")
print("| scraper | CPU (cores) | ÷ Prometheus | resident memory | ÷ Prometheus |")
print("|---|---:|---:|---:|---:|")
print(f"| `millions control` (scrapes, history, alerts, supervision, API) | {c_cores:.4f} | {c_cores / p_cores:.2f}× | {c_mb:.0f} MB | {c_mb / p_mb:.2f}× |")
print(f"| the controller without scraping (`--scrape-interval 1h`) | {b_cores:.4f} | {b_cores / p_cores:.2f}× | {b_mb:.0f} MB | {b_mb / p_mb:.2f}× |")
print(f"| **scraping's share** (the difference) | {s_cores:.4f} | {s_cores / p_cores:.2f}× | {c_mb - b_mb:.0f} MB | |")
print(f"| Prometheus (anchor; its own TSDB) | {p_cores:.4f} | 1.00× | {p_mb:.0f} MB | 1.00× |")
print("\nA web server's cached profile read (`wrk -t1 -c8` on dc1-web-1):\n")
print("| request logging | req/s | web CPU per request | ÷ logging off |")
print("|---|---:|---:|---:|")
print(f"| on (`info`, one JSON line per request; the default) | {float(on_rps):.0f} | {float(on_us):.1f} µs | {float(on_us) / float(off_us):.2f}× |")
print(f"| off (`RUST_LOG=warn`) | {float(off_rps):.0f} | {float(off_us):.1f} µs | 1.00× |")
PY
