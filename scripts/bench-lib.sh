# Helpers shared by the benchmark scripts (sourced, not run).
#
# The sourcing script sets RUN (its run directory) before calling `port`, and
# defines say/die.

# A benchmark's own stack serves its dashboard on any free port: the fixed default
# address belongs to the user's `make up`, which a benchmark never touches.
export MILLIONS_DASHBOARD="${MILLIONS_DASHBOARD:-127.0.0.1:0}"

# require "HINT" TOOL...: die, naming the tool and HINT (how to install it), unless
# every TOOL is on the PATH.
require() {
    local hint="$1" tool
    shift
    for tool in "$@"; do
        command -v "$tool" >/dev/null || die "$tool is not installed ($hint)"
    done
}

# addr_of NODE: the address of the stack's node NODE (from `millions status`).
addr_of() {
    "$MILLIONS" status --json | python3 -c '
import json, sys
print(next(n["address"] for n in json.load(sys.stdin)["nodes"] if n["name"] == sys.argv[1]))' "$1"
}

# A free port, never one handed out before in this run (the kernel may give the
# same free port twice in a row; it is not in use until its process binds it).
port() {
    python3 -c 'import os, socket, sys
used = set(open(sys.argv[1]).read().split()) if os.path.exists(sys.argv[1]) else set()
while True:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = str(s.getsockname()[1]); s.close()
    if p not in used: break
open(sys.argv[1], "a").write(p + "\n"); print(p)' "$RUN/ports"
}

# wait_http ADDR [PATH]: poll until ADDR answers PATH with a 2xx (10 s at most).
wait_http() {
    for _ in $(seq 200); do curl -fs -o /dev/null "http://$1${2:-/}" && return 0; sleep 0.05; done
    die "nothing answers on $1"
}

# wait_https ADDR CAFILE [PATH]: poll until ADDR answers PATH over HTTPS with a 2xx,
# trusting CAFILE (10 s at most).
wait_https() {
    for _ in $(seq 200); do curl -fs --cacert "$2" -o /dev/null "https://$1${3:-/}" && return 0; sleep 0.05; done
    die "nothing answers HTTPS on $1"
}

# wrk_stats URL CONNECTIONS [HEADER] -> "rps p50_us p99_us": wrk (closed loop,
# BENCH duration $DURATION) against URL.
wrk_stats() {
    local t=2 extra=()
    [ "$2" -lt 2 ] && t=1
    [ -n "${3:-}" ] && extra=(-H "$3")
    wrk -t"$t" -c"$2" -d"$DURATION" --latency "${extra[@]}" "$1" | awk '
        function us(v) { if (v ~ /us$/) return v+0; if (v ~ /ms$/) return v*1000; if (v ~ /s$/) return v*1000000; return v }
        /^ +50%/ { p50 = us($2) } /^ +99%/ { p99 = us($2) } /^Requests\/sec/ { rps = $2 }
        END { printf "%s %s %s\n", rps, p50, p99 }'
}

# The median of the numbers on stdin, one per line.
median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

# haproxy_cfg FILE LISTEN THREADS BACKEND...: HAProxy configured as the benchmarks
# configure every proxy (round robin, keep-alive both ways, one access-log line per
# request to stdout).
haproxy_cfg() {
    local file="$1" listen="$2" threads="$3" i=0
    shift 3
    cat >"$file" <<CFG
global
    nbthread $threads
    log stdout format raw local0
defaults
    mode http
    log global
    option httplog
    option http-keep-alive
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 60s
frontend fe
    bind $listen
    default_backend be
backend be
    balance roundrobin
    http-reuse always
CFG
    for b in "$@"; do i=$((i + 1)); echo "    server b$i $b" >>"$file"; done
}

# lb_toml FILE LISTEN ADMIN THREADS HEALTH_PATH BACKEND...: our load balancer,
# configured alike.
lb_toml() {
    local file="$1" listen="$2" admin="$3" threads="$4" health="$5" list=""
    shift 5
    for b in "$@"; do list="$list${list:+, }\"$b\""; done
    cat >"$file" <<CFG
listen = "$listen"
admin = "$admin"
backends = [$list]
algorithm = "round_robin"
threads = $threads
[health]
path = "$health"
CFG
}

# cpu_ticks PID: the process's user + system CPU so far, in clock ticks (every
# thread's, from /proc/PID/stat; the fields counted after the ")" that ends the
# command name, which may itself hold spaces).
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }

# build_millions [CARGO_ARG...]: `cargo build --release -p millions` (with the
# arguments given, e.g. `-p web --example bare`) unless BENCH_BUILD=0, then check
# that $MILLIONS exists.
build_millions() {
    if [ "${BENCH_BUILD:-1}" = 1 ]; then
        local locked=()
        [ -f Cargo.lock ] && locked=(--locked)
        say "cargo build --release ${locked[*]} -p millions $* (a no-op when up to date)"
        cargo build --quiet --release "${locked[@]}" -p millions "$@"
    fi
    [ -x "$MILLIONS" ] || die "$MILLIONS is missing; run: cargo build --release -p millions"
}

