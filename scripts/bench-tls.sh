#!/usr/bin/env bash
# Benchmark `millions lb` terminating TLS, beside HAProxy and nginx terminating TLS
# with the same certificate, in the same run.
#
#   bash scripts/bench-tls.sh   # after: cargo build --release -p millions -p web --bin millions --example bare
#
# A CA and a server certificate (ECDSA P-256, for 127.0.0.1) are made by openssl
# in the run directory; each proxy serves HTTPS with them (TLS 1.3 only for
# HAProxy and nginx; ours offers 1.2 and 1.3 and wrk's OpenSSL picks 1.3), in
# front of two `bare` backends (the web crate's one-handler example) over plain
# HTTP, round robin, keep-alive to the backends, one access-log line per request
# (configured as scripts/bench-lb.sh configures them). wrk (closed loop) measures,
# in BENCH_ROUNDS interleaved rounds, medians reported:
#   - keep-alive: connections opened once, every request on them (the steady
#     state: handshakes out of the picture, only record encryption), with
#     BENCH_LOW_CONN and BENCH_SAT_CONN connections;
#   - handshake per request: `Connection: close`, so every request pays a full
#     TLS 1.3 handshake (wrk resumes no session), BENCH_SAT_CONN connections.
# Added latency is over going to a backend directly in plain HTTP (so it holds
# the TLS work too); ratios are against HAProxy and nginx of the same run.
# Part 2 (oha, crates.io: `cargo install oha --locked`) measures latency at fixed
# rates below saturation, over keep-alive and over a new connection per request
# that resumes its TLS session (see there).
#
# Environment (all optional):
#   BENCH_DURATION=6s  BENCH_ROUNDS=3  BENCH_LOW_CONN=8  BENCH_SAT_CONN=64
#   BENCH_TLS_RATES=2000,5000  BENCH_TLS_NEW_RATES=500,1000  OHA=oha  (empty rates skip part 2)
#   BENCH_PROXY_THREADS=2  MILLIONS=target/release/millions  BARE=target/release/examples/bare
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DURATION="${BENCH_DURATION:-6s}"
ROUNDS="${BENCH_ROUNDS:-3}"
LOW_CONN="${BENCH_LOW_CONN:-8}"
SAT_CONN="${BENCH_SAT_CONN:-64}"
THREADS="${BENCH_PROXY_THREADS:-2}"
TLS_RATES="${BENCH_TLS_RATES-2000,5000}"
TLS_NEW_RATES="${BENCH_TLS_NEW_RATES-500,1000}"
OHA="${OHA:-oha}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
MILLIONS="${MILLIONS:-$TARGET_DIR/release/millions}"
BARE="${BARE:-$TARGET_DIR/release/examples/bare}"

say() { printf 'bench-tls: %s\n' "$*" >&2; }
die() { printf 'bench-tls: error: %s\n' "$*" >&2; exit 1; }
export PATH="$PATH:/usr/sbin"
[ -x "$MILLIONS" ] || die "$MILLIONS is missing; run: cargo build --release -p millions"
if [ -n "$TLS_RATES$TLS_NEW_RATES" ] && ! command -v "$OHA" >/dev/null; then
    die "oha is not installed (cargo install oha --locked), or set OHA=path, or BENCH_TLS_RATES= BENCH_TLS_NEW_RATES= to skip part 2"
fi
[ -x "$BARE" ] || die "$BARE is missing; run: cargo build --release -p web --example bare"

# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"
require "apt-get install wrk openssl nginx haproxy" wrk curl python3 openssl nginx haproxy

RUN="$(mktemp -d "${TMPDIR:-/tmp}/millions-bench-tls.XXXXXX")"
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

# The certificates: a CA, and a server certificate it signs, for 127.0.0.1.
T="$RUN/tls"; mkdir -p "$T"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=bench CA" \
    -keyout "$T/ca.key" -out "$T/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$T/server.key" -out "$T/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$T/ext"
openssl x509 -req -in "$T/server.csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" -CAcreateserial -days 2 \
    -extfile "$T/ext" -out "$T/server.pem" 2>/dev/null
