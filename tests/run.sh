#!/usr/bin/env bash
# The whole Calyx test suite, from a fresh machine: installs what is missing, then runs format,
# lint and every test (unit, property, real etcd, real BGP daemons, network namespaces).
#
#   ./tests/run.sh            everything
#   ./tests/run.sh -- NAME    only tests whose name contains NAME (passed to cargo test)
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests drive for real. The package -> command map lets a machine that
# already has them skip apt entirely.
need_pkgs=()
check() { command -v "$2" >/dev/null 2>&1 || need_pkgs+=("$1"); }
check protobuf-compiler protoc
check etcd-server etcd
check etcd-client etcdctl
check bird2 bird
check frr /usr/lib/frr/bgpd
check gobgpd gobgpd
check iproute2 ip
check iputils-ping ping
check tcpdump tcpdump
check python3 python3
check util-linux nsenter
if [ ${#need_pkgs[@]} -gt 0 ]; then
    echo "==> installing ${need_pkgs[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        echo "tests/run.sh: needs root to install ${need_pkgs[*]} (and for network namespaces)" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
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
