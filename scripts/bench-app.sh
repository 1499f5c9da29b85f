#!/usr/bin/env bash
# The app's new operations at scale (issue 17, docs/BENCHMARKS.md "The app's
# operations: search at a million users, a comment's cost"):
#
# 1. Username prefix search latency at BENCH_USERS seeded users under the default
#    mix (search is 1 request in 100 there), and again with search's weight
#    raised to BENCH_SEARCH_WEIGHT for enough samples of its p99. The anchor, run
#    alone right after: asking every shard per keystroke — the same prefix query
#    the directory fills from (PREFIX_SQL in crates/data/src/directory.rs), sent
#    by pgbench to every shard's primary at once at the searches' rate, one
#    search costing one query on each.
# 2. What a comment and its notification cost per write: a run of comments only
#    (BENCH_COST_RATE/s), then every primary's rows written per table and
#    transactions (pg_stat_user_tables, pg_stat_database) and the workers' jobs by
#    kind, per acknowledged comment, once the queues are empty.
#
#   bash scripts/bench-app.sh     # after: cargo build --release -p millions
#
# Environment (all optional):
#   BENCH_USERS=1000000  BENCH_RATE=150  BENCH_DURATION=30s  BENCH_WARMUP=10s
#   BENCH_SEARCH_WEIGHT=25  BENCH_COST_RATE=20  BENCH_COST_DURATION=20s
#   BENCH_BUILD=1  BENCH_KEEP=0  MILLIONS=target/release/millions
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

USERS="${BENCH_USERS:-1000000}"
RATE="${BENCH_RATE:-150}"
DURATION="${BENCH_DURATION:-30s}"
WARMUP="${BENCH_WARMUP:-10s}"
SEARCH_WEIGHT="${BENCH_SEARCH_WEIGHT:-25}"
COST_RATE="${BENCH_COST_RATE:-20}"
COST_DURATION="${BENCH_COST_DURATION:-20s}"
MILLIONS="${MILLIONS:-$ROOT/target/release/millions}"
# The default mix (crates/loadgen/src/bench/config.rs), search's weight apart.
MIX_REST="feed=57,timeline=28,post=3,photo_post=1,like=2.7,follow=2,comment=1,comments=2,notifications=2,delete_post=0.3"

say() { printf 'bench-app: %s\n' "$*" >&2; }
die() { printf 'bench-app: error: %s\n' "$*" >&2; exit 1; }

# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"
require "apt-get install python3 postgresql-client curl" python3 pgbench psql curl
build_millions
own_stack bench-app 127.0.247 127.0.248

say "starting the default topology"
"$MILLIONS" up --topology "$HOME_DIR/topology.toml" >/dev/null
wait_whole healthy
say "seeding $USERS users"
seed_start=$SECONDS
"$MILLIONS" seed --users "$USERS" >/dev/null 2>&1
say "seeded in $((SECONDS - seed_start)) s"
PGPASSWORD="$(secret postgres)"
export PGPASSWORD PGUSER=millions PGDATABASE=millions
PRIMARIES=("$(addr_of shard0-pg-1)" "$(addr_of shard1-pg-1)")

# bench NAME MIX RATE DURATION WARMUP: one `millions bench --json`; its report's path.
bench() {
    local json="$HOME_DIR/$1.json"
    wait_whole healthy
    say "$1: $3/s for $4 (after $5 of warm-up), mix $2"
    "$MILLIONS" bench --rate "$3" --duration "$4" --warmup "$5" --users "$USERS" --mix "$2" \
        --json "$json" >"$HOME_DIR/$1.txt" 2>&1 || true
    [ -s "$json" ] || die "$1: no report: $(tail -5 "$HOME_DIR/$1.txt")"
    echo "$json"
}

# The first run warms the caches and timelines, as a running site's would be.
bench warm "$MIX_REST,search=1" "$RATE" 20s 5s >/dev/null
DEFAULT_JSON="$(bench default "$MIX_REST,search=1" "$RATE" "$DURATION" "$WARMUP")"
SEARCH_JSON="$(bench search "$MIX_REST,search=$SEARCH_WEIGHT" "$RATE" "$DURATION" "$WARMUP")"

# The anchor: every search as one prefix query on each shard's primary, all
# shards at once, at the searches' rate of the search-heavy run.
SEARCH_RATE="$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(max(1, round(r["ops"]["search"]["throughput"])))' "$SEARCH_JSON")"
cat >"$HOME_DIR/prefix.sql" <<SQL
\set n random(1, $((USERS - 1)))
SELECT u.user_id, u.username, u.display_name FROM (
  (SELECT user_id FROM users WHERE username ~>=~ ('user' || (:n / 100)) AND username ~<~ ('user' || (:n / 100) || '~')
   ORDER BY username USING ~<~ LIMIT 20)
  UNION
  (SELECT user_id FROM users WHERE lower(display_name) ~>=~ ('user ' || (:n / 100)) AND lower(display_name) ~<~ ('user ' || (:n / 100) || '~')
   ORDER BY lower(display_name) USING ~<~ LIMIT 20)) m
JOIN users u USING (user_id);
SQL
say "anchor: pgbench of the prefix query on every primary at once, $SEARCH_RATE/s each, for $DURATION"
secs="$(python3 -c 'import sys; print(int(float(sys.argv[1].rstrip("s"))))' "$DURATION")"
pids=()
for a in "${PRIMARIES[@]}"; do
    (cd "$HOME_DIR" && pgbench -n -c 2 -j 1 -R "$SEARCH_RATE" -T "$secs" -l --log-prefix="anchor-${a##*:}" \
        -f prefix.sql -h "${a%:*}" -p "${a##*:}" millions >"anchor-${a##*:}.txt" 2>&1) &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || die "pgbench failed: $(tail -3 "$HOME_DIR"/anchor-*.txt)"; done

