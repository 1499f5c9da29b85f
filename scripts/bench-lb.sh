#!/usr/bin/env bash
# Benchmark `millions lb` against HAProxy and nginx in front of the same backends.
#
#   bash scripts/bench-lb.sh        # after: cargo build --release -p millions -p web --bin millions --example bare
#
# Two backends: the web crate's `bare` example (one axum handler, a fixed JSON
# body, no logging): fast, so the proxies' own cost dominates. In front of them, in
# turn and configured alike (round robin, keep-alive to the backends, one access-log
# line per request written to a file, HTTP/1.1): our load balancer, HAProxy and
# nginx (Debian packages: apt-get install nginx haproxy). Each target is also
# compared with going to a backend directly.
#
# Load: wrk (closed loop: the repo has no open-loop generator for arbitrary URLs,
# and wrk2 is not packaged in Debian). Latency is measured with few connections
# (BENCH_LOW_CONN, well below saturation, so it approximates a fixed light rate);
# throughput at saturation with BENCH_SAT_CONN connections. The targets run in
# BENCH_ROUNDS interleaved rounds; medians are reported, as ratios to HAProxy and
# nginx of the same run.
#
# Environment (all optional):
#   BENCH_DURATION=8s  BENCH_ROUNDS=3  BENCH_LOW_CONN=1,8  BENCH_SAT_CONN=64
#   BENCH_PROXY_THREADS=2   worker threads/processes of every proxy
#   MILLIONS=target/release/millions  BARE=target/release/examples/bare
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DURATION="${BENCH_DURATION:-8s}"
ROUNDS="${BENCH_ROUNDS:-3}"
LOW_CONN="${BENCH_LOW_CONN:-1,8}"
SAT_CONN="${BENCH_SAT_CONN:-64}"
THREADS="${BENCH_PROXY_THREADS:-2}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
MILLIONS="${MILLIONS:-$TARGET_DIR/release/millions}"
BARE="${BARE:-$TARGET_DIR/release/examples/bare}"

say() { printf 'bench-lb: %s\n' "$*" >&2; }
die() { printf 'bench-lb: error: %s\n' "$*" >&2; exit 1; }
for tool in wrk curl python3 nginx haproxy; do
    command -v "$tool" >/dev/null || PATH="$PATH:/usr/sbin" command -v "$tool" >/dev/null \
        || die "$tool is not installed (apt-get install wrk nginx haproxy)"
done
export PATH="$PATH:/usr/sbin"
[ -x "$MILLIONS" ] || die "$MILLIONS is missing; run: cargo build --release -p millions"
[ -x "$BARE" ] || die "$BARE is missing; run: cargo build --release -p web --example bare"

RUN="$(mktemp -d)"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$RUN"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() {
    for _ in $(seq 200); do curl -fs -o /dev/null "http://$1/" && return 0; sleep 0.05; done
    die "nothing answers on $1"
}

B1="127.0.0.1:$(port)"; B2="127.0.0.1:$(port)"
"$BARE" "$B1" >/dev/null 2>&1 & PIDS+=($!)
"$BARE" "$B2" >/dev/null 2>&1 & PIDS+=($!)
wait_http "$B1"; wait_http "$B2"

OURS="127.0.0.1:$(port)"; HAP="127.0.0.1:$(port)"; NGX="127.0.0.1:$(port)"
cat >"$RUN/lb.toml" <<EOF
listen = "$OURS"
admin = "127.0.0.1:$(port)"
backends = ["$B1", "$B2"]
algorithm = "round_robin"
threads = $THREADS
[health]
path = "/"
EOF
RUST_LOG=info "$MILLIONS" lb --config "$RUN/lb.toml" >"$RUN/lb-access.log" 2>&1 & PIDS+=($!)

cat >"$RUN/haproxy.cfg" <<EOF
global
    nbthread $THREADS
    log stdout format raw local0
defaults
    mode http
    log global
    option httplog
    option http-keep-alive
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 60s
frontend fe
    bind $HAP
    default_backend be
backend be
    balance roundrobin
    http-reuse always
    server b1 $B1
    server b2 $B2
