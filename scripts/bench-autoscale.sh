#!/usr/bin/env bash
# Autoscaling under a step in the load (issue 18; docs/BENCHMARKS.md,
# "Autoscaling: a step in the load"):
#
#   bash scripts/bench-autoscale.sh     # after: cargo build --release -p millions
#
# It starts its own stack: the `default` preset on ranges of its own (two DCs,
# DC-safe synchronous shards, fsync on), each DC's web servers given a range of
# 2 to 4 with a CPU target per server that the step reaches on this machine
# (BENCH_WEB_CPU cores), its workers 1 to 3 on the queue (the defaults: 20
# ready jobs per worker, the oldest job under 10 s), and a scale-in window of
# BENCH_WINDOW_MS with a cool-down of half of it; every other setting is the
# autoscaler's default, which is Kubernetes HPA's: a decision every 15 s, out at
# once. (HPA's 300 s window would make each scale-in 240 s later; the shorter
# one lets the tier come back to its minimum after the run's own logins, whose
# password hashing scales it out before the clock starts, well before the
# step.) It seeds BENCH_USERS users, then runs:
#   1. spike: BENCH_RATE/s, BENCH_FACTOR times that through the middle third of
#      BENCH_DURATION, followed after the run until every count is back (up to
#      BENCH_SCALE_IN_WAIT);
#   2. queue-burst: BENCH_RATE/s plus BENCH_BURST photo posts/s through the
#      middle third, followed the same way;
#   3. the spike again on a fresh stack with no ranges (autoscaling off, the
#      preset's fixed counts), for the latency through the step without it.
# Each run's report (latency before, during and after the step, per second,
# when web servers and workers were added and removed, the checker's verdict)
# is printed and kept as JSON in BENCH_OUT.
#
# Environment (all optional):
#   BENCH_USERS=100000  BENCH_RATE=100  BENCH_FACTOR=3  BENCH_DURATION=360s
#   BENCH_WEB_CPU=0.03  BENCH_WINDOW_MS=60000  BENCH_BURST=40  BENCH_SCALE_IN_WAIT=300s
#   BENCH_RUNS="spike queue-burst spike-fixed" (which of the three to run)
#   BENCH_OUT=target/bench-autoscale  BENCH_BUILD=1  BENCH_KEEP=0
#   MILLIONS=target/release/millions
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

USERS="${BENCH_USERS:-100000}"
RATE="${BENCH_RATE:-100}"
FACTOR="${BENCH_FACTOR:-3}"
DURATION="${BENCH_DURATION:-360s}"
WEB_CPU="${BENCH_WEB_CPU:-0.03}"
WINDOW_MS="${BENCH_WINDOW_MS:-60000}"
BURST="${BENCH_BURST:-40}"
WAIT="${BENCH_SCALE_IN_WAIT:-300s}"
OUT="${BENCH_OUT:-$ROOT/target/bench-autoscale}"
RUNS=" ${BENCH_RUNS:-spike queue-burst spike-fixed} "
MILLIONS="${MILLIONS:-$ROOT/target/release/millions}"

say() { printf 'bench-autoscale: %s\n' "$*" >&2; }
die() { printf 'bench-autoscale: error: %s\n' "$*" >&2; exit 1; }

command -v python3 >/dev/null || die "python3 is not installed"
# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"
build_millions
mkdir -p "$OUT"
own_stack bench-autoscale 127.0.237 127.0.238
# The preset on the stack's ranges, kept apart: a wipe empties the run directory.
cp "$HOME_DIR/topology.toml" "$OUT/topology-preset.toml"

# ranged on|off: the topology with (on) or without (off) the ranges, written to
# $OUT/topology-on|off.toml.
ranged() {
    python3 - "$OUT/topology-preset.toml" "$OUT/topology-$1.toml" "$1" "$WEB_CPU" "$WINDOW_MS" <<'PY'
import re, sys
source, path, mode, cpu, window = sys.argv[1:]
windows = "scale_in_window_ms = %s, cooldown_ms = %d" % (window, int(window) // 2)
text = open(source).read()
text = re.sub(r"^web = \{[^}\n]*\}", "web = { count = 2 }", text, flags=re.M)
text = re.sub(r"^worker = \{[^}\n]*\}", "worker = { count = 1 }", text, flags=re.M)
if mode == "on":
    text = text.replace("web = { count = 2 }",
                        "web = { count = 2, min = 2, max = 4, autoscale = { cpu_per_server = %s, %s } }"
                        % (cpu, windows))
    text = text.replace("worker = { count = 1 }",
                        "worker = { count = 1, min = 1, max = 3, autoscale = { %s } }" % windows)
open(path, "w").write(text)
PY
}

# fresh on|off: a stack of the topology (wiped first), seeded.
fresh() {
    "$MILLIONS" down --wipe >/dev/null 2>&1 || true
    ranged "$1"
    say "starting the default topology, autoscaling $1"
    "$MILLIONS" up --topology "$OUT/topology-$1.toml" >/dev/null
    say "seeding $USERS users"
    "$MILLIONS" seed --users "$USERS" >/dev/null 2>&1
}

# run NAME SCENARIO [--scale-in-wait W]: one bench run, its report printed and kept.
run() {
    local name=$1 scenario=$2
    shift 2
    say "run $name: --scenario $scenario at $RATE/s for $DURATION"
    "$MILLIONS" bench --users "$USERS" --rate "$RATE" --duration "$DURATION" --scenario "$scenario" \
        --json "$OUT/$name.json" "$@" 2>"$OUT/$name.log" | tee "$OUT/$name.txt" || say "run $name: the verdict failed"
}

wanted() { [[ "$RUNS" == *" $1 "* ]]; }
if wanted spike || wanted queue-burst; then
    fresh on
    if wanted spike; then run spike "spike:$FACTOR" --scale-in-wait "$WAIT"; fi
    if wanted queue-burst; then run queue-burst "queue-burst:$BURST" --scale-in-wait "$WAIT"; fi
fi
if wanted spike-fixed; then
    fresh off
    run spike-fixed "spike:$FACTOR"
fi

python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
print("\n| run | phase | requests | errors | p50 ms | p99 ms | max ms |")
print("|---|---|---:|---:|---:|---:|---:|")
for name in ["spike", "spike-fixed", "queue-burst"]:
    path = os.path.join(out, name + ".json")
    if not os.path.exists(path):
        continue
    r = json.load(open(path))
    step = r.get("step") or {}
    for phase in ["before", "during", "after"]:
        p = step.get(phase) or {}
        print(f"| {name} | {phase} | {p.get('requests', 0)} | {p.get('errors', 0)} | "
              f"{p.get('p50_ms', 0):.1f} | {p.get('p99_ms', 0):.1f} | {p.get('max_ms', 0):.1f} |")
print()
for name in ["spike", "queue-burst"]:
    path = os.path.join(out, name + ".json")
    if not os.path.exists(path):
        continue
    r = json.load(open(path))
    t0 = r.get("measured_from_unix_ms", 0)
    step = r.get("step") or {}
    print(f"{name}: step {step.get('from_secs')} s to {step.get('to_secs')} s of {r.get('duration_secs')} s; "
          f"verdict {r.get('verdict', {}).get('passed')}")
    for c in (r.get("scaling") or {}).get("changes", []):
        print(f"  {(c['at_ms'] - t0) / 1000:8.1f} s  {c['dc']} {c['role']}: {c['from']} -> {c['to']}")
PY
