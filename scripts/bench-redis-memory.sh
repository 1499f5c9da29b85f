#!/usr/bin/env bash
# The cache tier's memory budget (docs/BENCHMARKS.md, "Redis under a memory budget"):
# the default topology with each DC's Redis bounded to BENCH_REDIS_MB, the bench's
# default mix (Zipf-distributed users) run once per eviction policy and round, and
# for each run: what Redis evicted, how often its reads hit, how often the web
# servers' L2 lookups hit (those L1 did not answer), how many fills were refused
# (their generation changed or was evicted during the load), how often home-feed
# timelines were warm, and the latency. `none` is the same run with no budget: the
# memory the trace wants (used_memory at the end, summed over the DCs' servers).
#
#   bash scripts/bench-redis-memory.sh     # after: cargo build --release -p millions
#
# Every run starts from an empty Redis (FLUSHALL, stats reset) on the same seeded
# shards (which grow by each run's posts); the policy is set live (CONFIG SET), the
# budget comes from the topology. Every other round runs the policies in reverse.
#
# Environment (all optional):
#   BENCH_POLICIES=none,allkeys-lfu,allkeys-lru  BENCH_ROUNDS=2  BENCH_REDIS_MB=16
#   BENCH_RATE=300  BENCH_DURATION=40s  BENCH_WARMUP=5s  BENCH_USERS=20000
#   BENCH_BUILD=1  (0: do not run cargo build)   BENCH_KEEP=0 (1: keep the run directory)
#   MILLIONS=target/release/millions
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

POLICIES="${BENCH_POLICIES:-none,allkeys-lfu,allkeys-lru}"
ROUNDS="${BENCH_ROUNDS:-2}"
REDIS_MB="${BENCH_REDIS_MB:-16}"
RATE="${BENCH_RATE:-300}"
DURATION="${BENCH_DURATION:-40s}"
WARMUP="${BENCH_WARMUP:-5s}"
USERS="${BENCH_USERS:-20000}"
MILLIONS="${MILLIONS:-$ROOT/target/release/millions}"

say() { printf 'bench-redis-memory: %s\n' "$*" >&2; }
die() { printf 'bench-redis-memory: error: %s\n' "$*" >&2; exit 1; }

command -v python3 >/dev/null || die "python3 is not installed"
command -v redis-cli >/dev/null || die "redis-cli is not installed (apt-get install redis-tools)"
# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"
build_millions
own_stack bench-redis-memory 127.0.233 127.0.234
sed -i "s/maxmemory_mb = [0-9]*/maxmemory_mb = $REDIS_MB/" "$HOME_DIR/topology.toml"
grep -q "maxmemory_mb = $REDIS_MB" "$HOME_DIR/topology.toml" || die "the preset sets no Redis budget to replace"

say "starting the default topology, each Redis bounded to $REDIS_MB MiB"
"$MILLIONS" up --topology "$HOME_DIR/topology.toml" >/dev/null
say "seeding $USERS users"
"$MILLIONS" seed --users "$USERS" >/dev/null 2>&1

mapfile -t REDIS < <(nodes_of redis)
mapfile -t WEB < <(nodes_of web)
[ "${#REDIS[@]}" -gt 0 ] && [ "${#WEB[@]}" -gt 0 ] || die "no Redis or web servers in the status"

# The web servers' counters, summed, as JSON: L2 lookups by result, timeline reads.
web_counters() {
    for w in "${WEB[@]}"; do curl -fs "http://$w/metrics"; done | python3 -c '
import json, re, sys
out = {}
for line in sys.stdin:
    m = re.match(r"millions_(cache_lookups_total|feed_timeline_reads_total)\{(.*)\} (\S+)", line)
    if not m: continue
    labels = dict(re.findall(r"(\w+)=\"([^\"]*)\"", m.group(2)))
    key = m.group(1) + ":" + labels.get("result", "")
    out[key] = out.get(key, 0) + float(m.group(3))
print(json.dumps(out))'
}

