#!/usr/bin/env bash
# The Calyx demo: a 3-node cluster on one machine, in network namespaces.
#
#   deploy/demo.sh                    install what is missing, build, start everything, show
#                                     it, wait
#   deploy/demo.sh --etcd-members 3   the same on a 3-member etcd cluster (members on
#                                     10.80.0.1-3), then kill its leader: pods keep pinging, a
#                                     new pod still gets an address, the member comes back
#   deploy/demo.sh down               remove everything the demo started (Ctrl-C does it too)
#
# What it builds (addresses exist only inside the demo's own namespaces):
#
#   cxdemo-u    underlay: bridge br0 10.80.0.1/24, etcd on 10.80.0.1:2379 (and .2, .3)
#   cxdemo-n1   node1 10.80.0.11  `calyx node run` (BGP full mesh)
#   cxdemo-n2   node2 10.80.0.12  `calyx node run`
#   cxdemo-n3   node3 10.80.0.13  `calyx node run`
#   cxdemo-tor  BIRD 2 "top-of-rack" router 10.80.0.254, AS 64513, eBGP to every node
#   cxdemo-pNK  two pods per node, wired by calyx-cni + calyx-ipam as a container runtime does
#
# Then it prints `calyx node status` of each node, `calyx ipam show --show-blocks`, each node's
# Calyx routes, what the ToR learned, and a ping between pods on different nodes.
set -euo pipefail
cd "$(dirname "$0")/.."

STATE=/tmp/calyx-demo
P=cxdemo
NET=10.80.0
POOL=10.81.0.0/16
NODES=(1 2 3)

log() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

down() {
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$P-" || true); do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    done
    rm -rf "$STATE"
}

MEMBERS=1
case "${1:-}" in
    down)
        down
        echo "demo: removed everything it started"
        exit 0 ;;
    --etcd-members)
        MEMBERS=${2:-}
        if [[ ! $MEMBERS =~ ^[135]$ ]]; then
            echo "deploy/demo.sh: --etcd-members takes 1, 3 or 5 (an etcd cluster has an odd size)" >&2
            exit 2
        fi ;;
    "") ;;
    *)
        echo "usage: deploy/demo.sh [--etcd-members 1|3|5 | down]" >&2
        exit 2 ;;
esac
if [ "$(id -u)" -ne 0 ]; then
    echo "deploy/demo.sh: run as root (network namespaces)" >&2
    exit 1
fi

# shellcheck source=deploy/packages.sh
source deploy/packages.sh
calyx_install_packages "${CALYX_DEMO_PACKAGES[@]}"

log "building calyx, calyx-cni, calyx-ipam (release)"
cargo build --release -q -p calyx -p calyx-cni
BIN="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release"
CALYX="$BIN/calyx"

down
mkdir -p "$STATE"
trap 'echo; log "cleaning up"; down' EXIT
trap 'exit 130' INT TERM

in_ns() { local ns=$1; shift; ip netns exec "$P-$ns" "$@"; }

log "underlay, etcd ($MEMBERS member(s))"
ip netns add "$P-u"
in_ns u ip link set lo up
in_ns u ip link add br0 type bridge
in_ns u ip addr add "$NET.1/24" dev br0
in_ns u ip link set br0 up
# Member m listens on $NET.m (the bridge's own address and, for more members, extra addresses).
CLUSTER= ENDPOINTS=()
for m in $(seq 1 "$MEMBERS"); do
    [ "$m" -gt 1 ] && in_ns u ip addr add "$NET.$m/24" dev br0
    CLUSTER+="${CLUSTER:+,}etcd$m=http://$NET.$m:2380"
    ENDPOINTS+=("http://$NET.$m:2379")
