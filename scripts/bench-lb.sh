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
# Part 1, the proxies' own cost: wrk (closed loop) against the `bare` backends.
# Latency with few connections (BENCH_LOW_CONN), throughput at saturation with
# BENCH_SAT_CONN connections. The targets run in BENCH_ROUNDS interleaved rounds;
# medians are reported, as ratios to HAProxy and nginx of the same run.
#
# Part 1b, the proxies' own cost at fixed rates (open loop): oha (crates.io:
# cargo install oha --locked) with --latency-correction, which measures each
# request from its intended start (no coordinated omission), against the same
# `bare` backends at each rate of BENCH_FIXED_RATES, BENCH_SAT_CONN connections,
# BENCH_ROUNDS rotating rounds; medians of p50/p99 and their added part over
# direct. BENCH_FIXED_RATES= (empty) skips it.
#
# Part 2, real web servers at fixed rates (open loop): a stack of its own
# (`millions up`, two web servers, on BENCH_RANGE), seeded with `millions seed`;
# the three proxies are started again in front of the two web servers, and
# `millions bench` drives the app's API (read-mostly mix, BENCH_MIX) at each total
# rate of BENCH_RATES: four runs at once, a quarter of the rate each, one per
# target — each proxy, and directly (both web servers as targets) — with the same
# users and mix. All four see the same moments of the machine: what the web tier,
# PostgreSQL or the kernel did then weighs on every target alike. (Targets run
# one after another, the first way this was measured, gave p99s of one target
# varying 2–3× between rounds, more than any difference between the proxies.)
# Reported per rate: the p50/p99 each proxy adds over direct, as ratios to HAProxy
# and nginx; medians over BENCH_RATE_ROUNDS rounds. BENCH_RATES= (empty) skips
# part 2.
#
# Environment (all optional):
#   BENCH_DURATION=6s  BENCH_ROUNDS=3  BENCH_LOW_CONN=1,8  BENCH_SAT_CONN=64
#   BENCH_PROXY_THREADS=2   worker threads/processes of every proxy
#   BENCH_FIXED_RATES=2000,5000,10000  OHA=oha
#   BENCH_RATES=200,500,1000  BENCH_RATE_DURATION=15s  BENCH_RATE_WARMUP=5s  BENCH_RATE_ROUNDS=3
#   BENCH_MIX=feed=60,timeline=36,post=2,like=2,follow=0,view_photo=0
#   BENCH_USERS=200  BENCH_RANGE=127.0.251
#   MILLIONS=target/release/millions  BARE=target/release/examples/bare
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DURATION="${BENCH_DURATION:-6s}"
ROUNDS="${BENCH_ROUNDS:-3}"
LOW_CONN="${BENCH_LOW_CONN:-1,8}"
SAT_CONN="${BENCH_SAT_CONN:-64}"
THREADS="${BENCH_PROXY_THREADS:-2}"
RATES="${BENCH_RATES-200,500,1000}"
FIXED_RATES="${BENCH_FIXED_RATES-2000,5000,10000}"
OHA="${OHA:-oha}"
RATE_DURATION="${BENCH_RATE_DURATION:-15s}"
RATE_WARMUP="${BENCH_RATE_WARMUP:-5s}"
RATE_ROUNDS="${BENCH_RATE_ROUNDS:-3}"
MIX="${BENCH_MIX:-feed=60,timeline=36,post=2,like=2,follow=0,view_photo=0}"
USERS="${BENCH_USERS:-200}"
BENCH_RANGE="${BENCH_RANGE:-127.0.251}"
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
if [ -n "$FIXED_RATES" ] && ! command -v "$OHA" >/dev/null; then
    [ -x "$HOME/.cargo/bin/oha" ] && OHA="$HOME/.cargo/bin/oha" ||
        die "oha is not installed (cargo install oha --locked), or set OHA=path, or BENCH_FIXED_RATES= to skip part 1b"
fi

# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"

