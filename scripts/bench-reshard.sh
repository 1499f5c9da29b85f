#!/usr/bin/env bash
# Resharding under load (issue 16's benchmark, as far as it can be measured
# today): the bench's default mix at a fixed rate before any bucket moves, then
# the same load while buckets move from shard 0 to shard 1, 16 per move
# (`millions bench --scenario reshard:N`), then one larger move
# (`millions shard move`) under the same load (docs/BENCHMARKS.md, "Resharding:
# bucket moves under load").
#
#   bash scripts/bench-reshard.sh     # after: cargo build --release -p millions
#
# It starts its own stack: the `default` preset (two DCs, two web servers each,
# two synchronous shards, fsync on) moved to address ranges of its own
# (127.0.245.0/24, 127.0.246.0/24), so a running `make up` is never touched;
# seeds BENCH_USERS users; then, each run after waiting (up to BENCH_QUIET_WAIT
# seconds) for the machine's 1-minute load average to fall below BENCH_QUIET_LOAD,
# and for every node to be healthy and every shard whole:
#
#   1. before:  `millions bench --rate RATE --duration BENCH_BEFORE_DURATION`
#   2. during:  the same with `--scenario reshard:BENCH_BUCKETS` and
#               BENCH_DURING_DURATION: the first BENCH_BUCKETS buckets of shard 0
#               move to shard 1 one move of 16 after the other, starting a third
#               into the measured window; the bench waits for the last move
#               before its checker runs. Each move's write pause (fence to the new
#               directory published) is in the fault's outcome; each move's end
#               and length are in the controller's events (`bucket-move`).
#   3. one move: a bench of BENCH_MOVE_DURATION at the same rate and, a third
#               into it, `millions shard move` of the next BENCH_MOVE_BUCKETS
#               buckets of shard 0 in one move.
#
# A shard cannot be added yet (`millions shard add` does not exist), so the moves
# go to the default topology's second shard, not onto a new one. No move may fail
# a request: every run's verdict must pass with no error.
#
# Environment (all optional):
#   BENCH_USERS=100000  BENCH_RATE=300  BENCH_WARMUP=5s
#   BENCH_BEFORE_DURATION=60s  BENCH_BUCKETS=512  BENCH_DURING_DURATION=240s
#   BENCH_MOVE_BUCKETS=512  BENCH_MOVE_DURATION=120s  (BENCH_MOVE_BUCKETS=0: skip 3)
#   BENCH_QUIET_LOAD=1.5  BENCH_QUIET_WAIT=600
#   BENCH_FAST_STORAGE=0  (1: millions up --unsafe-fast-storage, fsync off)
#   BENCH_BUILD=1  (0: do not run cargo build)   BENCH_KEEP=0 (1: keep the run directory)
#   MILLIONS=target/release/millions
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

USERS="${BENCH_USERS:-100000}"
RATE="${BENCH_RATE:-300}"
WARMUP="${BENCH_WARMUP:-5s}"
BEFORE_DURATION="${BENCH_BEFORE_DURATION:-60s}"
BUCKETS="${BENCH_BUCKETS:-512}"
DURING_DURATION="${BENCH_DURING_DURATION:-240s}"
MOVE_BUCKETS="${BENCH_MOVE_BUCKETS:-512}"
MOVE_DURATION="${BENCH_MOVE_DURATION:-120s}"
QUIET_LOAD="${BENCH_QUIET_LOAD:-1.5}"
QUIET_WAIT="${BENCH_QUIET_WAIT:-600}"
MILLIONS="${MILLIONS:-$ROOT/target/release/millions}"

say() { printf 'bench-reshard: %s\n' "$*" >&2; }
die() { printf 'bench-reshard: error: %s\n' "$*" >&2; exit 1; }

command -v python3 >/dev/null || die "python3 is not installed"
# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"
build_millions
own_stack bench-reshard 127.0.245 127.0.246
RUN="$HOME_DIR"

# secs DURATION: a duration like 60s or 2m in seconds.
secs() {
    python3 -c 'import sys; v = sys.argv[1]
print(float(v[:-1]) * 60 if v.endswith("m") else float(v.rstrip("s")))' "$1"
}

# wait_quiet NAME: until the 1-minute load average is under QUIET_LOAD (QUIET_WAIT
# seconds at most; measured anyway after that), then note it in loads.tsv.
wait_quiet() {
    local deadline=$((SECONDS + QUIET_WAIT)) load
    while :; do
        load="$(cut -d' ' -f1 /proc/loadavg)"
        awk -v l="$load" -v q="$QUIET_LOAD" 'BEGIN { exit !(l < q) }' && break
        if [ $SECONDS -ge $deadline ]; then
            say "the machine did not quiet down (load $load): measuring anyway"
            break
        fi
        sleep 10
    done
    printf '%s\t%s\n' "$1" "$load" >>"$RUN/loads.tsv"
    say "$1: load average $load"
}

