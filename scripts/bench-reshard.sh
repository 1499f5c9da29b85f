#!/usr/bin/env bash
# Resharding under load (issue 16's benchmark, as far as it can be measured
# today): the bench's default mix at a fixed rate before any bucket moves, then
# the same load while a third shard is added and a rebalance moves buckets onto
# it, 64 per move (`millions bench --scenario reshard`), then one larger move
# (`millions shard move`) under the same load, then a celebrity's read storm with
# and without hot-key protection (docs/BENCHMARKS.md, "Resharding: bucket moves
# under load").
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
#   2. during:  the same with `--scenario BENCH_SCENARIO` and
#               BENCH_DURING_DURATION: by default `reshard`, a shard added (placed
#               like shard 1: a primary in dc2, a replica in dc2 and one in dc1)
#               a fifth into the measured window, then `rebalance --by buckets`
#               onto it, one move of 64 after the other (`reshard:N` instead: the
#               first N buckets of shard 0 moved to shard 1, 16 per move); the
#               bench waits for the last move before its checker runs. Each
#               move's write pause (fence to the new directory published) is in
#               the fault's outcome, with p50/p99/max over the moved buckets; each
#               move's end and length are in the controller's events.
#   3. one move: a bench of BENCH_MOVE_DURATION at the same rate and, a third
#               into it, `millions shard move` of the next BENCH_MOVE_BUCKETS
#               buckets of shard 0 in one move, while BENCH_MOVE_WRITERS users of
#               those buckets follow and unfollow user1 at BENCH_MOVE_WRITE_RATE
#               writes a second in all (directly through dc1-web-1 and dc2-web-1),
#               so that writes meet the fence: their latency is the write pause as
#               a client sees it.
#   4. hot keys: a celebrity's profile read storm against two web servers of
#               the script's own beside the topology's, one with hot-key
#               protection (`[hotkeys] protect = 16`, the default) and one
#               without (0), while the celebrity is followed and unfollowed
#               through dc1-web-1; the profile loads each sent to the shards
#               (see the comment at step 4 below).
#
# No move may fail a request: every run's verdict must pass with no error.
#
# Environment (all optional):
#   BENCH_USERS=100000  BENCH_RATE=300  BENCH_WARMUP=5s
#   BENCH_BEFORE_DURATION=60s  BENCH_SCENARIO=reshard  BENCH_DURING_DURATION=360s
#   BENCH_MOVE_BUCKETS=512  BENCH_MOVE_DURATION=180s  (BENCH_MOVE_BUCKETS=0: skip 3)
#   BENCH_MOVE_WRITERS=16  BENCH_MOVE_WRITE_RATE=20
#   BENCH_HOTKEYS=1 (0: skip 4)  BENCH_HOT_DURATION=30s  BENCH_HOT_CONNECTIONS=8
#   BENCH_HOT_FOLLOW_RATE=20  BENCH_HOT_FOLLOWS=20
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
SCENARIO="${BENCH_SCENARIO:-reshard}"
DURING_DURATION="${BENCH_DURING_DURATION:-360s}"
MOVE_BUCKETS="${BENCH_MOVE_BUCKETS:-512}"
MOVE_DURATION="${BENCH_MOVE_DURATION:-180s}"
MOVE_WRITERS="${BENCH_MOVE_WRITERS:-16}"
MOVE_WRITE_RATE="${BENCH_MOVE_WRITE_RATE:-20}"
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

# metric ADDR REGEX: the sum of ADDR's /metrics samples whose line matches REGEX.
metric() {
    curl -fs "http://$1/metrics" | awk -v re="$2" '$0 ~ re && $0 !~ /^#/ { s += $NF } END { printf "%d\n", s }'
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
    "$MILLIONS" bench --rate "$RATE" --duration "$duration" --warmup "$WARMUP" --users "$USERS" \
        --json "$RUN/$name.json" "$@" >"$RUN/$name.txt" 2>&1 &
    local gen=$!
    sending "$name" "$gen"
    if ! wait "$gen"; then
        say "$name: the run's verdict is FAILED; $(tail -1 "$RUN/$name.txt")"
        rc=1
    fi
    [ -s "$RUN/$name.json" ] || die "$name wrote no report: $(tail -5 "$RUN/$name.txt")"
}

