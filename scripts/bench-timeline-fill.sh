#!/usr/bin/env bash
# A timeline's fill in Redis: 800 ids added to a sorted set by one script call,
# with one `ZADD` per id (how `cache::Timelines` filled a rebuilt timeline before)
# against variadic `ZADD`s of 256 ids (how it does now), each run ROUNDS times on
# a Redis of its own, alternating; Redis's time per call from `INFO commandstats`
# (docs/BENCHMARKS.md, "A timeline's fill in one `ZADD` per 256 ids").
#
#   bash scripts/bench-timeline-fill.sh      # ROUNDS=300 IDS=800
set -euo pipefail

ROUNDS="${ROUNDS:-300}"
IDS="${IDS:-800}"
command -v redis-server >/dev/null || { echo "bench-timeline-fill: redis-server is not installed" >&2; exit 1; }
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ && "$IDS" =~ ^[1-9][0-9]*$ ]] || {
    echo "bench-timeline-fill: ROUNDS and IDS must be whole numbers (got '$ROUNDS', '$IDS')" >&2
    exit 1
}

RUN="$(mktemp -d)"
SOCK="$RUN/redis.sock"
redis-server --port 0 --unixsocket "$SOCK" --save '' --appendonly no --daemonize yes \
    --logfile "$RUN/redis.log" --pidfile "$RUN/redis.pid"
trap 'redis-cli -s "$SOCK" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$RUN"' EXIT
for _ in $(seq 50); do redis-cli -s "$SOCK" ping >/dev/null 2>&1 && break; sleep 0.1; done

# Both end by deleting the timeline, so that every call fills an empty one (as a
# cold timeline's rebuild does); the deletion's cost is in both.
HEAD="redis.call('ZADD', KEYS[1], 0, '!')"
TAIL="redis.call('ZREM', KEYS[1], ARGV[4]) redis.call('ZADD', KEYS[1], 0, ARGV[3])
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(tonumber(ARGV[1]) + 2))
  redis.call('EXPIRE', KEYS[1], ARGV[2]) redis.call('DEL', KEYS[1]) return 1"
PER_ID="$HEAD for i = 5, #ARGV do redis.call('ZADD', KEYS[1], 0, ARGV[i]) end $TAIL"
CHUNKED="$HEAD local args = {}
  for i = 5, #ARGV do
    args[#args + 1] = 0; args[#args + 1] = ARGV[i]
    if #args == 512 then redis.call('ZADD', KEYS[1], unpack(args)); args = {} end
  end
  if #args > 0 then redis.call('ZADD', KEYS[1], unpack(args)) end $TAIL"
mapfile -t MEMBERS < <(for i in $(seq 1 "$IDS"); do printf '%019d\n' $((7000000000000000000 + i * 1000003)); done)

per_call() {
    redis-cli -s "$SOCK" config resetstat >/dev/null
    redis-cli -s "$SOCK" -r "$ROUNDS" eval "$1" 1 tl:1 800 600 '~' '!' "${MEMBERS[@]}" >/dev/null
    redis-cli -s "$SOCK" info commandstats | sed -n 's/^cmdstat_eval:.*usec_per_call=\([0-9.]*\).*/\1/p'
}

printf '| round | one ZADD per id (µs per fill) | one ZADD per 256 ids (µs per fill) | ratio |\n|---:|---:|---:|---:|\n'
for round in 1 2; do
    old="$(per_call "$PER_ID")"
    new="$(per_call "$CHUNKED")"
    awk -v r="$round" -v o="$old" -v n="$new" 'BEGIN { printf "| %s | %s | %s | %.2f× |\n", r, o, n, n / o }'
done