# bench NAME DURATION [ARG...]: one run at RATE, its report in NAME.txt and NAME.json.
bench() {
    local name="$1" duration="$2"
    shift 2
    wait_quiet "$name"
    wait_whole healthy
    say "$name: $RATE/s for $duration (after $WARMUP of warm-up) $*"
    if ! "$MILLIONS" bench --rate "$RATE" --duration "$duration" --warmup "$WARMUP" --users "$USERS" \
        --json "$RUN/$name.json" "$@" >"$RUN/$name.txt" 2>&1; then
        say "$name: the run's verdict is FAILED; $(tail -1 "$RUN/$name.txt")"
        rc=1
    fi
    [ -s "$RUN/$name.json" ] || die "$name wrote no report: $(tail -5 "$RUN/$name.txt")"
}

# shard0_buckets N: the first N buckets shard 0 owns now, as ranges (`512-1023`).
shard0_buckets() {
    "$MILLIONS" status --json | python3 -c '
import json, sys
c = json.load(sys.stdin)["cluster"]
# No directory yet: the even split (bucket b on shard b * S / 4096).
runs = c.get("directory") or [{"first": b, "last": b, "shard": b * len(c["shards"]) // 4096} for b in range(4096)]
owned = [b for r in runs if r["shard"] == 0 for b in range(r["first"], r["last"] + 1)][: int(sys.argv[1])]
if len(owned) < int(sys.argv[1]):
    sys.exit(f"shard 0 owns {len(owned)} buckets, fewer than {sys.argv[1]}")
out, start = [], owned[0]
for prev, b in zip(owned, owned[1:] + [None]):
    if b != prev + 1:
        out.append(str(start) if start == prev else f"{start}-{prev}")
        start = b
print(",".join(out))' "$1"
}

up=(up --topology "$HOME_DIR/topology.toml")
[ "${BENCH_FAST_STORAGE:-0}" = 1 ] && up+=(--unsafe-fast-storage)
say "starting the default topology on 127.0.245.0/24 and 127.0.246.0/24 (${up[*]:3})"
"$MILLIONS" "${up[@]}" >"$RUN/up.log" 2>&1 || { cat "$RUN/up.log" >&2; die "millions up failed"; }
say "seeding $USERS users"
seed_start=$SECONDS
"$MILLIONS" seed --users "$USERS" >"$RUN/seed.log" 2>&1 || { tail -5 "$RUN/seed.log" >&2; die "seeding failed"; }
say "seeded in $((SECONDS - seed_start)) s"
: >"$RUN/loads.tsv"

rc=0
bench before "$BEFORE_DURATION"
bench during "$DURING_DURATION" --scenario "reshard:$BUCKETS"

if [ "$MOVE_BUCKETS" -gt 0 ]; then
    range="$(shard0_buckets "$MOVE_BUCKETS")"
    wait_quiet move
    wait_whole healthy
    say "one move of $MOVE_BUCKETS buckets ($range) to shard 1 a third into $MOVE_DURATION at $RATE/s"
    "$MILLIONS" bench --rate "$RATE" --duration "$MOVE_DURATION" --warmup "$WARMUP" --users "$USERS" \
        --json "$RUN/move-bench.json" >"$RUN/move-bench.txt" 2>&1 &
    gen=$!
    while kill -0 "$gen" 2>/dev/null && ! grep -q "^sending " "$RUN/move-bench.txt" 2>/dev/null; do sleep 0.1; done
    sleep "$(python3 -c 'import sys; print(float(sys.argv[1]) + float(sys.argv[2]) / 3)' \
        "$(secs "$WARMUP")" "$(secs "$MOVE_DURATION")")"
    move_start="$(date +%s.%N)"
    "$MILLIONS" shard move "$range" --to 1 >"$RUN/move.txt" 2>&1 || { rc=1; say "the move failed: $(cat "$RUN/move.txt")"; }
    move_end="$(date +%s.%N)"
    printf '%s %s\n' "$move_start" "$move_end" >"$RUN/move-times"
    if ! wait "$gen"; then rc=1; say "move-bench: the run's verdict is FAILED; $(tail -1 "$RUN/move-bench.txt")"; fi
fi

# Each move's event (its end and length), for where the time went.
cp "$HOME_DIR/events.jsonl" "$RUN/events-copy.jsonl" 2>/dev/null || "$MILLIONS" status --json >"$RUN/status.json"

echo
echo "Resharding under load, $USERS users, the default mix at $RATE/s" \
    "($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown commit), $(nproc) CPUs," \
    "$([ "${BENCH_FAST_STORAGE:-0}" = 1 ] && echo "fsync off" || echo "fsync on"))"
echo
python3 - "$RUN" "$MOVE_BUCKETS" <<'EOF'
import glob, json, os, re, sys
run, move_buckets = sys.argv[1], int(sys.argv[2])
loads = dict(l.rstrip("\n").split("\t") for l in open(f"{run}/loads.tsv"))
reports = {n: json.load(open(f"{run}/{n}.json")) for n in ["before", "during", "move-bench"]
           if os.path.exists(f"{run}/{n}.json")}
names = {"before": "before (no move)", "during": "during the rebalance", "move-bench": "during one large move"}

def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * len(xs) + 0.5)) - 1)] if xs else float("nan")