# sending NAME PID: wait until bench PID prints that it starts sending (after
# logging its users in), and note when in NAME.sent: its progress lines count
# seconds from then.
sending() {
    while kill -0 "$2" 2>/dev/null && ! grep -q "^sending " "$RUN/$1.txt" 2>/dev/null; do sleep 0.1; done
    date +%s.%N >"$RUN/$1.sent"
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

# Every 5 s, the machine's busy CPU and ours (this script's process tree, the
# controller's, and every PostgreSQL and Redis of the stack with their children,
# reaped ones included) in clock ticks, to cpu.tsv: what else ran on the machine
# during the runs is the difference.
python3 - "$$" "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pid"])' "$HOME_DIR/control.json" 2>/dev/null || echo 0)" \
    "$RUN" 127.0.245. 127.0.246. >/dev/null 2>&1 <<'EOF' &
import os, sys, time
base, run, ranges = [int(sys.argv[1]), int(sys.argv[2])], sys.argv[3], sys.argv[4:]
def stat(p):
    f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
    return int(f[1]), sum(int(x) for x in f[11:15])  # ppid, utime + stime + cutime + cstime
with open(f"{run}/cpu.tsv", "w") as out:
    while not os.path.exists(f"{run}/cpu.stop"):
        roots = list(base)
        cpu = open("/proc/stat").readline().split()[1:]
        busy = sum(int(x) for x in cpu[:8]) - int(cpu[3]) - int(cpu[4])  # all but idle and iowait
        procs = {}
        for p in os.listdir("/proc"):
            if p.isdigit():
                try:
                    procs[int(p)] = stat(p)
                except (OSError, IndexError, ValueError):
                    pass
        kids = {}
        for p, (pp, _) in procs.items():
            kids.setdefault(pp, []).append(p)
        # PostgreSQL and Redis are daemons (their parent is init): found by their command line.
        for p in procs:
            try:
                cmd = open(f"/proc/{p}/cmdline", "rb").read().decode(errors="replace")
            except OSError:
                continue
            if run in cmd or any(r in cmd for r in ranges):
                roots.append(p)
        ours, todo, seen = 0, [r for r in roots if r in procs], set()
        while todo:
            p = todo.pop()
            if p not in seen:
                seen.add(p)
                ours += procs[p][1]
                todo.extend(kids.get(p, []))
        out.write(f"{time.time():.3f}\t{busy}\t{ours}\n")
        out.flush()
        time.sleep(5)
EOF

rc=0
bench before "$BEFORE_DURATION"
# fenced_retries: writes the web servers and workers ran again after a fence refused them.
fenced_retries() {
    local a
    for a in $(nodes_of web) $(nodes_of worker); do metric "$a" '^millions_db_writes_fenced_retries_total'; done |
        awk '{ s += $1 } END { print s + 0 }'
}
f0="$(fenced_retries)"
bench during "$DURING_DURATION" --scenario "$SCENARIO"
echo "$(($(fenced_retries) - f0))" >"$RUN/fenced-retries"

if [ "$MOVE_BUCKETS" -gt 0 ]; then
    range="$(shard0_buckets "$MOVE_BUCKETS")"
    wait_quiet move
    wait_whole healthy
    # Writers aimed at the moving buckets, so that some writes meet the fence:
    # MOVE_WRITERS users whose names hash into them follow and unfollow user1
    # through dc1-web-1 and dc2-web-1 at MOVE_WRITE_RATE writes a second from
    # before the move until it is done; each write's latency is kept.
    python3 - "$(addr_of dc1-web-1),$(addr_of dc2-web-1)" "$range" "$MOVE_WRITERS" "$MOVE_WRITE_RATE" \
        "$(secret admin)" "$RUN" >"$RUN/move-writers.txt" 2>&1 <<'EOF' &
import json, sys, threading, time, urllib.request
webs, ranges, users, rate, bypass, run = sys.argv[1].split(","), sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5], sys.argv[6]
M = (1 << 64) - 1
def fmix64(k):
    k ^= k >> 33; k = (k * 0xFF51AFD7ED558CCD) & M; k ^= k >> 33; k = (k * 0xC4CEB9FE1A85EC53) & M
    return k ^ (k >> 33)
