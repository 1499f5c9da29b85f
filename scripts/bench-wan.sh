#!/usr/bin/env bash
# Commit latency of a DC-safe shard against a node-safe one, across a simulated WAN.
#
#   bash scripts/bench-wan.sh           # after: cargo build --release -p millions
#
# It starts its own stack for each WAN delay in BENCH_DELAYS (one-way, ms): the
# `default` preset moved to address ranges of its own (127.0.241.0/24,
# 127.0.242.0/24), with both shards' primaries in dc1, each with a replica in dc1
# and one in dc2; shard0 survives a DC (a commit waits for dc2's replica, across the
# WAN gateways), shard1 a node (dc1's own replica may confirm); `[wan] delay_ms`
# set to the delay; PostgreSQL's full durability (fsync on). The anchor is the
# node-safe shard, measured in the same run on the same machine.
#
# On each primary, pgbench (BENCH_CLIENTS clients, BENCH_SECS seconds, BENCH_ROUNDS
# rounds, the two shards interleaved) commits one-row inserts into a table of the
# `postgres` database (not the app's); every transaction's latency is logged
# (pgbench -l), and p50/p99 are computed over all rounds.
#
# Environment (all optional):
#   BENCH_DELAYS="0 10 40"  BENCH_CLIENTS=4  BENCH_SECS=10  BENCH_ROUNDS=2
#   BENCH_BUILD=1  (0: do not run cargo build)   BENCH_KEEP=0 (1: keep the run directory)
#   MILLIONS=target/release/millions
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DELAYS="${BENCH_DELAYS:-0 10 40}"
CLIENTS="${BENCH_CLIENTS:-4}"
SECS="${BENCH_SECS:-10}"
ROUNDS="${BENCH_ROUNDS:-2}"
MILLIONS="${MILLIONS:-$ROOT/target/release/millions}"

say() { printf 'bench-wan: %s\n' "$*" >&2; }
die() { printf 'bench-wan: error: %s\n' "$*" >&2; exit 1; }

# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"
require "apt-get install postgresql-client" python3 pgbench psql
build_millions
own_stack bench-wan 127.0.241 127.0.242
# Beside the run directory, which `down --wipe` empties between delays.
WORK="$(mktemp -d "${TMPDIR:-/tmp}/millions-bench-wan-work.XXXXXX")"
trap 'own_stack_cleanup; [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$WORK"' EXIT
TOPOLOGY="$WORK/topology.toml"
mv "$HOME_DIR/topology.toml" "$TOPOLOGY"
LOGS="$WORK/logs"
mkdir -p "$LOGS"
echo 'INSERT INTO bench_commit (payload) VALUES (repeat($$x$$, 100));' >"$WORK/insert.sql"


for delay in $DELAYS; do
    python3 - "$TOPOLOGY" "$delay" <<'PY'
import re, sys
path, delay = sys.argv[1], sys.argv[2]
text = open(path).read()
# shard1: primary in dc1 beside shard0's, node-safe.
text = text.replace('survives = "dc"\nprimary = "dc2"             # shard1-pg-1\nreplicas = ["dc2", "dc1"]',
                    'survives = "node"\nprimary = "dc1"\nreplicas = ["dc1", "dc2"]')
assert 'survives = "node"' in text, "the default preset's shard1 changed: update this script"
text = re.sub(r"\[wan\]\ndelay_ms = \d+", f"[wan]\ndelay_ms = {delay}", text)
open(path, "w").write(text)
PY
    say "WAN delay ${delay} ms: starting the stack"
    "$MILLIONS" up --topology "$TOPOLOGY" >/dev/null
    wait_whole healthy
    PGPASSWORD="$(secret postgres)"
    export PGPASSWORD PGUSER=millions PGDATABASE=postgres
    for shard in 0 1; do
        a="$(addr_of "shard$shard-pg-1")"
        psql -q -h "${a%:*}" -p "${a##*:}" -c 'CREATE TABLE IF NOT EXISTS bench_commit (id bigserial PRIMARY KEY, payload text)'
    done
    for round in $(seq 1 "$ROUNDS"); do
        order=(0 1)
        [ $((round % 2)) = 0 ] && order=(1 0)
        for shard in "${order[@]}"; do
            a="$(addr_of "shard$shard-pg-1")"
            say "delay ${delay} ms, round $round: shard$shard ($CLIENTS clients, ${SECS}s)"
            (cd "$LOGS" && pgbench -h "${a%:*}" -p "${a##*:}" -n -c "$CLIENTS" -j 1 -T "$SECS" \
                -f "$WORK/insert.sql" -l --log-prefix="d$delay-s$shard-r$round" >/dev/null 2>"$LOGS/pgbench-d$delay-s$shard-r$round.err") \
                || die "pgbench failed: $(tail -3 "$LOGS/pgbench-d$delay-s$shard-r$round.err")"
        done
    done
    "$MILLIONS" down --wipe >/dev/null
done

python3 - "$LOGS" "$DELAYS" "$CLIENTS" <<'PY'
import glob, sys
logs, delays, clients = sys.argv[1], sys.argv[2].split(), sys.argv[3]

def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]

def latencies(delay, shard):
    out = []
    for path in glob.glob(f"{logs}/d{delay}-s{shard}-r*"):
        if path.endswith(".err"):
            continue
        for line in open(path):
            out.append(int(line.split()[2]) / 1000)  # µs -> ms
    return out

print(f"commit latency, one-row inserts, {clients} clients per shard, fsync on (ms)")
print("| one-way WAN delay | DC-safe p50 | DC-safe p99 | node-safe p50 | node-safe p99 | DC-safe ÷ node-safe p50 | commits/s DC-safe ÷ node-safe |")
print("|---|---|---|---|---|---|---|")
for d in delays:
    dc, node = latencies(d, 0), latencies(d, 1)
    print(f"| {d} ms | {pct(dc, 50):.2f} | {pct(dc, 99):.2f} | {pct(node, 50):.2f} | {pct(node, 99):.2f} "
          f"| {pct(dc, 50) / pct(node, 50):.2f}x | {len(dc) / len(node):.2f} |")
PY
