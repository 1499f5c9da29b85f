#!/usr/bin/env bash
# Failover time: kill -9 a shard's primary under write load, again and again,
# and measure how long writes fail; plus the replicas' lag under that load.
#
#   bash scripts/bench-failover.sh           # after: cargo build --release -p millions
#
# It starts its own stack: the `default` preset (two DCs, two synchronous shards,
# each with a replica beside its primary and one in the other DC) moved to
# address ranges of its own (127.0.231.0/24, 127.0.232.0/24), so a running
# `make up` is never touched, with PostgreSQL's full durability (fsync on).
# It seeds users, then:
#
#   lag      BENCH_LAG_SECS of write load with no fault; `millions status --json`
#            sampled twice a second: each replica's replay lag (ms and bytes)
#   runs     BENCH_RUNS times: a fixed-rate open-loop bench (`millions bench`,
#            mix post/like/follow) that kills the current primary of a shard a
#            third into the run (`--scenario kill-primary`); its report gives the
#            time from the kill to the last failed request (writes to that shard
#            fail fast with 503 until the new primary is published: the first
#            write after that succeeds), and the checker reads back every
#            acknowledged write. The controller's event log gives detection
#            (first failed probe to confirmed loss) and promotion (first failed
#            probe to the new primary published). Each run waits until the old
#            primary has rejoined as a replica before the next.
#
# Environment (all optional):
#   BENCH_RUNS=10  BENCH_RATE=60  BENCH_RUN_SECS=6  BENCH_LAG_SECS=20  BENCH_USERS=2000
#   BENCH_BUILD=1  (0: do not run cargo build)   BENCH_KEEP=0 (1: keep the run directory)
#   MILLIONS=target/release/millions
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

RUNS="${BENCH_RUNS:-10}"
RATE="${BENCH_RATE:-60}"
RUN_SECS="${BENCH_RUN_SECS:-6}"
LAG_SECS="${BENCH_LAG_SECS:-20}"
USERS="${BENCH_USERS:-2000}"
MILLIONS="${MILLIONS:-$ROOT/target/release/millions}"

say() { printf 'bench-failover: %s\n' "$*" >&2; }
die() { printf 'bench-failover: error: %s\n' "$*" >&2; exit 1; }

command -v python3 >/dev/null || die "python3 is not installed"
# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"
build_millions
own_stack bench-failover 127.0.231 127.0.232
say "starting the default topology on 127.0.231.0/24 and 127.0.232.0/24 (full durability)"
"$MILLIONS" up --topology "$HOME_DIR/topology.toml" >/dev/null
"$MILLIONS" seed --users "$USERS" >/dev/null 2>&1
MIX="post=6,like=2,follow=2"
# dc1's web servers: sessions live in a DC's Redis, so one client stays in one DC.
TARGETS=(--target http://127.0.231.20:8080 --target http://127.0.231.21:8080)

status() { "$MILLIONS" status --json; }

wait_whole

say "lag: ${LAG_SECS}s of writes at ${RATE}/s, sampling replica lag"
"$MILLIONS" bench "${TARGETS[@]}" --rate "$RATE" --duration "${LAG_SECS}s" --warmup 1s --users "$USERS" --mix "$MIX" --no-verify \
    >"$HOME_DIR/lag-bench.txt" 2>&1 &
BENCH_PID=$!
: >"$HOME_DIR/lag.json"
while kill -0 "$BENCH_PID" 2>/dev/null; do
    status >>"$HOME_DIR/lag.json" 2>/dev/null && echo >>"$HOME_DIR/lag.json"
    sleep 0.5
done
wait "$BENCH_PID" || die "the lag bench failed: $(tail -5 "$HOME_DIR/lag-bench.txt")"

for i in $(seq 1 "$RUNS"); do
    say "run $i/$RUNS: kill a primary under ${RATE}/s writes"
    "$MILLIONS" bench "${TARGETS[@]}" --rate "$RATE" --duration "${RUN_SECS}s" --warmup 1s --users "$USERS" --mix "$MIX" \
        --scenario kill-primary --json "$HOME_DIR/run-$i.json" >"$HOME_DIR/run-$i.txt" 2>&1 \
        || die "run $i failed: $(tail -5 "$HOME_DIR/run-$i.txt")"
    wait_whole
done
status >"$HOME_DIR/final-status.json"

python3 - "$HOME_DIR" "$RUNS" "$RATE" <<'EOF'
import json, statistics, sys
home, runs, rate = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]

def documents(path):
    text, decoder, i = open(path).read(), json.JSONDecoder(), 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return
        doc, i = decoder.raw_decode(text, i)
        yield doc

lag_ms, lag_bytes = [], []
for status in documents(f"{home}/lag.json"):
    for n in status["nodes"]:
        pg = n.get("pg") or {}
        if pg.get("role") == "replica" and pg.get("lag_ms") is not None:
            lag_ms.append(pg["lag_ms"])
            lag_bytes.append(pg["lag_bytes"])

recovery, lost, acked = [], 0, 0
for i in range(1, runs + 1):
    r = json.load(open(f"{home}/run-{i}.json"))
    recovery.append(r["fault"]["recovery_secs"] * 1000)
    lost += r["checker"]["lost"]
    acked += r["checker"]["writes_acknowledged"]
events = [e for e in json.load(open(f"{home}/final-status.json"))["events"] if e["kind"] == "failover"]
detection = [e["detection_ms"] for e in events]
promotion = [e["failover_ms"] for e in events]

print(f"failover under {rate}/s writes, {runs} runs (kill -9 of a primary, synchronous shards, fsync on)")
print(f"{'measure':<52} {'p50':>8} {'max':>8}")
print(f"{'kill -> last failed write (first write after works), ms':<52} {pct(recovery, 50):>8.0f} {max(recovery):>8.0f}")
print(f"{'first failed probe -> loss confirmed, ms':<52} {pct(detection, 50):>8.0f} {max(detection):>8.0f}")
print(f"{'first failed probe -> new primary published, ms':<52} {pct(promotion, 50):>8.0f} {max(promotion):>8.0f}")
print(f"failovers recorded: {len(events)}; checker: {acked} acknowledged writes verified, {lost} lost")
if lag_ms:
    print(f"replica replay lag under {rate}/s writes ({len(lag_ms)} samples): "
          f"p50 {pct(lag_ms, 50):.1f} ms / {pct(lag_bytes, 50)} B, p99 {pct(lag_ms, 99):.1f} ms / {pct(lag_bytes, 99)} B, "
          f"max {max(lag_ms):.1f} ms / {max(lag_bytes)} B")
EOF
