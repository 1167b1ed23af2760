#!/bin/bash
# Mesh-scale benchmark: N nodes in network namespaces on one underlay bridge, full iBGP mesh,
# side by side with BIRD 2 configured as Calico's confd renders bird.cfg for a mesh.
#
# Usage: mesh.sh N [DUT...]        DUT: calyx | bird (default: calyx bird, same run, in order)
# Prints a header, then one line per DUT:
#   dut N converge_s sessions_up cpu_s_total rss_MiB_per_node_avg rss_MiB_max join_s leave_s
#   converge_s  t_conv - t0. t0 = just before the first daemon is started (configs, namespaces
#               and, for calyx, etcd are ready before); t_conv = first poll at which every
#               node's kernel (table main) has, for every other node's block, a route to that
#               block via that node's address. Polled every POLL=0.5 s (granularity 0.5 s
#               plus one poll's read time). calyx: blocks = the block affinities in etcd
#               (/calico/ipam/v2/host/<node>/ipv4/block/...); bird: one static /26 per node.
#               Not reached within TIMEOUT: `timeout:R/T` (R of T node->block routes present).
#   sessions_up Established BGP sessions summed over all nodes (each side counted), read
#               right after convergence, as `U/T` with T = N*(N-1).
#               calyx: calyx_bgp_sessions{state="Established"} of the daemon's /metrics
#               (the figure `calyx node status` shows); bird: `birdc show protocols` (Mesh_*).
#   cpu_s_total utime+stime of every process in the N node namespaces (the daemons), summed,
#               read at convergence. calyx's etcd is not included (printed on stderr).
#   rss_MiB_*   VmHWM per node namespace at convergence: average over the N nodes, and max.
#   join_s      node N+1 (namespace made before the clock) is started; time until all N+1
#               nodes route all N other blocks. bird: the new node's bird.cfg has N peers and
#               the N old nodes get their bird.cfg re-rendered with the new peer + `birdc
#               configure` (what confd does), all at t2; calyx: just the daemon.
#   leave_s     node 1 leaves: SIGTERM to its daemon, then what the cluster does for a node
#               that is gone: calyx: `calyx delete node node1` + `calyx ipam release --node
#               node1`; bird: the other nodes' bird.cfg re-rendered without it + `birdc
#               configure`. Time until no remaining node has a route to node 1's block.
#   After the churn, CPU/RSS figures are read again and printed on stderr.
# Env: CALYX=path     calyx binary (default <repo>/target/release/calyx)
#      TIMEOUT=300    max seconds for convergence; CHURN_TIMEOUT=120 for join and for leave
#      POLL=0.5       route poll interval, seconds
#      GR=1           graceful restart on (Calico's default); GR=0: CALYX_GRACEFUL_RESTART=false
#                     and no `graceful restart` in bird.cfg
#      CHURN=1        CHURN=0 skips join/leave (columns show `-`)
#      KEEP=1         keep the run directory (logs, configs) and print its path
# Topology (fresh per DUT, private addresses only inside these namespaces, all removed on exit,
# failure or Ctrl-C):
#   ns cxm<PID><d>-u   bridge br0, 10.77.0.1/16, etcd on 10.77.0.1:2379 (calyx only,
#                      data dir /dev/shm/cxm<PID><d>-etcd)
#   ns cxm<PID><d>-nI  eth0 (veth to br0) 10.77.A.B/16, lo up, one daemon; fixed MACs,
#                      permanent ARP entries for every other node, IPv6 off (see
#                      static_neighbours: broadcast floods otherwise drop packets at N >= 50)
set -euo pipefail

