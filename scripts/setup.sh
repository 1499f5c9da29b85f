#!/usr/bin/env bash
# Make this machine (Debian 12) ready to build, run and test Millions.
#
# Idempotent and quick when everything is present: it only looks (command -v,
# dpkg-query) and calls apt-get when something is missing.
#
#   scripts/setup.sh          what `make up` needs
#   scripts/setup.sh test     the same, plus rustfmt and clippy, headless Chromium
#                             with chromedriver for the browser test, and Prometheus'
#                             promtool for the metrics checks (what `make test` needs)
#
# Also fetches uPlot (the dashboard's charts) from the npm registry into .cache/,
# checked against crates/control/assets/uplot.pin (the build embeds it from there).
#
# Needs: PostgreSQL server 15+, redis-server, cmake, pkg-config, a C toolchain and
# make (build-essential), curl, wrk (benchmarks), and a Rust toolchain (cargo).
# Tests also need chromium and chromium-driver (crates/web/tests/browser.rs), and
# prometheus for its promtool (crates/millions/tests/dashboard.rs checks every node's
# /metrics and the Prometheus files `up` writes with it).
# The Rust toolchain is only checked: rustup must be installed by hand.
#
# Environment (mostly for testing this script):
#   SETUP_REQUIRE_EXTRA="pkg ..."  extra Debian packages to require (installed if absent)
#   SETUP_APT_LOCK_TIMEOUT=120     seconds to wait for another apt/dpkg to finish
set -euo pipefail

MODE="${1:-run}"
case "$MODE" in
  run | test) ;;
  *) echo "usage: $0 [test]" >&2; exit 2 ;;
esac

LOCK_TIMEOUT="${SETUP_APT_LOCK_TIMEOUT:-120}"
PG_MIN=15
RUST_MIN=1.85 # workspace rust-version

say() { echo "setup: $*"; }
die() { echo "setup: error: $*" >&2; exit 1; }

have() { command -v "$1" >/dev/null 2>&1; }

pkg_installed() {
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

# Newest PostgreSQL major version whose server binaries are present (0 if none).
pg_version() {
  local best=0 v d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ] || continue
    v="${d#/usr/lib/postgresql/}"
    v="${v%/bin}"
    [[ "$v" =~ ^[0-9]+$ ]] && [ "$v" -gt "$best" ] && best="$v"
  done
  if [ "$best" -lt "$PG_MIN" ] && have initdb && have pg_ctl; then
    v="$(initdb --version 2>/dev/null | sed -n 's/.* \([0-9][0-9]*\)[.0-9]*.*/\1/p' | head -n1)"
    [[ "$v" =~ ^[0-9]+$ ]] && [ "$v" -gt "$best" ] && best="$v"
  fi
  echo "$best"
}

# ---------------------------------------------------------------- Debian packages

if ! { [ -r /etc/debian_version ] && have dpkg-query; }; then
  say "warning: this is not a Debian-like system; only Debian 12 is supported"
fi

missing=()
need() { missing+=("$1"); }

pg_before="$(pg_version)"
[ "$pg_before" -ge "$PG_MIN" ] || need postgresql
have redis-server || need redis-server
have cmake || need cmake
have pkg-config || need pkg-config
{ have cc && have c++ && have make; } || need build-essential
have curl || need curl
have wrk || need wrk
if [ "$MODE" = test ]; then
  # crates/web/tests/browser.rs drives /usr/bin/chromium through /usr/bin/chromedriver.
  [ -x /usr/bin/chromium ] || need chromium
  [ -x /usr/bin/chromedriver ] || need chromium-driver
  # crates/millions/tests/dashboard.rs runs `promtool check metrics|config`.
  have promtool || need prometheus
fi
for p in ${SETUP_REQUIRE_EXTRA:-}; do
  pkg_installed "$p" || need "$p"
done

installed_postgresql=0
if [ "${#missing[@]}" -eq 0 ]; then
  present="PostgreSQL $pg_before, redis-server, cmake, pkg-config, cc, make, curl, wrk"
  [ "$MODE" = test ] && present="$present, chromium, chromedriver, promtool"
  say "system packages: all present ($present)"
else
  say "missing Debian packages: ${missing[*]}"
  have apt-get || die "apt-get not found; install these packages by hand: ${missing[*]}"

  apt_opts=(-o "DPkg::Lock::Timeout=$LOCK_TIMEOUT")
  install_cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"
  if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
  elif have sudo; then
    say "setup needs root to install: ${missing[*]} — running sudo apt-get ..."
    # Without a terminal sudo cannot ask for a password: fail fast instead of hanging.
    if [ -t 0 ]; then
      SUDO=(sudo)
    else
      SUDO=(sudo -n)
      sudo -n true 2>/dev/null ||
        die "sudo needs a password and there is no terminal; run as root:  $install_cmd"
    fi
  else
    echo "setup: error: setup needs root to install: ${missing[*]}" >&2
    echo "setup: run as root:  $install_cmd" >&2
    echo "setup: then run this again (or 'make up' / 'make test')." >&2
    exit 1
  fi

  # Another apt/dpkg may be running (unattended upgrades, another install): wait for
  # it a bounded time. `install` honours DPkg::Lock::Timeout; `update` is retried.
  say "apt-get update"
  deadline=$((SECONDS + LOCK_TIMEOUT))
  until "${SUDO[@]}" apt-get "${apt_opts[@]}" -qq update; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      say "warning: apt-get update failed; trying the install with the package lists as they are"
      break
    fi
    say "apt-get update failed (apt busy?), retrying in 5s"
    sleep 5
  done

  log="$(mktemp "${TMPDIR:-/tmp}/millions-setup-apt.XXXXXX")"
  say "apt-get install ${missing[*]} (log: $log)"
  if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get "${apt_opts[@]}" install -y -q --no-install-recommends "${missing[@]}" >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "apt-get install failed (full log: $log); to retry by hand run as root:  $install_cmd"
  fi
  rm -f "$log"

  for p in "${missing[@]}"; do
    [ "$p" = postgresql ] && installed_postgresql=1
  done