# Redis's counters, summed over the DCs' servers, as JSON.
redis_counters() {
    for r in "${REDIS[@]}"; do rcli "$r" INFO stats; rcli "$r" INFO memory; done | python3 -c '
import json, sys
out = {}
for line in sys.stdin:
    k, _, v = line.strip().partition(":")
    if k in ("evicted_keys", "used_memory"):
        out[k] = out.get(k, 0) + int(v)
print(json.dumps(out))'
}

: >"$HOME_DIR/runs.jsonl"
for round in $(seq "$ROUNDS"); do
    order="${POLICIES//,/ }"
    # Every other round in reverse, so neither policy always runs on the smaller
    # database (each run's posts stay) or the warmer machine.
    [ $((round % 2)) = 0 ] && order="$(echo "$order" | tr ' ' '\n' | tac | tr '\n' ' ')"
    for policy in $order; do
        wait_whole healthy
        for r in "${REDIS[@]}"; do
            if [ "$policy" = none ]; then
                rcli "$r" CONFIG SET maxmemory 0 >/dev/null
                rcli "$r" CONFIG SET maxmemory-policy noeviction >/dev/null
            else
                rcli "$r" CONFIG SET maxmemory "${REDIS_MB}mb" >/dev/null
                rcli "$r" CONFIG SET maxmemory-policy "$policy" >/dev/null
            fi
            rcli "$r" FLUSHALL >/dev/null
            rcli "$r" CONFIG RESETSTAT >/dev/null
        done
        before="$(web_counters)"
        say "round $round, $policy: $RATE/s for $DURATION (after $WARMUP of warm-up), $USERS users"
        json="$HOME_DIR/$policy-$round.json"
        "$MILLIONS" bench --rate "$RATE" --duration "$DURATION" --warmup "$WARMUP" --users "$USERS" \
            --json "$json" >"$HOME_DIR/$policy-$round.txt" 2>&1 ||
            say "round $round, $policy: the run's verdict is FAILED: $(tail -1 "$HOME_DIR/$policy-$round.txt")"
        [ -s "$json" ] || die "no report: $(tail -5 "$HOME_DIR/$policy-$round.txt")"
        python3 - "$policy" "$round" "$before" "$(web_counters)" "$(redis_counters)" "$json" \
            >>"$HOME_DIR/runs.jsonl" <<'EOF'
import json, sys
policy, rnd, before, after, redis, report = sys.argv[1:7]
before, after, redis = json.loads(before), json.loads(after), json.loads(redis)
d = {k: after.get(k, 0) - before.get(k, 0) for k in after}
r = json.load(open(report))
print(json.dumps({"policy": policy, "round": int(rnd), "web": d, "redis": redis,
                  "p50": r["latency_ms"]["p50"], "p99": r["latency_ms"]["p99"],
                  "feed_p99": r["ops"].get("feed", {}).get("latency_ms", {}).get("p99"),
                  "errors": r["errors"], "achieved": r["achieved_rate"], "passed": r["verdict"]["passed"]}))
EOF
    done
done

echo
echo "millions bench --rate $RATE --duration $DURATION --warmup $WARMUP --users $USERS, each Redis bounded to" \
    "$REDIS_MB MiB ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown commit), $(nproc) CPUs)"
echo
python3 - "$HOME_DIR/runs.jsonl" <<'EOF'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
print("| policy | round | Redis MiB at the end | evicted keys | L2 hits | fills refused | warm timelines | p50 ms | p99 ms | feed p99 ms | errors | verdict |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
def ratio(a, b):
    return f"{a / (a + b):.1%}" if a + b else "n/a"
for x in runs:
    w, r = x["web"], x["redis"]
    print(f"| {x['policy']} | {x['round']} | {r.get('used_memory', 0) / 2**20:.1f} | {r.get('evicted_keys', 0)} "
          f"| {ratio(w.get('cache_lookups_total:l2_hit', 0), w.get('cache_lookups_total:miss', 0))} "
          f"| {w.get('cache_lookups_total:fill_refused', 0):.0f} "
          f"| {ratio(w.get('feed_timeline_reads_total:warm', 0), w.get('feed_timeline_reads_total:cold', 0))} "
          f"| {x['p50']:.1f} | {x['p99']:.1f} | {x['feed_p99'] or 0:.1f} | {x['errors']} | {'passed' if x['passed'] else 'FAILED'} |")
EOF
