#!/usr/bin/env bash
# Benchmark the web tier's cached reads against a bare axum handler, in one run.
#
#   make bench                      # builds the release binary, then runs this
#   bash scripts/bench-web.sh       # after: cargo build --release -p millions -p web --bin millions --example bare
#
# It starts its own stack (`millions up` in a fresh temporary run directory, on a
# free port, so a running `make up` is never touched), seeds it through the JSON
# API, warms the caches, and loads three targets with wrk, one after the other:
#
#   bare     the `bare` example of the web crate: one axum handler, a fixed JSON body
#            shaped like a profile, no middleware, no logging, no state (the anchor)
#   profile  GET /api/v1/users/{author}   cached profile read (L1 hits), public
#   feed     GET /api/v1/feed?limit=20    home feed: session + timeline from Redis,
#                                         posts and authors from the caches (Bearer)
#
# The targets run in BENCH_ROUNDS interleaved rounds; each round's numbers are
# divided by the same round's bare numbers, and the table shows medians. Absolute
# numbers depend on the machine and on whatever else runs on it; the ratios are
# what docs/BENCHMARKS.md records. The real web server keeps its production
# logging (one JSON line per request, info level) -- that cost is part of the
# system and is reported as log bytes per request.
#
# Environment (all optional):
#   BENCH_DURATION=10s     wrk -d, per target per round
#   BENCH_CONNECTIONS=32   wrk -c
#   BENCH_THREADS=2        wrk -t
#   BENCH_ROUNDS=3         interleaved rounds (median reported)
#   BENCH_WARMUP=3s        untimed wrk run per target before the first round
#   BENCH_BUILD=1          0: do not run `cargo build` (use the binaries as they are)
#   BENCH_KEEP=0           1: keep the run directory (logs) after the run
#   BENCH_PERF=0           1: after the rounds, profile the web server under each
#                          target's load (perf record, 999 Hz, DWARF call graphs, 5 s)
#                          and print each profile's top functions by own CPU share
#   BENCH_GUARD=1          0: do not compare with the last recorded run
#   BENCH_RECORD=0         1: write this run's ratios as the new last recorded run
#                          (docs/bench/web-baseline.tsv)
#   BENCH_WRITE_DURATION=10s  BENCH_WRITE_CONNECTIONS=8
#                          the writes' phase (a text post's and a like's cost per
#                          write, after the reads); 0 skips it
#   MILLIONS=target/release/millions   BARE=target/release/examples/bare
#
# The regression guard: after the table, each ratio (throughput and server CPU per
# request of the profile and feed reads, ÷ bare) is set beside the last recorded
# run's (docs/bench/web-baseline.tsv) with its noise band; a ratio that moved the
# wrong way by more than its band is flagged REGRESSED and the script exits 3.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DURATION="${BENCH_DURATION:-10s}"
CONNECTIONS="${BENCH_CONNECTIONS:-32}"
THREADS="${BENCH_THREADS:-2}"
ROUNDS="${BENCH_ROUNDS:-3}"
WARMUP="${BENCH_WARMUP:-3s}"
MILLIONS="${MILLIONS:-$ROOT/target/release/millions}"
BARE="${BARE:-$ROOT/target/release/examples/bare}"

