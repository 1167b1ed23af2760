//! A real etcd server (Debian's `etcd-server`) for one test: its own data directory, free ports,
//! stopped and removed in `Drop`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, wait_until};

/// A running etcd. Dropping it kills the process and removes its data directory.
pub struct Etcd {
    child: Option<Child>,
    data_dir: tempfile::TempDir,
    client_url: String,
    peer_url: String,
    netns: Option<String>,
    name: String,
}

impl Etcd {
    /// Starts etcd on free loopback ports. Returns `None` (after printing why) when the
    /// `etcd` binary is missing, so that the caller can skip.
    pub fn start(test: &str) -> Option<Etcd> {
        if !crate::require_binaries(test, &["etcd"]) {
            return None;
        }
        // Two free ports can still be taken by a parallel test between the check and etcd's
        // bind: try a few times.
        for _ in 0..5 {
            let client = format!("http://127.0.0.1:{}", free_port());
            let peer = format!("http://127.0.0.1:{}", free_port());
            let mut etcd = Etcd::new(client, peer, None);
            if etcd.launch() {
                return Some(etcd);
            }
        }
        panic!("etcd did not start after 5 attempts");
    }

    /// Starts etcd inside network namespace `netns`, listening on `ip:2379` (peer port 2380),
    /// for clusters whose nodes live in other namespaces.
    pub fn start_in_netns(test: &str, netns: &str, ip: &str) -> Option<Etcd> {
        if !crate::require_binaries(test, &["etcd"]) {
            return None;
        }
        let mut etcd = Etcd::new(
            format!("http://{ip}:2379"),
            format!("http://{ip}:2380"),
            Some(netns.to_string()),
        );
        assert!(etcd.launch(), "etcd did not start in netns {netns}");
        Some(etcd)
    }

    fn new(client_url: String, peer_url: String, netns: Option<String>) -> Etcd {
        Etcd {
            child: None,
            data_dir: tempfile::Builder::new()
                .prefix("calyx-etcd-")
                .tempdir_in(data_parent())
                .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}")),
            client_url,
            peer_url,
            netns,
            name: format!("calyx-test-{}", std::process::id()),
        }
    }

    fn launch(&mut self) -> bool {
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "etcd"]);
                c
            }
            None => Command::new("etcd"),
        };
        let log = std::fs::File::create(self.data_dir.path().join("etcd.log")).ok();
        command
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(self.data_dir.path().join("data"))
            .arg("--listen-client-urls")
            .arg(&self.client_url)
            .arg("--advertise-client-urls")
            .arg(&self.client_url)
            .arg("--listen-peer-urls")
            .arg(&self.peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&self.peer_url)
            .arg("--initial-cluster")
            .arg(format!("{}={}", self.name, self.peer_url))
            .arg("--log-level")
            .arg("warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.map_or_else(Stdio::null, Stdio::from));
        let child = match command.spawn() {
            Ok(c) => c,
            Err(e) => panic!("cannot run etcd: {e}"),
        };
        self.child = Some(child);
        let health = format!("{}/health", self.client_url);
        let up = wait_until(Duration::from_secs(20), || {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    return true; // exited: reported below
                }
            }
            self.probe(&health)
        });
        let exited = self
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
        if !up || exited {
            self.kill();
            return false;
        }
        true
    }

    /// True when etcd answers its `/health` endpoint.
    fn probe(&self, url: &str) -> bool {
        if let Some(ns) = &self.netns {
            // Another namespace's address is not reachable from here: ask from inside.
            return Command::new("ip")
                .args(["netns", "exec", ns, "etcdctl", "--dial-timeout=1s"])
                .arg(format!("--endpoints={}", self.client_url))
                .args(["endpoint", "health"])
                .env("ETCDCTL_API", "3")
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
        }
        let Some(hostport) = url
            .strip_prefix("http://")
            .and_then(|r| r.split('/').next())
        else {
            return false;
        };
        let Ok(addr) = hostport.parse::<std::net::SocketAddr>() else {
            return false;
        };
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let request = format!("GET /health HTTP/1.0\r\nHost: {hostport}\r\n\r\n");
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.contains("\"health\":\"true\"")
    }

    /// The client URL, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint(&self) -> &str {
        &self.client_url
    }

    /// The etcd log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// Stops etcd (SIGKILL, like a crash); its data stays for [`Etcd::restart`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports with the same data.
    pub fn restart(&mut self) {
        self.kill();
        assert!(self.launch(), "etcd did not restart:\n{}", self.log());
    }

    /// Runs `etcdctl` against this server and returns its standard output.
    pub fn etcdctl(&self, args: &[&str]) -> String {
        let mut c = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "etcdctl"]);
                c
            }
            None => Command::new("etcdctl"),
        };
        let out = c
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(&self.client_url)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run etcdctl: {e}"));
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Where test etcds keep their data: in memory (`/dev/shm`) when the machine has it. etcd
/// fsyncs its WAL on every write; on a disk shared with parallel builds and tests one fsync can
/// take seconds, and a CNI plugin that waits on such a write under load is what made the suite
/// fail at random. tmpfs makes the fsync free; nothing here needs the data to survive a crash.
fn data_parent() -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}