fi

# ---------------------------------------------------------------- PostgreSQL

pg_now="$(pg_version)"
[ "$pg_now" -ge "$PG_MIN" ] ||
  die "PostgreSQL $PG_MIN+ server binaries not found (looked in /usr/lib/postgresql/*/bin and PATH)"

# The Debian package creates and starts a cluster on port 5432 that Millions does not
# use (it runs its own clusters). Stop it and keep it from starting again — only when
# we just installed the package, so a cluster someone relies on is never touched.
if [ "$installed_postgresql" -eq 1 ]; then
  if have pg_lsclusters; then
    while read -r ver name _; do
      [ -n "$ver" ] && [ -n "$name" ] || continue
      say "stopping and disabling the default PostgreSQL cluster $ver/$name (not used by Millions)"
      "${SUDO[@]}" pg_ctlcluster "$ver" "$name" stop 2>/dev/null || true
      conf="/etc/postgresql/$ver/$name/start.conf"
      if [ -f "$conf" ]; then
        echo manual | "${SUDO[@]}" tee "$conf" >/dev/null || true
      fi
    done < <(pg_lsclusters -h 2>/dev/null || true)
  fi
  if have systemctl; then
    "${SUDO[@]}" systemctl stop postgresql >/dev/null 2>&1 || true
    "${SUDO[@]}" systemctl disable postgresql >/dev/null 2>&1 || true
  fi
fi

# PostgreSQL refuses to run as root: when we are root, the clusters run as an
# unprivileged user. The Debian package creates `postgres`; make sure it exists.
if [ "$(id -u)" -eq 0 ] && ! getent passwd postgres >/dev/null; then
  say "creating system user 'postgres' to run PostgreSQL"
  useradd --system --user-group --home-dir /var/lib/postgresql --no-create-home \
    --shell /usr/sbin/nologin postgres || die "could not create user 'postgres'"
fi

# ---------------------------------------------------------------- Rust toolchain

if ! have cargo && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
  PATH="${HOME:-/root}/.cargo/bin:$PATH"
  say "note: cargo found in ~/.cargo/bin but not on PATH (the Makefile adds it)"
fi
if ! have cargo; then
  cat >&2 <<'EOF'
setup: error: no Rust toolchain (cargo) found. Install rustup, then run this again:
setup:   curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
setup:   . "$HOME/.cargo/env"
EOF
  exit 1
fi
rust_ver="$(cargo --version | awk '{print $2}')"
if [ "$(printf '%s\n%s\n' "$RUST_MIN" "${rust_ver%%-*}" | sort -V | head -n1)" != "$RUST_MIN" ]; then
  die "Rust $rust_ver is too old (need $RUST_MIN+): run  rustup update stable"
fi
if [ "$MODE" = test ]; then
  cargo fmt --version >/dev/null 2>&1 || die "rustfmt missing: run  rustup component add rustfmt"
  cargo clippy --version >/dev/null 2>&1 || die "clippy missing: run  rustup component add clippy"
  say "rust: cargo $rust_ver with rustfmt and clippy"
else
  say "rust: cargo $rust_ver"
fi

# ---------------------------------------------------------------- uPlot (dashboard charts)

# The controller's dashboard embeds uPlot (crates/control/build.rs). It comes from
# the npm registry at the version and integrity pinned in crates/control/assets/uplot.pin,
# into .cache/ (ignored by git), never into the repository.
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PIN="$ROOT/crates/control/assets/uplot.pin"
uplot_version="$(sed -n 's/^version=//p' "$PIN")"
uplot_integrity="$(sed -n 's/^integrity=//p' "$PIN")"
[ -n "$uplot_version" ] && [[ "$uplot_integrity" == sha512-* ]] || die "$PIN must name a version and a sha512 integrity"
uplot_dir="$ROOT/.cache/uplot-$uplot_version"
if [ -f "$uplot_dir/uPlot.iife.min.js" ] && [ -f "$uplot_dir/uPlot.min.css" ]; then
  say "uPlot $uplot_version: present ($uplot_dir)"
else
  tmp="$(mktemp -d "${TMPDIR:-/tmp}/millions-uplot.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  url="https://registry.npmjs.org/uplot/-/uplot-$uplot_version.tgz"
  say "uPlot $uplot_version: fetching $url"
  curl -fsSL --retry 3 -o "$tmp/uplot.tgz" "$url" || die "fetching $url failed"
  want="$(printf '%s' "${uplot_integrity#sha512-}" | base64 -d | od -An -v -tx1 | tr -d ' \n')"
  got="$(sha512sum "$tmp/uplot.tgz" | cut -d' ' -f1)"
  [ "$want" = "$got" ] || die "uplot-$uplot_version.tgz does not match the integrity pinned in $PIN"
  tar -xzf "$tmp/uplot.tgz" -C "$tmp" package/dist/uPlot.iife.min.js package/dist/uPlot.min.css ||
    die "uplot-$uplot_version.tgz lacks dist/uPlot.iife.min.js or dist/uPlot.min.css"
  mkdir -p "$uplot_dir.part"
  cp "$tmp/package/dist/uPlot.iife.min.js" "$tmp/package/dist/uPlot.min.css" "$uplot_dir.part/"
  rm -rf "$uplot_dir"
  mv "$uplot_dir.part" "$uplot_dir"
  say "uPlot $uplot_version: checked and extracted into $uplot_dir"
fi

say "ready"