say() { printf 'bench: %s\n' "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }
# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"

require "wrk: apt-get install wrk" wrk curl python3 awk

build_millions -p web --bin millions --example bare
[ -x "$BARE" ] || die "$BARE is missing; run: cargo build --release -p web --example bare"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

LOADAVG="$(cut -d' ' -f1-3 /proc/loadavg)"
RUN="$(mktemp -d "${TMPDIR:-/tmp}/millions-bench.XXXXXX")"
# PostgreSQL runs as its own OS user when started by root: it must enter this dir.
chmod 755 "$RUN"
export MILLIONS_HOME="$RUN/home"
# A topology of its own, on a range no preset uses: one web server, one worker,
# one Redis and two shards (primaries only), like a small production DC.
BENCH_RANGE="${BENCH_RANGE:-127.0.250}"
WEB_ADDR="$BENCH_RANGE.20:8080"
BASE="http://$WEB_ADDR"
BARE_PID=""
STACK_UP=0

cleanup() {
    local rc=$?
    set +e
    if [ -n "$BARE_PID" ]; then
        kill "$BARE_PID" 2>/dev/null
        wait "$BARE_PID" 2>/dev/null
    fi
    if [ "$STACK_UP" = 1 ] || [ -f "$MILLIONS_HOME/control.json" ]; then
        "$MILLIONS" down --home "$MILLIONS_HOME" >/dev/null 2>&1 ||
            say "warning: millions down failed; see $RUN"
    fi
    if [ "${BENCH_KEEP:-0}" = 1 ] || [ "$rc" != 0 ]; then
        say "run directory kept: $RUN"
    else
        rm -rf "$RUN"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- start ----

say "starting the stack in $MILLIONS_HOME, web on $WEB_ADDR"
up_small_stack bench "$BENCH_RANGE" 1

# Pids of the nodes, from `millions status --json`.
"$MILLIONS" status --home "$MILLIONS_HOME" --json >"$RUN/status.json"
node_pid() {
    python3 -c 'import json, sys
for n in json.load(open(sys.argv[1]))["nodes"]:
    if n["role"] == sys.argv[2]:
        print(n["pid"]); break' "$RUN/status.json" "$1"
}
WEB_PID="$(node_pid web)"
REDIS_PID="$(node_pid redis)"
PG_PID="$(node_pid postgres)"
WORKER_PID="$(node_pid worker)"
# Every PostgreSQL node (one primary per shard), for the writes' cost.
mapfile -t PG_PIDS < <(python3 -c 'import json, sys
for n in json.load(open(sys.argv[1]))["nodes"]:
    if n["role"] == "postgres": print(n["pid"])' "$RUN/status.json")
WEB_LOG="$MILLIONS_HOME/logs/dc1-web-1.log"

"$BARE" 127.0.0.1:0 >"$RUN/bare.out" 2>&1 &
BARE_PID=$!
for _ in $(seq 100); do
    [ -s "$RUN/bare.out" ] && break
    sleep 0.05
done
BARE_ADDR="$(head -n1 "$RUN/bare.out")"
[ -n "$BARE_ADDR" ] || die "the bare server printed no address"

# ----------------------------------------------------------------- seed ----

# api METHOD PATH BODY TOKEN EXPECTED_STATUS -> response body on stdout
api() {
    local method="$1" path="$2" body="$3" token="$4" want="$5" out code
    out="$RUN/response"
    local args=(-sS -o "$out" -w '%{http_code}' -X "$method" -H 'Content-Type: application/json'
        -H "X-Bypass-Limits: $BYPASS")
    [ -n "$token" ] && args+=(-H "Authorization: Bearer $token")
    [ -n "$body" ] && args+=(--data "$body")
    code="$(curl "${args[@]}" "$BASE$path")"
    [ "$code" = "$want" ] || die "$method $path: HTTP $code (expected $want): $(head -c 300 "$out")"
    cat "$out"
}

# The run directory's admin token lets the seeding's signups past the per-address
# limits (every one comes from this address).
BYPASS="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["admin"])' "$MILLIONS_HOME/secrets.json")"
PASSWORD="bench-password-1"
signup_login() { # name -> token
    api POST /api/v1/users "{\"username\":\"$1\",\"password\":\"$PASSWORD\"}" "" 201 >/dev/null
    api POST /api/v1/sessions "{\"username\":\"$1\",\"password\":\"$PASSWORD\"}" "" 201 |
        sed -n 's/.*"token":"\([^"]*\)".*/\1/p'
}

AUTHOR="bench_author"
READER="bench_reader"
AUTHOR_POSTS=50
OTHERS=19
OTHER_POSTS=5
caption() { # author n
    printf 'Golden hour over the harbour, shot %d by %s. #photo #millions #bench' "$2" "$1"
}

seed_started=$SECONDS
say "seeding: $AUTHOR with $AUTHOR_POSTS posts, $OTHERS more authors with $OTHER_POSTS each, $READER following all $((OTHERS + 1))"
READER_TOKEN="$(signup_login "$READER")"
[ -n "$READER_TOKEN" ] || die "no session token for $READER"
authors=("$AUTHOR")
for i in $(seq -w 1 "$OTHERS"); do authors+=("bench_a$i"); done
for a in "${authors[@]}"; do
    token="$(signup_login "$a")"
    api PUT "/api/v1/users/$a/follow" "" "$READER_TOKEN" 200 >/dev/null
    n=$OTHER_POSTS
    [ "$a" = "$AUTHOR" ] && n=$AUTHOR_POSTS
    for j in $(seq "$n"); do
        api POST /api/v1/posts "{\"caption\":\"$(caption "$a" "$j")\"}" "$token" 201 >/dev/null
    done
done
say "seeded in $((SECONDS - seed_started)) s"

PROFILE_PATH="/api/v1/users/$AUTHOR"
FEED_PATH="/api/v1/feed?limit=20"

# Warm the caches and check the answers.
for _ in 1 2 3; do
    api GET "$PROFILE_PATH" "" "" 200 >"$RUN/profile.json"
    api GET "$FEED_PATH" "" "$READER_TOKEN" 200 >"$RUN/feed.json"
done
grep -q "\"username\":\"$AUTHOR\"" "$RUN/profile.json" || die "unexpected profile: $(cat "$RUN/profile.json")"
feed_posts="$(grep -o '"caption":' "$RUN/feed.json" | wc -l)"
[ "$feed_posts" -eq 20 ] || die "the feed has $feed_posts posts, expected 20"
curl -sS -o "$RUN/bare.json" "http://$BARE_ADDR/"
body_bytes() { wc -c <"$1" | tr -d ' '; }
declare -A BODY=([bare]="$(body_bytes "$RUN/bare.json")" [profile]="$(body_bytes "$RUN/profile.json")"
    [feed]="$(body_bytes "$RUN/feed.json")")

# ------------------------------------------------------------------ load ----

TARGETS=(bare profile feed)
declare -A URL=([bare]="http://$BARE_ADDR/" [profile]="$BASE$PROFILE_PATH" [feed]="$BASE$FEED_PATH")
declare -A SERVER_PID=([bare]="$BARE_PID" [profile]="$WEB_PID" [feed]="$WEB_PID")

wrk_args() { # target -> wrk arguments after -d
    printf '%s\n' -t"$THREADS" -c"$CONNECTIONS" --latency
    [ "$1" = feed ] && printf '%s\n' -H "Authorization: Bearer $READER_TOKEN"
    printf '%s\n' "${URL[$1]}"
}

# CPU time (clock ticks, user + system) of a process and, with "tree", its children.
cpu_ticks() {
    local pid="$1" total=0 p
    local pids=("$pid")
    [ "${2:-}" = tree ] && mapfile -t -O 1 pids < <(pgrep -P "$pid" || true)
    for p in "${pids[@]}"; do
        [ -r "/proc/$p/stat" ] || continue
        # Fields 14 and 15 after the ")" that ends the command name.
        total=$((total + $(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12 + $13}')))
    done
    echo "$total"
}
HZ="$(getconf CLK_TCK)"
log_bytes() { stat -c %s "$WEB_LOG"; }

# Latency as wrk prints it (e.g. 812.00us, 1.52ms, 2.01s) -> microseconds.
to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) m = 1; else if (v ~ /ms$/) m = 1000; else if (v ~ /m$/) m = 60e6; else if (v ~ /s$/) m = 1e6
        printf "%.1f", n * m }'
}

# run_wrk target round -> appends "target round rps p50 p99 reqs server_us pg_us redis_us log_b" to RESULTS
RESULTS="$RUN/results.txt"
: >"$RESULTS"
run_wrk() {
    local target="$1" round="$2" out="$RUN/wrk-$1-$2.txt" args
    mapfile -t args < <(wrk_args "$target")
    local s0 p0 r0 l0 s1 p1 r1 l1
    s0="$(cpu_ticks "${SERVER_PID[$target]}")"
    p0="$(cpu_ticks "$PG_PID" tree)"
    r0="$(cpu_ticks "$REDIS_PID")"
    l0="$(log_bytes)"
    wrk -d"$DURATION" "${args[@]}" >"$out" 2>&1 || { cat "$out" >&2; die "wrk failed on $target"; }
    s1="$(cpu_ticks "${SERVER_PID[$target]}")"
    p1="$(cpu_ticks "$PG_PID" tree)"
    r1="$(cpu_ticks "$REDIS_PID")"
    l1="$(log_bytes)"
    if grep -q 'Non-2xx or 3xx responses' "$out"; then
        cat "$out" >&2
        die "$target answered non-2xx responses; the numbers would be meaningless"
    fi
    if grep -q 'Socket errors' "$out"; then
        cat "$out" >&2
        die "$target had socket errors"
    fi
    local rps p50 p99 reqs
    rps="$(awk '/^Requests\/sec:/ {print $2}' "$out")"
    p50="$(to_us "$(awk '$1 == "50%" {print $2}' "$out")")"
    p99="$(to_us "$(awk '$1 == "99%" {print $2}' "$out")")"
    reqs="$(awk '/requests in/ {print $1}' "$out")"
    [ -n "$rps" ] && [ -n "$reqs" ] && [ "$reqs" -gt 0 ] || { cat "$out" >&2; die "could not parse wrk's output"; }
    # Server, PostgreSQL and Redis CPU per request (us); log bytes per request.
    local log_b=$((l1 - l0))
    if [ "$target" = bare ]; then log_b=0; fi
    awk -v t="$target" -v r="$round" -v rps="$rps" -v p50="$p50" -v p99="$p99" -v n="$reqs" -v hz="$HZ" \
        -v s=$((s1 - s0)) -v p=$((p1 - p0)) -v rd=$((r1 - r0)) -v lb="$log_b" \
        'BEGIN { f = 1e6 / hz / n; printf "%s %s %s %s %s %s %.1f %.1f %.1f %.0f\n", t, r, rps, p50, p99, n, s * f, p * f, rd * f, lb / n }' \
        >>"$RESULTS"
    say "$(printf 'round %s %-8s %10.0f req/s  p50 %8.0f us  p99 %8.0f us' "$round" "$target" "$rps" "$p50" "$p99")"
}

if [ "$WARMUP" != 0 ] && [ "$WARMUP" != 0s ]; then
    say "warm-up: $WARMUP per target (not recorded)"
    for t in "${TARGETS[@]}"; do
        mapfile -t args < <(wrk_args "$t")
        wrk -d"$WARMUP" "${args[@]}" >"$RUN/warmup-$t.txt" 2>&1 || die "wrk warm-up failed on $t"
        if grep -q 'Non-2xx or 3xx responses' "$RUN/warmup-$t.txt"; then
            die "$t answered non-2xx during warm-up"
        fi
    done
fi

say "load: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency, $ROUNDS round(s) of ${TARGETS[*]}"
for round in $(seq "$ROUNDS"); do
    for t in "${TARGETS[@]}"; do
        run_wrk "$t" "$round"
    done
done

# ---------------------------------------------------------------- writes ----
# A text post's and a like's cost per write, after the reads: BENCH_WRITE_DURATION
# of each, closed loop on BENCH_WRITE_CONNECTIONS connections, as $AUTHOR (a post
# fans out to $READER's timeline) and as $READER (like and unlike in turn, over
# $AUTHOR's posts, so every request changes a row). Per write: CPU of the web
# server, of every PostgreSQL server (all their processes), of Redis and of the
# worker, and the WAL the shards' primaries wrote.
WRITE_DURATION="${BENCH_WRITE_DURATION:-10s}"
WRITE_CONNECTIONS="${BENCH_WRITE_CONNECTIONS:-8}"
WRITES="$RUN/writes.txt"
: >"$WRITES"
if [ "$WRITE_DURATION" != 0 ]; then
    command -v psql >/dev/null || die "psql is not installed (apt-get install postgresql-client)"
    mapfile -t SHARD_URLS < <(python3 -c 'import sys, tomllib
print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["database"]["shards"]))' "$MILLIONS_HOME/nodes/dc1-web-1.toml")
    wal_bytes() { # the shards' primaries' WAL positions, summed
        local total=0 u
        for u in "${SHARD_URLS[@]}"; do
            total=$((total + $(psql "$u" -Atqc "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")))
        done
        echo "$total"
    }
    cpu_of() { local t=0 p; for p in "$@"; do t=$((t + $(cpu_ticks "$p" tree))); done; echo "$t"; }
    AUTHOR_TOKEN="$(api POST /api/v1/sessions "{\"username\":\"$AUTHOR\",\"password\":\"$PASSWORD\"}" "" 201 |
        sed -n 's/.*"token":"\([^"]*\)".*/\1/p')"
    post_ids="$(api GET "/api/v1/users/$AUTHOR/posts?limit=50" "" "" 200 | python3 -c 'import json, sys
print(",".join(json.dumps(p["id"]) for p in json.load(sys.stdin)["posts"]))')"
    [ -n "$post_ids" ] || die "no post ids of $AUTHOR to like"
    cat >"$RUN/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $AUTHOR_TOKEN"
local n = 0
function request()
    n = n + 1
    return wrk.format(nil, "/api/v1/posts", nil, '{"caption":"write bench ' .. n .. ': golden hour over the harbour #bench"}')
end
LUA
    cat >"$RUN/like.lua" <<LUA
wrk.headers["Authorization"] = "Bearer $READER_TOKEN"
local ids = { $post_ids } -- strings: ids need more digits than a Lua number keeps
local threads = 0
function setup(thread) threads = threads + 1; thread:set("first", threads * 7) end
local n = 0
function request()
    -- Each connection's requests in turn like and unlike one post, then the next.
    n = n + 1
    local id = ids[((first or 0) + math.floor((n - 1) / 2)) % #ids + 1]
    local method = (n % 2 == 1) and "PUT" or "DELETE"
    return wrk.format(method, "/api/v1/posts/" .. id .. "/like")
end
LUA
    for w in post like; do
        out="$RUN/wrk-$w.txt"
        c0="$(cpu_ticks "$WEB_PID")"; g0="$(cpu_of "${PG_PIDS[@]}")"; r0="$(cpu_ticks "$REDIS_PID")"
        k0="$(cpu_ticks "$WORKER_PID")"; w0="$(wal_bytes)"
        wrk -t"$THREADS" -c"$WRITE_CONNECTIONS" -d"$WRITE_DURATION" --latency -s "$RUN/$w.lua" "$BASE" >"$out" 2>&1 ||
            { cat "$out" >&2; die "wrk failed on $w"; }
        c1="$(cpu_ticks "$WEB_PID")"; g1="$(cpu_of "${PG_PIDS[@]}")"; r1="$(cpu_ticks "$REDIS_PID")"
        k1="$(cpu_ticks "$WORKER_PID")"; w1="$(wal_bytes)"
        if grep -qE 'Non-2xx or 3xx responses|Socket errors' "$out"; then
            cat "$out" >&2
            die "$w answered errors; the numbers would be meaningless"
        fi
        rps="$(awk '/^Requests\/sec:/ {print $2}' "$out")"
        p50="$(to_us "$(awk '$1 == "50%" {print $2}' "$out")")"
        p99="$(to_us "$(awk '$1 == "99%" {print $2}' "$out")")"
        n="$(awk '/requests in/ {print $1}' "$out")"
        awk -v w="$w" -v rps="$rps" -v p50="$p50" -v p99="$p99" -v n="$n" -v hz="$HZ" -v c=$((c1 - c0)) \
            -v g=$((g1 - g0)) -v r=$((r1 - r0)) -v k=$((k1 - k0)) -v wal=$((w1 - w0)) \
            'BEGIN { f = 1e6 / hz / n; printf "%s %s %s %s %s %.1f %.1f %.1f %.1f %.0f\n", w, rps, p50, p99, n, c * f, g * f, r * f, k * f, wal / n }' \
            >>"$WRITES"
        say "$(printf '%-5s %8.0f writes/s  p50 %8.0f us  p99 %8.0f us' "$w" "$rps" "$p50" "$p99")"
    done
fi

if [ "${BENCH_PERF:-0}" = 1 ]; then
    command -v perf >/dev/null || die "perf is not installed (apt-get install linux-perf)"
    for t in profile feed; do
        mapfile -t args < <(wrk_args "$t")
        wrk -d8s "${args[@]}" >"$RUN/perf-wrk-$t.txt" 2>&1 &
        wrk_pid=$!
        sleep 1 # let the load settle before sampling (not synchronization: the profile is a sample)
        perf record -q -F 999 --call-graph dwarf,16384 -p "$WEB_PID" -o "$RUN/perf-$t.data" -- sleep 5 2>/dev/null
        wait "$wrk_pid"
        perf report -i "$RUN/perf-$t.data" --no-children --sort symbol --percent-limit 0.7 --stdio 2>/dev/null |
            grep -E '^ +[0-9]' | sed -E 's/ +-? +-? *$//; s/^ +//' | cut -c1-150 | head -40 >"$RUN/perf-$t.txt"
        say "perf: $t profiled (top functions by own CPU in the report)"
    done
fi

# --------------------------------------------------------------- report ----

cpu_model="$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
[ -n "$cpu_model" ] || cpu_model="$(uname -m)"
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git status --porcelain 2>/dev/null)" ]; then commit="$commit (with local changes)"; fi

report() {
    echo "### Run of $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- command: \`BENCH_DURATION=$DURATION BENCH_CONNECTIONS=$CONNECTIONS BENCH_THREADS=$THREADS BENCH_ROUNDS=$ROUNDS bash scripts/bench-web.sh\`"
    echo "- per target and round: \`wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency URL\`" \
        "(feed adds \`-H 'Authorization: Bearer TOKEN'\`); $ROUNDS interleaved round(s), medians shown"
    echo "- machine: $(nproc) CPUs, $cpu_model; $(uname -sr); load average before the run: $LOADAVG"
    echo "- build: release, commit $commit; $(rustc --version 2>/dev/null || echo 'rustc ?'); $(wrk --version 2>&1 | head -n1 | awk '{print $1, $2}')"
    echo "- data: $AUTHOR with $AUTHOR_POSTS posts; $READER follows $((OTHERS + 1)) authors" \
        "($((AUTHOR_POSTS + OTHERS * OTHER_POSTS)) posts in all); feed page = 20 posts"
    echo
    echo "| target | req/s | ÷ bare | p50 | ÷ bare | p99 | ÷ bare | server CPU/req | ÷ bare | PostgreSQL CPU/req | Redis CPU/req | log/req | body |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    awk -v bp="${BODY[bare]}" -v pp="${BODY[profile]}" -v fp="${BODY[feed]}" -v prof="$PROFILE_PATH" -v feed="$FEED_PATH" '
        function median(a, n,    i, j, t) {
            for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
            return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        function lat(us) { return us >= 1000 ? sprintf("%.2f ms", us / 1000) : sprintf("%.0f µs", us) }
        function ratio(x) { return x >= 10 ? sprintf("%.0f×", x) : sprintf("%.2f×", x) }
        { t = $1; r = $2; rps[t, r] = $3; p50[t, r] = $4; p99[t, r] = $5; cpu[t, r] = $7; pg[t, r] = $8; rd[t, r] = $9; lb[t, r] = $10
          if (!(r in seen)) { seen[r] = 1; rounds++ } }
        END {
            name["bare"] = "bare axum handler (anchor)"; name["profile"] = "`GET " prof "` (cached profile)"; name["feed"] = "`GET " feed "` (home feed)"
            body["bare"] = bp; body["profile"] = pp; body["feed"] = fp
            split("bare profile feed", order, " ")
            for (k = 1; k <= 3; k++) {
                t = order[k]
                for (r = 1; r <= rounds; r++) {
                    # Each ratio divides by the bare numbers of the same round.
                    a1[r] = rps[t, r]; a2[r] = rps[t, r] / rps["bare", r]
                    a3[r] = p50[t, r]; a4[r] = p50[t, r] / p50["bare", r]
                    a5[r] = p99[t, r]; a6[r] = p99[t, r] / p99["bare", r]
                    a7[r] = cpu[t, r]; a8[r] = cpu[t, r] / (cpu["bare", r] > 0 ? cpu["bare", r] : 1)
                    a9[r] = pg[t, r]; a10[r] = rd[t, r]; a11[r] = lb[t, r]
                }
                printf "| %s | %.0f | %s | %s | %s | %s | %s | %.0f µs | %s | %.1f µs | %.1f µs | %s | %d B |\n", name[t],
                    median(a1, rounds), ratio(median(a2, rounds)),
                    lat(median(a3, rounds)), ratio(median(a4, rounds)),
                    lat(median(a5, rounds)), ratio(median(a6, rounds)),
                    median(a7, rounds), ratio(median(a8, rounds)),
                    median(a9, rounds), median(a10, rounds),
                    (t == "bare") ? "–" : sprintf("%.0f B", median(a11, rounds)), body[t]
            }
        }' "$RESULTS"
    echo
    echo "Per round:"
    echo
    awk '{ printf "- round %s, %s: %.0f req/s, p50 %.0f µs, p99 %.0f µs, server CPU %.1f µs/req\n", $2, $1, $3, $4, $5, $7 }' "$RESULTS"
}

# ratios: each guarded ratio's median over the rounds, one "name value" per line.
ratios() {
    awk '
        function median(a, n,    i, j, t) {
            for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
            return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        { rps[$1, $2] = $3; cpu[$1, $2] = $7; if (!($2 in seen)) { seen[$2] = 1; rounds++ } }
        END {
            split("profile feed", order, " ")
            for (k = 1; k <= 2; k++) {
                t = order[k]
                for (r = 1; r <= rounds; r++) {
                    a[r] = rps[t, r] / rps["bare", r]
                    b[r] = cpu[t, r] / (cpu["bare", r] > 0 ? cpu["bare", r] : 1)
                }
                printf "%s_throughput %.4f\n%s_cpu %.4f\n", t, median(a, rounds), t, median(b, rounds)
            }
        }' "$RESULTS"
}

# guard BASELINE: this run's ratios beside the recorded ones; returns 3 if any
# moved the wrong way by more than its band.
guard() {
    python3 - "$1" <(ratios) <<'PY'
import sys
recorded = {}
for line in open(sys.argv[1]):
    if line.startswith("#") or not line.strip():
        continue
    name, value, band, better, when = line.rstrip("\n").split("\t")
    recorded[name] = (float(value), band, better, when)
now = dict((n, float(v)) for n, v in (l.split() for l in open(sys.argv[2])))
print("Against the last recorded run (docs/bench/web-baseline.tsv):")
print()
print("| ratio | recorded | now | change | noise band | |")
print("|---|---:|---:|---:|---:|---|")
regressed = []
for name, (old, band, better, when) in recorded.items():
    if name not in now:
        continue
    new = now[name]
    limit = old * float(band[:-1]) / 100 if band.endswith("%") else float(band)
    worse = (old - new) if better == "higher" else (new - old)
    flag = "REGRESSED" if worse > limit else ("better" if -worse > limit else "within noise")
    if flag == "REGRESSED":
        regressed.append(name)
    print(f"| {name} | {old:g} ({when}) | {new:.2f} | {new - old:+.2f} | ±{band} | {flag} |")
print()
if regressed:
    print("REGRESSED beyond the noise band: " + ", ".join(regressed))
sys.exit(3 if regressed else 0)
PY
}

# record BASELINE: write this run's ratios as the last recorded run, keeping the bands.
record() {
    python3 - "$1" <(ratios) "$commit $(date -u +%Y-%m-%d)" <<'PY'
import sys
path, when = sys.argv[1], sys.argv[3]
now = dict((n, float(v)) for n, v in (l.split() for l in open(sys.argv[2])))
out = []
for line in open(path):
    if line.startswith("#") or not line.strip():
        out.append(line)
        continue
    name, value, band, better, _ = line.rstrip("\n").split("\t")
    value = f"{now[name]:.2f}" if name in now else value
    out.append("\t".join([name, value, band, better, when]) + "\n")
open(path, "w").writelines(out)
PY
}

echo
report
if [ -s "$WRITES" ]; then
    echo
    echo "Writes (\`wrk -t$THREADS -c$WRITE_CONNECTIONS -d$WRITE_DURATION\`, after the reads; CPU per write, and ÷ the bare handler's CPU per request of the same run):"
    echo
    echo "| write | writes/s | p50 | p99 | web CPU/write | ÷ bare | PostgreSQL CPU/write | Redis CPU/write | worker CPU/write | all four | ÷ bare | WAL/write |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    bare_cpu="$(awk '$1 == "bare" { print $7 }' "$RESULTS" | median)"
    awk -v bare="$bare_cpu" -v author="$AUTHOR" '
        function lat(us) { return us >= 1000 ? sprintf("%.2f ms", us / 1000) : sprintf("%.0f µs", us) }
        { name = ($1 == "post") ? "text post (`POST /api/v1/posts`, 1 follower)" : "like or unlike (`PUT`/`DELETE /api/v1/posts/{id}/like`)"
          all = $6 + $7 + $8 + $9
          printf "| %s | %.0f | %s | %s | %.0f µs | %.1f× | %.0f µs | %.0f µs | %.0f µs | %.0f µs | %.1f× | %.0f B |\n",
              name, $2, lat($3), lat($4), $6, $6 / bare, $7, $8, $9, all, all / bare, $10 }' "$WRITES"
fi
BASELINE="$ROOT/docs/bench/web-baseline.tsv"
guard_status=0
if [ "${BENCH_GUARD:-1}" = 1 ] && [ -f "$BASELINE" ]; then
    echo
    guard "$BASELINE" || guard_status=$?
fi
if [ "${BENCH_RECORD:-0}" = 1 ]; then
    record "$BASELINE"
    say "recorded this run's ratios in docs/bench/web-baseline.tsv"
fi
if [ "${BENCH_PERF:-0}" = 1 ]; then
    for t in profile feed; do
        echo
        echo "Profile of the web server under the $t load (perf, own CPU share, top functions):"
        echo
        echo '```'
        cat "$RUN/perf-$t.txt"
        echo '```'
    done
fi
exit "$guard_status"
