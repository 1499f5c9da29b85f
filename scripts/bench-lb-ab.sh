#!/usr/bin/env bash
# A/B of two builds of the load balancer, with HAProxy beside them as the anchor:
# throughput and CPU per request, interleaved rounds.
#
#   BENCH_A=path/to/old/millions BENCH_B=path/to/new/millions bash scripts/bench-lb-ab.sh
#
# Two `bare` backends (the web crate's example: one axum handler, a fixed body); in
# front of them three proxies configured alike (round robin, keep-alive both ways,
# an access-log line per request): `millions lb` of build A, of build B, and
# HAProxy. Each round runs wrk against each target in turn (the order rotating
# every round) at each connection count; a target's CPU per request is the growth
# of its process's user + system time (/proc/PID/stat, every thread) over the wrk
# run divided by the requests wrk completed. Reported: medians over the rounds of
# requests/s and CPU µs per request, B ÷ A, and each ÷ HAProxy, with how many
# rounds B was ahead. A build's own thread counts and settings are the same; only
# the binary differs. This is how a change to the proxy's request path is checked
# before the whole of scripts/bench-lb.sh is run.
#
# Environment (all optional but BENCH_A and BENCH_B):
#   BENCH_ROUNDS=8  BENCH_DURATION=5s  BENCH_CONN=8,64  BENCH_PROXY_THREADS=2
#   BARE=target/release/examples/bare  (cargo build --release -p web --example bare)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

A="${BENCH_A:?set BENCH_A to the first millions binary}"
B="${BENCH_B:?set BENCH_B to the second millions binary}"
ROUNDS="${BENCH_ROUNDS:-8}"
DURATION="${BENCH_DURATION:-5s}"
CONNS="${BENCH_CONN:-8,64}"
THREADS="${BENCH_PROXY_THREADS:-2}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BARE="${BARE:-$TARGET_DIR/release/examples/bare}"

say() { printf 'bench-lb-ab: %s\n' "$*" >&2; }
die() { printf 'bench-lb-ab: error: %s\n' "$*" >&2; exit 1; }
export PATH="$PATH:/usr/sbin"
for bin in "$A" "$B"; do [ -x "$bin" ] || die "$bin is not an executable"; done
[ -x "$BARE" ] || die "$BARE is missing; run: cargo build --release -p web --example bare"
TICKS="$(getconf CLK_TCK)"

# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"
require "apt-get install wrk haproxy" wrk curl python3 haproxy

RUN="$(mktemp -d "${TMPDIR:-/tmp}/millions-bench-lb-ab.XXXXXX")"
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

B1="127.0.0.1:$(port)"; B2="127.0.0.1:$(port)"
"$BARE" "$B1" >/dev/null 2>&1 & PIDS+=($!)
"$BARE" "$B2" >/dev/null 2>&1 & PIDS+=($!)
wait_http "$B1"; wait_http "$B2"

declare -A ADDR PID
for name in a b; do
    bin="$A"; [ "$name" = b ] && bin="$B"
    ADDR[$name]="127.0.0.1:$(port)"
    lb_toml "$RUN/$name.toml" "${ADDR[$name]}" "127.0.0.1:$(port)" "$THREADS" / "$B1" "$B2"
    RUST_LOG=info "$bin" lb --config "$RUN/$name.toml" >"$RUN/$name-access.log" 2>&1 & PID[$name]=$!
    PIDS+=("${PID[$name]}")
done
ADDR[haproxy]="127.0.0.1:$(port)"
haproxy_cfg "$RUN/haproxy.cfg" "${ADDR[haproxy]}" "$THREADS" "$B1" "$B2"
haproxy -db -f "$RUN/haproxy.cfg" >"$RUN/haproxy-access.log" 2>&1 & PID[haproxy]=$!
PIDS+=("${PID[haproxy]}")
for name in a b haproxy; do wait_http "${ADDR[$name]}" /; done

# measure NAME CONNECTIONS -> "rps cpu_us_per_request"
measure() {
    local name="$1" conn="$2" t=2 before after out
    [ "$conn" -lt 2 ] && t=1
    before="$(cpu_ticks "${PID[$name]}")"
    out="$(wrk -t"$t" -c"$conn" -d"$DURATION" "http://${ADDR[$name]}/")"
    after="$(cpu_ticks "${PID[$name]}")"
    echo "$out" | awk -v b="$before" -v a="$after" -v hz="$TICKS" '
        / requests in / { n = $1 } /^Requests\/sec/ { rps = $2 }
        END { printf "%s %.1f\n", rps, (a - b) / hz * 1e6 / n }'
}

declare -A R
order=(a b haproxy)
for round in $(seq "$ROUNDS"); do
    for conn in ${CONNS//,/ }; do
        for name in "${order[@]}"; do
            R[$round,$conn,$name]="$(measure "$name" "$conn")"
            say "round $round, $conn connections, $name: ${R[$round,$conn,$name]} (req/s, CPU µs/request)"
        done
    done
    order=("${order[@]:1}" "${order[0]}")
done

# med CONN NAME INDEX: the median over rounds of one number.
med() { for r in $(seq "$ROUNDS"); do echo "${R[$r,$1,$2]}" | awk -v i="$3" '{ print $i }'; done | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
# ahead CONN INDEX BETTER: in how many rounds B beat A on one number (BETTER: hi or lo).
ahead() {
    local n=0
    for r in $(seq "$ROUNDS"); do
        a="$(echo "${R[$r,$1,a]}" | awk -v i="$2" '{ print $i }')"
        b="$(echo "${R[$r,$1,b]}" | awk -v i="$2" '{ print $i }')"
        if awk -v a="$a" -v b="$b" -v w="$3" 'BEGIN { exit !((w == "hi") ? b > a : b < a) }'; then n=$((n + 1)); fi
    done
    echo "$n of $ROUNDS"
}

echo
echo "A: $A"
echo "B: $B"
echo "wrk, $ROUNDS interleaved rounds of $DURATION; medians; CPU = the proxy process's user + system time ÷ requests"
echo
echo "| connections | measure | A | B | HAProxy | B ÷ A | B better in | A ÷ HAProxy | B ÷ HAProxy |"
echo "|---|---|---:|---:|---:|---:|---|---:|---:|"
for conn in ${CONNS//,/ }; do
    ra="$(med "$conn" a 1)"; rb="$(med "$conn" b 1)"; rh="$(med "$conn" haproxy 1)"
    ca="$(med "$conn" a 2)"; cb="$(med "$conn" b 2)"; ch="$(med "$conn" haproxy 2)"
    echo "| $conn | req/s | $ra | $rb | $rh | $(ratio "$rb" "$ra") | $(ahead "$conn" 1 hi) | $(ratio "$ra" "$rh") | $(ratio "$rb" "$rh") |"
    echo "| $conn | CPU µs/request | $ca | $cb | $ch | $(ratio "$cb" "$ca") | $(ahead "$conn" 2 lo) | $(ratio "$ca" "$ch") | $(ratio "$cb" "$ch") |"
done
