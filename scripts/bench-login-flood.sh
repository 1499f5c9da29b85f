#!/usr/bin/env bash
# Logins and reads while a password-guessing flood hits the web tier, in one run.
#
#   bash scripts/bench-login-flood.sh   # builds the release binary first (BENCH_BUILD=0: not)
#
# It starts its own stack (`millions up` in a fresh temporary run directory, on a
# range no preset uses: one load balancer, one web server, one worker, one Redis,
# two shards), seeds 2,000 users (`millions seed`, password `password123`), and
# starts a second web server on the same stack that trusts 127.0.0.1 as its proxy,
# so that wrk's `X-Forwarded-For` names the client as a load balancer's would (the
# topology's own web server trusts only its load balancer's address). Against
# that server, three loads run at once for each phase:
#
#   reads   GET /api/v1/users/user1 (a cached profile), BENCH_READ_CONNECTIONS
#   logins  legitimate users logging in with the right password, from addresses of
#           their own, one connection each: returning users from a device known for
#           their account (the `did` cookie of an earlier login), and new ones
#   flood   wrong passwords, BENCH_FLOOD_CONNECTIONS connections, in three phases:
#             none         (the anchor: the same loads without a flood)
#             one-address  every guess from one address (198.51.100.66)
#             distributed  every guess from a new address and at a new account name,
#                          so neither the per-address nor the per-account limit
#                          applies: only the bounded hashing pool stands
#
# Each phase's legitimate logins per second and p99 (known and new devices), and
# reads per second and p99, are divided by the anchor phase's; the flood's answers are counted by status
# (401 guessed and hashed, 429 refused by a limit without hashing, 503 refused by
# the full hashing queue). docs/BENCHMARKS.md records the table.
#
# Environment (all optional):
#   BENCH_DURATION=15s            wrk -d per phase
#   BENCH_READ_CONNECTIONS=8      reads' connections
#   BENCH_FLOOD_CONNECTIONS=64    the flood's connections
#   BENCH_BUILD=1 BENCH_KEEP=0    as in bench-web.sh
#   MILLIONS=target/release/millions
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DURATION="${BENCH_DURATION:-15s}"
READ_CONNECTIONS="${BENCH_READ_CONNECTIONS:-8}"
FLOOD_CONNECTIONS="${BENCH_FLOOD_CONNECTIONS:-64}"
MILLIONS="${MILLIONS:-$ROOT/target/release/millions}"

