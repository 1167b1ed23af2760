#!/bin/bash
# Calyx in the shared BGP convergence bench (../../../shared/bench): one injector peer sends N
# IPv4 prefixes to Calyx, a monitor peer receives them back.
#   bgp/bench/run.sh 100000        (builds calyx-bgpd in release first)
# Prints the harness line: dut N convergence_s - peak_rss_MiB cpu_s [extra...]
set -euo pipefail
N=${1:-100000}
HERE=$(cd "$(dirname "$0")" && pwd)
BENCH=${BENCH:-$HERE/../../../shared/bench}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-bgp}
(cd "$HERE/.." && cargo build -q --release -p calyx-bgp --bin calyx-bgpd)
BIN=$CARGO_TARGET_DIR/release/calyx-bgpd
DUT_CONF=$HERE/calyx-dut.json DUT_CMD="$BIN \$RUN_DIR/dut.conf" "$BENCH/run.sh" custom "$N"
