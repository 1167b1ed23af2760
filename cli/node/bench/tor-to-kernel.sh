#!/bin/bash
# ToR-to-kernel benchmark: a real BIRD 2 top-of-rack announces N routes over eBGP to a node;
# time until all N are in the node's kernel (table main), then until all N are gone again
# after the ToR withdraws them. Same job, same run, for each DUT (the node's routing daemon):
#   calyx  `calyx node run` (BGP backend, etcd datastore in the node namespace)
#   bird   BIRD 2 with a kernel protocol, as calico-node runs it
#
# Usage: tor-to-kernel.sh N [DUT...]      DUT: calyx | bird (default: calyx bird, in that order)
# Prints a header, then one line per DUT:   dut N install_s withdraw_s peak_rss_MiB cpu_s
#   install_s   t_fib - t0. t0 = CLOCK_MONOTONIC just before `birdc enable storm` on the ToR;
#               t_fib = when fibwatch.py (rtnetlink events, in ns node) counted N new routes.
#               Event-driven, ~2 ms granularity.
#   withdraw_s  t_done - t1. t1 = CLOCK_MONOTONIC just before `birdc disable storm`; t_done =
#               first poll of /proc/net/fib_triestat (Main: Prefixes, in ns node) back at the
#               pre-t0 baseline. Polled every POLL=0.25 s; one read takes ~0.1-0.2 s at 1M
#               routes, so the figure is an upper bound, late by at most ~0.25 s + one read.
#   A phase that does not finish within TIMEOUT shows `timeout:K`, K = routes of the storm
#   in the node's kernel when it gave up (install: how many arrived; withdraw: how many left).
#   peak_rss_MiB, cpu_s: VmHWM and utime+stime (/proc, via dutstat.py) of the daemon's
#               processes in ns node, read after the withdrawal (etcd and fibwatch excluded;
#               etcd's own figures go to stderr). CPU includes start-up and session set-up.
# Env: CALYX=path          calyx binary (default: <repo>/target/release/calyx)
#      CALYX_BENCH_DIR=dir  shared bench tools (fibwatch.py, dutstat.py);
#                           default <repo>/../shared/bench
#      TIMEOUT=300          max seconds per phase (install, withdraw); SESSION_TIMEOUT=120
#      POLL=0.25            withdrawal poll interval, seconds
#      KEEP=1               keep the run directory (logs, configs) and print its path
# Topology (fresh per DUT, private addresses only, removed on exit, failure or Ctrl-C):
#   ns cxb-tor-PID  eth0 10.213.0.1/24  BIRD 2, AS 65001, `protocol static storm` (disabled)
#                   with N blackhole /24s from 16.0.0.0 on, exported to the node
#   ns cxb-node-PID eth0 10.213.0.2/24  DUT, AS 64512 (+ etcd on 127.0.0.1 for calyx), fibwatch
set -euo pipefail