done
declare -A ETCD_PID
start_member() {
    # Not through in_ns: `ip netns exec` becomes etcd itself, so $! is etcd's PID (killed below).
    ip netns exec "$P-u" etcd --name "etcd$1" --data-dir "$STATE/etcd$1" \
        --listen-client-urls "http://$NET.$1:2379" --advertise-client-urls "http://$NET.$1:2379" \
        --listen-peer-urls "http://$NET.$1:2380" --initial-advertise-peer-urls "http://$NET.$1:2380" \
        --initial-cluster "$CLUSTER" --initial-cluster-state "$2" \
        --log-level error >>"$STATE/etcd$1.log" 2>&1 &
    ETCD_PID[$1]=$!
    # Killed on purpose below and at cleanup: no "Killed" job report from bash.
    disown "${ETCD_PID[$1]}"
}
for m in $(seq 1 "$MEMBERS"); do start_member "$m" new; done
# Every client (daemons, CNI plugins, CLI) gets every member and fails over between them.
ETCD_ENDPOINTS=$(IFS=,; echo "${ENDPOINTS[*]}")
export ETCD_ENDPOINTS
for _ in $(seq 1 150); do
    in_ns u etcdctl --endpoints "$ETCD_ENDPOINTS" endpoint health >/dev/null 2>&1 && break
    sleep 0.1
done

attach() { # attach NS-SUFFIX IFNAME ADDRESS
    ip link add "$P-h$1" type veth peer name "$2" netns "$P-$1"
    ip link set "$P-h$1" netns "$P-u"
    in_ns u ip link set "$P-h$1" master br0 up
    in_ns "$1" ip link set lo up
    in_ns "$1" ip addr add "$3/24" dev "$2"
    in_ns "$1" ip link set "$2" up
    in_ns "$1" ip route add default via "$NET.1"
}

log "the top-of-rack router (BIRD 2, AS 64513) peers with every node"
ip netns add "$P-tor"
attach tor eth0 "$NET.254"
{
    echo "router id $NET.254;"
    echo "protocol device {}"
    for i in "${NODES[@]}"; do
        echo "protocol bgp node$i { local $NET.254 as 64513; neighbor $NET.1$i as 64512;"
        echo "  ipv4 { import all; export none; }; }"
    done
} >"$STATE/bird.conf"
in_ns tor bird -c "$STATE/bird.conf" -s "$STATE/bird.ctl" -P "$STATE/bird.pid"
in_ns u "$CALYX" apply -f - <<EOF
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: tor
spec:
  peerIP: $NET.254
  asNumber: 64513
EOF

log "three nodes running calyx node run"
for i in "${NODES[@]}"; do
    ip netns add "$P-n$i"
    attach "n$i" eth0 "$NET.1$i"
    mkdir -p "$STATE/node$i"
    in_ns "n$i" env -i PATH="$PATH" NODENAME="node$i" IP="$NET.1$i/24" \
        ETCD_ENDPOINTS="$ETCD_ENDPOINTS" CALICO_IPV4POOL_CIDR="$POOL" \
        CALICO_NETWORKING_BACKEND=bird CALYX_STATE_DIR="$STATE/node$i" \
        "$CALYX" node run >"$STATE/node$i.log" 2>&1 &
done
for i in "${NODES[@]}"; do
    for _ in $(seq 1 100); do
        in_ns "n$i" "$CALYX" node status >/dev/null 2>&1 && break
        sleep 0.2
    done
done

log "two pods per node, through calyx-cni"
conf() {
    printf '{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"calyx","nodename":"node%s","etcd_endpoints":"%s","mtu":1500,"ipam":{"type":"calyx-ipam"}}' "$1" "$ETCD_ENDPOINTS"
}
declare -A POD_IP
for i in "${NODES[@]}"; do
    for k in 1 2; do
        pod="$P-p$i$k"
        ip netns add "$pod"
        result=$(conf "$i" | in_ns "n$i" env CNI_COMMAND=ADD CNI_CONTAINERID="demo-$i$k" \
            CNI_NETNS="/var/run/netns/$pod" CNI_IFNAME=eth0 CNI_PATH="$BIN" \
            CNI_ARGS="K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-$i$k" "$BIN/calyx-cni")
        POD_IP[$i$k]=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["ips"][0]["address"].split("/")[0])' <<<"$result")
        echo "pod-$i$k on node$i: ${POD_IP[$i$k]}"
    done
