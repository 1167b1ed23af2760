#!/usr/bin/env bash
# The whole Calyx test suite, from a fresh machine: installs what is missing, then runs format,
# lint and every test (unit, property, real etcd, real BGP daemons, network namespaces).
#
#   ./tests/run.sh            everything
#   ./tests/run.sh -- NAME    only tests whose name contains NAME (passed to cargo test)
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the build and the tests need (one list with the demo's, deploy/packages.sh);
# a machine that already has them skips apt entirely.
# shellcheck source=deploy/packages.sh
source deploy/packages.sh
if ! calyx_install_packages "${CALYX_TEST_PACKAGES[@]}"; then
    echo "tests/run.sh: run as root (installs packages, creates network namespaces)" >&2
    exit 1
fi
# The Debian packages start system-wide daemons; the tests start their own instances.
for svc in etcd bird frr; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
        systemctl stop "$svc" || true
    fi
done

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "==> cargo build (every binary: the end-to-end tests run calyx, calyx-cni, calyx-ipam)"
cargo build --workspace --bins --quiet

echo "==> deploy/validate.sh (Kubernetes manifests against the schemas)"
CALYX_BIN="${CARGO_TARGET_DIR:-target}/debug/calyx" deploy/validate.sh

echo "==> cargo test"
cargo test --workspace --no-fail-fast "$@"
