#!/bin/bash
# Route-reflector scale benchmark: 2 reflectors and N iBGP clients (default 200) with 4 blocks
# each, the reflectors being Calyx nodes, BIRD 2 as Calico's confd renders an RR node's
# bird.cfg, or FRR, side by side in one run.
#
# Usage: rr.sh [N] [DUT...]        DUT: calyx | bird | frr (default: all three, in order)
# Prints a header, then one line per DUT:
#   dut N up_s reflect_any_s reflect_all_s cpu_s rss_MiB withdraw_s flap_s flap_cpu_s
#   up_s           reflectors started -> all 2N client sessions Established (calyx: from the
#                  moment the 2N BGPPeers are applied; both daemons run before).
#   reflect_any_s  t0 = the clients send their blocks (all at once, sessions up and idle for
#                  SETTLE=2 s) -> every client holds every other client's 4 blocks from at
#                  least one reflector.  reflect_all_s: ... from both reflectors.
#   cpu_s          utime+stime of both reflectors' processes from t0 to reflect_all (read
#                  from /proc before and after); rss_MiB: VmHWM summed over both reflectors
#                  (their whole processes: bird, bgpd, or `calyx node run`), at reflect_all.
#   withdraw_s     client 1 closes both its sessions (Cease) -> no other client holds any of
#                  its blocks.  flap_s: same t1 -> it is back up, announced again, and every
#                  client holds every block from both reflectors.  flap_cpu_s: the reflectors'
#                  CPU over the flap.
# Env: CALYX=path (default <repo>/target/release/calyx), TIMEOUT=120 per phase, KEEP=1 keeps
#      the run directory (logs, configs).
# Topology (names unique per run, private addresses only inside these namespaces, all removed
# on exit, failure or Ctrl-C):
#   ns cxr<PID><d>-u   bridge br0 10.77.0.1/16 (+ etcd on it for calyx, data on /dev/shm)
#   ns cxr<PID><d>-r1, -r2   the reflectors, eth0 10.77.0.11/16 and 10.77.0.12/16
#   ns cxr<PID><d>-c   the clients: rrswarm.py, one process, N source addresses
#                      10.77.(100+i/250).(i%250+1)/16, AS 64512 like everyone
# Static ARP entries everywhere (no broadcast storm when 2N sessions open at once).
set -euo pipefail

