#!/usr/bin/env bash
# Faults under load: for each scenario, a fixed-rate open-loop bench that kills a
# node a third into its measured window; the table gives the failed requests after
# the fault, the recovery time and the checker's verdict (docs/BENCHMARKS.md,
# "Faults under load").
#
#   bash scripts/bench-faults.sh          # after: cargo build --release -p millions
#
# It starts its own stack: the `default` preset (two DCs, a load balancer and two
# web servers each, two synchronous shards) moved to address ranges of its own
# (127.0.241.0/24, 127.0.242.0/24), so a running `make up` is never touched; seeds
# BENCH_USERS users; then runs `millions bench --scenario NAME --json` for each
# scenario, waiting before each run until every node is healthy and every shard
# whole again. Each run's report and JSON are kept in the run directory with
# BENCH_KEEP=1.
#
# Environment (all optional):
#   BENCH_SCENARIOS=kill-web,kill-worker,kill-replica,kill-primary,kill-redis
#   BENCH_RATE=80  BENCH_DURATION=12s  BENCH_WARMUP=2s  BENCH_USERS=500
#   BENCH_FAST_STORAGE=0   (1: millions up --unsafe-fast-storage, fsync off)
#   BENCH_BUILD=1  (0: do not run cargo build)   BENCH_KEEP=0 (1: keep the run directory)
#   MILLIONS=target/release/millions
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SCENARIOS="${BENCH_SCENARIOS:-kill-web,kill-worker,kill-replica,kill-primary,kill-redis}"
RATE="${BENCH_RATE:-80}"
DURATION="${BENCH_DURATION:-12s}"
WARMUP="${BENCH_WARMUP:-2s}"
USERS="${BENCH_USERS:-500}"
MILLIONS="${MILLIONS:-$ROOT/target/release/millions}"

say() { printf 'bench-faults: %s\n' "$*" >&2; }
die() { printf 'bench-faults: error: %s\n' "$*" >&2; exit 1; }

command -v python3 >/dev/null || die "python3 is not installed"
# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"
build_millions
own_stack bench-faults 127.0.241 127.0.242

up=(up --topology "$HOME_DIR/topology.toml")
[ "${BENCH_FAST_STORAGE:-0}" = 1 ] && up+=(--unsafe-fast-storage)
say "starting the default topology on 127.0.241.0/24 and 127.0.242.0/24 (${up[*]:3})"
"$MILLIONS" "${up[@]}" >/dev/null
say "seeding $USERS users"
"$MILLIONS" seed --users "$USERS" >/dev/null 2>&1

rc=0
for scenario in ${SCENARIOS//,/ }; do
    wait_whole healthy
    say "$scenario: $RATE/s for $DURATION (after $WARMUP of warm-up)"
    if ! "$MILLIONS" bench --rate "$RATE" --duration "$DURATION" --warmup "$WARMUP" --users "$USERS" \
        --scenario "$scenario" --json "$HOME_DIR/$scenario.json" >"$HOME_DIR/$scenario.txt" 2>&1; then
        say "$scenario: the run's verdict is FAILED (kept in the table); $(tail -1 "$HOME_DIR/$scenario.txt")"
        rc=1
    fi
    [ -s "$HOME_DIR/$scenario.json" ] || die "$scenario wrote no report: $(tail -5 "$HOME_DIR/$scenario.txt")"
done

echo
echo "millions bench --rate $RATE --duration $DURATION --warmup $WARMUP --users $USERS --scenario NAME" \
    "($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown commit), $(nproc) CPUs)"
echo
python3 - "$HOME_DIR" "${SCENARIOS//,/ }" <<'EOF'
import json, sys
home, scenarios = sys.argv[1], sys.argv[2].split()
print("| scenario | fault | failed requests after it (reads) | recovery | claim | checker | verdict |")
print("|---|---|---:|---:|---|---|---|")
for name in scenarios:
    r = json.load(open(f"{home}/{name}.json"))
    f, c, v = r["fault"], r["checker"], r["verdict"]
    recovery = f"{f['recovery_secs']:.2f} s" if f["recovered"] else f"not recovered (≥ {f['recovery_secs']:.2f} s)"
    checker = (
        f"{c['writes_acknowledged']} writes, {c['lost']} lost; {c['photos_ready']} of {c['photos_acknowledged']} photos ready"
        if c["ran"] else "did not run"
    )
    verdict = "passed" if v["passed"] else "FAILED: " + "; ".join(v["reasons"])
    print(f"| {name} | {f['action']} | {f['errors_after']} ({f['reads_failed_after']}) | {recovery} "
          f"| {f['tolerance'].replace('_', ' ')} | {checker} | {verdict} |")
EOF
exit "$rc"
