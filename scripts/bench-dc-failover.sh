#!/usr/bin/env bash
# Data-center failover: lose a whole DC under load, again and again, and measure
# how long users see failures — DNS withdrawing the DC, the shards failing over.
#
#   bash scripts/bench-dc-failover.sh        # after: cargo build --release -p millions
#
# It starts its own stack: the `default` preset (two DCs, a DNS server each, TTL 5 s,
# client regions west → dc1 and east → dc2, WAN gateways) moved to address ranges
# of its own (127.0.221.0/24, 127.0.222.0/24), with PostgreSQL's full durability;
# seeds BENCH_USERS users; then BENCH_RUNS times: `millions bench` in DNS mode (its
# users resolve www through the DNS servers from their region's addresses, honouring
# the TTL) with `--scenario dc-down:DC` a third into the run, DC alternating dc1,
# dc2; the report gives the time from the DC's loss to the last failed request
# (`recovery`), the failed requests, and the checker's verdict (every acknowledged
# write read back). Between runs the DC comes back (`millions chaos dc-up`) and the
# stack is waited for until whole and healthy.
#
# The anchor is Route 53's documented failover for a health-checked record: a
# 30 s check interval × 3 failures before the record is withdrawn, then clients
# keep the old answer for its TTL (60 s is the common setting): about 150 s.
#
# Environment (all optional):
#   BENCH_RUNS=5  BENCH_RATE=60  BENCH_RUN_SECS=15  BENCH_USERS=1000
#   BENCH_BUILD=1  (0: do not run cargo build)   BENCH_KEEP=0 (1: keep the run directory)
#   MILLIONS=target/release/millions
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

RUNS="${BENCH_RUNS:-5}"
RATE="${BENCH_RATE:-60}"
RUN_SECS="${BENCH_RUN_SECS:-15}"
USERS="${BENCH_USERS:-1000}"
MILLIONS="${MILLIONS:-$ROOT/target/release/millions}"

say() { printf 'bench-dc-failover: %s\n' "$*" >&2; }
die() { printf 'bench-dc-failover: error: %s\n' "$*" >&2; exit 1; }

command -v python3 >/dev/null || die "python3 is not installed"
# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"
build_millions
own_stack bench-dc-failover 127.0.221 127.0.222
say "starting the default topology on 127.0.221.0/24 and 127.0.222.0/24 (full durability)"
"$MILLIONS" up --topology "$HOME_DIR/topology.toml" >/dev/null
"$MILLIONS" seed --users "$USERS" >/dev/null 2>&1
wait_whole healthy

for i in $(seq 1 "$RUNS"); do
    dc=dc$(( (i - 1) % 2 + 1 ))
    say "run $i/$RUNS: lose $dc under ${RATE}/s"
    "$MILLIONS" bench --rate "$RATE" --duration "${RUN_SECS}s" --warmup 2s --users "$USERS" \
        --scenario "dc-down:$dc" --json "$HOME_DIR/run-$i.json" >"$HOME_DIR/run-$i.txt" 2>&1 \
        || say "run $i did not pass: $(tail -1 "$HOME_DIR/run-$i.txt")"
    "$MILLIONS" chaos dc-up "$dc" >/dev/null
    wait_whole healthy
done

python3 - "$HOME_DIR" "$RUNS" "$RATE" <<'PY'
import json, sys
home, runs, rate = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]

recovery, failed, lost, acked, passed = [], [], 0, 0, 0
for i in range(1, runs + 1):
    r = json.load(open(f"{home}/run-{i}.json"))
    recovery.append(r["fault"]["recovery_secs"])
    failed.append(r["fault"]["errors_after"])
    lost += r["checker"]["lost"]
    acked += r["checker"]["writes_acknowledged"]
    passed += r["verdict"]["passed"]
    totals = r.get("traffic", {}).get("totals", {})
    print(f"run {i}: {r['fault']['action']}: recovered {r['fault']['recovery_secs']:.2f} s, "
          f"{r['fault']['errors_after']} requests failed, traffic {totals}, checker lost {r['checker']['lost']}")
print()
print(f"DC failover under {rate}/s through DNS (TTL 5 s), {runs} runs")
print("| measure | p50 | max | Route 53 (30 s x 3 checks + 60 s TTL) |")
print("|---|---:|---:|---:|")
print(f"| dc-down -> last failed request | {pct(recovery, 50):.2f} s | {max(recovery):.2f} s | about 150 s |")
print(f"| requests failed per run | {pct(failed, 50)} | {max(failed)} | |")
print(f"verdicts passed: {passed} of {runs}; checker: {acked} acknowledged writes, {lost} lost")
PY