def bucket(name):  # sharding::username_bucket
    h = 0xCBF29CE484222325
    for b in name.encode():
        h = ((h ^ b) * 0x100000001B3) & M
    return fmix64(h) % 4096
moving = set()
for part in ranges.split(","):
    a, _, b = part.partition("-")
    moving.update(range(int(a), int(b or a) + 1))
def call(web, method, path, body=None, token=None):
    h = {"content-type": "application/json", "x-bypass-limits": bypass}
    if token:
        h["authorization"] = f"Bearer {token}"
    r = urllib.request.Request(f"http://{web}{path}", method=method, headers=h,
                               data=json.dumps(body).encode() if body is not None else None)
    return json.load(urllib.request.urlopen(r, timeout=30))
names = [n for n in (f"user{i}" for i in range(50000, 100000)) if bucket(n) in moving][:users]
tokens = [call(webs[0], "POST", "/api/v1/sessions", {"username": n, "password": "password123"})["token"] for n in names]
for t in tokens:
    call(webs[0], "DELETE", "/api/v1/users/user1/follow", token=t)
open(f"{run}/move-writers.ready", "w").close()
samples, lock = [], threading.Lock()
def writer(i):
    follow, n, start = True, 0, time.monotonic()
    while True:
        n += 1
        # Thread i writes i / rate seconds after thread 0: the writes are spread evenly.
        time.sleep(max(0, start + (n * users + i) / rate - time.monotonic()))
        t0 = time.time()
        try:
            call(webs[i % len(webs)], "PUT" if follow else "DELETE", "/api/v1/users/user1/follow", token=tokens[i])
            ok = True
        except Exception:
            ok = False
        follow = not follow
        with lock:
            samples.append((t0, (time.time() - t0) * 1000, ok))
        try:
            open(f"{run}/move.done").close()
            return
        except OSError:
            pass
threads = [threading.Thread(target=writer, args=(i,)) for i in range(len(tokens))]
for t in threads: t.start()
for t in threads: t.join()
json.dump({"users": names, "samples": samples}, open(f"{run}/move-writes.json", "w"))
EOF
    writers=$!
    while kill -0 "$writers" 2>/dev/null && [ ! -e "$RUN/move-writers.ready" ]; do sleep 0.2; done
    [ -e "$RUN/move-writers.ready" ] || die "the moving buckets' writers did not start: $(tail -3 "$RUN/move-writers.txt")"
    say "one move of $MOVE_BUCKETS buckets ($range) to shard 1 a third into $MOVE_DURATION at $RATE/s"
    "$MILLIONS" bench --rate "$RATE" --duration "$MOVE_DURATION" --warmup "$WARMUP" --users "$USERS" \
        --json "$RUN/move-bench.json" >"$RUN/move-bench.txt" 2>&1 &
    gen=$!
    sending move-bench "$gen"
    sleep "$(python3 -c 'import sys; print(float(sys.argv[1]) + float(sys.argv[2]) / 3)' \
        "$(secs "$WARMUP")" "$(secs "$MOVE_DURATION")")"
    f0="$(fenced_retries)"
    "$MILLIONS" shard move "$range" --to 1 >"$RUN/move.txt" 2>&1 || { rc=1; say "the move failed: $(cat "$RUN/move.txt")"; }
    sleep 1
    touch "$RUN/move.done"
    wait "$writers" || { rc=1; say "the moving buckets' writers failed: $(tail -3 "$RUN/move-writers.txt")"; }
    echo "$(($(fenced_retries) - f0))" >"$RUN/move-fenced-retries"
    if ! wait "$gen"; then rc=1; say "move-bench: the run's verdict is FAILED; $(tail -1 "$RUN/move-bench.txt")"; fi
fi