RUN="$(mktemp -d "${TMPDIR:-/tmp}/millions-bench-lb.XXXXXX")"
# PostgreSQL runs as its own OS user when started by root: it must enter this dir.
chmod 755 "$RUN"
export MILLIONS_HOME="$RUN/home"
PIDS=()
STACK_UP=0
cleanup() {
    local rc=$?
    set +e
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    if [ "$STACK_UP" = 1 ] || [ -f "$MILLIONS_HOME/control.json" ]; then
        "$MILLIONS" down --home "$MILLIONS_HOME" >/dev/null 2>&1 || say "warning: millions down failed; see $RUN"
    fi
    if [ "$rc" != 0 ]; then say "run directory kept: $RUN"; else rm -rf "$RUN"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

B1="127.0.0.1:$(port)"; B2="127.0.0.1:$(port)"
BARE_PIDS=()
"$BARE" "$B1" >/dev/null 2>&1 & BARE_PIDS+=($!)
"$BARE" "$B2" >/dev/null 2>&1 & BARE_PIDS+=($!)
PIDS+=("${BARE_PIDS[@]}")
wait_http "$B1"; wait_http "$B2"

# start_proxies DIR BACKEND1 BACKEND2 HEALTH_PATH: ours, HAProxy and nginx in
# front of the two backends, configured alike; sets OURS, HAP, NGX (addresses)
# and SET_PIDS (their pids, also in PIDS for the cleanup).
start_proxies() {
    local dir="$1" b1="$2" b2="$3" health="$4"
    mkdir -p "$dir/nginx"
    OURS="127.0.0.1:$(port)"; HAP="127.0.0.1:$(port)"; NGX="127.0.0.1:$(port)"
    SET_PIDS=()
    lb_toml "$dir/lb.toml" "$OURS" "127.0.0.1:$(port)" "$THREADS" "$health" "$b1" "$b2"
    RUST_LOG=info "$MILLIONS" lb --config "$dir/lb.toml" >"$dir/lb-access.log" 2>&1 & SET_PIDS+=($!)

    haproxy_cfg "$dir/haproxy.cfg" "$HAP" "$THREADS" "$b1" "$b2"
    haproxy -db -f "$dir/haproxy.cfg" >"$dir/haproxy-access.log" 2>&1 & SET_PIDS+=($!)

    cat >"$dir/nginx.conf" <<EOF
worker_processes $THREADS;
daemon off;
pid $dir/nginx/nginx.pid;
error_log $dir/nginx/error.log;
events { worker_connections 4096; }
http {
    access_log $dir/nginx-access.log;
    client_body_temp_path $dir/nginx; proxy_temp_path $dir/nginx;
    fastcgi_temp_path $dir/nginx; uwsgi_temp_path $dir/nginx; scgi_temp_path $dir/nginx;
    client_header_timeout 10s;
    client_max_body_size 16m;
    keepalive_timeout 60s;
    upstream be { server $b1; server $b2; keepalive 64; }
    server {
        listen $NGX;
        location / {
            proxy_pass http://be;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        }
    }
}
EOF
    nginx -c "$dir/nginx.conf" -p "$dir/nginx" & SET_PIDS+=($!)
    PIDS+=("${SET_PIDS[@]}")
    wait_http "$OURS" "$health"; wait_http "$HAP" "$health"; wait_http "$NGX" "$health"
}
stop_set() {
    for p in "$@"; do kill "$p" 2>/dev/null || true; done
    for p in "$@"; do wait "$p" 2>/dev/null || true; done
}

say "part 1: wrk against two bare backends (rounds $ROUNDS, $DURATION each)"
start_proxies "$RUN/bare" "$B1" "$B2" /

# wrk_run ADDR CONNECTIONS -> "rps p50_us p99_us"
wrk_run() { wrk_stats "http://$1/" "$2"; }

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

# The medians over rounds (`field`, bench-lib.sh, of R or F below), and the table.
# A ratio of two costs; a cost below zero (faster than direct) has none.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a < 0) print "n/a (ours below direct)"; else if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

echo
echo "| connections | measure | direct | ours | HAProxy | nginx | ours / HAProxy | ours / nginx |"
echo "|---|---|---|---|---|---|---|---|"
for conn in ${LOW_CONN//,/ } "$SAT_CONN"; do
    d50=$(field R "$conn" direct 2); d99=$(field R "$conn" direct 3); drps=$(field R "$conn" direct 1)
    for name in ours haproxy nginx; do
        declare "a50_$name=$(added "$(field R "$conn" $name 2)" "$d50")"
        declare "a99_$name=$(added "$(field R "$conn" $name 3)" "$d99")"
        declare "rps_$name=$(field R "$conn" $name 1)"
    done
    echo "| $conn | req/s | $drps | $rps_ours | $rps_haproxy | $rps_nginx | $(ratio "$rps_ours" "$rps_haproxy") | $(ratio "$rps_ours" "$rps_nginx") |"
    echo "| $conn | added p50 µs | (p50 $d50) | $a50_ours | $a50_haproxy | $a50_nginx | $(ratio "$a50_ours" "$a50_haproxy") | $(ratio "$a50_ours" "$a50_nginx") |"
    echo "| $conn | added p99 µs | (p99 $d99) | $a99_ours | $a99_haproxy | $a99_nginx | $(ratio "$a99_ours" "$a99_haproxy") | $(ratio "$a99_ours" "$a99_nginx") |"
done

# ---------------------------- part 1b: the same backends, fixed rates (oha) ----

# oha_run ADDR RATE -> "p50_us p99_us achieved_rps non_2xx_or_errors"
oha_run() { oha_stats "http://$1/" "$2" "$SAT_CONN"; }

if [ -n "$FIXED_RATES" ]; then
    say "part 1b: oha at fixed rates ($FIXED_RATES/s, $SAT_CONN connections) against the bare backends"
    declare -A F
    order=(direct ours haproxy nginx)
    for round in $(seq "$ROUNDS"); do
        for rate in ${FIXED_RATES//,/ }; do
            order=("${order[@]:1}" "${order[0]}")
            for name in "${order[@]}"; do
                case "$name" in
                    direct) addr=$B1 ;; ours) addr=$OURS ;; haproxy) addr=$HAP ;; nginx) addr=$NGX ;;
                esac
                F[$round,$rate,$name]="$(oha_run "$addr" "$rate")"
                say "round $round, $rate/s, $name: ${F[$round,$rate,$name]} (p50us p99us ok/s errors)"
            done
        done
    done
    echo
    echo "| rate/s | measure | direct | ours | HAProxy | nginx | ours / HAProxy | ours / nginx |"
    echo "|---|---|---|---|---|---|---|---|"
    for rate in ${FIXED_RATES//,/ }; do
        d50=$(field F "$rate" direct 1); d99=$(field F "$rate" direct 2)
        for name in ours haproxy nginx; do
            declare "a50_$name=$(added "$(field F "$rate" $name 1)" "$d50")"
            declare "a99_$name=$(added "$(field F "$rate" $name 2)" "$d99")"
            declare "ok_$name=$(field F "$rate" $name 3)"
            declare "err_$name=$(for round in $(seq "$ROUNDS"); do echo "${F[$round,$rate,$name]}"; done |
                awk '{ s += ($4 < 0 ? 1 : $4) } END { print s + 0 }')"
        done
        echo "| $rate | added p50 µs | (p50 $d50) | $a50_ours | $a50_haproxy | $a50_nginx | $(ratio "$a50_ours" "$a50_haproxy") | $(ratio "$a50_ours" "$a50_nginx") |"
        echo "| $rate | added p99 µs | (p99 $d99) | $a99_ours | $a99_haproxy | $a99_nginx | $(ratio "$a99_ours" "$a99_haproxy") | $(ratio "$a99_ours" "$a99_nginx") |"
        echo "| $rate | ok/s / errors | $(field F "$rate" direct 3) | $ok_ours/$err_ours | $ok_haproxy/$err_haproxy | $ok_nginx/$err_nginx | | |"
    done
