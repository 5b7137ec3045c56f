#!/usr/bin/env bash
# The whole test suite, on a fresh Debian 12 machine or a developer's: installs what the tests
# need (C toolchain bits for RocksDB, the real Prometheus, Alertmanager and exporters for interop, Chromium
# and Node for the UI browser test, the openssl CLI for the TLS tests' certificates, psql for the Postgres wire protocol, dnsmasq for DNS discovery, whose test serves port 53 and so runs as root), builds the binary the end-to-end tests drive, then runs
# every test in the workspace with one build profile.
set -euo pipefail
cd "$(dirname "$0")/.."

need_debs=()
for pkg in libclang-dev prometheus prometheus-alertmanager prometheus-node-exporter prometheus-blackbox-exporter prometheus-pushgateway chromium openssl postgresql-client dnsmasq-base; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_debs+=("$pkg")
done
# Node runs the browser tests (tests/ui); any Node >= 18 with npm will do, Debian's included.
command -v node >/dev/null && command -v npm >/dev/null || need_debs+=(nodejs npm)
if ((${#need_debs[@]})); then
  echo "installing Debian packages: ${need_debs[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_debs[@]}" >/dev/null
fi

# Outside the clone so a fresh checkout reuses the compiled dependencies (RocksDB's C++ alone
# takes ~10 minutes on 2 cores).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/novamon-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# Real clients for the OTLP and forward tests: the OpenTelemetry Python SDK and its OTLP
# exporters, and fluent-logger, at the exact versions of tests/requirements.txt, in one venv
# outside the clone (tests find it at $NOVAMON_VENV).
export NOVAMON_VENV="${NOVAMON_VENV:-$HOME/.cache/novamon-venv}"
[ -x "$NOVAMON_VENV/bin/python" ] || python3 -m venv "$NOVAMON_VENV"
"$NOVAMON_VENV/bin/pip" install -q -r tests/requirements.txt

# Playwright (playwright-core only: it drives the Debian chromium, downloads no browser), from
# the lockfile.
(cd tests/ui && npm ci --no-audit --no-fund --loglevel=error)

# Formatting first: it costs nothing and fails fast. Then lints, as errors, on every target
# (tests, benches, fuzz harnesses): a check build that shares the build scripts' output (RocksDB's
# C++) with the build below.
cargo fmt --all --check
cargo clippy --locked --workspace --all-targets -- -D warnings
# The binary the end-to-end tests drive. Built for the whole workspace, so its dependencies are
# resolved with the same features as the tests' and shared with them (a `-p` build resolves
# them apart and compiles RocksDB a second time).
cargo build --locked --workspace --bins
cargo test --locked --workspace --no-fail-fast "$@"