cat "$T/server.pem" "$T/server.key" >"$T/haproxy.pem"

B1="127.0.0.1:$(port)"; B2="127.0.0.1:$(port)"
"$BARE" "$B1" >/dev/null 2>&1 & PIDS+=($!)
"$BARE" "$B2" >/dev/null 2>&1 & PIDS+=($!)
wait_http "$B1"; wait_http "$B2"

OURS="127.0.0.1:$(port)"; HAP="127.0.0.1:$(port)"; NGX="127.0.0.1:$(port)"
mkdir -p "$RUN/nginx"
lb_toml "$RUN/lb.toml" "127.0.0.1:$(port)" "127.0.0.1:$(port)" "$THREADS" / "$B1" "$B2"
cat >>"$RUN/lb.toml" <<CFG
[tls]
listen = "$OURS"
cert = "$T/server.pem"
key = "$T/server.key"
CFG
RUST_LOG=info "$MILLIONS" lb --config "$RUN/lb.toml" >"$RUN/lb-access.log" 2>&1 & PIDS+=($!)

haproxy_cfg "$RUN/haproxy.cfg" "$HAP" "$THREADS" "$B1" "$B2"
sed -i "s|^    bind $HAP\$|    bind $HAP ssl crt $T/haproxy.pem alpn h2,http/1.1 ssl-min-ver TLSv1.3|" "$RUN/haproxy.cfg"
grep -q "ssl crt" "$RUN/haproxy.cfg" || die "could not put TLS into HAProxy's configuration"
haproxy -db -f "$RUN/haproxy.cfg" >"$RUN/haproxy-access.log" 2>&1 & PIDS+=($!)

cat >"$RUN/nginx.conf" <<CFG
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
    keepalive_requests 1000000;
    upstream be { server $B1; server $B2; keepalive 64; }
    server {
        listen $NGX ssl http2;  # the listen form: Debian 12 ships nginx 1.22, before `http2 on;`
        ssl_certificate $T/server.pem;
        ssl_certificate_key $T/server.key;
        ssl_protocols TLSv1.3;
        ssl_session_tickets on;
        location / {
            proxy_pass http://be;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto https;
        }
    }
}
CFG
nginx -c "$RUN/nginx.conf" -p "$RUN/nginx" & PIDS+=($!)
for a in "$OURS" "$HAP" "$NGX"; do wait_https "$a" "$T/ca.pem"; done
# Every proxy speaks TLS 1.3 with the same certificate.
for a in "$OURS" "$HAP" "$NGX"; do
    v="$(curl -s --cacert "$T/ca.pem" -o /dev/null -w '%{http_code}' "https://$a/")"
    [ "$v" = 200 ] || die "$a answered $v over HTTPS"
    openssl s_client -connect "$a" -CAfile "$T/ca.pem" </dev/null 2>/dev/null | grep -q "TLSv1.3" ||
        die "$a did not negotiate TLS 1.3"
done


# The runs: MODE:CONNECTIONS, MODE keep (keep-alive) or close (a handshake per request).
RUNS=()
for c in ${LOW_CONN//,/ } "$SAT_CONN"; do RUNS+=("keep:$c"); done
RUNS+=("close:$SAT_CONN")
declare -A R
for round in $(seq "$ROUNDS"); do
    for run in "${RUNS[@]}"; do
        mode="${run%%:*}"; conn="${run#*:}"
        header=""; [ "$mode" = close ] && header="Connection: close"
        for target in direct:http://$B1/ ours:https://$OURS/ haproxy:https://$HAP/ nginx:https://$NGX/; do
            name="${target%%:*}"; url="${target#*:}"
            R[$round,$run,$name]="$(wrk_stats "$url" "$conn" "$header")"
            say "round $round, $mode, $conn connections, $name: ${R[$round,$run,$name]} (rps p50us p99us)"
        done
    done
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a < 0) print "n/a"; else if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

