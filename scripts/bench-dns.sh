#!/usr/bin/env bash
# Benchmark our DNS server (crates/dns) against NSD serving the same zone.
#
#   cargo build --release -p millions && bash scripts/bench-dns.sh
#
# Ours runs as `millions dns --config FILE` (the role a topology runs). NSD
# (Debian package nsd) runs in the foreground with a
# configuration and zone file in a temporary directory, on a free port of
# 127.0.0.1, chroot and user switching disabled. Both serve millions.test: SOA,
# NS ns1 with its glue, and www → the two addresses of dc1. Ours places every
# client (a region holding 127.0.0.0/8 prefers dc1) and checks its entries'
# health (their health URL is its own admin /healthz, always 200), so each of
# its answers goes through geo placement and the health table; NSD's www is
# static. Both get BENCH_THREADS threads (ours: tokio workers and UDP tasks;
# NSD: server-count, reuseport).
#
# The query file is the same for both: www A mostly (85%), then NS and SOA at
# the apex (5% each) and names that do not exist (5%, NXDOMAIN).
#
# Part 1, throughput: dnsperf (Debian package dnsperf) at saturation
# (BENCH_CLIENTS clients, BENCH_OUTSTANDING queries outstanding) for
# BENCH_DURATION seconds; queries/s, average and max latency from dnsperf's
# summary (dnsperf 2.10 has no latency histogram).
# Part 2, latency at a fixed rate: dnsperf -Q BENCH_RATE with -v (one line per
# query with its latency), from which p50 and p99 are computed.
# Each part runs BENCH_ROUNDS rounds, the two servers interleaved (their order
# swapped every round); medians are reported, as ratios ours ÷ NSD, in a
# markdown table. Target (for the record): ours ≥ 0.5 × NSD's queries/s.
#
# dnsperf shares the machine's cores with the server it drives, the same for both.
#
# Environment (all optional):
#   BENCH_DURATION=10  BENCH_ROUNDS=3  BENCH_CLIENTS=8  BENCH_OUTSTANDING=200
#   BENCH_RATE=20000  BENCH_THREADS=2
#   MILLIONS=target/release/millions
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DURATION="${BENCH_DURATION:-10}"
ROUNDS="${BENCH_ROUNDS:-3}"
CLIENTS="${BENCH_CLIENTS:-8}"
OUTSTANDING="${BENCH_OUTSTANDING:-200}"
RATE="${BENCH_RATE:-20000}"
THREADS="${BENCH_THREADS:-2}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
MILLIONS="${MILLIONS:-$TARGET_DIR/release/millions}"

say() { printf 'bench-dns: %s\n' "$*" >&2; }
die() { printf 'bench-dns: error: %s\n' "$*" >&2; exit 1; }
export PATH="$PATH:/usr/sbin"
[ -x "$MILLIONS" ] || die "$MILLIONS is missing; run: cargo build --release -p millions"

# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"
require "apt-get install dnsperf nsd bind9-dnsutils" dnsperf nsd dig python3 curl