done

sleep 2
for i in "${NODES[@]}"; do
    log "calyx node status (node$i)"
    in_ns "n$i" "$CALYX" node status
done
log "calyx ipam show --show-blocks"
in_ns u "$CALYX" ipam show --show-blocks
for i in "${NODES[@]}"; do
    log "Calyx routes of node$i (ip route show proto 80) and its pod routes"
    in_ns "n$i" ip route show proto 80
    in_ns "n$i" ip route show | grep cali || true
done
log "what the ToR learned (birdc show route)"
birdc -s "$STATE/bird.ctl" show route
log "ping pod-11 (node1) -> pod-31 (node3), by pod IP, no NAT"
ip netns exec "$P-p11" ping -c 3 -i 0.3 "${POD_IP[31]}"

if [ "$MEMBERS" -gt 1 ]; then
    leader=$(in_ns u etcdctl --endpoints "$ETCD_ENDPOINTS" endpoint status -w json | python3 -c '
import json, sys
for e in json.load(sys.stdin):
    h = e["Status"]["header"]
    if h["member_id"] == e["Status"]["leader"]:
        print(e["Endpoint"].split("//")[1].split(":")[0].split(".")[-1])
        break')
    log "etcd failover: SIGKILL the leader (etcd$leader on $NET.$leader) while pods ping"
    ip netns exec "$P-p11" ping -c 20 -i 0.2 "${POD_IP[31]}" >"$STATE/failover-ping.log" 2>&1 &
    ping_pid=$!
    kill -9 "${ETCD_PID[$leader]}"
    # Until one of the two left leads (etcdctl reports the dead member as an error).
    for _ in $(seq 1 50); do
        in_ns u etcdctl --endpoints "$ETCD_ENDPOINTS" endpoint status -w json 2>/dev/null |
            python3 -c '
import json, sys
sys.exit(0 if any(e["Status"]["header"]["member_id"] == e["Status"]["leader"]
                  for e in json.load(sys.stdin)) else 1)' && break
        sleep 0.2
    done
    in_ns u etcdctl --endpoints "$ETCD_ENDPOINTS" endpoint status -w table 2>&1 || true
    log "a new pod on node2 while etcd$leader is down"
    pod="$P-p23"
    ip netns add "$pod"
    result=$(conf 2 | in_ns n2 env CNI_COMMAND=ADD CNI_CONTAINERID="demo-23" \
        CNI_NETNS="/var/run/netns/$pod" CNI_IFNAME=eth0 CNI_PATH="$BIN" \
        CNI_ARGS="K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-23" "$BIN/calyx-cni")
    POD_IP[23]=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["ips"][0]["address"].split("/")[0])' <<<"$result")
    echo "pod-23 on node2: ${POD_IP[23]}"
    ip netns exec "$P-p11" ping -c 3 -i 0.3 -W 5 "${POD_IP[23]}"
    wait "$ping_pid" || true
    echo "pod-11 -> pod-31 during the failover: $(grep -E 'packets transmitted' "$STATE/failover-ping.log")"
    log "etcd$leader restarted, rejoins the cluster"
    start_member "$leader" existing
    for _ in $(seq 1 100); do
        in_ns u etcdctl --endpoints "http://$NET.$leader:2379" endpoint health >/dev/null 2>&1 && break
        sleep 0.1
    done
    in_ns u etcdctl --endpoints "$ETCD_ENDPOINTS" endpoint status -w table
fi

echo
echo "Everything runs in namespaces $P-*. Try:"
echo "  ip netns exec $P-p12 ping ${POD_IP[21]}"
echo "  ip netns exec $P-n1 $CALYX node status"
echo "  ip netns exec $P-u $CALYX get nodes -o wide      (ETCD_ENDPOINTS=$ETCD_ENDPOINTS)"
echo "Logs: $STATE/node*.log"
if [ -t 0 ]; then
    echo "Ctrl-C (or deploy/demo.sh down from another shell) removes everything."
    while true; do sleep 3600; done
fi
