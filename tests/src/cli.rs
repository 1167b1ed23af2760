//! Running the `calyx` binary against a test's etcd as a user would: with stdin, expecting
//! success, or expecting one error line; and a dump of `/calico` to prove a refused command
//! wrote nothing.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::etcd::Etcd;

/// Runs `calyx ARGS` against `etcd` with optional standard input.
pub fn calyx(etcd: &Etcd, args: &[&str], stdin: Option<&str>) -> Output {
    let spawned = Command::new(crate::workspace_binary("calyx"))
        .args(args)
        .env("ETCD_ENDPOINTS", etcd.endpoint())
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => panic!("cannot run calyx {args:?}: {e}"),
    };
    if let Some(mut input) = child.stdin.take() {
        // A command that exits without reading its input is not an error here.
        let _ = input.write_all(stdin.unwrap_or("").as_bytes());
    }
    match child.wait_with_output() {
        Ok(out) => out,
        Err(e) => panic!("calyx {args:?} did not finish: {e}"),
    }
}

/// Runs a command that must succeed; returns its standard output.
pub fn ok(etcd: &Etcd, args: &[&str]) -> String {
    let out = calyx(etcd, args, None);
    assert!(
        out.status.success(),
        "calyx {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Runs a command that must fail with exactly one error line on stderr; returns that line.
pub fn fails(etcd: &Etcd, args: &[&str], stdin: Option<&str>) -> String {
    let out = calyx(etcd, args, stdin);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "calyx {args:?} should fail; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got:\n{stderr}");
    lines[0].to_string()
}

/// Everything under /calico, to prove that a failed command wrote nothing.
pub fn dump(etcd: &Etcd) -> String {
    etcd.etcdctl(&["get", "--prefix", "/calico"])
}