usage() { sed -n '2,32p' "$0" >&2; exit 2; }
N=${1:-200}; [ $# -gt 0 ] && shift
[[ $N =~ ^[1-9][0-9]*$ ]] && [ "$N" -ge 2 ] && [ "$N" -le 900 ] || usage
DUTS=("$@"); [ ${#DUTS[@]} -gt 0 ] || DUTS=(calyx bird frr)
for d in "${DUTS[@]}"; do
  case $d in calyx|bird|frr) ;; *) echo "unknown DUT '$d' (calyx, bird or frr)" >&2; exit 2 ;; esac
done
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
CALYX=${CALYX:-$REPO/target/release/calyx}
if [[ " ${DUTS[*]} " == *" calyx "* ]] && [ ! -x "$CALYX" ]; then
  echo "calyx binary not found at $CALYX: cargo build --release -p calyx, or set CALYX" >&2; exit 2
fi
[ "$(id -u)" = 0 ] || { echo "must run as root (network namespaces)" >&2; exit 2; }
need=(ip python3)
[[ " ${DUTS[*]} " == *" calyx "* ]] && need+=(etcd etcdctl curl)
[[ " ${DUTS[*]} " == *" bird "* ]] && need+=(bird birdc)
[[ " ${DUTS[*]} " == *" frr "* ]] && need+=(/usr/lib/frr/bgpd)
for c in "${need[@]}"; do command -v "$c" >/dev/null || { echo "missing command: $c" >&2; exit 2; }; done

TIMEOUT=${TIMEOUT:-120} KEEP=${KEEP:-} SETTLE=2
AS=64512 CLUSTER=224.0.0.1 POOL=10.240.0.0/12 UL_IP=10.77.0.1 ETCD_URL=http://10.77.0.1:2379
RR_IPS=(10.77.0.11 10.77.0.12)
TOP=$(mktemp -d /tmp/cxr-rr.XXXXXX)
PIDS=() NSS=() ETCD_DIRS=()
RUN= P= U=

log() { echo "[$(date +%T)] $*" >&2; }
client_ip() { echo "10.77.$(( 100 + $1 / 250 )).$(( $1 % 250 + 1 ))"; }

# shellcheck source=cli/node/bench/teardown.sh
source "$HERE/teardown.sh"

# /proc figures of every process in the given namespaces: "cpu_s rss_MiB_sum".
stat_ns() {
  python3 - "$@" <<'PY'
import os, sys
hz = os.sysconf('SC_CLK_TCK')
want = {(os.stat(f'/run/netns/{n}').st_dev, os.stat(f'/run/netns/{n}').st_ino) for n in sys.argv[1:]}
ticks = rss = 0
for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
        st = os.stat(f'/proc/{pid}/ns/net')
        if (st.st_dev, st.st_ino) not in want:
            continue
        s = open(f'/proc/{pid}/stat').read()
        status = open(f'/proc/{pid}/status').read()
    except OSError:
        continue
    f = s[s.rindex(')') + 2:].split()
    ticks += int(f[11]) + int(f[12])
    if 'VmHWM:' in status:
        rss += int(status.split('VmHWM:')[1].split()[0])
print(f'{ticks / hz:.2f} {rss / 1024:.1f}')
PY
}

mac_of() { printf '02:78:00:00:%02x:%02x' $(( $1 / 256 )) $(( $1 % 256 )); }
# add_ns NAME MAC-INDEX ADDR...: namespace on the underlay bridge with eth0 holding ADDRs.
add_ns() {
  local ns=$1 m=$2; shift 2
  ip netns add "$ns"; NSS+=("$ns")
  ip netns exec "$ns" sh -c 'echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6'
  ip -n "$U" link add "v$m" type veth peer name eth0 netns "$ns"
  ip -n "$U" link set "v$m" master br0 up
  ip -n "$ns" link set lo up
  ip -n "$ns" link set eth0 address "$(mac_of "$m")"
  local a b=$RUN/addr.$m
  : > "$b"
  for a in "$@"; do echo "addr add $a/16 dev eth0" >> "$b"; done
  ip -n "$ns" -batch "$b"
  ip -n "$ns" link set eth0 up
}

make_topology() {
  U=$P-u
  ip netns add "$U"; NSS+=("$U")
  ip netns exec "$U" sh -c 'echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6'
  ip -n "$U" link set lo up
  ip -n "$U" link add br0 type bridge
  ip -n "$U" addr add $UL_IP/16 dev br0
  ip -n "$U" link set br0 up
  add_ns "$P-r1" 1 "${RR_IPS[0]}"
  add_ns "$P-r2" 2 "${RR_IPS[1]}"
  local i cl=()
  for i in $(seq 1 "$N"); do cl+=("$(client_ip "$i")"); done
  add_ns "$P-c" 3 "${cl[@]}"
  # Permanent neighbours: reflectors <-> clients, reflector <-> reflector.
  local b=$RUN/neigh.r c=$RUN/neigh.c
  : > "$b"; : > "$c"
  for i in "${cl[@]}"; do echo "neigh replace $i lladdr $(mac_of 3) dev eth0 nud permanent" >> "$b"; done
  echo "neigh replace ${RR_IPS[0]} lladdr $(mac_of 1) dev eth0 nud permanent" >> "$c"
  echo "neigh replace ${RR_IPS[1]} lladdr $(mac_of 2) dev eth0 nud permanent" >> "$c"
  cat "$c" >> "$b"
  ip -n "$P-r1" -batch "$b"; ip -n "$P-r2" -batch "$b"; ip -n "$P-c" -batch "$c"
}

# ---------------------------------------------------------------------------------------
# calyx: two `calyx node run` with routeReflectorClusterID, mesh off, one BGPPeer per client
# (peerIP, asNumber = the cluster's AS, nodeSelector = the reflectors) and one BGPPeer that
# peers the reflectors with each other, as a Calico user configures it.
calyx_u() { ip netns exec "$U" "$CALYX" --etcd-endpoints $ETCD_URL "$@"; }
start_calyx() {
  local dir=/dev/shm/$P-etcd
  rm -rf "$dir"; ETCD_DIRS+=("$dir")
  ip netns exec "$U" etcd --name rr --data-dir "$dir" \
    --listen-client-urls $ETCD_URL --advertise-client-urls $ETCD_URL \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster rr=http://127.0.0.1:2380 --log-level error >"$RUN/etcd.log" 2>&1 &
  PIDS+=("$!")
  local ok=
  for _ in $(seq 100); do
    ip netns exec "$U" etcdctl --endpoints=$ETCD_URL endpoint health >/dev/null 2>&1 && { ok=1; break; }
    sleep 0.2
  done
  [ -n "$ok" ] || { echo "etcd did not come up; see $RUN/etcd.log" >&2; return 1; }
  cat > "$RUN/bgpconfig.yaml" <<EOF
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata:
  name: default
spec:
  asNumber: $AS
  nodeToNodeMeshEnabled: false
EOF
  calyx_u apply -f "$RUN/bgpconfig.yaml" >/dev/null
  local r
  for r in 1 2; do
    mkdir -p "$RUN/state$r"
    ip netns exec "$P-r$r" env NODENAME=rr$r IP="${RR_IPS[r-1]}/16" CALICO_NETWORKING_BACKEND=bird \
      ETCD_ENDPOINTS=$ETCD_URL CALICO_IPV4POOL_CIDR=$POOL CALICO_IPV4POOL_BLOCK_SIZE=26 \
      CALYX_STATE_DIR="$RUN/state$r" CALYX_HEALTH_LISTEN=127.0.0.1:9099 CALYX_LOG_LEVEL=warn \
      "$CALYX" node run >"$RUN/rr$r.log" 2>&1 &
    PIDS+=("$!")
  done
  for r in 1 2; do
    ok=
    for _ in $(seq 150); do
      calyx_u get node rr$r >/dev/null 2>&1 && { ok=1; break; }
      sleep 0.2
    done
    [ -n "$ok" ] || { echo "rr$r never registered; see $RUN/rr$r.log" >&2; return 1; }
    calyx_u label nodes rr$r route-reflector=true >/dev/null
    calyx_u patch node rr$r -p "{\"spec\":{\"bgp\":{\"routeReflectorClusterID\":\"$CLUSTER\"}}}" >/dev/null
  done
  {
    printf 'apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: rr-mesh\nspec:\n'
    printf "  nodeSelector: route-reflector == 'true'\n  peerSelector: route-reflector == 'true'\n"
    local i
    for i in $(seq 1 "$N"); do
      printf -- '---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: client-%s\nspec:\n' "$i"
      printf "  nodeSelector: route-reflector == 'true'\n  peerIP: %s\n  asNumber: %s\n" "$(client_ip "$i")" "$AS"
    done
  } > "$RUN/peers.yaml"
  calyx_u apply -f "$RUN/peers.yaml" >/dev/null
}

# bird: each reflector's bird.cfg as confd renders it for an RR node (see RR.md).
bird_cfg() {
  local r=$1 me=${RR_IPS[$1-1]} other=${RR_IPS[2-$1]}
  cat <<EOF
function apply_communities () { }
function calico_aggr () { }
function calico_export_to_bgp_peers(bool internal_peer) {
  apply_communities();
  calico_aggr();
  if (net ~ $POOL) then { accept; }
}
filter calico_kernel_programming {
  if (defined(source) && (source = RTS_BGP) && !defined(krt_metric)) then {
      krt_metric = 1024;
      if (defined(bgp_local_pref)) then { krt_metric = 2147483647 - bgp_local_pref; }
      if (krt_metric < 1024) then { preference = 200; }
  }
  if (net ~ $POOL) then { reject; } # Cluster routes are handled by Felix.
  accept;
}
router id $me;
log stderr { info, remote, warning, error, auth, fatal, bug };
protocol kernel {
  ipv4 { import all; export filter calico_kernel_programming; };
  learn; persist; scan time 2; graceful restart; merge paths on;
}
protocol device { scan time 2; }
protocol direct { ipv4; interface -"cali*", -"kube-ipvs*", "*"; }
template bgp bgp_template {
  description "Connection to BGP peer";
  local as $AS;
  ipv4 {
    gateway recursive;
    add paths on;
    import filter {
      if (defined(bgp_local_pref)&&(bgp_local_pref > 2147482623)) then preference = 200;
      accept;
    };
    export filter {
      if (defined(source) && source = RTS_BGP && defined(bgp_local_pref)) then {
        krt_metric = 2147483647 - bgp_local_pref;
      } else {
        if (!defined(krt_metric)) then { krt_metric = 1024; }
        bgp_local_pref = 2147483647 - krt_metric;
      }
      calico_export_to_bgp_peers(true);
      reject;
    };
  };
  graceful restart;
  connect delay time 2;
  connect retry time 5;
  error wait time 5,30;
}
protocol bgp Node_${other//./_} from bgp_template {
  neighbor $other as $AS;
  source address $me;
  multihop;
}
EOF
  local i c
  for i in $(seq 1 "$N"); do
    c=$(client_ip "$i")
    printf 'protocol bgp Global_%s from bgp_template {\n  neighbor %s as %s;\n  source address %s;\n  multihop;\n  rr client;\n  rr cluster id %s;\n}\n' \
      "${c//./_}" "$c" "$AS" "$me" "$CLUSTER"
  done
}
start_bird() {
  local r
  for r in 1 2; do
    bird_cfg $r > "$RUN/bird$r.cfg"
    bird -p -c "$RUN/bird$r.cfg" || { echo "bird.cfg does not parse: $RUN/bird$r.cfg" >&2; return 1; }
  done
  for r in 1 2; do
    ip netns exec "$P-r$r" bird -f -c "$RUN/bird$r.cfg" -s "$RUN/bird$r.ctl" -P "$RUN/bird$r.pid" \
      >"$RUN/rr$r.log" 2>&1 &
    PIDS+=("$!")
  done
}

# frr: bgpd without zebra (-Z: a reflector needs no kernel routes), one peer-group of clients.
frr_cfg() {
  local r=$1 me=${RR_IPS[$1-1]} other=${RR_IPS[2-$1]}
  cat <<EOF
hostname rr$r
log stdout critical
router bgp $AS
 bgp router-id $me
 bgp cluster-id $CLUSTER
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 neighbor CLIENTS peer-group
 neighbor CLIENTS remote-as $AS
 neighbor CLIENTS update-source $me
 neighbor $other remote-as $AS
 neighbor $other update-source $me
EOF
  local i
  for i in $(seq 1 "$N"); do echo " neighbor $(client_ip "$i") peer-group CLIENTS"; done
  cat <<EOF
 address-family ipv4 unicast
  neighbor CLIENTS activate
  neighbor CLIENTS route-reflector-client
  neighbor $other activate
 exit-address-family
EOF
}
start_frr() {
  local r
  for r in 1 2; do
    mkdir -p "$RUN/frr$r"; chgrp frr "$RUN/frr$r" 2>/dev/null || true; chmod 775 "$RUN/frr$r"
    chmod o+x "$RUN" "$TOP"
    frr_cfg $r > "$RUN/frr$r/bgpd.conf"; chmod 644 "$RUN/frr$r/bgpd.conf"
    ip netns exec "$P-r$r" /usr/lib/frr/bgpd -Z -f "$RUN/frr$r/bgpd.conf" --vty_socket "$RUN/frr$r" \
      -P 0 -i "$RUN/frr$r/bgpd.pid" >"$RUN/rr$r.log" 2>&1 &
    PIDS+=("$!")
  done
}

# ---------------------------------------------------------------------------------------
wait_file() {  # wait_file PATH SECONDS
  local i
  for i in $(seq $(( $2 * 10 ))); do
    [ -e "$1" ] && return 0
    kill -0 "$SWARM" 2>/dev/null || { echo "the client swarm exited; see $RUN/swarm.log" >&2; return 1; }
    sleep 0.1
  done
  echo "timed out waiting for $1" >&2; return 1
}
jget() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(d.get(sys.argv[2], '-'))" "$1" "$2"; }
fmt() { python3 -c "import sys; v=sys.argv[1]; print(v if v=='-' else f'{float(v):.2f}')" "$1"; }

run_dut() {
  local dut=$1
  P=cxr$$${dut:0:1}
  RUN=$TOP/$dut; mkdir -p "$RUN"
  log "$dut: topology (2 reflectors, $N clients)"
  make_topology
  local sw=(--clients "$N" --rr "${RR_IPS[0]}" --rr "${RR_IPS[1]}" --asn $AS --dir "$RUN" --timeout "$TIMEOUT")
  local t_start; t_start=$(date +%s.%N)
  "start_$dut"
  ip netns exec "$P-c" python3 "$HERE/rrswarm.py" "${sw[@]}" 2>"$RUN/swarm.log" &
  SWARM=$!; PIDS+=("$SWARM")
  wait_file "$RUN/up" $((TIMEOUT + 30))
  local up; up=$(python3 -c "import json,sys,time; d=json.load(open(sys.argv[1])); print('timeout' if d.get('timeout') else f\"{float(d['up_s']):.2f}\")" "$RUN/up")
  [ "$up" = timeout ] && { log "$dut: sessions did not come up: $(cat "$RUN/up")"; printf '%-5s %4s %s\n' "$dut" "$N" timeout; teardown; return 0; }
  sleep $SETTLE
  read -r c0 _ <<<"$(stat_ns "$P-r1" "$P-r2")"
  touch "$RUN/go"
  wait_file "$RUN/converged.json" $((TIMEOUT + 30))
  read -r c1 rss <<<"$(stat_ns "$P-r1" "$P-r2")"
  log "$dut: $(cat "$RUN/converged.json")"
  local any all cpu wd flap fcpu=-
  any=$(fmt "$(jget "$RUN/converged.json" any_s)"); all=$(fmt "$(jget "$RUN/converged.json" all_s)")
  [ "$(jget "$RUN/converged.json" timeout)" = True ] && all="timeout"
  cpu=$(python3 -c "print(f'{$c1 - $c0:.2f}')")
  wd=- flap=-
  if [ "$all" != timeout ]; then
    sleep $SETTLE
    touch "$RUN/flap"
    wait_file "$RUN/flap.json" $((TIMEOUT + 30))
    read -r c2 _ <<<"$(stat_ns "$P-r1" "$P-r2")"
    log "$dut: flap: $(cat "$RUN/flap.json")"
    wd=$(fmt "$(jget "$RUN/flap.json" withdrawn_s)"); flap=$(fmt "$(jget "$RUN/flap.json" back_s)")
    [ "$(jget "$RUN/flap.json" timeout)" = True ] && flap=timeout
    fcpu=$(python3 -c "print(f'{$c2 - $c1:.2f}')")
  fi
  touch "$RUN/stop"
  printf '%-5s %4s %6s %13s %13s %6s %8s %10s %7s %10s\n' "$dut" "$N" "$up" "$any" "$all" "$cpu" "$rss" "$wd" "$flap" "$fcpu"
  teardown
}

[[ " ${DUTS[*]} " == *" calyx "* ]] && log "calyx binary: $CALYX"
log "uptime: $(uptime)"
printf '%-5s %4s %6s %13s %13s %6s %8s %10s %7s %10s\n' dut N up_s reflect_any_s reflect_all_s cpu_s rss_MiB withdraw_s flap_s flap_cpu_s
for d in "${DUTS[@]}"; do run_dut "$d"; done
