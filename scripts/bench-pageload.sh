#!/usr/bin/env bash
# Page load of the home feed with and without the CDN edge (issue 23,
# docs/BENCHMARKS.md "CDN edge: page load").
#
#   bash scripts/bench-pageload.sh
#   BENCH_BUILD=0 bash scripts/bench-pageload.sh   # use the binaries as they are built
#
# A topology of its own: the `single` preset (a load balancer, a web server, a
# worker, a Redis, a DNS server, a CDN edge, one shard) moved to
# BENCH_RANGE.0/24, in a temporary run directory. A poster uploads BENCH_PHOTOS
# photos (1600x1200 JPEGs); a viewer follows them. Then headless Chromium
# (chromedriver; `crates/millions/examples/pageload.rs`) loads the viewer's home
# feed over HTTPS at the load balancer BENCH_LOADS times, each in a fresh
# profile (a first visit: nothing from the browser's cache):
#
#   cdn     the photos from the edge, its cache warm (one load before, not counted)
#   origin  every edge stopped (`millions chaos stop`): the web server's own
#           /media/, once the web server has withdrawn the edge from its pages
#
# For each: the median load event (navigation start to `load`), the median time
# the last image of the page arrived, the images the page fetched (those below
# the fold are lazy and not fetched), and the requests the web server served per
# page load (the origin's load). Everything runs on this machine's loopback: the
# CDN's gain here is the origin's load, not distance.
#
# Environment (all optional): BENCH_PHOTOS=20  BENCH_LOADS=9  BENCH_RANGE=127.0.243
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PHOTOS="${BENCH_PHOTOS:-20}"
LOADS="${BENCH_LOADS:-9}"
RANGE="${BENCH_RANGE:-127.0.243}"
MILLIONS="${MILLIONS:-$ROOT/target/release/millions}"
PAGELOAD="${PAGELOAD:-$ROOT/target/release/examples/pageload}"

say() { echo "bench-pageload: $*" >&2; }
die() { say "$*"; exit 1; }
# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"
require "apt-get install chromium chromium-driver python3" chromedriver chromium python3
build_millions --example pageload
[ -x "$PAGELOAD" ] || die "$PAGELOAD is missing: cargo build --release -p millions --example pageload"

HOME_DIR="$(mktemp -d "${TMPDIR:-/tmp}/millions-pageload.XXXXXX")"
chmod 755 "$HOME_DIR"
export MILLIONS_HOME="$HOME_DIR"
trap own_stack_cleanup EXIT
sed "s/127\.0\.1\./$RANGE./g" crates/topology/presets/single.toml > "$HOME_DIR/topology.toml"
say "millions up (single preset on $RANGE.0/24)"
"$MILLIONS" up --topology "$HOME_DIR/topology.toml" --unsafe-fast-storage > "$HOME_DIR/up.log" 2>&1 ||
    die "millions up failed: $(tail -20 "$HOME_DIR/up.log")"

LB="$(nodes_of lb | head -1)"
WEB="$(nodes_of web | head -1)"
EDGE="$(nodes_of cdn | head -1)"
HTTPS_PORT="$(python3 -c 'import tomllib,sys; print(tomllib.load(open(sys.argv[1],"rb")).get("ports",{}).get("https",8443))' "$HOME_DIR/topology.toml")"
BASE="https://${LB%:*}:$HTTPS_PORT"
METRICS="http://$WEB/metrics"

say "uploading $PHOTOS photos and waiting for their thumbnails"
VIEWER="$("$PAGELOAD" "$HOME_DIR" "$BASE" "$METRICS" "$PHOTOS" "$LOADS" prepare)"

edge_healthy() { curl -s "$METRICS" | awk '/^millions_cdn_edge_healthy\{/ { print $2 }' | head -1; }
wait_edge() {
    local deadline=$((SECONDS + 30))
    until [ "$(edge_healthy)" = "$1" ]; do
        [ $SECONDS -lt $deadline ] || die "the web server did not see the edge as $1 within 30 s"
        sleep 0.2
    done
}

wait_edge 1
say "priming the edge (one load, not counted)"
"$PAGELOAD" "$HOME_DIR" "$BASE" "$METRICS" "$PHOTOS" 1 measure "$VIEWER" > /dev/null
say "$LOADS loads with the photos from the edge ($EDGE)"
CDN="$("$PAGELOAD" "$HOME_DIR" "$BASE" "$METRICS" "$PHOTOS" "$LOADS" measure "$VIEWER")"
"$MILLIONS" chaos stop dc1-cdn-1 > /dev/null
wait_edge 0
say "$LOADS loads with the photos from the origin (edge stopped)"
ORIGIN="$("$PAGELOAD" "$HOME_DIR" "$BASE" "$METRICS" "$PHOTOS" "$LOADS" measure "$VIEWER")"

python3 - "$CDN" "$ORIGIN" "$PHOTOS" "$LOADS" "$(git rev-parse --short HEAD)" <<'PY'
import json, sys
cdn, origin = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"Home feed of {sys.argv[3]} photo posts, {sys.argv[4]} loads each, fresh profile per load, at {sys.argv[5]}:\n")
print("| photos from | load event p50 | last image p50 | images fetched | web-server requests per load |")
print("|---|---|---|---|---|")
for name, r in (("CDN edge (warm)", cdn), ("origin (edge stopped)", origin)):
    print(f"| {name} | {r['load_event_ms_p50']:.0f} ms | {r['last_image_ms_p50']:.0f} ms | {r['images_p50']:.0f} | {r['web_requests_per_load_p50']:.0f} |")
print(f"\nratio CDN / origin: load event {cdn['load_event_ms_p50'] / origin['load_event_ms_p50']:.2f}x, "
      f"web-server requests {cdn['web_requests_per_load_p50'] / max(origin['web_requests_per_load_p50'], 1):.2f}x")
PY