# 4. A celebrity's profile read storm, with and without hot-key protection: two
# web servers of our own beside the topology's (dc1-web-1's configuration, with
# `[hotkeys] protect` = 16, the default, or 0, on addresses of dc1's range no node
# has), each stormed in turn with anonymous reads of the most followed of the
# first 50 users (wrk, closed loop, HOT_CONNECTIONS connections, HOT_DURATION)
# while HOT_FOLLOWS users follow and unfollow them through dc1-web-1 at
# HOT_FOLLOW_RATE writes a second: each write changes the celebrity's follower
# count, so every web server's cached profile is invalidated. Counted from each
# server's own /metrics: the profile loads it sent to the shards.
EXTRA_PIDS=()
cleanup() {
    local pid
    touch "$RUN/cpu.stop"
    for pid in "${EXTRA_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    own_stack_cleanup
}
trap cleanup EXIT
if [ "${BENCH_HOTKEYS:-1}" = 1 ]; then
    require "apt-get install wrk" wrk
    HOT_DURATION="${BENCH_HOT_DURATION:-30s}"
    HOT_CONNECTIONS="${BENCH_HOT_CONNECTIONS:-8}"
    HOT_FOLLOW_RATE="${BENCH_HOT_FOLLOW_RATE:-20}"
    HOT_FOLLOWS="${BENCH_HOT_FOLLOWS:-20}"
    web1="$(addr_of dc1-web-1)"
    range_of_dc1="${web1%.*}"
    celeb="$(python3 - "$web1" <<'EOF'
import json, sys, urllib.request
best = max(((json.load(urllib.request.urlopen(f"http://{sys.argv[1]}/api/v1/users/user{i}"))["followers_count"], i)
            for i in range(50)))
print(f"user{best[1]}")
EOF
)"
    say "hot keys: the celebrity is $celeb"
    for protect in 16 0; do
        addr="$range_of_dc1.$((protect == 0 ? 31 : 30)):${web1##*:}"
        sed "s/^listen = .*/listen = \"$addr\"/" "$HOME_DIR/nodes/dc1-web-1.toml" >"$RUN/hot-$protect.toml"
        printf '\n[hotkeys]\nprotect = %d\n' "$protect" >>"$RUN/hot-$protect.toml"
        MILLIONS_LOG_FILE="$RUN/hot-$protect.log" "$MILLIONS" web --config "$RUN/hot-$protect.toml" \
            >"$RUN/hot-$protect.out" 2>&1 &
        EXTRA_PIDS+=($!)
        for _ in $(seq 600); do curl -fs -o /dev/null "http://$addr/readyz" && break; sleep 0.1; done
        curl -fs -o /dev/null "http://$addr/readyz" || die "the web server with protect = $protect is not ready"
        HOT_ADDR[$protect]="$addr"
    done
    : >"$RUN/hot.tsv"
    for protect in 16 0; do
        addr="${HOT_ADDR[$protect]}"
        wait_quiet "hot-$protect"
        url="http://$addr/api/v1/users/$celeb"
        wrk -t1 -c"$HOT_CONNECTIONS" -d5s "$url" >/dev/null # the key becomes hot
        q0="$(metric "$addr" '^millions_db_queries_total[{].*op="profiles?"')"
        h0="$(metric "$addr" '^millions_hot_copy_reads_total[{].*kind="profile".*result="hit"')"
        python3 - "$web1" "$celeb" "$HOT_FOLLOWS" "$HOT_FOLLOW_RATE" "$(secs "$HOT_DURATION")" \
            "$(secret admin)" >"$RUN/hot-follows-$protect.txt" 2>&1 <<'EOF' &
import json, sys, time, urllib.request
web, celeb, users, rate, secs, bypass = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
def call(method, path, body=None, token=None):
    h = {"content-type": "application/json", "x-bypass-limits": bypass}
    if token:
        h["authorization"] = f"Bearer {token}"
    r = urllib.request.Request(f"http://{web}{path}", method=method, headers=h,
                               data=json.dumps(body).encode() if body is not None else None)
    return json.load(urllib.request.urlopen(r, timeout=10))
fans = [f"user{i}" for i in range(1000, 1000 + users)]
tokens = [call("POST", "/api/v1/sessions", {"username": u, "password": "password123"})["token"] for u in fans]
following = [call("GET", f"/api/v1/users/{celeb}", token=t)["followed_by_me"] for t in tokens]
start, done, errors = time.monotonic(), 0, 0
while time.monotonic() - start < secs:
    i = done % users
    try:
        call("DELETE" if following[i] else "PUT", f"/api/v1/users/{celeb}/follow", token=tokens[i])
        following[i] = not following[i]
    except Exception as e:
        errors += 1
    done += 1
    time.sleep(max(0, start + done / rate - time.monotonic()))
