#!/usr/bin/env bash
# How fast `millions seed` fills the durable default topology, beside `pgbench -i`
# (PostgreSQL's own bulk loader) writing a comparable number of rows to the same
# servers in the same run.
#
# It starts the `default` preset on ranges of its own (two DCs, two shards, each a
# primary with two streaming replicas, DC-safe synchronous commits, fsync on), then:
#   1. the anchor: `pgbench -i -s S` on both shard primaries at once (each into a
#      database of its own, dropped afterwards), S chosen so that the two hold as
#      many rows as the seed will write (100,000 pgbench_accounts rows per scale
#      unit); the time of the slower one is the anchor's;
#   2. `millions seed --users N`, timed.
# It prints both, in rows per second, and their ratio.
#
# Environment: BENCH_USERS (1000000), BENCH_BUILD (1; 0 uses the binary as it is),
# BENCH_KEEP (0; 1 keeps the run directory). Mind the disk: a million users need
# about 20 GB; the anchor about as much again while it runs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

USERS="${BENCH_USERS:-1000000}"
MILLIONS="${MILLIONS:-$ROOT/target/release/millions}"

say() { printf 'bench-seed: %s\n' "$*" >&2; }
die() { printf 'bench-seed: error: %s\n' "$*" >&2; exit 1; }

source "$ROOT/scripts/bench-lib.sh"
require "apt-get install python3 postgresql-client" python3 pgbench psql
build_millions
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
own_stack bench-seed 127.0.237 127.0.238

say "starting the default topology"
"$MILLIONS" up --topology "$HOME_DIR/topology.toml" >/dev/null
wait_whole healthy
PGPASSWORD="$(secret postgres)"
export PGPASSWORD PGUSER=millions PGDATABASE=postgres
PRIMARIES=("$(addr_of shard0-pg-1)" "$(addr_of shard1-pg-1)")

# The seed's rows: users + 2 × follows + posts, about 43.9 per user at the
# defaults (measured: 43.9 M for a million users).
ROWS_EXPECTED=$((USERS * 439 / 10))
SCALE=$(( (ROWS_EXPECTED / 2 + 50000) / 100000 ))
[ "$SCALE" -ge 1 ] || SCALE=1
say "anchor: pgbench -i -s $SCALE on both primaries at once ($((SCALE * 2 * 100000)) rows)"
for a in "${PRIMARIES[@]}"; do
    psql -q -h "${a%:*}" -p "${a##*:}" -c 'CREATE DATABASE pgbench_anchor'
done
anchor_start=$(date +%s.%N)
pids=()
for a in "${PRIMARIES[@]}"; do
    pgbench -i -q -s "$SCALE" -h "${a%:*}" -p "${a##*:}" pgbench_anchor >"$HOME_DIR/pgbench-${a##*:}.log" 2>&1 &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || die "pgbench -i failed: $(tail -3 "$HOME_DIR"/pgbench-*.log)"; done
anchor_secs=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$anchor_start" "$(date +%s.%N)")
anchor_rows=$((SCALE * 2 * 100000))
for a in "${PRIMARIES[@]}"; do
    psql -q -h "${a%:*}" -p "${a##*:}" -c 'DROP DATABASE pgbench_anchor'
done
psql -q -h "${PRIMARIES[0]%:*}" -p "${PRIMARIES[0]##*:}" -c 'CHECKPOINT'
psql -q -h "${PRIMARIES[1]%:*}" -p "${PRIMARIES[1]##*:}" -c 'CHECKPOINT'

say "seeding $USERS users"
seed_start=$(date +%s.%N)
"$MILLIONS" seed --users "$USERS" >"$HOME_DIR/seed.log" 2>&1 || die "seed failed: $(tail -5 "$HOME_DIR/seed.log")"
seed_secs=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$seed_start" "$(date +%s.%N)")
seed_rows=0
for a in "${PRIMARIES[@]}"; do
    n=$(psql -h "${a%:*}" -p "${a##*:}" -d millions -Atqc "SELECT (SELECT count(*) FROM users)
        + (SELECT count(*) FROM follows_out) + (SELECT count(*) FROM follows_in) + (SELECT count(*) FROM posts)")
    seed_rows=$((seed_rows + n))
done
echo
echo "### Run of $(date -u '+%Y-%m-%d %H:%M') UTC"
echo
echo "- command: \`BENCH_USERS=$USERS bash scripts/bench-seed.sh\`"
echo "- machine: $(nproc) CPUs; load average before the run: $LOAD_BEFORE"
echo "- build: release, commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates || echo ' (with local changes)')"
echo
echo "| loader | rows | time | rows/s | ÷ pgbench -i |"
echo "|---|---:|---:|---:|---:|"
python3 - "$anchor_rows" "$anchor_secs" "$seed_rows" "$seed_secs" "$SCALE" "$USERS" <<'PY'
import sys
ar, asec, sr, ssec, scale, users = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5], int(sys.argv[6])
arate, srate = ar / asec, sr / ssec
print(f"| `pgbench -i -s {scale}` on both primaries at once (anchor) | {ar:,} | {asec:.1f} s | {arate:,.0f} | 1.00× |")
print(f"| `millions seed --users {users:,}` | {sr:,} | {ssec:.1f} s | {srate:,.0f} | {srate / arate:.2f}× |")
PY