RUN="$(mktemp -d "${TMPDIR:-/tmp}/millions-bench-dns.XXXXXX")"
PIDS=()
cleanup() {
    local rc=$?
    set +e
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    if [ "$rc" != 0 ]; then say "run directory kept: $RUN"; else rm -rf "$RUN"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

OURS_PORT="$(port)"; OURS_ADMIN="127.0.0.1:$(port)"; NSD_PORT="$(port)"

# Ours.
cat >"$RUN/dns.toml" <<EOF
zone = "millions.test"
listen = "127.0.0.1:$OURS_PORT"
admin = "$OURS_ADMIN"
nameservers = ["127.0.0.53"]
default_order = ["dc2"]
[udp]
workers = $THREADS
[[dc]]
name = "dc1"
entry = [{ address = "127.0.1.1", health_url = "http://$OURS_ADMIN/healthz" },
         { address = "127.0.1.2", health_url = "http://$OURS_ADMIN/healthz" }]
[[dc]]
name = "dc2"
entry = [{ address = "127.0.2.1", health_url = "http://$OURS_ADMIN/healthz" }]
[[region]]
name = "local"
ranges = ["127.0.0.0/8"]
order = ["dc1", "dc2"]
EOF
TOKIO_WORKER_THREADS="$THREADS" RUST_LOG=warn "$MILLIONS" dns --config "$RUN/dns.toml" >"$RUN/ours.log" 2>&1 & PIDS+=($!)
OURS_PID=$!

# NSD, the same zone (static: www → dc1's two addresses), configured like ours.
cat >"$RUN/millions.test.zone" <<'EOF'
$ORIGIN millions.test.
$TTL 3600
@    IN SOA ns1.millions.test. hostmaster.millions.test. 1 3600 600 604800 60
@    IN NS  ns1
ns1  IN A   127.0.0.53
www  5 IN A 127.0.1.1
www  5 IN A 127.0.1.2
EOF
cat >"$RUN/nsd.conf" <<EOF
server:
    ip-address: 127.0.0.1@$NSD_PORT
    port: $NSD_PORT
    server-count: $THREADS
    reuseport: yes
    username: ""
    chroot: ""
    zonesdir: "$RUN"
    database: ""
    zonelistfile: "$RUN/zone.list"
    xfrdfile: "$RUN/xfrd.state"
    pidfile: "$RUN/nsd.pid"
    logfile: "$RUN/nsd.log"
    verbosity: 0
    hide-version: yes
    # Like ours: no extra records in positive answers, no response rate limiting
    # (NSD's default of 200 queries/s per source would drop most of the run).
    minimal-responses: yes
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: millions.test
    zonefile: millions.test.zone
EOF
nsd -d -c "$RUN/nsd.conf" >"$RUN/nsd.out" 2>&1 & PIDS+=($!)
NSD_PID=$!

# Both answer the same thing before anything is measured.
wait_dns() {
    for _ in $(seq 200); do
        [ -n "$(dig +short +time=1 +tries=1 -p "$1" @127.0.0.1 www.millions.test A 2>/dev/null)" ] && return 0
        sleep 0.05
    done
    die "nothing answers DNS on port $1 (see $RUN)"
}
wait_dns "$OURS_PORT"; wait_dns "$NSD_PORT"
for q in "www.millions.test A" "millions.test NS" "millions.test SOA" "nope.millions.test A"; do
    # shellcheck disable=SC2086
    a="$(dig +short -p "$OURS_PORT" @127.0.0.1 $q | sort)"; b="$(dig +short -p "$NSD_PORT" @127.0.0.1 $q | sort)"
    [ "$a" = "$b" ] || die "the servers differ on $q: ours [$a], NSD [$b]"
done

# The query mix: 100 lines, cycled through by dnsperf.
{
    for _ in $(seq 85); do echo "www.millions.test A"; done
    for _ in $(seq 5); do echo "millions.test NS"; echo "millions.test SOA"; done
    for i in $(seq 5); do echo "nx$i.millions.test A"; done
} | shuf --random-source=<(yes) >"$RUN/queries.txt"

# throughput PORT -> "qps avg_us max_us lost"
throughput() {
    dnsperf -s 127.0.0.1 -p "$1" -d "$RUN/queries.txt" -l "$DURATION" -c "$CLIENTS" -q "$OUTSTANDING" 2>&1 | awk '
        /Queries per second:/ { qps = $4 }
        /Queries lost:/ { lost = $3 }
        /Average Latency/ { avg = $4 * 1e6; max = $8; sub(/\)/, "", max); max = max * 1e6 }
        END { printf "%.0f %.0f %.0f %s\n", qps, avg, max, lost }'
}