say() { printf 'bench: %s\n' "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }
# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"

require "wrk: apt-get install wrk" wrk curl python3 awk
build_millions

RUN="$(mktemp -d "${TMPDIR:-/tmp}/millions-bench.XXXXXX")"
# PostgreSQL runs as its own OS user when started by root: it must enter this dir.
chmod 755 "$RUN"
export MILLIONS_HOME="$RUN/home"
RANGE="${BENCH_RANGE:-127.0.249}"
WEB="$RANGE.21:8080"
STACK_UP=0
WEB_PID=""

cleanup() {
    local rc=$?
    set +e
    if [ -n "$WEB_PID" ]; then
        kill "$WEB_PID" 2>/dev/null
        wait "$WEB_PID" 2>/dev/null
    fi
    if [ "$STACK_UP" = 1 ] || [ -f "$MILLIONS_HOME/control.json" ]; then
        "$MILLIONS" down --home "$MILLIONS_HOME" >/dev/null 2>&1 || say "warning: millions down failed; see $RUN"
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

say "starting the stack in $MILLIONS_HOME"
up_small_stack bench-login-flood "$RANGE" 1
say "seeding 2000 users"
"$MILLIONS" seed --home "$MILLIONS_HOME" --users 2000 >"$RUN/seed.log" 2>&1 || {
    cat "$RUN/seed.log" >&2
    die "millions seed failed"
}

# The second web server: the topology's configuration, its own address, and
# 127.0.0.1 (where wrk connects from) trusted as a proxy.
sed -e "s/^listen = .*/listen = \"$WEB\"/" -e 's/^trusted_proxies = .*/trusted_proxies = ["127.0.0.1"]/' \
    "$MILLIONS_HOME/nodes/dc1-web-1.toml" >"$RUN/web.toml"
grep -q '^trusted_proxies = \["127.0.0.1"\]' "$RUN/web.toml" || die "the web configuration has no trusted_proxies line"
"$MILLIONS" web --config "$RUN/web.toml" >"$RUN/web.log" 2>&1 &
WEB_PID=$!
wait_http "$WEB" /readyz
curl -fsS -o /dev/null "http://$WEB/api/v1/users/user1" || die "the profile read fails"
code="$(curl -sS -o /dev/null -w '%{http_code}' -H 'content-type: application/json' \
    --data '{"username":"user1","password":"password123"}' "http://$WEB/api/v1/sessions")"
[ "$code" = 201 ] || die "a seeded user cannot log in (HTTP $code)"

# The Lua scripts: a status count per thread, gathered in done().
cat >"$RUN/count.lua" <<'LUA'
local threads = {}
function setup(thread)
    thread:set("id", #threads + 1)
    table.insert(threads, thread)
end
counts = {}
function response(status, headers, body)
    counts[status] = (counts[status] or 0) + 1
end
function done(summary, latency, requests)
    local total = {}
    for _, t in ipairs(threads) do
        for status, n in pairs(t:get("counts")) do total[status] = (total[status] or 0) + n end
    end
    local line = "statuses:"
    for status, n in pairs(total) do line = line .. " " .. status .. "=" .. n end
    print(line)
end
LUA
# Returning users (user0..user99) log in once now, from a device that becomes known
# (the `did` cookie); new users (user100..user999) never send one.
say "logging in 100 returning users once, keeping their device cookies"
{
    echo "devices = {"
    for u in $(seq 0 99); do
        did="$(curl -sS -D - -o /dev/null -H 'content-type: application/json' -H "x-forwarded-for: 192.0.2.$((u + 1))" \
            --data "{\"username\":\"user$u\",\"password\":\"password123\"}" "http://$WEB/api/v1/sessions" |
            sed -n 's/^[Ss]et-[Cc]ookie: \(did=[^;]*\);.*/\1/p')"
        [ -n "$did" ] || die "user$u got no device cookie"
        echo "  \"$did\","
    done
    echo "}"
} >"$RUN/devices.lua"
cat "$RUN/count.lua" "$RUN/devices.lua" - >"$RUN/logins.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local known = os.getenv("LOGINS") == "known"
local i = 0
function request()
    i = i + 1
    local user
    if known then
        user = i % 100
        wrk.headers["Cookie"] = devices[user + 1]
    else
        user = 100 + i % 900
    end
    wrk.headers["X-Forwarded-For"] = "192.0.2." .. (user % 250 + 1)
    return wrk.format(nil, "/api/v1/sessions", nil,
        '{"username":"user' .. user .. '","password":"password123"}')
end
LUA
cat "$RUN/count.lua" - >"$RUN/flood.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local mode = os.getenv("FLOOD_MODE")
local i = 0
function request()
    i = i + 1
    local who, name
    if mode == "one-address" then
        who, name = "198.51.100.66", "user" .. (1000 + i % 1000)
    else
        who = "10." .. id .. "." .. (math.floor(i / 250) % 250) .. "." .. (i % 250 + 1)
        name = "guess" .. id .. "x" .. i
    end
    wrk.headers["X-Forwarded-For"] = who
    return wrk.format(nil, "/api/v1/sessions", nil, '{"username":"' .. name .. '","password":"hunter2hunter2"}')
end
LUA

# wrk output -> "rps p99_us statuses..."
summarize() {
    awk '
        function us(v) { if (v ~ /us$/) return v+0; if (v ~ /ms$/) return v*1000; if (v ~ /s$/) return v*1000000; return v }
        /^ +99%/ { p99 = us($2) } /^Requests\/sec/ { rps = $2 } /^statuses:/ { $1 = ""; st = $0 }
        END { printf "%s %s%s\n", rps, p99, st }' "$1"
}

PHASES=(none one-address distributed)
RESULTS="$RUN/results.txt"
: >"$RESULTS"
for phase in "${PHASES[@]}"; do
    say "phase $phase: $DURATION"
    pids=()
    wrk -t1 -c"$READ_CONNECTIONS" -d"$DURATION" --latency "http://$WEB/api/v1/users/user1" >"$RUN/reads-$phase.txt" &
    pids+=($!)
    for kind in known new; do
        LOGINS=$kind wrk -t1 -c1 -d"$DURATION" --latency -s "$RUN/logins.lua" "http://$WEB" >"$RUN/$kind-$phase.txt" &
        pids+=($!)
    done
    if [ "$phase" != none ]; then
        FLOOD_MODE="$phase" wrk -t2 -c"$FLOOD_CONNECTIONS" -d"$DURATION" --latency -s "$RUN/flood.lua" \
            "http://$WEB" >"$RUN/flood-$phase.txt" &
        pids+=($!)
    fi
    for p in "${pids[@]}"; do wait "$p" || die "wrk failed in phase $phase"; done
    printf '%s reads %s\n' "$phase" "$(summarize "$RUN/reads-$phase.txt")" >>"$RESULTS"
    for kind in known new; do
        printf '%s %s %s\n' "$phase" "$kind" "$(summarize "$RUN/$kind-$phase.txt")" >>"$RESULTS"
    done
    [ "$phase" != none ] && printf '%s flood %s\n' "$phase" "$(summarize "$RUN/flood-$phase.txt")" >>"$RESULTS"
    # Let the flood's last answers drain before the next phase.
    sleep 2
done

python3 - "$RESULTS" "$(nproc)" "$FLOOD_CONNECTIONS" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    f = line.split()
    phase, load, rps, p99 = f[0], f[1], float(f[2]), float(f[3])
    statuses = dict(s.split("=") for s in f[4:])
    rows[(phase, load)] = (rps, p99, statuses)
base = {load: rows[("none", load)] for load in ["reads", "known", "new"]}
print(f"\nLogins and reads under a password-guessing flood ({sys.argv[3]} connections), {sys.argv[2]} CPUs")
print("| flood | known-device logins/s | ratio | p99 | new-device logins/s | ratio | p99 | refused | reads/s | ratio | read p99 | ratio | flood answers/s | flood answers |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
for phase in ["none", "one-address", "distributed"]:
    cells = [phase]
    refused = 0
    for load in ["known", "new"]:
        r, p, st = rows[(phase, load)]
        refused += sum(int(n) for s, n in st.items() if s != "201")
        cells += [f"{r:.1f}", f"{r / base[load][0]:.2f}x", f"{p / 1000:.0f} ms"]
    cells.append(str(refused))
    rr, rp, _ = rows[(phase, "reads")]
    cells += [f"{rr:.0f}", f"{rr / base['reads'][0]:.2f}x", f"{rp / 1000:.2f} ms", f"{rp / base['reads'][1]:.2f}x"]
    flood = rows.get((phase, "flood"))
    cells.append(f"{flood[0]:.0f}" if flood else "-")
    cells.append(", ".join(f"{s}: {n}" for s, n in sorted(flood[2].items())) if flood else "-")
    print("| " + " | ".join(cells) + " |")
PY