# The cost of a comment: the primaries' and the workers' counters around a run
# of comments only (each on a post the run saw: the first requests are posts).
pg_counters() {
    for a in "${PRIMARIES[@]}"; do
        psql -h "${a%:*}" -p "${a##*:}" -Atqc "SELECT json_build_object(
            'xact', (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()),
            'tables', (SELECT json_object_agg(relname, json_build_array(n_tup_ins, n_tup_upd, n_tup_del))
                       FROM pg_stat_user_tables))"
    done | python3 -c '
import json, sys
total = {"xact": 0, "tables": {}}
for line in sys.stdin:
    d = json.loads(line)
    total["xact"] += d["xact"]
    for t, v in d["tables"].items():
        total["tables"][t] = [a + b for a, b in zip(total["tables"].get(t, [0, 0, 0]), v)]
print(json.dumps(total))'
}
job_counters() {
    for w in $(nodes_of worker); do curl -fsS "http://$w/metrics"; done | python3 -c '
import json, re, sys
out = {}
for line in sys.stdin:
    m = re.match(r"millions_jobs_total\{(.*)\} (\S+)", line)
    if m:
        labels = dict(re.findall(r"(\w+)=\"([^\"]*)\"", m.group(1)))
        key = labels.get("kind", "?") + ":" + labels.get("outcome", "?")
        out[key] = out.get(key, 0) + float(m.group(2))
print(json.dumps(out))'
}
queue_empty() {
    for a in "${PRIMARIES[@]}"; do
        [ "$(psql -h "${a%:*}" -p "${a##*:}" -Atqc "SELECT count(*) FROM jobs WHERE state <> 'dead'")" = 0 ] || return 1
    done
}
drain() {
    local deadline=$((SECONDS + 120))
    until queue_empty; do
        [ $SECONDS -lt $deadline ] || die "the job queues did not drain within 120 s"
        sleep 0.5
    done
}
drain
# Give the pg_stat counters (sent every 500 ms by PostgreSQL's backends) a beat.
sleep 1
PG_BEFORE="$(pg_counters)"
JOBS_BEFORE="$(job_counters)"
COST_JSON="$(bench cost "comment=1" "$COST_RATE" "$COST_DURATION" 2s)"
drain
sleep 1
PG_AFTER="$(pg_counters)"
JOBS_AFTER="$(job_counters)"

echo
echo "The app's operations at $USERS users ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown commit), $(nproc) CPUs)"
echo
python3 - "$DEFAULT_JSON" "$SEARCH_JSON" "$HOME_DIR" "$COST_JSON" "$PG_BEFORE" "$PG_AFTER" "$JOBS_BEFORE" "$JOBS_AFTER" <<'EOF'
import glob, json, statistics, sys
default, search, home, cost = (sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4])
pg0, pg1, j0, j1 = (json.loads(x) for x in sys.argv[5:9])

def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]

print("| run | requests/s | all p50 ms | all p99 ms | searches | search p50 ms | search p99 ms | errors | verdict |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
for name, path in (("default mix", default), ("search weighted", search)):
    r = json.load(open(path))
    s = r["ops"]["search"]
    print(f"| {name} | {r['achieved_rate']:.0f} | {r['latency_ms']['p50']:.1f} | {r['latency_ms']['p99']:.1f} | "
          f"{s['ok']} | {s['latency_ms']['p50']:.2f} | {s['latency_ms']['p99']:.2f} | {r['errors']} | "
          f"{'passed' if r['verdict']['passed'] else 'failed'} |")
# pgbench's log: client, transaction, latency in microseconds, ...
per_shard = []
for log in sorted(glob.glob(f"{home}/anchor-*")):
    if log.endswith(".txt"):
        continue
    per_shard.append([int(line.split()[2]) / 1000 for line in open(log) if line.strip()])
if per_shard:
    n = min(len(x) for x in per_shard)
    # A search asking every shard waits for the slowest: the max of the i-th queries.
    together = [max(x[i] for x in per_shard) for i in range(n)]
    print()
    print("| anchor: the prefix query on every shard's primary at once | queries per shard | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|")
    for i, x in enumerate(per_shard):
        print(f"| shard {i} alone | {len(x)} | {pct(x, 50):.2f} | {pct(x, 99):.2f} |")
    print(f"| a search (the slowest shard of each) | {n} | {pct(together, 50):.2f} | {pct(together, 99):.2f} |")
r = json.load(open(cost))
acked = r["checker"]["comments_acknowledged"]
print()
print(f"Cost per comment ({acked} comments acknowledged, {r['ops'].get('post', {}).get('ok', 0)} posts the run made first to comment on):")
print()
print("| table | inserted | updated | deleted |")
print("|---|---:|---:|---:|")
for t in sorted(pg1["tables"]):
    d = [a - b for a, b in zip(pg1["tables"][t], pg0["tables"].get(t, [0, 0, 0]))]
    if any(d):
        print(f"| {t} | {d[0] / acked:.2f} | {d[1] / acked:.2f} | {d[2] / acked:.2f} |")
print(f"| transactions (both primaries) | {(pg1['xact'] - pg0['xact']) / acked:.2f} | | |")
print()
print("| job kind:outcome | per comment |")
print("|---|---:|")
for k in sorted(j1):
    d = j1[k] - j0.get(k, 0)
    if d:
        print(f"| {k} | {d / acked:.2f} |")
EOF
