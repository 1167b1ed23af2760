#!/usr/bin/env bash
# The Calyx demo on one machine. Installs what it needs, builds, starts a private etcd, applies
# the example resources from deploy/examples/ with `calyx apply` and shows them back with
# `calyx get`, then waits. Ctrl-C, or `deploy/demo.sh down` from another shell, removes
# everything it started.
#
# It grows with the project: the node daemon, BGP and the 3-node cluster in network namespaces
# join it as they land (see README "Status").
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=/tmp/calyx-demo

down() {
    if [ -f "$STATE/etcd.pid" ]; then
        kill "$(cat "$STATE/etcd.pid")" 2>/dev/null || true
    fi
    rm -rf "$STATE"
    echo "demo: removed everything it started"
}

if [ "${1:-}" = "down" ]; then
    down
    exit 0
fi

need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
if [ ${#need[@]} -gt 0 ]; then
    echo "==> installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

echo "==> building calyx"
cargo build --release -q -p calyx
CALYX="$PWD/target/release/calyx"

down >/dev/null 2>&1 || true
mkdir -p "$STATE"
trap 'echo; down' EXIT INT TERM
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
peer=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
etcd --name demo --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "demo=http://127.0.0.1:$peer" --log-level error >"$STATE/etcd.log" 2>&1 &
echo $! >"$STATE/etcd.pid"
export ETCD_ENDPOINTS="http://127.0.0.1:$port"
for _ in $(seq 1 100); do
    etcdctl --endpoints "$ETCD_ENDPOINTS" endpoint health >/dev/null 2>&1 && break
    sleep 0.1
done

echo "==> etcd at $ETCD_ENDPOINTS"
echo "\$ calyx apply -f deploy/examples/ippools.yaml"; "$CALYX" apply -f deploy/examples/ippools.yaml
echo "\$ calyx apply -f deploy/examples/bgp.yaml"; "$CALYX" apply -f deploy/examples/bgp.yaml
echo "\$ calyx get ippools -o wide"; "$CALYX" get ippools -o wide
echo "\$ calyx get bgppeers"; "$CALYX" get bgppeers
echo "\$ calyx get bgpconfigurations"; "$CALYX" get bgpconfigurations
echo "\$ calyx patch ippool default-ipv4-ippool -p '{\"spec\":{\"vxlanMode\":\"Never\"}}'"
"$CALYX" patch ippool default-ipv4-ippool -p '{"spec":{"vxlanMode":"Never"}}'
"$CALYX" get ippools -o wide
echo
echo "Try it: ETCD_ENDPOINTS=$ETCD_ENDPOINTS $CALYX get ippools -o yaml"
if [ -t 0 ]; then
    echo "Ctrl-C to stop and clean up."
    while true; do sleep 3600; done
fi