fi

for f in lb haproxy nginx; do
    say "$f access log: $(wc -l <"$RUN/bare/$f-access.log") lines"
done
stop_set "${SET_PIDS[@]}" "${BARE_PIDS[@]}"

[ -n "$RATES" ] || exit 0

# ------------------------------------------ part 2: web servers, fixed rates ----

WEB1="$BENCH_RANGE.20:8080"; WEB2="$BENCH_RANGE.21:8080"
say "part 2: starting a stack with two web servers in $MILLIONS_HOME"
up_small_stack bench-lb "$BENCH_RANGE" 2
"$MILLIONS" status --home "$MILLIONS_HOME" --json >"$RUN/status.json"
mapfile -t WEBS < <(python3 -c 'import json, sys
for n in json.load(open(sys.argv[1]))["nodes"]:
    if n["role"] == "web": print(n["addr"])' "$RUN/status.json")
[ "${#WEBS[@]}" = 2 ] || die "expected two web servers, found: ${WEBS[*]}"
say "seeding $USERS users"
"$MILLIONS" seed --home "$MILLIONS_HOME" --users "$USERS" --seed 7 >"$RUN/seed.log" 2>&1 || {
    cat "$RUN/seed.log" >&2
    die "millions seed failed"
}
start_proxies "$RUN/web" "${WEBS[0]}" "${WEBS[1]}" /readyz

# rate_run NAME RATE URL... -> "p50_ms p99_ms achieved errors"
rate_run() {
    local name="$1" rate="$2"; shift 2
    local targets=() out="$RUN/rate-$name-$rate.json"
    for u in "$@"; do targets+=(--target "$u"); done
    "$MILLIONS" bench "${targets[@]}" --rate "$rate" --duration "$RATE_DURATION" --warmup "$RATE_WARMUP" \
        --mix "$MIX" --users "$USERS" --no-verify --json "$out" >"$RUN/rate-$name-$rate.log" 2>&1 ||
        say "warning: millions bench against $name at $rate/s failed; see $RUN/rate-$name-$rate.log"
    python3 -c 'import json, sys
try:
    r = json.load(open(sys.argv[1]))
    print(r["latency_ms"]["p50"], r["latency_ms"]["p99"], round(r["achieved_rate"], 1), r["errors"])
except Exception:
    print("nan nan 0 -1")' "$out"
}

# Untimed: warm the web servers' caches.
rate_run warm "${RATES%%,*}" "http://${WEBS[0]}" "http://${WEBS[1]}" >/dev/null

declare -A QR
for round in $(seq "$RATE_ROUNDS"); do
    for rate in ${RATES//,/ }; do
        each=$(awk -v r="$rate" 'BEGIN { printf "%g", r / 4 }')
        runs=()
        for target in direct ours haproxy nginx; do
            case "$target" in
                direct) urls=("http://${WEBS[0]}" "http://${WEBS[1]}") ;;
                ours) urls=("http://$OURS") ;;
                haproxy) urls=("http://$HAP") ;;
                nginx) urls=("http://$NGX") ;;
            esac
            rate_run "$target" "$each" "${urls[@]}" >"$RUN/result-$target" & runs+=($!)
        done
        # Only these four: the proxies run in the background too.
        wait "${runs[@]}"
        for target in direct ours haproxy nginx; do
            QR[$round,$rate,$target]="$(cat "$RUN/result-$target")"
            say "round $round, $rate/s ($each/s each), $target: ${QR[$round,$rate,$target]} (p50 ms, p99 ms, ok/s, errors)"
        done
    done