EOF
haproxy -db -f "$RUN/haproxy.cfg" >"$RUN/haproxy-access.log" 2>&1 & PIDS+=($!)

mkdir -p "$RUN/nginx"
cat >"$RUN/nginx.conf" <<EOF
worker_processes $THREADS;
daemon off;
pid $RUN/nginx/nginx.pid;
error_log $RUN/nginx/error.log;
events { worker_connections 4096; }
http {
    access_log $RUN/nginx-access.log;
    client_body_temp_path $RUN/nginx; proxy_temp_path $RUN/nginx;
    fastcgi_temp_path $RUN/nginx; uwsgi_temp_path $RUN/nginx; scgi_temp_path $RUN/nginx;
    client_header_timeout 10s;
    keepalive_timeout 60s;
    upstream be { server $B1; server $B2; keepalive 64; }
    server {
        listen $NGX;
        location / {
            proxy_pass http://be;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        }
    }
}
EOF
nginx -c "$RUN/nginx.conf" -p "$RUN/nginx" & PIDS+=($!)
wait_http "$OURS"; wait_http "$HAP"; wait_http "$NGX"

# wrk_run ADDR CONNECTIONS -> "rps p50_us p99_us"
wrk_run() {
    local t=2
    [ "$2" -lt 2 ] && t=1
    wrk -t"$t" -c"$2" -d"$DURATION" --latency "http://$1/" | awk '
        function us(v) { if (v ~ /us$/) return v+0; if (v ~ /ms$/) return v*1000; if (v ~ /s$/) return v*1000000; return v }
        /^ +50%/ { p50 = us($2) } /^ +99%/ { p99 = us($2) } /^Requests\/sec/ { rps = $2 }
        END { printf "%s %s %s\n", rps, p50, p99 }'
}

declare -A R
for round in $(seq "$ROUNDS"); do
    for conn in ${LOW_CONN//,/ } "$SAT_CONN"; do
        for target in direct:$B1 ours:$OURS haproxy:$HAP nginx:$NGX; do
            name="${target%%:*}"; addr="${target#*:}"
            R[$round,$conn,$name]="$(wrk_run "$addr" "$conn")"
            say "round $round, $conn connections, $name: ${R[$round,$conn,$name]} (rps p50us p99us)"
        done
    done
done

# The medians over rounds, and the table.
median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
field() { # conn name index
    for round in $(seq "$ROUNDS"); do echo "${R[$round,$1,$2]}" | awk -v i="$3" '{ print $i }'; done | median
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
added() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%d", a - b }'; }

echo
echo "| connections | measure | direct | ours | HAProxy | nginx | ours / HAProxy | ours / nginx |"
echo "|---|---|---|---|---|---|---|---|"
for conn in ${LOW_CONN//,/ } "$SAT_CONN"; do
    d50=$(field "$conn" direct 2); d99=$(field "$conn" direct 3); drps=$(field "$conn" direct 1)
    for name in ours haproxy nginx; do
        declare "a50_$name=$(added "$(field "$conn" $name 2)" "$d50")"
        declare "a99_$name=$(added "$(field "$conn" $name 3)" "$d99")"
        declare "rps_$name=$(field "$conn" $name 1)"
    done
    echo "| $conn | req/s | $drps | $rps_ours | $rps_haproxy | $rps_nginx | $(ratio "$rps_ours" "$rps_haproxy") | $(ratio "$rps_ours" "$rps_nginx") |"
    echo "| $conn | added p50 µs | (p50 $d50) | $a50_ours | $a50_haproxy | $a50_nginx | $(ratio "$a50_ours" "$a50_haproxy") | $(ratio "$a50_ours" "$a50_nginx") |"
    echo "| $conn | added p99 µs | (p99 $d99) | $a99_ours | $a99_haproxy | $a99_nginx | $(ratio "$a99_ours" "$a99_haproxy") | $(ratio "$a99_ours" "$a99_nginx") |"
done
for f in lb haproxy nginx; do
    say "$f access log: $(wc -l <"$RUN/$f-access.log") lines"
done