usage() { sed -n '2,45p' "$0" >&2; exit 2; }
[ $# -ge 1 ] || usage
N=$1; shift
[[ $N =~ ^[1-9][0-9]*$ ]] && [ "$N" -ge 2 ] && [ "$N" -le 900 ] || usage
DUTS=("$@"); [ ${#DUTS[@]} -gt 0 ] || DUTS=(calyx bird)
for d in "${DUTS[@]}"; do
  case $d in calyx|bird) ;; *) echo "unknown DUT '$d' (calyx or bird)" >&2; exit 2 ;; esac
done

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
if [ -z "${CALYX:-}" ]; then
  CALYX=$REPO/target/release/calyx
fi
if [[ " ${DUTS[*]} " == *" calyx "* ]] && [ ! -x "$CALYX" ]; then
  echo "calyx binary not found at $CALYX: build it with 'cargo build --release -p calyx' in $REPO" \
       "(or CARGO_TARGET_DIR=... in a worktree), or set CALYX=/path/to/calyx" >&2
  exit 2
fi
[ "$(id -u)" = 0 ] || { echo "must run as root (network namespaces)" >&2; exit 2; }
need=(ip python3)
[[ " ${DUTS[*]} " == *" calyx "* ]] && need+=(curl)
[[ " ${DUTS[*]} " == *" calyx "* ]] && need+=(etcd etcdctl)
[[ " ${DUTS[*]} " == *" bird "* ]] && need+=(bird birdc)
for c in "${need[@]}"; do
  command -v "$c" >/dev/null || { echo "missing command: $c" >&2; exit 2; }
done

TIMEOUT=${TIMEOUT:-300} CHURN_TIMEOUT=${CHURN_TIMEOUT:-120} POLL=${POLL:-0.5}
GR=${GR:-1} CHURN=${CHURN:-1} KEEP=${KEEP:-}
POOL=10.240.0.0/12 AS=64512 UL_IP=10.77.0.1
ETCD_URL=http://$UL_IP:2379
TOP=$(mktemp -d /tmp/cxm-mesh.XXXXXX)
PIDS=() NSS=() ETCD_DIRS=()
RUN= P= U=

log() { echo "[$(date +%T)] $*" >&2; }
now() { date +%s.%N; }
mac_of() { printf '02:77:00:00:%02x:%02x' $(( $1 / 256 )) $(( $1 % 256 )); }
ip_of() { echo "10.77.$(( $1 / 250 + 1 )).$(( $1 % 250 + 1 ))"; }
# Node I's block for bird: the I-th /26 of 10.240.0.0/12 (calyx claims its own from etcd).
block_of() { local o=$(( $1 * 64 )); echo "10.$(( 240 + o / 65536 )).$(( o / 256 % 256 )).$(( o % 256 ))/26"; }

# ---------------------------------------------------------------------------------------
# Python helper: route watcher and /proc statistics (one process, no per-namespace forks).
cat > "$TOP/meshtool.py" <<'PY'
import os, socket, struct, subprocess, sys, time

def routes(pid):
    """(dst/len, gw) of table main in the netns of pid, from /proc/PID/net/route."""
    out = set()
    try:
        with open(f'/proc/{pid}/net/route') as f:
            next(f)
            for line in f:
                c = line.split()
                dst = socket.inet_ntoa(struct.pack('<I', int(c[1], 16)))
                gw = socket.inet_ntoa(struct.pack('<I', int(c[2], 16)))
                plen = bin(int(c[7], 16)).count('1')
                out.add((f'{dst}/{plen}', gw))
    except (OSError, StopIteration):
        return None
    return out

def read_nodes(path):
    nodes = []
    for line in open(path):
        name, ip, pid = line.split()
        nodes.append((name, ip, pid))
    return nodes

def etcd_blocks(ns, url):
    r = subprocess.run(['ip', 'netns', 'exec', ns, 'etcdctl', f'--endpoints={url}',
                        '--command-timeout=2s', 'get', '--prefix', '--keys-only',
                        '/calico/ipam/v2/host/'], capture_output=True, text=True)
    blocks = {}
    for k in r.stdout.split():
        p = k.split('/')   # '', calico, ipam, v2, host, NODE, ipv4, block, A.B.C.D-LEN
        if len(p) >= 9 and p[6] == 'ipv4' and p[7] == 'block':
            blocks.setdefault(p[5], set()).add(p[8].replace('-', '/'))
    return blocks

def watch(argv):
    # watch converge NODES BLOCKS T0 TIMEOUT POLL      BLOCKS: etcd:NS:URL or file:PATH
    # watch absent NODES CIDR T0 TIMEOUT POLL
    mode, nodes_f, src, t0, timeout, poll = argv
    t0, timeout, poll = float(t0), float(timeout), float(poll)
    nodes = read_nodes(nodes_f)
    blocks = {}
    if mode == 'converge' and src.startswith('file:'):
        for line in open(src[5:]):
            n, b = line.split()
            blocks.setdefault(n, set()).add(b)
    last_report = time.time()
    while True:
        if mode == 'converge' and src.startswith('etcd:') and \
                any(n not in blocks for n, _, _ in nodes):
            _, ns, url = src.split(':', 2)
            blocks = etcd_blocks(ns, url)
        reached = total = 0
        for name, ip, pid in nodes:
            rt = routes(pid) or set()
            if mode == 'converge':
                for oname, oip, _ in nodes:
                    if oname == name:
                        continue
                    bs = blocks.get(oname) or {None}
                    for b in bs:
                        total += 1
                        reached += (b, oip) in rt
            else:
                total += 1
                reached += not any(d == src for d, gw in rt if gw != '0.0.0.0')
        t = time.time()
        if reached == total:
            print(f'ok {t - t0:.2f} {reached} {total}')
            return
        if t - t0 > timeout:
            print(f'timeout {t - t0:.2f} {reached} {total}')
            return
        if t - last_report >= 10:
            print(f'  {mode}: {t - t0:.0f} s, {reached}/{total}', file=sys.stderr, flush=True)
            last_report = t
        time.sleep(poll)

def stat(argv):
    # stat NS... -> cpu_s_total rss_avg_MiB rss_max_MiB nprocs
    hz = os.sysconf('SC_CLK_TCK')
    want = {}
    for ns in argv:
        st = os.stat(f'/run/netns/{ns}')
        want[(st.st_dev, st.st_ino)] = ns
    rss = {ns: 0 for ns in argv}
    ticks, nproc = 0, 0
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            st = os.stat(f'/proc/{pid}/ns/net')
            ns = want.get((st.st_dev, st.st_ino))
            if ns is None:
                continue
            s = open(f'/proc/{pid}/stat').read()
            status = open(f'/proc/{pid}/status').read()
        except OSError:
            continue
        f = s[s.rindex(')') + 2:].split()
        ticks += int(f[11]) + int(f[12])
        if 'VmHWM:' in status:
            rss[ns] += int(status.split('VmHWM:')[1].split()[0])
        nproc += 1
    v = [x / 1024 for x in rss.values()]
    print(f'{ticks / hz:.2f} {sum(v) / len(v):.1f} {max(v):.1f} {nproc}')

{'watch': watch, 'stat': stat}[sys.argv[1]](sys.argv[2:])
PY
TOOL=(python3 "$TOP/meshtool.py")

# ---------------------------------------------------------------------------------------
# shellcheck source=cli/node/bench/teardown.sh
source "$HERE/teardown.sh"

# ---------------------------------------------------------------------------------------
# Topology
make_underlay() {
  U=$P-u
  ip netns add "$U"; NSS+=("$U")
  ip netns exec "$U" sh -c 'echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6'
  ip -n "$U" link set lo up
  ip -n "$U" link add br0 type bridge
  ip -n "$U" addr add $UL_IP/16 dev br0
  ip -n "$U" link set br0 up
}
# make_node I: namespace P-nI, eth0 bridged into the underlay, address ip_of I.
make_node() {
  local i=$1 ns=$P-n$1
  ip netns add "$ns"; NSS+=("$ns")
  # No IPv6 on the nodes: their DAD/MLD/RS multicast, flooded by the bridge, is noise here.
  ip netns exec "$ns" sh -c 'echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6'
  ip -n "$U" link add "v$i" type veth peer name eth0 netns "$ns"
  ip -n "$U" link set "v$i" master br0 up
  ip -n "$ns" link set lo up
  ip -n "$ns" link set eth0 address "$(mac_of "$i")"
  ip -n "$ns" addr add "$(ip_of "$i")/16" dev eth0
  ip -n "$ns" link set eth0 up
}
# static_neighbours I...: every listed node gets a permanent ARP entry for every other one.
# Without them the ARP broadcasts of a mesh starting at once, flooded by the bridge to every
# port, overflow the kernel's per-CPU backlog (net.core.netdev_max_backlog, drops counted in
# /proc/net/softnet_stat): ARP requests are lost, and with them SYNs to port 179, for seconds
# to minutes, for BIRD and calyx alike. The harness is meant to measure the daemons, not that.
static_neighbours() {
  local i j b=$RUN/neigh.batch
  : > "$b"
  for j in "$@"; do echo "neigh replace $(ip_of "$j") lladdr $(mac_of "$j") dev eth0 nud permanent" >> "$b"; done
  for i in "$@"; do ip -n "$P-n$i" -batch "$b"; done
}

etcdctl_u() { ip netns exec "$U" etcdctl --endpoints=$ETCD_URL "$@"; }
calyx_u() { ip netns exec "$U" "$CALYX" --etcd-endpoints $ETCD_URL "$@"; }

start_etcd() {
  local dir=/dev/shm/$P-etcd
  rm -rf "$dir"; ETCD_DIRS+=("$dir")
  ip netns exec "$U" etcd --name mesh --data-dir "$dir" \
    --listen-client-urls $ETCD_URL --advertise-client-urls $ETCD_URL \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster mesh=http://127.0.0.1:2380 --log-level error >"$RUN/etcd.log" 2>&1 &
  ETCD_PID=$!; PIDS+=("$ETCD_PID")
  for _ in $(seq 100); do
    etcdctl_u endpoint health >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "etcd did not come up; see $RUN/etcd.log" >&2; return 1
}

# Daemon PIDs by node index.
declare -A DPID
start_calyx() {
  local i=$1 ns=$P-n$1
  mkdir -p "$RUN/state$i"
  ip netns exec "$ns" env NODENAME=node$i IP="$(ip_of "$i")/16" CALICO_NETWORKING_BACKEND=bird \
    ETCD_ENDPOINTS=$ETCD_URL CALICO_IPV4POOL_CIDR=$POOL CALICO_IPV4POOL_BLOCK_SIZE=26 \
    CALYX_STATE_DIR="$RUN/state$i" CALYX_HEALTH_LISTEN=127.0.0.1:9099 CALYX_LOG_LEVEL=warn \
    CALYX_GRACEFUL_RESTART=$([ "$GR" = 1 ] && echo true || echo false) \
    "$CALYX" node run >"$RUN/node$i.log" 2>&1 &
  DPID[$i]=$!; PIDS+=("$!")
}

# bird_cfg I PEERS...: bird.cfg for node I as confd renders it for a full mesh (see MESH.md).
bird_cfg() {
  local i=$1; shift
  local me; me=$(ip_of "$i")
  local gr=; [ "$GR" = 1 ] && gr='graceful restart;'
  cat <<EOF
# Generated as Calico's confd renders bird.cfg (node-to-node mesh), simplified: see MESH.md
function apply_communities ()
{
}

# bird_ipam.cfg: this host's blocks
protocol static {
  ipv4;
  # IP blocks for this host.
  route $(block_of "$i") blackhole;
}

filter calico_kernel_programming {
  if ( net ~ $POOL ) then {
    accept;
  }
  reject;
}

# Configure logging (to the node's log file in the run directory)
log stderr { info, remote, warning, error, auth, fatal, bug };

router id $me;

# Configure synchronization between routing tables and kernel.
protocol kernel {
  ipv4 {
    import all;
    export filter calico_kernel_programming;
  };
  learn;             # Learn all alien routes from the kernel
  persist;           # Don't remove routes on bird shutdown
  scan time 2;       # Scan kernel routing table every 2 seconds
  $gr
  merge paths on;
}

# Watch interface up/down events.
protocol device {
  debug { states };
  scan time 2;    # Scan interfaces every 2 seconds
}

protocol direct {
  debug { states };
  ipv4;
  interface -"cali*", -"kube-ipvs*", "*";
}

function calico_export_to_bgp_peers ()
{
  apply_communities();
  if ( net ~ $POOL ) then {
    accept;
  }
  reject;
}

# Template for all BGP clients
template bgp bgp_template {
  debug { states };
  description "Connection to BGP peer";
  local as $AS;
  ipv4 {
    gateway recursive; # This should be the default, but just in case.
    add paths on;
    import all;
    export filter { calico_export_to_bgp_peers(); reject; };  # Only want to export routes for workloads.
    next hop self;
  };
  $gr
  connect delay time 2;
  connect retry time 5;
  error wait time 5,30;
}

# ------------- Node-to-node mesh -------------
EOF
  local j o
  for j in "$@"; do
    [ "$j" = "$i" ] && continue
    o=$(ip_of "$j")
    echo "# For peer /host/node$j/ip_addr_v4"
    echo "protocol bgp Mesh_${o//./_} from bgp_template {"
    echo "  multihop;"
    echo "  neighbor $o as $AS;"
    echo "  source address $me;  # The local address we use for the TCP connection"
    # confd's template compares the addresses as strings ({{if gt \$onode_ip \$node_ip}}).
    [[ "$o" > "$me" ]] && echo "  passive on; # Mesh is unidirectional, peer will connect to us."
    echo "}"
    echo
  done
}
start_bird() {
  local i=$1 ns=$P-n$1
  ip netns exec "$ns" bird -f -c "$RUN/bird$i.cfg" -s "$RUN/bird$i.ctl" -P "$RUN/bird$i.pid" \
    >"$RUN/node$i.log" 2>&1 &
  DPID[$i]=$!; PIDS+=("$!")
}
birdc_n() { birdc -s "$RUN/bird$1.ctl" "${@:2}"; }
# render_birds PEERS...: every listed node's bird.cfg for the mesh PEERS (before the clock:
# rendering 100 configs in bash takes seconds, which confd on each node would not add).
render_birds() {
  local i
  for i in "$@"; do bird_cfg "$i" "$@" > "$RUN/bird$i.cfg"; done
}
# reconfigure_birds NODES...: `birdc configure` them all at once, each with the bird.cfg that
# render_birds wrote (each node's confd would do this on its own).
reconfigure_birds() {
  local i ps=()
  for i in "$@"; do [ -n "${DPID[$i]:-}" ] && { birdc_n "$i" configure >/dev/null & ps+=($!); }; done
  for p in "${ps[@]}"; do wait "$p" || true; done
}

nodes_file() {  # nodes_file FILE I...
  local f=$1 i; shift
  : > "$f"
  for i in "$@"; do echo "node$i $(ip_of "$i") ${DPID[$i]}" >> "$f"; done
}
node_nss() { local i; for i in "$@"; do echo "$P-n$i"; done; }

sessions_up() {  # sessions_up DUT I...
  local dut=$1 i s=0 c; shift
  for i in "$@"; do
    if [ "$dut" = calyx ]; then
      # The daemon's metrics (what `calyx node status` reads, without its per-call cost).
      c=$(ip netns exec "$P-n$i" curl -s -m 5 http://127.0.0.1:9099/metrics 2>/dev/null |
          sed -n 's/^calyx_bgp_sessions{state="Established"} \([0-9]*\).*/\1/p' | head -1)
      c=${c:-0}
    else
      c=$(birdc_n "$i" show protocols 2>/dev/null | grep -E '^Mesh_' | grep -c Established || true)
    fi
    s=$((s + c))
  done
  echo "$s"
}

# ---------------------------------------------------------------------------------------
run_dut() {
  local dut=$1
  P=cxm$$${dut:0:1}
  RUN=$TOP/$dut; mkdir -p "$RUN"
  DPID=()
  local all=() i
  for i in $(seq 1 "$N"); do all+=("$i"); done
  local J=$((N + 1))

  log "$dut: making $((N + 1)) namespaces on one bridge"
  make_underlay
  for i in "${all[@]}" "$J"; do make_node "$i"; done
  static_neighbours "${all[@]}" "$J"
  if [ "$dut" = calyx ]; then
    start_etcd
  else
    render_birds "${all[@]}"
    bird -p -c "$RUN/bird1.cfg" || { echo "bird.cfg does not parse: $RUN/bird1.cfg" >&2; return 1; }
    : > "$RUN/blocks"
    for i in "${all[@]}" "$J"; do echo "node$i $(block_of "$i")" >> "$RUN/blocks"; done
  fi

  log "$dut: starting $N daemons"
  local t0; t0=$(now)
  for i in "${all[@]}"; do "start_$dut" "$i"; done
  nodes_file "$RUN/nodes" "${all[@]}"
  local src=file:$RUN/blocks
  [ "$dut" = calyx ] && src=etcd:$U:$ETCD_URL
  local w conv
  w=$("${TOOL[@]}" watch converge "$RUN/nodes" "$src" "$t0" "$TIMEOUT" "$POLL")
  read -r st el re to <<<"$w"
  if [ "$st" = ok ]; then conv=$el; else conv="timeout:$re/$to"; fi
  log "$dut: convergence: $w"
  local stats sess
  stats=$("${TOOL[@]}" stat $(node_nss "${all[@]}"))
  sess="$(sessions_up "$dut" "${all[@]}")/$((N * (N - 1)))"
  read -r cpu ravg rmax _ <<<"$stats"
  if [ "$dut" = calyx ]; then
    log "calyx: etcd: $(python3 - "$ETCD_PID" <<'PY'
import os, sys
p = sys.argv[1]; hz = os.sysconf('SC_CLK_TCK')
s = open(f'/proc/{p}/stat').read(); f = s[s.rindex(')') + 2:].split()
hwm = open(f'/proc/{p}/status').read().split('VmHWM:')[1].split()[0]
print(f'cpu_s {(int(f[11]) + int(f[12])) / hz:.2f} rss_MiB {int(hwm) / 1024:.1f}')
PY
)"
  fi

  local join=- leave=-
  if [ "$CHURN" = 1 ] && [ "$st" = ok ]; then
    # Join: node J.
    [ "$dut" = bird ] && render_birds "${all[@]}" "$J"
    local t2; t2=$(now)
    if [ "$dut" = calyx ]; then
      start_calyx "$J"
    else
      start_bird "$J"
      reconfigure_birds "${all[@]}" "$J"
    fi
    nodes_file "$RUN/nodes2" "${all[@]}" "$J"
    w=$("${TOOL[@]}" watch converge "$RUN/nodes2" "$src" "$t2" "$CHURN_TIMEOUT" "$POLL")
    log "$dut: join: $w"
    read -r st el re to <<<"$w"
    if [ "$st" = ok ]; then join=$el; else join="timeout:$re/$to"; fi

    # Leave: node 1.
    local gone rest=("${all[@]:1}" "$J") blk
    if [ "$dut" = calyx ]; then
      blk=$(etcdctl_u get --prefix --keys-only /calico/ipam/v2/host/node1/ipv4/block/ |
            grep . | head -1 | sed 's#.*/##; s#-#/#')
    else
      blk=$(block_of 1)
    fi
    nodes_file "$RUN/nodes3" "${rest[@]}"
    [ "$dut" = bird ] && render_birds "${rest[@]}"
    local t3; t3=$(now)
    kill -TERM "${DPID[1]}"
    if [ "$dut" = calyx ]; then
      calyx_u delete node node1 >"$RUN/leave.log" 2>&1 || log "calyx delete node node1 failed: $(cat "$RUN/leave.log")"
      calyx_u ipam release --node node1 >>"$RUN/leave.log" 2>&1 || log "calyx ipam release --node node1 failed: $(tail -3 "$RUN/leave.log")"
    else
      DPID[1]=
      reconfigure_birds "${rest[@]}"
    fi
    w=$("${TOOL[@]}" watch absent "$RUN/nodes3" "$blk" "$t3" "$CHURN_TIMEOUT" "$POLL")
    log "$dut: leave (block $blk): $w"
    read -r st el re to <<<"$w"
    if [ "$st" = ok ]; then leave=$el; else leave="timeout:$re/$to"; fi
    local s2
    s2=$("${TOOL[@]}" stat $(node_nss "${rest[@]}"))
    read -r c2 a2 m2 _ <<<"$s2"
    log "$dut: after churn ($N nodes left): cpu_s_total $c2 rss_MiB_per_node_avg $a2 rss_MiB_max $m2 sessions $(sessions_up "$dut" "${rest[@]}")/$((N * (N - 1)))"
  fi
  printf '%-5s %4s %10s %11s %11s %20s %11s %8s %8s\n' \
    "$dut" "$N" "$conv" "$sess" "$cpu" "$ravg" "$rmax" "$join" "$leave"
  log "$dut: tearing down"
  teardown
}

[[ " ${DUTS[*]} " == *" calyx "* ]] &&
  log "calyx binary: $CALYX, $("$CALYX" version --etcd-timeout 1 2>/dev/null | grep -i 'git commit' | tr -s ' ')"
if [[ " ${DUTS[*]} " == *" calyx "* ]]; then
  bin_c=$("$CALYX" version --etcd-timeout 1 2>/dev/null | sed -n 's/^Git commit: *//p' || true)
  head_c=$(git -C "$REPO" rev-parse HEAD 2>/dev/null || true)
  [ -n "$bin_c" ] && [ -n "$head_c" ] && [[ $head_c != "$bin_c"* ]] &&
    log "NOTE: the calyx binary ($bin_c) is not built from $REPO's HEAD (${head_c:0:7})"
fi
log "uptime: $(uptime)"
printf '%-5s %4s %10s %11s %11s %20s %11s %8s %8s\n' \
  dut N converge_s sessions_up cpu_s_total rss_MiB_per_node_avg rss_MiB_max join_s leave_s
for d in "${DUTS[@]}"; do run_dut "$d"; done