done
# Per rate and target: the median p50, p99 and achieved rate over the rounds
# (runs that failed, "nan", left out), and the errors summed.
declare -A Q
for rate in ${RATES//,/ }; do
    for target in direct ours haproxy nginx; do
        rows=""
        for round in $(seq "$RATE_ROUNDS"); do rows+="${QR[$round,$rate,$target]}"$'\n'; done
        Q[$rate,$target]="$(printf '%s' "$rows" | python3 -c 'import statistics, sys
rows = [l.split() for l in sys.stdin if l.strip()]
ok = [r for r in rows if r[0] != "nan" and r[1] != "nan"]
med = lambda i: round(statistics.median(float(r[i]) for r in ok), 3) if ok else float("nan")
errors = sum(max(int(r[3]), 0) for r in rows) + sum(1 for r in rows if int(r[3]) < 0)
print(med(0), med(1), round(med(2), 1) if ok else 0, errors)')"
    done
done

fmt_added() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "nan" || b == "nan") print "n/a"; else printf "%.2f", a - b }'; }
qratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a") print "n/a"; else if (a < 0) print "n/a (ours below direct)"; else if (b <= 0) print "n/a"; else printf "%.2f", a / b }'; }
echo
echo "| rate/s | measure | direct | ours | HAProxy | nginx | ours / HAProxy | ours / nginx |"
echo "|---|---|---|---|---|---|---|---|"
for rate in ${RATES//,/ }; do
    read -r d50 d99 dok derr <<<"${Q[$rate,direct]}"
    for i in 1 2; do
        base=$d50; what="added p50 ms"
        [ "$i" = 2 ] && { base=$d99; what="added p99 ms"; }
        row=()
        for name in ours haproxy nginx; do
            v="$(echo "${Q[$rate,$name]}" | awk -v i="$i" '{ print $i }')"
            row+=("$(fmt_added "$v" "$base")")
        done
        echo "| $rate | $what | ($base) | ${row[0]} | ${row[1]} | ${row[2]} | $(qratio "${row[0]}" "${row[1]}") | $(qratio "${row[0]}" "${row[2]}") |"
    done
    oks=(); for name in ours haproxy nginx; do oks+=("$(echo "${Q[$rate,$name]}" | awk '{ print $3 "/" $4 }')"); done
    # (ok/s is each target's own: a quarter of the rate.)
    echo "| $rate | ok/s / errors | $dok/$derr | ${oks[0]} | ${oks[1]} | ${oks[2]} | | |"
done