base = reports["before"]
print("| run | load avg | achieved req/s | ÷ before | p50 ms | p99 ms | ÷ before | max ms | errors |"
      " writes verified / acknowledged | verdict |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
for n, r in reports.items():
    l, c = r["latency_ms"], r["checker"]
    print(f"| {names[n]} | {loads.get('move' if n == 'move-bench' else n, '?')} | {r['achieved_rate']:.1f} |"
          f" {r['achieved_rate'] / base['achieved_rate']:.2f}× | {l['p50']:.1f} | {l['p99']:.1f} |"
          f" {l['p99'] / base['latency_ms']['p99']:.2f}× | {l['max']:.0f} | {r['errors']} |"
          f" {c['verified']} / {c['writes_acknowledged'] + c['posts_acknowledged']} |"
          f" {'passed' if r['verdict']['passed'] else 'FAILED: ' + '; '.join(r['verdict'].get('reasons', []))} |")
print()
print("p99 per operation, ms (before → during the rebalance → during one large move):")
print()
ops = sorted(base["ops"])
print("| operation | " + " | ".join(names[n] for n in reports) + " |")
print("|---|" + "---:|" * len(reports))
for op in ops:
    print(f"| {op} | " + " | ".join(
        f"{reports[n]['ops'][op]['latency_ms']['p99']:.1f} (max {reports[n]['ops'][op]['latency_ms']['max']:.0f})"
        if op in reports[n]["ops"] else "–" for n in reports) + " |")
print()

during = reports["during"]
fault = during.get("fault") or {}
print(f"Rebalance: {fault.get('action')} from {fault.get('at_secs', 0):.1f} s of the"
      f" {during['duration_secs']:.0f} s window: {fault.get('outcome')}")
pauses = [int(x) for x in re.findall(r"\d+", (fault.get("outcome") or "").split("per move:")[-1])]
events = []
path = f"{run}/events-copy.jsonl"
if os.path.exists(path):
    events = [json.loads(l) for l in open(path) if '"bucket-move"' in l]
took = [int(m.group(1)) for e in events for m in [re.search(r"took (\d+) ms", e["detail"])] if m]
rows = [int(m.group(1)) for e in events for m in [re.search(r"\((\d+) rows copied", e["detail"])] if m]
n = len(pauses)
if pauses:
    print(f"Write pause per move (each move's 16 buckets), over {n} moves: p50 {pct(pauses, 50)} ms,"
          f" p99 {pct(pauses, 99)} ms, max {max(pauses)} ms")
if took[:n]:
    t = took[:n]
    print(f"Move length: p50 {pct(t, 50) / 1000:.1f} s, max {max(t) / 1000:.1f} s, all {n} moves"
          f" {sum(t) / 1000:.0f} s; rows copied per move p50 {pct(rows[:n], 50)}"
          f" (ending {fault.get('at_secs', 0) + sum(t) / 1000:.0f} s into the {during['duration_secs']:.0f} s"
          f" window{'' if fault.get('at_secs', 0) + sum(t) / 1000 <= during['duration_secs'] else ': PAST ITS END'})")
if move_buckets and os.path.exists(f"{run}/move.txt"):
    print()
    print("One move:", open(f"{run}/move.txt").read().strip())
    mb = reports.get("move-bench")
    if mb and os.path.exists(f"{run}/move-times"):
        print(f"  (measured window {mb['duration_secs']:.0f} s, the move began"
              f" {mb['duration_secs'] / 3:.0f} s into it)")
EOF
exit "$rc"
