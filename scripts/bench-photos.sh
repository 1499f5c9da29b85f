#!/usr/bin/env bash
# Benchmark the photo pipeline and the job queue, each against an anchor measured
# in the same run on the same machine, and print Markdown for docs/BENCHMARKS.md.
#
#   bash scripts/bench-photos.sh
#   BENCH_BUILD=0 bash scripts/bench-photos.sh   # use the examples as they are built
#
# Two release examples of the worker crate (see their module docs):
#
#   bench_thumbs  media::thumbnails on a synthetic 12 MP photo (one thread) against
#                 libvips' vipsthumbnail making the same three sizes
#                 (VIPS_CONCURRENCY=1); then a real worker (testkit PostgreSQL,
#                 Redis, object store) draining photo jobs at concurrency 1 and 2
#   bench_queue   claim + complete of empty jobs through the data layer, K = 1, 4, 16
#                 concurrent claimers, against the same number of plain round trips
#                 (two single-row UPDATEs per job); on testkit's PostgreSQL (fsync
#                 off) and on a durable one (fsync on)
#
# Both start their own PostgreSQL and Redis servers (testkit: free ports, temporary
# directories, removed at exit), so a running `make up` is never touched.
#
# Environment (all optional; passed through to the examples):
#   BENCH_ROUNDS=3                interleaved rounds (medians reported), both examples
#   BENCH_THUMBS_ITERS=10         thumbnail jobs of ours per round
#   BENCH_VIPS_BATCH=24           thumbnail jobs of vipsthumbnail per round
#   BENCH_E2E_JOBS=12             photo jobs per real-worker run
#   BENCH_E2E_CONCURRENCY=1,2     worker concurrencies to run
#   BENCH_QUEUE_JOBS=20000        jobs per queue run (fsync-off server)
#   BENCH_QUEUE_DURABLE_JOBS=2000 jobs per queue run (durable server)
#   BENCH_QUEUE_CLAIMERS=1,4,16   concurrent claimers
#   BENCH_QUEUE_DEPTHS=1000,5000,20000   backlogs of the one-claimer table
#   BENCH_QUEUE_DURABLE=1         0: skip the durable server
#   BENCH_ONLY=                   thumbs | queue: run only one of the two
#   BENCH_BUILD=1                 0: do not run `cargo build`
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say() { printf 'bench: %s\n' "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }

ONLY="${BENCH_ONLY:-}"
case "$ONLY" in '' | thumbs | queue) ;; *) die "BENCH_ONLY must be thumbs or queue, not '$ONLY'" ;; esac

# Prerequisites. PostgreSQL and Redis come from scripts/setup.sh (make setup);
# libvips is only needed here, so setup.sh does not install it.
command -v cargo >/dev/null || die "cargo is not installed (run: make setup)"
if [ "$ONLY" != queue ] && ! command -v "${VIPSTHUMBNAIL:-vipsthumbnail}" >/dev/null; then
    die "vipsthumbnail (libvips) is not installed; it is the anchor of the thumbnail benchmark.
       Install it with: apt-get install libvips-tools   (or run with BENCH_ONLY=queue)"
fi
command -v redis-server >/dev/null || die "redis-server is not installed (run: make setup)"
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null \
    || die "PostgreSQL is not installed (run: make setup)"

examples=()
[ "$ONLY" != queue ] && examples+=(--example bench_thumbs)
[ "$ONLY" != thumbs ] && examples+=(--example bench_queue)
if [ "${BENCH_BUILD:-1}" = 1 ]; then
    locked=()
    [ -f Cargo.lock ] && locked=(--locked)
    say "cargo build --release ${locked[*]} -p worker ${examples[*]} (a no-op when up to date)"
    cargo build --quiet --release "${locked[@]}" -p worker "${examples[@]}"
fi
BIN="$ROOT/target/release/examples"
for e in bench_thumbs bench_queue; do
    if [ "$ONLY" = "" ] || [ "$ONLY" = "${e#bench_}" ]; then
        [ -x "$BIN/$e" ] || die "$BIN/$e is missing; run: cargo build --release -p worker --example $e"
    fi
done

cpu_model="$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
[ -n "$cpu_model" ] || cpu_model="$(uname -m)"
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git status --porcelain 2>/dev/null)" ]; then commit="$commit (with local changes)"; fi
settings=""
for v in BENCH_ROUNDS BENCH_THUMBS_ITERS BENCH_VIPS_BATCH BENCH_E2E_JOBS BENCH_E2E_CONCURRENCY \
    BENCH_QUEUE_JOBS BENCH_QUEUE_DURABLE_JOBS BENCH_QUEUE_CLAIMERS BENCH_QUEUE_DEPTHS BENCH_QUEUE_DURABLE BENCH_ONLY; do
    [ -n "${!v:-}" ] && settings+="$v=${!v} "
done
vips_version="not used"
[ "$ONLY" != queue ] && vips_version="$("${VIPSTHUMBNAIL:-vipsthumbnail}" --vips-version 2>/dev/null | head -n1)"

echo "### Run of $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "- command: \`${settings}bash scripts/bench-photos.sh\`"
echo "- machine: $(nproc) CPUs, $cpu_model; $(uname -sr); load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- build: release, commit $commit; $(rustc --version 2>/dev/null || echo 'rustc ?'); anchor: $vips_version"
echo

if [ "$ONLY" != queue ]; then
    say "bench_thumbs (about 3 minutes with the defaults)"
    "$BIN/bench_thumbs"
fi
if [ "$ONLY" != thumbs ]; then
    say "bench_queue (about 11 minutes with the defaults)"
    "$BIN/bench_queue"
fi
echo "- load average after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
