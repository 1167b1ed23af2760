# Shared by mesh.sh and rr.sh (sourced): stop everything a run started and remove what it made.
# The caller keeps in globals: P (the run's namespace prefix; empty when nothing is up), PIDS
# (processes it started), NSS (namespaces it made), ETCD_DIRS (etcd data dirs), TOP (the run
# directory), KEEP (non-empty: keep TOP), and defines log().

# teardown: every process started by this run (and anything left in its namespaces) is killed
# by PID (TERM, then KILL after 5 s), every namespace deleted, etcd's data dirs removed.
teardown() {
  [ -n "$P" ] || return 0
  local ns p all
  all=$( (printf '%s\n' "${PIDS[@]}"
          for ns in "${NSS[@]}"; do ip netns pids "$ns" 2>/dev/null || true; done) | sort -u | grep . || true)
  for p in $all; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 20); do
    local alive=0
    for p in $all; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.25
  done
  for p in $all; do kill -KILL "$p" 2>/dev/null || true; done
  for p in $all; do wait "$p" 2>/dev/null || true; done
  for ns in "${NSS[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  for d in "${ETCD_DIRS[@]}"; do rm -rf "$d"; done
  PIDS=() NSS=() ETCD_DIRS=() P=
}

# cleanup: on exit (also on failure and Ctrl-C), tear down and remove the run directory.
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  teardown
  if [ -n "$KEEP" ]; then echo "run directory kept: $TOP" >&2; else rm -rf "$TOP"; fi
  exit $rc
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT TERM
