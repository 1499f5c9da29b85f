#!/usr/bin/env bash
# The whole system's capacity (issue 19): the highest fixed rate the default
# topology sustains with the bench's default mix at p99 <= BENCH_P99_MS and no
# error, and where the CPU goes at each rate tried (docs/BENCHMARKS.md, "Capacity
# of the default topology").
#
#   bash scripts/bench-capacity.sh     # after: cargo build --release -p millions
#
# It starts its own stack (the `default` preset on ranges of its own, fsync on),
# seeds BENCH_USERS users, then runs `millions bench --json` at rising rates: from
# BENCH_START, doubling while a run passes, then halving the gap between the last
# pass and the first failure until it is under 10% of the rate. A run passes when
# its verdict passed, nothing failed, p99 <= BENCH_P99_MS and the achieved rate is
# at least 98% of the target. The first run meets cold caches and timelines (every
# user's first feed rebuilds it from the shards); later runs find them warm, as a
# running site would.
#
# For every run, the CPU time of every process (from /proc: each node's process,
# its live children and the children it reaped, so PostgreSQL's backends count) by
# tier, in cores, the whole system's CPU per request (every tier but the load
# generator, which is shown apart), and how many Redis commands or scripts took
# more than 5 ms (Redis's SLOWLOG over both DCs' servers, reset before each run).
# PostgreSQL's CPU is also split by process kind (backends serving queries,
# WAL senders, recovery on standbys, background writers, autovacuum), and Redis's
# commands are counted per request of the run (INFO commandstats), by command:
# what each request asks of the caches, and what their time is. The whole
# machine's CPU (/proc/stat) is shown beside it: soft interrupts (the loopback
# network's packet work) are in no process's own time.
#
# BENCH_PREWARM (a duration, e.g. 120s) runs the mix at BENCH_PREWARM_RATE first,
# unmeasured, so that the search starts on warm caches and timelines: on a
# million users the first, cold run otherwise decides the search (every acting
# user's first feed rebuilds its timeline at once).
#
# BENCH_REPEAT=N makes the search's rates pass only if N runs in a row pass
# (a rate at the edge passes one run in two; see docs/BENCHMARKS.md).
# BENCH_RATES (e.g. "600 600") runs those rates in that order instead of the
# search; BENCH_MIX (`millions bench --mix`, e.g. feed=60,timeline=30,post=10)
# replaces the default mix in every run, so that one operation's cost is the
# difference between two such runs. BENCH_PG_STATEMENTS=1 loads
# pg_stat_statements into every PostgreSQL server (before the seed) and prints,
# after the runs, the statements that took the most of the primaries' and
# replicas' execution time over the measured windows.
#
# Environment (all optional):
#   BENCH_USERS=100000  BENCH_START=200  BENCH_MAX=6400  BENCH_P99_MS=50
#   BENCH_DURATION=20s  BENCH_WARMUP=5s  BENCH_PREWARM=0s  BENCH_PREWARM_RATE=BENCH_START
#   BENCH_RATES=  BENCH_MIX=  BENCH_PG_STATEMENTS=0  BENCH_REPEAT=1
#   BENCH_BUILD=1  (0: do not run cargo build)   BENCH_KEEP=0 (1: keep the run directory)
#   MILLIONS=target/release/millions
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

USERS="${BENCH_USERS:-100000}"
START="${BENCH_START:-200}"
MAX="${BENCH_MAX:-6400}"
P99_MS="${BENCH_P99_MS:-50}"
DURATION="${BENCH_DURATION:-20s}"
WARMUP="${BENCH_WARMUP:-5s}"
PREWARM="${BENCH_PREWARM:-0s}"
PREWARM_RATE="${BENCH_PREWARM_RATE:-$START}"
RATES="${BENCH_RATES:-}"
MIX="${BENCH_MIX:-}"
PG_STATEMENTS="${BENCH_PG_STATEMENTS:-0}"
REPEAT="${BENCH_REPEAT:-1}"
MILLIONS="${MILLIONS:-$ROOT/target/release/millions}"

say() { printf 'bench-capacity: %s\n' "$*" >&2; }
die() { printf 'bench-capacity: error: %s\n' "$*" >&2; exit 1; }