usage() { sed -n '2,30p' "$0" >&2; exit 2; }
[ $# -ge 1 ] || usage
N=$1; shift
[[ $N =~ ^[1-9][0-9]*$ ]] || usage
DUTS=("$@"); [ ${#DUTS[@]} -gt 0 ] || DUTS=(calyx bird)
for d in "${DUTS[@]}"; do
  case $d in calyx|bird) ;; *) echo "unknown DUT '$d' (calyx or bird)" >&2; exit 2 ;; esac
done

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
BENCH=${CALYX_BENCH_DIR:-$REPO/../shared/bench}
[ -f "$BENCH/fibwatch.py" ] && [ -f "$BENCH/dutstat.py" ] || {
  echo "shared bench dir not found: $BENCH (needs fibwatch.py, dutstat.py); set CALYX_BENCH_DIR" >&2
  exit 2
}
BENCH=$(cd "$BENCH" && pwd)
CALYX=${CALYX:-$REPO/target/release/calyx}
if [[ " ${DUTS[*]} " == *" calyx "* ]] && [ ! -x "$CALYX" ]; then
  echo "calyx binary not found at $CALYX: build it with 'cargo build --release -p calyx' in $REPO, or set CALYX=/path/to/calyx" >&2
  exit 2
fi
[ "$(id -u)" = 0 ] || { echo "must run as root (network namespaces)" >&2; exit 2; }
need=(ip bird birdc python3)
[[ " ${DUTS[*]} " == *" calyx "* ]] && need+=(etcd etcdctl)
for c in "${need[@]}"; do
  command -v "$c" >/dev/null || { echo "missing command: $c" >&2; exit 2; }
done

TIMEOUT=${TIMEOUT:-300} SESSION_TIMEOUT=${SESSION_TIMEOUT:-120} POLL=${POLL:-0.25}
TOR_NS=cxb-tor-$$ NODE_NS=cxb-node-$$
TOR_IP=10.213.0.1 NODE_IP=10.213.0.2 TOR_AS=65001 NODE_AS=64512
ETCD_URL=http://127.0.0.1:23790
ETCD_DIR=/dev/shm/cxb-etcd-$$
TOP=$(mktemp -d /tmp/cxb-t2k.XXXXXX)
PIDS=()
RUN=

log() { echo "[$(date +%T)] $*" >&2; }
mono() { python3 -c 'import time; print(time.clock_gettime(time.CLOCK_MONOTONIC))'; }

# Stops every process of the current DUT run and removes its namespaces.
teardown() {
  [ -z "$RUN" ] || touch "$RUN/stop" 2>/dev/null || true
  local all p ns alive
  all=$( (printf '%s\n' "${PIDS[@]}"
          for ns in "$TOR_NS" "$NODE_NS"; do ip netns pids "$ns" 2>/dev/null || true; done) |
         grep -E '^[0-9]+$' | sort -u || true)
  for p in $all; do kill "$p" 2>/dev/null || true; done
  for _ in $(seq 100); do          # up to 10 s for a clean exit, then SIGKILL
    alive=0
    for p in $all; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in $all; do
    kill -0 "$p" 2>/dev/null || continue
    log "SIGKILL $p ($(cat "/proc/$p/comm" 2>/dev/null || true)): still up 10 s after SIGTERM"
    kill -9 "$p" 2>/dev/null || true
  done
  for p in $all; do wait "$p" 2>/dev/null || true; done
  for ns in "$TOR_NS" "$NODE_NS"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$ETCD_DIR"
  PIDS=()
}
SUB=
on_exit() {
  local rc=$?
  trap - EXIT INT TERM
  [ "$rc" -lt 128 ] || log "interrupted: stopping the run and removing its namespaces"
  # The DUT run is a subshell: stop it, and everything in its namespaces (incl. its
  # foreground command), so that its own teardown runs at once.
  [ -z "$SUB" ] || kill -TERM "$SUB" 2>/dev/null || true
  teardown
  [ -z "$SUB" ] || wait "$SUB" 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then log "run dir kept: $TOP"; else rm -rf "$TOP"; fi
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bg() {  # bg NS LOG CMD...: start CMD in namespace NS, remember its PID
  ip netns exec "$1" "${@:3}" > "$RUN/$2" 2>&1 &
  PIDS+=("$!")
}
alive() { kill -0 "$1" 2>/dev/null; }
# wait_for SECONDS PID CMD...: true once CMD succeeds; false on timeout or if PID (0: none) died
wait_for() {
  local end=$((SECONDS + $1)) pid=$2; shift 2
  while [ $SECONDS -lt $end ]; do
    "$@" && return 0
    [ "$pid" = 0 ] || alive "$pid" || { log "process $pid ($*) died"; return 1; }
    sleep 0.2
  done
  return 1
}
# Prefix count of the node's main FIB trie (as fibwatch.py's trie_prefixes()).
trie() {
  ip netns exec "$NODE_NS" python3 -c 'import re; print(re.search(r"Main:.*?Prefixes:\s+(\d+)", open("/proc/net/fib_triestat").read(), re.S).group(1))'
}
tor_up() { birdc -s "$RUN/tor.ctl" show protocols node 2>/dev/null | grep -q Established; }
calyx_up() {
  ip netns exec "$NODE_NS" env CALYX_HEALTH_LISTEN=127.0.0.1:9099 "$CALYX" node status -o json \
    > "$RUN/status-up.json" 2>&1 || return 1
  python3 -c 'import json, sys
sys.exit(not any(p["address"] == sys.argv[2] and p["info"] == "Established"
                 for p in json.load(open(sys.argv[1]))["peers"]))' "$RUN/status-up.json" "$TOR_IP" 2>/dev/null
}
file_or_dead() { [ -e "$1" ] || ! alive "$2"; }

# --- the ToR's BIRD config, shared by all DUT runs (N /24s from 16.0.0.0 on)
log "generating $N static routes"
{
  echo "router id $TOR_IP;"
  echo "log \"@RUN@/tor-bird.log\" { warning, error, fatal };"
  echo "protocol device { }"
  echo "protocol static storm {"
  echo "  disabled;"
  echo "  ipv4;"
  awk -v n="$N" 'BEGIN { for (i = 0; i < n; i++) { a = 268435456 + i * 256
    printf "  route %d.%d.%d.0/24 blackhole;\n", int(a / 16777216), int(a / 65536) % 256, int(a / 256) % 256 } }'
  echo "}"
  echo "protocol bgp node {"
  echo "  local $TOR_IP as $TOR_AS;"
  echo "  neighbor $NODE_IP as $NODE_AS;"
  echo "  ipv4 { import none; export all; };"
  echo "}"
} > "$TOP/tor-bird.conf.in"

