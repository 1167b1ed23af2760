//! Network namespaces for tests: created with a unique name, deleted in `Drop`.

use std::process::Command;

/// A network namespace that exists for the life of this value.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `name` (deleting a leftover of the same name first) and brings its
    /// loopback up.
    pub fn new(name: &str) -> Netns {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        run("ip", &["netns", "add", name]);
        let ns = Netns {
            name: name.to_string(),
        };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs a command inside the namespace and returns its standard output; panics with the
    /// command's standard error when it fails.
    pub fn exec(&self, argv: &[&str]) -> String {
        let mut full = vec!["netns", "exec", self.name.as_str()];
        full.extend_from_slice(argv);
        run("ip", &full)
    }

    /// Moves the calling thread into this namespace: sockets it opens and threads and
    /// processes it starts afterwards are in it (for a test's in-process clients of servers
    /// that live in namespaces). Use a thread of its own; it never moves back.
    pub fn enter(&self) {
        enter_netns(&self.name);
    }

    /// Like [`Netns::exec`] but returns whether the command succeeded instead of panicking.
    pub fn try_exec(&self, argv: &[&str]) -> bool {
        Command::new("ip")
            .args(["netns", "exec", self.name.as_str()])
            .args(argv)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes still in the namespace keep it alive: kill them first.
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", self.name.as_str()])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).output();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", self.name.as_str()])
            .output();
    }
}

/// Moves the calling thread into network namespace `name` (see [`Netns::enter`]); panics
/// when that fails.
#[allow(unsafe_code)]
pub fn enter_netns(name: &str) {
    use std::os::fd::AsRawFd;
    let ns = std::fs::File::open(format!("/var/run/netns/{name}"))
        .unwrap_or_else(|e| panic!("cannot open namespace {name}: {e}"));
    // SAFETY: `setns` takes a file descriptor that `ns` keeps open for the call and a constant
    // flag; it has no memory-safety preconditions.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "setns into {name}: {}",
        std::io::Error::last_os_error()
    );
}

/// Runs a command on the host and returns its standard output; panics with its standard error
/// when it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