print(done, errors, time.monotonic() - start)
EOF
        writer=$!
        read -r reads < <(wrk -t1 -c"$HOT_CONNECTIONS" -d"$HOT_DURATION" "$url" | awk '/requests in/ { print $1 }')
        wait "$writer" || die "the follow writer failed: $(tail -3 "$RUN/hot-follows-$protect.txt")"
        q1="$(metric "$addr" '^millions_db_queries_total[{].*op="profiles?"')"
        h1="$(metric "$addr" '^millions_hot_copy_reads_total[{].*kind="profile".*result="hit"')"
        printf '%s\t%s\t%s\t%s\t%s\n' "$protect" "$reads" "$((q1 - q0))" "$((h1 - h0))" \
            "$(cat "$RUN/hot-follows-$protect.txt")" >>"$RUN/hot.tsv"
    done
fi

echo
echo "Resharding under load, $USERS users, the default mix at $RATE/s" \
    "($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown commit), $(nproc) CPUs," \
    "$([ "${BENCH_FAST_STORAGE:-0}" = 1 ] && echo "fsync off" || echo "fsync on"))"
echo
# The controller's events: each move's end (`bucket-move`: rows, pause, length)
# and each of its steps' length (`bucket-move-step`).
python3 - "$RUN" "$HOME_DIR/events.jsonl" <<'EOF'
import collections, datetime, json, os, re, sys
run, events_path = sys.argv[1], sys.argv[2]
loads = dict(l.rstrip("\n").split("\t") for l in open(f"{run}/loads.tsv"))
names = {"before": "before (no move)", "during": "during the rebalance", "move-bench": "during one large move"}
reports = {n: json.load(open(f"{run}/{n}.json")) for n in names if os.path.exists(f"{run}/{n}.json")}