# latency PORT -> "p50_us p99_us qps lost" at the fixed rate.
latency() {
    dnsperf -s 127.0.0.1 -p "$1" -d "$RUN/queries.txt" -l "$DURATION" -c "$CLIENTS" -Q "$RATE" -v >"$RUN/latency.out" 2>&1
    awk '/^> / { print $NF * 1e6 }' "$RUN/latency.out" | sort -g | awk '{ a[NR] = $1 }
        END { p50 = a[int(NR * 0.50) + 1]; p99 = a[int(NR * 0.99) + 1]; printf "%.0f %.0f", p50, p99 }'
    awk '/Queries per second:/ { qps = $4 } /Queries lost:/ { lost = $3 } END { printf " %.0f %s\n", qps, lost }' \
        "$RUN/latency.out"
}

# cpu PID: CPU clock ticks (user + system) of PID and every process below it
# (NSD answers in child processes). Read after the command name, which may hold
# spaces ("nsd: server 1").
cpu() {
    local total kid
    total="$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{ print $12 + $13 }')"
    total="${total:-0}"
    for kid in $(pgrep -P "$1"); do total=$((total + $(cpu "$kid"))); done
    echo "$total"
}

declare -A T L C
for round in $(seq "$ROUNDS"); do
    order="ours nsd"
    [ $((round % 2)) = 0 ] && order="nsd ours"
    for name in $order; do
        if [ "$name" = ours ]; then p="$OURS_PORT"; pid="$OURS_PID"; else p="$NSD_PORT"; pid="$NSD_PID"; fi
        before="$(cpu "$pid")"
        T[$round,$name]="$(throughput "$p")"
        C[$round,$name]="$(( $(cpu "$pid") - before ))"
        say "round $round, $name, saturation: ${T[$round,$name]} (qps avg_us max_us lost), ${C[$round,$name]} cpu ticks"
        L[$round,$name]="$(latency "$p")"
        say "round $round, $name, $RATE/s: ${L[$round,$name]} (p50_us p99_us qps lost)"
    done
done

# field RESULTS NAME INDEX: the median over rounds of one number.
field() {
    local -n results=$1
    for round in $(seq "$ROUNDS"); do echo "${results[$round,$2]}" | awk -v i="$3" '{ print $i }'; done | median
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
# CPU per query, in microseconds (clock ticks are 1/100 s).
per_query() { awk -v t="$1" -v q="$2" -v d="$DURATION" 'BEGIN { if (q > 0) printf "%.1f", t * 10000 / (q * d); else print "n/a" }'; }

row() { # LABEL OURS NSD [higher-is-better note]
    echo "| $1 | $2 | $3 | $(ratio "$2" "$3") |"
}
q_ours="$(field T ours 1)"; q_nsd="$(field T nsd 1)"
echo
echo "DNS: ours vs NSD $(nsd -v 2>&1 | head -1 | awk '{ print $3 }'), $THREADS threads each; dnsperf $CLIENTS clients;" \
    "medians of $ROUNDS rounds of ${DURATION}s"
echo
echo "| measure | ours | NSD | ours ÷ NSD |"
echo "|---|---|---|---|"
row "queries/s at saturation (higher is better)" "$q_ours" "$q_nsd"
row "average latency at saturation, µs" "$(field T ours 2)" "$(field T nsd 2)"
row "max latency at saturation, µs" "$(field T ours 3)" "$(field T nsd 3)"
row "server CPU per query at saturation, µs" \
    "$(per_query "$(field C ours 1)" "$q_ours")" "$(per_query "$(field C nsd 1)" "$q_nsd")"
row "p50 latency at $RATE queries/s, µs" "$(field L ours 1)" "$(field L nsd 1)"
row "p99 latency at $RATE queries/s, µs" "$(field L ours 2)" "$(field L nsd 2)"
echo
echo "Queries lost (ours / NSD, per round, saturation): $(for r in $(seq "$ROUNDS"); do
    printf '%s/%s ' "$(echo "${T[$r,ours]}" | awk '{ print $4 }')" "$(echo "${T[$r,nsd]}" | awk '{ print $4 }')"; done)"
