//! The async runtime the binary runs on, sized by `CALYX_WORKER_THREADS`.
//!
//! The default is one thread (a current-thread runtime): a node daemon is idle nearly all the
//! time, and with worker threads most of its CPU went to wake-ups that cross threads (a timer
//! on one worker, the session on another, the main loop on the main thread). Measured in a
//! 100-node mesh (`cli/node/bench/mesh.sh 100`): 8.4 CPU-s for all nodes against 11.9 with
//! two workers, converging no later; with 100k routes from a ToR (`tor-to-kernel.sh`) the
//! install time did not get longer (1.76/1.80 s against 1.92/1.94 s). The kernel
//! programming of felix runs on tokio's blocking pool either way.

use std::io;

/// `CALYX_WORKER_THREADS`: `0` runs everything on the main thread (a current-thread
/// runtime; blocking work still goes to tokio's blocking pool), `n` runs `n` worker threads.
pub const WORKER_THREADS_ENV: &str = "CALYX_WORKER_THREADS";

/// Worker threads when the variable is not set: none, everything on the main thread.
pub const DEFAULT_WORKER_THREADS: usize = 0;

/// The most worker threads the variable may ask for.
const MAX_WORKER_THREADS: usize = 64;

/// The worker count `value` (the variable's content) asks for; `Err` names what is wrong.
pub fn parse_workers(value: Option<&str>) -> Result<usize, String> {
    match value.map(str::trim) {
        None | Some("") => Ok(DEFAULT_WORKER_THREADS),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n <= MAX_WORKER_THREADS => Ok(n),
            _ => Err(format!(
                "{WORKER_THREADS_ENV}={v:?}: expected a number of threads from 0 to {MAX_WORKER_THREADS}"
            )),
        },
    }
}

/// Builds the runtime for `workers` worker threads (0: current-thread).
pub fn build(workers: usize) -> io::Result<tokio::runtime::Runtime> {
    if workers == 0 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_count_is_read_leniently_and_bounded() {
        assert_eq!(parse_workers(None), Ok(DEFAULT_WORKER_THREADS));
        assert_eq!(parse_workers(Some(" ")), Ok(DEFAULT_WORKER_THREADS));
        assert_eq!(parse_workers(Some("0")), Ok(0));
        assert_eq!(parse_workers(Some(" 4 ")), Ok(4));
        assert!(parse_workers(Some("many")).is_err());
        assert!(parse_workers(Some("-1")).is_err());
        assert!(parse_workers(Some("65")).is_err());
    }

    #[test]
    fn both_flavours_run_a_future() {
        for workers in [0, 1] {
            let rt = build(workers).expect("runtime");
            let got = rt.block_on(async { tokio::spawn(async { 7 }).await });
            assert_eq!(got.ok(), Some(7));
        }
    }
}