command -v python3 >/dev/null || die "python3 is not installed"
[[ "$REPEAT" =~ ^[1-9][0-9]*$ ]] || die "BENCH_REPEAT must be a whole number of runs, at least 1 (got '$REPEAT')"
[[ "$PG_STATEMENTS" =~ ^[01]$ ]] || die "BENCH_PG_STATEMENTS must be 0 or 1 (got '$PG_STATEMENTS')"
for r in $RATES; do
    [[ "$r" =~ ^[1-9][0-9]*$ ]] || die "BENCH_RATES must list whole rates per second, e.g. \"600 600\" (got '$r')"
done
# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"
build_millions
own_stack bench-capacity 127.0.235 127.0.236

say "starting the default topology"
"$MILLIONS" up --topology "$HOME_DIR/topology.toml" >/dev/null
if [ "$PG_STATEMENTS" = 1 ]; then
    # postgresql.auto.conf is the server's own (millions rewrites millions.conf at
    # every start, not it), so the library stays loaded through the restart.
    say "loading pg_stat_statements into every PostgreSQL server"
    for conf in "$HOME_DIR"/nodes/*/data/postgresql.auto.conf; do
        echo "shared_preload_libraries = 'pg_stat_statements'" >>"$conf"
    done
    "$MILLIONS" down >/dev/null
    "$MILLIONS" up --topology "$HOME_DIR/topology.toml" >/dev/null
    wait_whole healthy
fi
say "seeding $USERS users"
seed_start=$SECONDS
"$MILLIONS" seed --users "$USERS" >/dev/null 2>&1
say "seeded in $((SECONDS - seed_start)) s"

# Redis's slow commands: every command or script that held a Redis for more than
# 5 ms is logged (SLOWLOG, reset before each run); the table counts them per run.
mapfile -t REDIS < <(nodes_of redis)
MIX_ARGS=()
[ -n "$MIX" ] && MIX_ARGS=(--mix "$MIX")

# pg_sql ADDR SQL: psql against the stack's PostgreSQL server at ADDR, unaligned,
# with its password (read once).
pg_sql() {
    : "${PG_PASSWORD:=$(secret postgres)}"
    PGPASSWORD="$PG_PASSWORD" psql -X -q -At -h "${1%:*}" -p "${1##*:}" -U millions -d millions -c "$2"
}
mapfile -t PG < <(nodes_of postgres)
if [ "$PG_STATEMENTS" = 1 ]; then
    require "the postgresql-client package" psql
    for a in "${PG[@]}"; do
        # A standby has it from its primary's WAL; creating it there fails, harmlessly.
        pg_sql "$a" "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null 2>&1 || true
    done
fi
statements_reset() {
    [ "$PG_STATEMENTS" = 1 ] || return 0
    for a in "${PG[@]}"; do pg_sql "$a" "SELECT pg_stat_statements_reset()" >/dev/null; done
}
# statements_read: JSON [[query, calls, ms]] summed over every server, the most
# expensive first (the first 12).
statements_read() {
    [ "$PG_STATEMENTS" = 1 ] || { echo '[]'; return 0; }
    for a in "${PG[@]}"; do
        pg_sql "$a" "SELECT json_agg(json_build_array(regexp_replace(query, '\s+', ' ', 'g'), calls, total_exec_time)) FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
    done | python3 -c '
import json, sys
out = {}
for line in sys.stdin:
    for q, calls, ms in json.loads(line) if line.strip() else []:
        c = out.setdefault(q, [0, 0.0]); c[0] += calls; c[1] += ms
print(json.dumps(sorted(([q, c, ms] for q, (c, ms) in out.items()), key=lambda x: -x[2])[:12]))'
}
slowlog_reset() {
    for r in "${REDIS[@]}"; do
        rcli "$r" CONFIG SET slowlog-log-slower-than 5000 >/dev/null
        rcli "$r" CONFIG SET slowlog-max-len 1024 >/dev/null
        rcli "$r" SLOWLOG RESET >/dev/null
    done
}
# slowlog_read: JSON {count, max_us, by} over every Redis since the reset (`by`:
# the slow entries' counts by command name, the most frequent first).
slowlog_read() {
    for r in "${REDIS[@]}"; do rcli "$r" --json SLOWLOG GET 1024; echo; done | python3 -c '
import collections, json, sys
# Each entry: [id, timestamp, duration in microseconds, command, client, name].
entries = [e for line in sys.stdin if line.strip() for e in json.loads(line)]
by = collections.Counter(str(e[3][0]).upper() if e[3] else "?" for e in entries)
print(json.dumps({"count": len(entries), "max_us": max((e[2] for e in entries), default=0),
                  "by": dict(by.most_common(3))}))'
}

# cpu_by_tier [GENERATOR_PID]: JSON {tier: clock ticks} for every node of the
# status (by role; the controller as `control`) and the generator.
cpu_by_tier() {
    "$MILLIONS" status --json | python3 -c '
import json, os, sys
status = json.load(sys.stdin)
procs = [(n["role"], n.get("pid")) for n in status["nodes"]]
procs.append(("control", status.get("controller", {}).get("pid")))
if len(sys.argv) > 1 and sys.argv[1]:
    procs.append(("generator", int(sys.argv[1])))
children = {}
for p in os.listdir("/proc"):
    if p.isdigit():
        try:
            stat = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            children.setdefault(int(stat[1]), []).append(int(p))
        except OSError:
            pass
def ticks(pid, tree):
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    t = int(f[11]) + int(f[12])
    if tree:  # a node: its children too (live, and reaped), e.g. PostgreSQL backends
        t += int(f[13]) + int(f[14]) + sum(ticks(c, True) for c in children.get(pid, []))
    return t
# The kind of a PostgreSQL process, from its title ("postgres: walsender ...",
# "postgres: checkpointer", a backend: "postgres: USER DB HOST(PORT) STATE").
KINDS = {"walsender": "walsender", "walreceiver": "recovery", "startup": "recovery",
         "checkpointer": "writers", "background": "writers", "walwriter": "writers",
         "autovacuum": "autovacuum", "logical": "other", "archiver": "other", "stats": "other"}
def kind(pid):
    try:
        title = open(f"/proc/{pid}/cmdline").read().replace("\0", " ").split()
    except OSError:
        return "other"
    if len(title) < 2 or title[0] != "postgres:":
        return "other"
    return KINDS.get(title[1], "backend")
out = {}
for role, pid in procs:
    if pid:
        # The controller has the nodes as children: its own CPU only.
        out[role] = out.get(role, 0) + ticks(int(pid), role != "control")
        if role == "postgres":
            # The postmaster itself and what its exited children used.
            try:
                f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
                key = "pg:postmaster and exited"
                out[key] = out.get(key, 0) + sum(int(x) for x in f[11:15])
            except OSError:
                pass
            for c in children.get(int(pid), []):
                key = "pg:" + kind(c)
                out[key] = out.get(key, 0) + ticks(c, True)
print(json.dumps(out))' "${1:-}"
}

# redis_stats: JSON {command: [calls, usec]} summed over every Redis of the stack.
redis_stats() {
    for r in "${REDIS[@]}"; do rcli "$r" INFO commandstats; done | python3 -c '
import json, re, sys
out = {}
for line in sys.stdin:
    m = re.match(r"cmdstat_([^:]+):calls=(\d+),usec=(\d+)", line.strip())
    if m:
        c = out.setdefault(m.group(1), [0, 0])
        c[0] += int(m.group(2)); c[1] += int(m.group(3))
print(json.dumps(out))'
}

: >"$HOME_DIR/runs.jsonl"
# when_printed FILE TEXT PID: until FILE holds TEXT (or PID is gone).
when_printed() {
    while kill -0 "$3" 2>/dev/null && ! grep -q "$2" "$1" 2>/dev/null; do sleep 0.1; done
}

# probe RATE: one run; appends its line to runs.jsonl; succeeds if it passed. CPU
# is sampled over the measured window only (the setup's logins and the warm-up are
# not in it): from the end of the warm-up to the start of the final check.
probe() {
    local rate="$1" json="$HOME_DIR/run-$1.json" out="$HOME_DIR/run-$1.txt" gen before after t0 t1 slow
    wait_whole healthy
    say "$rate/s for $DURATION (after $WARMUP of warm-up)"
    "$MILLIONS" bench --rate "$rate" --duration "$DURATION" --warmup "$WARMUP" --users "$USERS" \
        "${MIX_ARGS[@]}" --json "$json" >"$out" 2>&1 &
    gen=$!
    when_printed "$out" "^sending " "$gen"
    sleep "$(python3 -c 'import sys; print(float(sys.argv[1].rstrip("s")))' "$WARMUP")" # the warm-up is not measured
    slowlog_reset
    statements_reset
    rbefore="$(redis_stats)"
    before="$(cpu_by_tier "$gen")"
    mbefore="$(head -1 /proc/stat)"
    t0="$(date +%s.%N)"
    when_printed "$out" "^verifying " "$gen"
    after="$(cpu_by_tier "$gen")"
    mafter="$(head -1 /proc/stat)"
    t1="$(date +%s.%N)"
    rafter="$(redis_stats)"
    slow="$(slowlog_read)"
    stmts="$(statements_read)"
    wait "$gen" || true
    [ -s "$json" ] || die "no report at $rate/s: $(tail -5 "$out")"
    python3 - "$rate" "$before" "$after" "$t0" "$t1" "$(getconf CLK_TCK)" "$json" "$P99_MS" "$slow" \
        "$rbefore" "$rafter" "$stmts" "$mbefore" "$mafter" >>"$HOME_DIR/runs.jsonl" <<'EOF'
import json, sys
rate, before, after, t0, t1, hz, report, p99_max, slow, rbefore, rafter, stmts, mbefore, mafter = sys.argv[1:15]
before, after, hz = json.loads(before), json.loads(after), int(hz)
rbefore, rafter = json.loads(rbefore), json.loads(rafter)
window = float(t1) - float(t0)
r = json.load(open(report))
# A process that ended between the two samples (the generator, once it has
# verified) reads 0 at the end: left out rather than shown as negative CPU.
cores = {k: (after[k] - before.get(k, 0)) / hz / window for k in after if after[k] >= before.get(k, 0)}
system = sum(v for k, v in cores.items() if k != "generator" and not k.startswith("pg:"))
# Redis commands per request of the window: calls and microseconds, by command.
served = r["achieved_rate"] * window
redis = {k: [(v[0] - rbefore.get(k, [0, 0])[0]) / served, (v[1] - rbefore.get(k, [0, 0])[1]) / served]
         for k, v in rafter.items()} if served else {}
ok = (r["verdict"]["passed"] and r["errors"] == 0 and r["latency_ms"]["p99"] <= float(p99_max)
      and r["achieved_rate"] >= 0.98 * float(rate))
print(json.dumps({"rate": int(rate), "achieved": r["achieved_rate"], "p50": r["latency_ms"]["p50"],
                  "p99": r["latency_ms"]["p99"], "errors": r["errors"], "passed": ok,
                  "verdict": r["verdict"]["passed"], "cores": cores, "window_secs": window,
                  "slow": json.loads(slow), "redis_per_request": redis,
                  # The whole machine's CPU (/proc/stat), in cores: what no process's
                  # own time holds shows here too, chiefly the loopback network's
                  # soft interrupts, charged to no process.
                  "machine": {k: (int(b) - int(a)) / hz / window for k, a, b in
                              zip(["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"],
                                  mbefore.split()[1:9], mafter.split()[1:9])},
                  "statements": [[q, c / served, ms * 1000 / served] for q, c, ms in json.loads(stmts)] if served else [],
                  "system_ms_per_req": system * 1000 / r["achieved_rate"] if r["achieved_rate"] else None}))
EOF
    python3 -c 'import json,sys; x=json.loads(open(sys.argv[1]).readlines()[-1]); sys.exit(0 if x["passed"] else 1)' \
        "$HOME_DIR/runs.jsonl"
}

if [ "$(python3 -c 'import sys; print(float(sys.argv[1].rstrip("s")) > 0)' "$PREWARM")" = True ]; then
    wait_whole healthy
    say "prewarming: $PREWARM_RATE/s for $PREWARM, not measured"
    "$MILLIONS" bench --rate "$PREWARM_RATE" --duration "$PREWARM" --warmup 0s --users "$USERS" \
        "${MIX_ARGS[@]}" >"$HOME_DIR/prewarm.txt" 2>&1 || say "the prewarm run did not pass: $(tail -3 "$HOME_DIR/prewarm.txt")"
fi

# probe_all RATE: up to REPEAT runs of RATE, one after another; passes if every
# one passes (stops at the first that does not).
probe_all() {
    local i
    for ((i = 0; i < REPEAT; i++)); do probe "$1" || return 1; done
}

lo=0 hi=0 rate="$START"
if [ -n "$RATES" ]; then
    for rate in $RATES; do
        if probe "$rate"; then [ "$rate" -gt "$lo" ] && lo="$rate"; fi
    done
else
    while [ "$rate" -le "$MAX" ]; do
        if probe_all "$rate"; then lo="$rate"; rate=$((rate * 2)); else hi="$rate"; break; fi
    done
fi
if [ -z "$RATES" ] && [ "$hi" -gt 0 ] && [ "$lo" -gt 0 ]; then
    while [ $(((hi - lo) * 10)) -gt "$lo" ]; do
        mid=$(((lo + hi) / 2))
        if probe_all "$mid"; then lo="$mid"; else hi="$mid"; fi
    done
fi

echo
echo "Capacity of the default topology, $USERS users, $(if [ -n "$MIX" ]; then echo "the mix $MIX"; else echo "the default mix"; fi), p99 <= $P99_MS ms and no error:" \
    "$(if [ "$lo" -gt 0 ]; then echo "$lo requests/s${RATES:+ (the highest of the rates run that passed)}";
       elif [ -n "$RATES" ]; then echo "none of the rates run ($RATES) passed";
       else echo "below $START requests/s"; fi)" \
    "($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown commit), $(nproc) CPUs)"
echo
python3 - "$HOME_DIR/runs.jsonl" <<'EOF'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
tiers = ["lb", "web", "redis", "postgres", "worker", "dns", "wan", "control"]
print("| rate | achieved | p50 ms | p99 ms | errors | passed | " + " | ".join(tiers) +
      " | all but the generator | generator | system CPU per request | Redis commands > 5 ms (slowest) |")
print("|" + "---:|" * 6 + "---:|" * (len(tiers) + 4))
for x in runs:
    c = x["cores"]
    system = sum(v for k, v in c.items() if k != "generator" and not k.startswith("pg:"))
    generator = f"{c['generator']:.2f}" if "generator" in c else "ended"
    print(f"| {x['rate']} | {x['achieved']:.0f} | {x['p50']:.1f} | {x['p99']:.1f} | {x['errors']} | "
          f"{'yes' if x['passed'] else 'no'} | " + " | ".join(f"{c.get(t, 0):.2f}" for t in tiers) +
          f" | {system:.2f} | {generator} | {x['system_ms_per_req'] or 0:.2f} ms"
          f" | {x['slow']['count']} ({x['slow']['max_us'] / 1000:.1f} ms"
          + "".join(f"; {k} {v}" for k, v in x['slow'].get('by', {}).items()) + ") |")
print()
print("CPU in cores (CPU seconds per second of the run) by tier; a tier's figure sums its nodes in both DCs.")
print()
print("The whole machine (/proc/stat), in cores: busy is everything but idle and I/O wait, the generator")
print("included; soft interrupts (the loopback network's packet work) are charged to no process:")
print()
print("| rate | busy | user | system | softirq | idle | busy per request | processes' own (all but the generator) |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|")
for x in runs:
    m, c = x.get("machine"), x["cores"]
    if not m:
        continue
    busy = sum(v for k, v in m.items() if k not in ("idle", "iowait"))
    system = sum(v for k, v in c.items() if k != "generator" and not k.startswith("pg:"))
    print(f"| {x['rate']} | {busy:.2f} | {m['user'] + m['nice']:.2f} | {m['system']:.2f} | {m['softirq'] + m['irq']:.2f} | "
          f"{m['idle']:.2f} | {busy * 1000 / x['achieved']:.2f} ms | {system:.2f} |")
print()
kinds = ["backend", "walsender", "recovery", "writers", "autovacuum", "other", "postmaster and exited"]
print("PostgreSQL's CPU by process kind, in cores:")
print()
print("| rate | " + " | ".join(kinds) + " |")
print("|" + "---:|" * (len(kinds) + 1))
for x in runs:
    c = x["cores"]
    print(f"| {x['rate']} | " + " | ".join(f"{c.get('pg:' + k, 0):.3f}" for k in kinds) + " |")
print()
print("Redis per request (both DCs' servers): commands and microseconds of command time, the ten most called:")
print()
print("| rate | all commands | all µs | by command: calls (µs) |")
print("|---:|---:|---:|---|")
for x in runs:
    rp = x.get("redis_per_request", {})
    calls = sum(v[0] for v in rp.values()); us = sum(v[1] for v in rp.values())
    top = sorted(rp.items(), key=lambda kv: -kv[1][0])[:10]
    print(f"| {x['rate']} | {calls:.2f} | {us:.1f} | " +
          "; ".join(f"{k} {v[0]:.2f} ({v[1]:.1f})" for k, v in top) + " |")
if any(x.get("statements") for x in runs):
    print()
    print("PostgreSQL statements per request (every server, pg_stat_statements), the most execution time first:")
    print()
    print("| rate | calls per request | µs per request | statement |")
    print("|---:|---:|---:|---|")
    for x in runs:
        for q, calls, us in x.get("statements", [])[:8]:
            print(f"| {x['rate']} | {calls:.3f} | {us:.1f} | `{q[:140]}` |")
EOF