echo
echo "| connections | measure | direct (plain) | ours | HAProxy | nginx | ours / HAProxy | ours / nginx |"
echo "|---|---|---|---|---|---|---|---|"
for run in "${RUNS[@]}"; do
    mode="${run%%:*}"; conn="${run#*:}"
    label="$conn keep-alive"; [ "$mode" = close ] && label="$conn, handshake per request"
    d99=$(field R "$run" direct 3); drps=$(field R "$run" direct 1)
    for name in ours haproxy nginx; do
        declare "a99_$name=$(added "$(field R "$run" $name 3)" "$d99")"
        declare "rps_$name=$(field R "$run" $name 1)"
    done
    echo "| $label | req/s | $drps | $rps_ours | $rps_haproxy | $rps_nginx | $(ratio "$rps_ours" "$rps_haproxy") | $(ratio "$rps_ours" "$rps_nginx") |"
    echo "| $label | added p99 µs | (p99 $d99) | $a99_ours | $a99_haproxy | $a99_nginx | $(ratio "$a99_ours" "$a99_haproxy") | $(ratio "$a99_ours" "$a99_nginx") |"
done

# ------------------------------------ part 2: fixed rates, open loop (oha) ----
# Latency is only comparable below saturation: oha sends at a fixed rate and
# corrects for coordinated omission. Two kinds of connection:
#   keep-alive  SAT_CONN connections kept open (record encryption only);
#   resumed     a new TCP and TLS connection per request, resuming the TLS 1.3
#               session with a ticket (oha's rustls client keeps its tickets), the
#               returning visitor's handshake.
# Each added p50/p99 is over the same rate to a backend directly, in plain HTTP.
[ -n "$TLS_RATES$TLS_NEW_RATES" ] || exit 0
say "part 2: oha at fixed rates (keep-alive $TLS_RATES/s, resumed $TLS_NEW_RATES/s)"
RUNS2=()
for r in ${TLS_RATES//,/ }; do RUNS2+=("keep:$r"); done
for r in ${TLS_NEW_RATES//,/ }; do RUNS2+=("resumed:$r"); done
declare -A F
for round in $(seq "$ROUNDS"); do
    for run in "${RUNS2[@]}"; do
        mode="${run%%:*}"; rate="${run#*:}"
        flags=(--insecure); [ "$mode" = resumed ] && flags+=(--disable-keepalive)
        for target in direct:http://$B1/ ours:https://$OURS/ haproxy:https://$HAP/ nginx:https://$NGX/; do
            name="${target%%:*}"; url="${target#*:}"
            F[$round,$run,$name]="$(oha_stats "$url" "$rate" "$SAT_CONN" "${flags[@]}")"
            say "round $round, $mode, $rate/s, $name: ${F[$round,$run,$name]} (p50us p99us ok/s errors)"
        done
    done
done
echo
echo "| connections | rate/s | measure | direct (plain) | ours | HAProxy | nginx | ours / HAProxy | ours / nginx |"
echo "|---|---|---|---|---|---|---|---|---|"
for run in "${RUNS2[@]}"; do
    mode="${run%%:*}"; rate="${run#*:}"
    label="$SAT_CONN keep-alive"; [ "$mode" = resumed ] && label="new per request, resumed"
    for i in 1 2; do
        d=$(field F "$run" direct "$i")
        for name in ours haproxy nginx; do declare "a_$name=$(added "$(field F "$run" $name "$i")" "$d")"; done
        m="added p50 µs"; [ "$i" = 2 ] && m="added p99 µs"
        echo "| $label | $rate | $m | ($d) | $a_ours | $a_haproxy | $a_nginx | $(ratio "$a_ours" "$a_haproxy") | $(ratio "$a_ours" "$a_nginx") |"
    done
    errors=""
    for name in direct ours haproxy nginx; do
        errors="$errors $(for round in $(seq "$ROUNDS"); do echo "${F[$round,$run,$name]}"; done |
            awk '{ s += ($4 < 0 ? 1 : $4) } END { print s + 0 }')"
    done
    echo "| $label | $rate | errors (direct ours HAProxy nginx) |$errors | | | | | |"
done
