#!/usr/bin/env bash
# BFD figures (issue 19), printed, never asserted:
#  1. detection time of a cut path (frames dropped on the bridge: no link event) over 20 cuts
#     at 300 ms x 3, Calyx and BIRD 2 (its own log) / FRR bfdd (its CLI) on the same link in
#     the same run: median and maximum;
#  2. CPU cost of 100 sessions at 100 ms x 3: Calyx's BFD thread, and FRR's bfdd at the other
#     end of the same sessions.
# Release build, one test at a time (so that the runs do not load each other). Needs root,
# bird2, frr and nft (tests/run.sh installs them). Everything runs in network namespaces the
# tests create and remove.
set -euo pipefail
cd "$(dirname "$0")/../../.."

echo "==> detection over 20 cuts (BIRD 2, FRR bfdd)"
cargo test --release -p calyx-bfd --test interop -- --nocapture --test-threads=1 2>&1 |
    grep -E '^(BIRD|FRR):|^test result|SKIPPED|panicked'

echo "==> CPU of 100 sessions at 100 ms"
cargo test --release -p calyx-bfd --test bench_sessions -- --ignored --nocapture 2>&1 |
    grep -E 'sessions|^test result|SKIPPED|panicked'