# own_stack NAME RANGE1 RANGE2: a run directory of its own (HOME_DIR, exported as
# MILLIONS_HOME, removed on exit unless BENCH_KEEP=1, its stack stopped) and the
# `default` preset moved to RANGE1.0/24 and RANGE2.0/24 in $HOME_DIR/topology.toml,
# so a running `make up` is never touched.
own_stack() {
    HOME_DIR="$(mktemp -d "${TMPDIR:-/tmp}/millions-$1.XXXXXX")"
    # PostgreSQL runs as its own OS user when started by root: it must enter this dir.
    chmod 755 "$HOME_DIR"
    export MILLIONS_HOME="$HOME_DIR"
    trap own_stack_cleanup EXIT
    python3 - "$ROOT/crates/topology/presets/default.toml" "$HOME_DIR/topology.toml" "$2" "$3" <<'PY'
import sys
text = open(sys.argv[1]).read()
text = text.replace("127.0.1.", sys.argv[3] + ".").replace("127.0.2.", sys.argv[4] + ".")
open(sys.argv[2], "w").write(text)
PY
}
own_stack_cleanup() {
    "$MILLIONS" down >/dev/null 2>&1 || true
    if [ "${BENCH_KEEP:-0}" = 1 ]; then say "run directory kept: $HOME_DIR"; else rm -rf "$HOME_DIR"; fi
}

# wait_whole [healthy]: until every shard has its primary and all its replicas
# streaming (and, with `healthy`, every node answers its health check); 120 s at most.
wait_whole() {
    local deadline=$((SECONDS + 120))
    while [ $SECONDS -lt $deadline ]; do
        if "$MILLIONS" status --json | python3 -c '
import json, sys
s = json.load(sys.stdin)
want = {}
for n in s["nodes"]:
    if n["role"] == "postgres":
        want[n["pg"]["shard"]] = want.get(n["pg"]["shard"], 0) + 1
healthy = sys.argv[1] != "healthy" or all(n["healthy"] for n in s["nodes"])
whole = all(sh["primary"] and len(sh["replicas"]) == want[i] - 1 for i, sh in enumerate(s["cluster"]["shards"]))
sys.exit(0 if healthy and whole else 1)' "${1:-}"; then return 0; fi
        sleep 0.5
    done
    die "the shards did not become whole${1:+ and every node healthy} again within 120 s"
}

# secret NAME: the run directory's secret NAME (secrets.json: redis, postgres, admin).
secret() {
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$HOME_DIR/secrets.json" "$1"
}

# nodes_of ROLE: the address of every node of ROLE in the running stack, a line each.
nodes_of() {
    "$MILLIONS" status --json | python3 -c '
import json, sys
for n in json.load(sys.stdin)["nodes"]:
    if n["role"] == sys.argv[1]: print(n["address"])' "$1"
}

# rcli ADDR ARGS...: redis-cli against the stack's Redis at ADDR, with its password
# (read once).
rcli() {
    local a="$1"
    shift
    : "${REDIS_PASSWORD:=$(secret redis)}"
    REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli -h "${a%:*}" -p "${a##*:}" --no-auth-warning "$@"
}

# up_small_stack NAME RANGE WEBS: write $RUN/topology.toml -- one DC on RANGE.0/24
# (one load balancer, WEBS web servers, one worker, one Redis) and two shards
# (primaries only), like a small production DC -- and `millions up` it in
# $MILLIONS_HOME, its log in $RUN/up.log. Sets STACK_UP=1 once it is up.
up_small_stack() {
    mkdir -p "$MILLIONS_HOME"
    cat >"$RUN/topology.toml" <<TOPOLOGY
name = "$1"
[[dc]]
name = "dc1"
cidr = "$2.0/24"
lb = { count = 1 }
web = { count = $3 }
worker = { count = 1 }
redis = { count = 1 }
[[shard]]
primary = "dc1"
[[shard]]
primary = "dc1"
TOPOLOGY
    "$MILLIONS" up --home "$MILLIONS_HOME" --topology "$RUN/topology.toml" >"$RUN/up.log" 2>&1 || {
        cat "$RUN/up.log" >&2
        die "millions up failed"
    }
    STACK_UP=1
}

# oha_stats URL RATE CONNECTIONS [OHA_FLAG...] -> "p50_us p99_us achieved_rps
# non_2xx_or_errors": oha ($OHA) at a fixed RATE (open loop, latency-corrected) for
# $DURATION.
oha_stats() {
    local out="$RUN/oha.json"
    local url="$1" rate="$2" conn="$3"
    shift 3
    "$OHA" -z "$DURATION" -q "$rate" --latency-correction -c "$conn" --no-tui --output-format json \
        -o "$out" "$@" "$url" >/dev/null 2>&1 || { echo "nan nan 0 -1"; return; }
    python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
p = d["latencyPercentiles"]
codes = d.get("statusCodeDistribution") or {}
ok = sum(n for c, n in codes.items() if c.startswith("2"))
bad = sum(n for c, n in codes.items() if not c.startswith("2"))
# Requests cut by the end of the run are not errors of the target.
errors = sum(n for e, n in (d.get("errorDistribution") or {}).items() if "deadline" not in e)
print(round(p["p50"] * 1e6), round(p["p99"] * 1e6), round(ok / d["summary"]["total"]), bad + errors)' "$out"
}

# field ARRAY KEY1 KEY2 INDEX: the median over $ROUNDS rounds of field INDEX of
# ARRAY[round,KEY1,KEY2] (a run that failed, "nan", left out).
field() {
    local -n results=$1
    for round in $(seq "$ROUNDS"); do echo "${results[$round,$2,$3]}" | awk -v i="$4" '{ print $i }'; done |
        grep -v nan | median
}

# added A B: A - B, as a whole number (latency added over the direct path).
added() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%d", a - b }'; }