# one_run DUT: prints the DUT's result line
one_run() {
  local dut=$1 dutpid fibpid etcdpid=0 base t0 t1 tfib install withdraw out left rss cpu
  RUN=$TOP/$dut; mkdir -p "$RUN"
  sed "s|@RUN@|$RUN|" "$TOP/tor-bird.conf.in" > "$RUN/tor-bird.conf"

  # topology: one veth pair straight between the two namespaces
  ip netns add "$TOR_NS"; ip netns add "$NODE_NS"
  ip -n "$TOR_NS" link set lo up; ip -n "$NODE_NS" link set lo up
  ip -n "$TOR_NS" link add eth0 type veth peer name eth0 netns "$NODE_NS"
  ip -n "$TOR_NS" addr add "$TOR_IP/24" dev eth0; ip -n "$TOR_NS" link set eth0 up
  ip -n "$NODE_NS" addr add "$NODE_IP/24" dev eth0; ip -n "$NODE_NS" link set eth0 up

  bg "$TOR_NS" tor-bird.out bird -f -c "$RUN/tor-bird.conf" -s "$RUN/tor.ctl" -P "$RUN/tor.pid"
  local torpid=$!

  case $dut in
    calyx)
      mkdir -p "$ETCD_DIR"
      bg "$NODE_NS" etcd.log etcd --name cxb --data-dir "$ETCD_DIR" \
        --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
        --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
        --initial-cluster cxb=http://127.0.0.1:23800
      etcdpid=$!
      wait_for 30 "$etcdpid" ip netns exec "$NODE_NS" etcdctl --endpoints "$ETCD_URL" \
        --command-timeout=2s endpoint health >/dev/null 2>&1 || { echo "$dut $N etcd-not-up - - -"; return 1; }
      printf 'apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  peerIP: %s\n  asNumber: %s\n' \
        "$TOR_IP" "$TOR_AS" |
        ip netns exec "$NODE_NS" env ETCD_ENDPOINTS="$ETCD_URL" "$CALYX" apply -f - > "$RUN/apply.log" 2>&1 ||
        { cat "$RUN/apply.log" >&2; echo "$dut $N apply-failed - - -"; return 1; }
      bg "$NODE_NS" calyx.log env NODENAME=bench-node IP="$NODE_IP/24" CALICO_NETWORKING_BACKEND=bird \
        ETCD_ENDPOINTS="$ETCD_URL" CALICO_IPV4POOL_CIDR=10.210.0.0/16 CALYX_STATE_DIR="$RUN/state" \
        CALYX_HEALTH_LISTEN=127.0.0.1:9099 CALYX_LOG_LEVEL=warn "$CALYX" node run
      dutpid=$! ;;
    bird)
      cat > "$RUN/node-bird.conf" <<EOF
