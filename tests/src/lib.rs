//! Support library for Calyx's tests on real parts: an etcd server started on a free loopback
//! port (or inside a network namespace), network namespaces, and helpers to skip a test with a
//! printed reason when a binary or kernel feature is missing. Every fixture cleans up after
//! itself in `Drop`, also when the test fails.

pub mod bgp_daemons;
pub mod cli;
pub mod cluster;
pub mod etcd;
pub mod netns;
pub mod podman;

use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

/// True when `name` is an executable on `PATH`.
pub fn have_binary(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
        .unwrap_or(false)
}

/// Checks that every binary is there; when one is missing, prints why the test is skipped and
/// returns false. Use as `if !calyx_tests::require_binaries("name", &["etcd"]) { return; }`.
pub fn require_binaries(test: &str, binaries: &[&str]) -> bool {
    let missing: Vec<&str> = binaries
        .iter()
        .copied()
        .filter(|b| !have_binary(b))
        .collect();
    if missing.is_empty() {
        return true;
    }
    eprintln!(
        "SKIPPED {test}: missing {} (tests/run.sh installs it)",
        missing.join(", ")
    );
    false
}

/// Checks that the test runs as root (namespaces, netlink writes); prints why it is skipped
/// otherwise.
pub fn require_root(test: &str) -> bool {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .unwrap_or_default();
    if uid == "0" {
        return true;
    }
    eprintln!("SKIPPED {test}: needs root (network namespaces)");
    false
}

/// A TCP port that was free on loopback a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Polls `check` every 50 ms until it returns true or `limit` passes; returns whether it did.
/// Bounded in time, so a broken system fails the test instead of hanging it.
pub fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if check() {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The path of a binary built from this workspace (`calyx`, `calyx-ipam`, ...), in the target
/// directory next to the running test executable.
pub fn workspace_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test-binary>: the binaries sit in target/<profile>/.
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    profile_dir.join(name)
}