def pct(xs, q):  # nearest rank
    xs = sorted(xs)
    return xs[max(0, min(len(xs) - 1, -(-len(xs) * q // 100) - 1))] if xs else float("nan")

base = reports["before"]
print("| run | load avg before | achieved req/s | ÷ before | p50 ms | p99 ms | ÷ before | max ms | errors |"
      " writes verified / acknowledged | verdict |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
for n, r in reports.items():
    l, c = r["latency_ms"], r["checker"]
    verdict = "passed" if r["verdict"]["passed"] else "FAILED: " + "; ".join(r["verdict"].get("reasons", []))
    print(f"| {names[n]} | {loads.get('move' if n == 'move-bench' else n, '?')} | {r['achieved_rate']:.1f} |"
          f" {r['achieved_rate'] / base['achieved_rate']:.2f}× | {l['p50']:.1f} | {l['p99']:.1f} |"
          f" {l['p99'] / base['latency_ms']['p99']:.2f}× | {l['max']:.0f} | {r['errors']} |"
          f" {c['verified']} / {c['writes_acknowledged']} | {verdict} |")
print()
print("p99 (max) per operation, ms:")
print()
print("| operation | " + " | ".join(names[n] for n in reports) + " |")
print("|---|" + "---:|" * len(reports))
for op in sorted(base["ops"]):
    cells = []
    for n in reports:
        o = reports[n]["ops"].get(op)
        cells.append(f"{o['latency_ms']['p99']:.1f} ({o['latency_ms']['max']:.0f})" if o else "–")
    print(f"| {op} | " + " | ".join(cells) + " |")
print()

moves, steps, fence_end = {}, collections.defaultdict(dict), {}
for line in open(events_path) if os.path.exists(events_path) else []:
    e = json.loads(line)
    m = re.match(r"move (\d+): (.*)", e.get("detail", ""))
    if not m:
        continue
    i, rest = int(m.group(1)), m.group(2)
    if e["kind"] == "bucket-move":
        g = re.search(r"(\d+) buckets .*\((\d+) rows copied, (\d+) jobs, (\d+) rows deleted.*paused (\d+) ms, took (\d+) ms", rest)
        if g:
            moves[i] = dict(zip(["buckets", "rows", "jobs", "deleted", "pause", "took"], map(int, g.groups())), at=e["at"])
    elif e["kind"] == "bucket-move-step":
        g = re.match(r"(\S+) done in (\d+) ms", rest)
        if g:
            steps[i][g.group(1)] = int(g.group(2))
            if g.group(1) == "fenced":
                fence_end[i] = datetime.datetime.fromisoformat(e["at"].replace("Z", "+00:00")).timestamp()
ids = sorted(moves)
during = reports["during"]
fault = during.get("fault") or {}
print(f"Rebalance: {fault.get('action')}, from {fault.get('at_secs', 0):.1f} s into the"
      f" {during['duration_secs']:.0f} s window: {fault.get('outcome')}")
pauses = [int(x) for x in re.findall(r"\d+", (fault.get("outcome") or "").split("per move:")[-1])]
n = len(pauses)
if pauses:
    print(f"Write pause per move (its buckets' writes refused, fence to the new directory published),"
          f" {n} moves: p50 {pct(pauses, 50)} ms, p99 {pct(pauses, 99)} ms, max {max(pauses)} ms")
if os.path.exists(f"{run}/fenced-retries"):
    print(f"Writes a fence refused and the data layer ran again (web servers and workers):"
          f" {open(f'{run}/fenced-retries').read().strip()}")
reb = ids[:n]
if reb:
    took = [moves[i]["took"] for i in reb]
    end = fault.get("at_secs", 0) + sum(took) / 1000
    print(f"Move length: p50 {pct(took, 50) / 1000:.1f} s, max {max(took) / 1000:.1f} s; all {n} moves"
          f" {sum(took) / 1000:.0f} s, so the last ended about {end:.0f} s into the"
          f" {during['duration_secs']:.0f} s window{'' if end <= during['duration_secs'] else ' (PAST ITS END: not all under load)'};"
          f" rows copied per move p50 {pct([moves[i]['rows'] for i in reb], 50)}")

# Each step's span (absolute), and each move's; `drop`: from the cutover to the
# move's end (every process holding the new map, then the source's rows deleted).
spans, fenced_at = [], {}
for line in open(events_path) if os.path.exists(events_path) else []:
    e = json.loads(line)
    at = datetime.datetime.fromisoformat(e["at"].replace("Z", "+00:00")).timestamp()
    m = re.match(r"move (\d+): (\S+) done in (\d+) ms", e.get("detail", ""))
    if e["kind"] == "bucket-move-step" and m:
        spans.append((at - int(m.group(3)) / 1000, at, m.group(2)))
        if m.group(2) == "fenced":
            fenced_at[int(m.group(1))] = at
    m = re.match(r"move (\d+): .*took (\d+) ms", e.get("detail", ""))
    if e["kind"] == "bucket-move" and m:
        spans.append((at - int(m.group(2)) / 1000, at, "move"))
        if int(m.group(1)) in fenced_at:
            spans.append((fenced_at[int(m.group(1))], at, "drop"))

def phase_of(a, b):
    inside = [x for x in spans if x[0] < b and x[1] > a]
    steps = {x[2] for x in inside} - {"move"}
    return ("copying" if "copy" in steps else "dropping" if "drop" in steps else
            "other steps" if steps else "moving" if inside else "no move")

cpu = []
if os.path.exists(f"{run}/cpu.tsv"):
    cpu = [tuple(map(float, l.split("\t"))) for l in open(f"{run}/cpu.tsv") if l.count("\t") == 2]
hz = os.sysconf("SC_CLK_TCK")
for rn in ["during", "move-bench"]:
    if rn not in reports or not os.path.exists(f"{run}/{rn}.sent"):
        continue
    sent = float(open(f"{run}/{rn}.sent").read())
    start = sent + float(reports[rn]["warmup_secs"])
    end = start + float(reports[rn]["duration_secs"])
    p99s = collections.defaultdict(list)
    for line in open(f"{run}/{rn}.txt"):
        m = re.match(r"running +([\d.]+)s: .* p99 ([\d.]+) ms", line)
        if m:
            t = sent + float(m.group(1))
            p99s[phase_of(t - 1, t)].append(float(m.group(2)))
    use = {}
    for (t0, b0, o0), (t1, b1, o1) in zip(cpu, cpu[1:]):
        if start <= t0 and t1 <= end:
            u = use.setdefault(phase_of(t0, t1), [0.0, 0.0, 0.0])
            u[0] += t1 - t0; u[1] += (o1 - o0) / hz; u[2] += (b1 - b0 - (o1 - o0)) / hz
    print()
    print(f"{names[rn]}: the bench's p99 of each second (its progress lines), by what the moves were doing"
          f" then, and the CPU used (cores; ours: the stack, the generator and this script; others: the rest"
          f" of the machine):")
    print()
    print("| moves were | seconds | median p99 ms | p90 of the p99s ms | max ms | CPU ours | CPU others |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for k in ["no move", "copying", "dropping", "other steps", "moving"]:
        v = p99s.get(k)
        if not v:
            continue
        u = use.get(k)
        c = f"{u[1] / u[0]:.2f} | {u[2] / u[0]:.2f}" if u and u[0] else "– | –"
        print(f"| {k} | {len(v)} | {pct(v, 50):.1f} | {pct(v, 90):.1f} | {max(v):.1f} | {c} |")

print()
print("Steps, ms (p50 / max over the moves; `published`: waiting for every process to hold the new map,"
      " then the source's rows deleted = the move's length less the other steps):")
print()
print("| moves | capture | copy | catch-up | fenced (the pause) | published |")
print("|---|---:|---:|---:|---:|---:|")
groups = [("the rebalance's", reb), ("the one large move", ids[n:])]
for label, group in groups:
    if not group:
        continue
    cols = []
    for phase in ["capture", "copy", "catch-up", "fenced"]:
        v = [steps[i][phase] for i in group if phase in steps[i]]
        cols.append(f"{pct(v, 50)} / {max(v)}" if v else "–")
    rest = [moves[i]["took"] - sum(steps[i].values()) for i in group]
    cols.append(f"{pct(rest, 50)} / {max(rest)}")
    print(f"| {label} ({len(group)}) | " + " | ".join(cols) + " |")
if os.path.exists(f"{run}/move.txt"):
    print()
    print("One move:", open(f"{run}/move.txt").read().strip())
if os.path.exists(f"{run}/move-writes.json"):
    w = json.load(open(f"{run}/move-writes.json"))
    lat = [x[1] for x in w["samples"] if x[2]]
    bad = sum(1 for x in w["samples"] if not x[2])
    slow = sorted(w["samples"], key=lambda x: -x[1])[:5]
    print(f"Writes of the moving buckets' {len(w['users'])} users (from before that bench to the move's end): {len(w['samples'])} ({bad} failed);"
          f" latency p50 {pct(lat, 50):.1f} ms, p99 {pct(lat, 99):.1f} ms, max {max(lat):.0f} ms;"
          f" refused by the fence and run again (web servers' count):"
          f" {open(f'{run}/move-fenced-retries').read().strip() if os.path.exists(f'{run}/move-fenced-retries') else '?'};"
          f" the slowest: " + ", ".join(f"{x[1]:.0f} ms" for x in slow))
    last = ids[-1] if ids else None
    if last in fence_end:
        a, b = fence_end[last] - steps[last]["fenced"] / 1000, fence_end[last]
        met = [x for x in w["samples"] if x[0] < b and x[0] + x[1] / 1000 > a]
        sent_in = [x[1] for x in met if x[0] >= a]
        if met:
            print(f"  In flight during its fence ({steps[last]['fenced']} ms): {len(met)} of those writes;"
                  f" the {len(sent_in)} sent during it took p50 {pct(sent_in, 50) if sent_in else 0:.0f} ms,"
                  f" max {max(sent_in, default=0):.0f} ms; the last answered"
                  f" {max(1000 * (x[0] - b) + x[1] for x in met):.0f} ms after the new directory was published")
if os.path.exists(f"{run}/hot.tsv") and os.path.getsize(f"{run}/hot.tsv"):
    print()
    print("A celebrity's profile read storm (one web server at a time, follows of the celebrity through another):")
    print()
    print("| hotkeys.protect | load avg before | profile reads | follows + unfollows (errors) | profile loads from the shards"
          " | per second | per 1000 reads | served from the hot copy (≈) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for line in open(f"{run}/hot.tsv"):
        protect, reads, queries, hits, writes = line.rstrip("\n").split("\t")
        done, errors, secs = writes.split()
        reads, queries, hits, secs = int(reads), int(queries), int(hits), float(secs)
        print(f"| {protect} | {loads.get('hot-' + protect, '?')} | {reads} | {done} ({errors}) | {queries} |"
              f" {queries / secs:.1f} | {1000 * queries / max(reads, 1):.2f} | {hits} |")
EOF
exit "$rc"