router id $NODE_IP;
log "$RUN/node-bird.log" { warning, error, fatal };
protocol device { }
protocol kernel {
  ipv4 { import none; export all; };
  merge paths on;
}
protocol bgp tor {
  local $NODE_IP as $NODE_AS;
  neighbor $TOR_IP as $TOR_AS;
  ipv4 { import all; export none; };
}
EOF
      bg "$NODE_NS" node-bird.out bird -f -c "$RUN/node-bird.conf" -s "$RUN/node.ctl" -P "$RUN/node.pid"
      dutpid=$! ;;
  esac

  wait_for "$SESSION_TIMEOUT" "$dutpid" tor_up || {
    alive "$torpid" || log "ToR bird died: $(tail -3 "$RUN/tor-bird.out" "$RUN/tor-bird.log" 2>/dev/null)"
    echo "$dut $N session-not-up - - -"; return 1; }
  if [ "$dut" = calyx ]; then   # and the daemon's own view (`calyx node status -o json`)
    wait_for 30 "$dutpid" calyx_up || log "calyx node status does not show the peer Established: $(
      python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["peers"])' "$RUN/status-up.json" 2>&1 | head -c 400)"
  fi

  bg "$NODE_NS" fib.log python3 "$BENCH/fibwatch.py" --n "$N" --dir "$RUN" --max-time $((TIMEOUT + 60))
  fibpid=$!
  wait_for 30 "$fibpid" test -e "$RUN/fib.ready" || { echo "$dut $N fibwatch-failed - - -"; return 1; }
  sleep 1                       # let any start-up route of the DUT settle before the baseline
  base=$(trie)

  # --- install
  log "$dut: session up, baseline $base prefixes; enable storm ($N routes)"
  t0=$(mono)
  birdc -s "$RUN/tor.ctl" enable storm > "$RUN/enable.out" || { echo "$dut $N tor-failed - - -"; return 1; }
  wait_for "$TIMEOUT" 0 file_or_dead "$RUN/fib.json" "$fibpid" || true   # TIMEOUT s from t0 (1 s ticks)
  if [ -e "$RUN/fib.json" ]; then
    tfib=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["t_fib"])' "$RUN/fib.json")
    install=$(python3 -c 'import sys; print(f"{float(sys.argv[1]) - float(sys.argv[2]):.3f}")' "$tfib" "$t0")
  else
    install=timeout:$(( $(trie) - base ))
  fi
  log "$dut: install $install"

  # --- withdrawal
  t1=$(mono)
  birdc -s "$RUN/tor.ctl" disable storm > "$RUN/disable.out" || { echo "$dut $N $install tor-failed - -"; return 1; }
  out=$(ip netns exec "$NODE_NS" python3 - "$base" "$TIMEOUT" "$POLL" <<'PY'
import re, sys, time
base, maxt, step = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
now = lambda: time.clock_gettime(time.CLOCK_MONOTONIC)
t_end = now() + maxt
while True:
    left = int(re.search(r'Main:.*?Prefixes:\s+(\d+)',
                         open('/proc/net/fib_triestat').read(), re.S).group(1)) - base
    t = now()
    if left <= 0:
        print(f'{t} 0')
        break
    if t > t_end:
        print(f'timeout {left}')
        break
    time.sleep(step)
PY
)
  read -r t_done left <<< "$out" || { echo "$dut $N $install poll-failed - -"; return 1; }
  if [ "$t_done" = timeout ]; then
    withdraw=timeout:$left
  else
    withdraw=$(python3 -c 'import sys; print(f"{float(sys.argv[1]) - float(sys.argv[2]):.3f}")' "$t_done" "$t1")
  fi
  log "$dut: withdraw $withdraw"

  # --- resources of the daemon (everything in ns node but etcd and fibwatch)
  alive "$dutpid" || log "$dut: the daemon exited before the end (see $RUN)"
  read -r rss cpu _ < <(python3 "$BENCH/dutstat.py" "$NODE_NS" "$fibpid" "$etcdpid")
  if [ "$etcdpid" != 0 ]; then
    read -r ers ecpu _ < <(python3 "$BENCH/dutstat.py" "$NODE_NS" "$fibpid" "$dutpid")
    log "$dut: etcd (not in the line): peak_rss_MiB $ers cpu_s $ecpu"
    ip netns exec "$NODE_NS" env CALYX_HEALTH_LISTEN=127.0.0.1:9099 "$CALYX" node status -o json \
      > "$RUN/status-end.json" 2>&1 || true
  fi
  echo "$dut $N $install $withdraw $rss $cpu"
}

echo "dut N install_s withdraw_s peak_rss_MiB cpu_s"
rc=0
for d in "${DUTS[@]}"; do
  # One subshell per DUT, in the background so that the signal traps above run at once.
  ( trap teardown EXIT; trap 'exit 143' TERM; one_run "$d" ) &
  SUB=$!
  r=0; wait "$SUB" || r=$?
  SUB=
  [ "$r" = 0 ] || rc=1
done
exit "$rc"
