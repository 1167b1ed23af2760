//! podman as the tests' container engine: a `containers.conf` of the test's own (runc, CNI
//! network backend with the node's CNI directories, ulimits this sandbox allows), commands run
//! inside a node's network namespace, and every container and image the test made removed on
//! `Drop`, also when the test fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The programs the runtime tests need; `require_binaries` prints what is missing.
pub const BINARIES: [&str; 2] = ["podman", "runc"];

/// One podman configuration for one node: `podman` commands run in `netns` (the node's network
/// namespace, so that CNI plugins wire pods into that node) with `CONTAINERS_CONF` pointing at
/// a file in `dir`.
pub struct Podman {
    netns: Option<String>,
    conf: PathBuf,
    containers: std::cell::RefCell<Vec<String>>,
    images: std::cell::RefCell<Vec<String>>,
}

impl Podman {
    /// podman for a node: CNI configs from `cni_conf_dir`, plugins from `cni_bin_dir`, run in
    /// network namespace `netns` (`None`: the caller's). The configuration is written to
    /// `dir/containers.conf`.
    pub fn new(dir: &Path, netns: Option<&str>, cni_conf_dir: &Path, cni_bin_dir: &Path) -> Podman {
        let conf = dir.join("containers.conf");
        // runc: this machine's cgroup hierarchy is hybrid (v1 + v2), which crun refuses.
        // Ulimits: podman's defaults (1048576 files) exceed the hard limits here.
        let text = format!(
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=4096:4096\"]\n\
             [network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [{bin:?}]\n\
             network_config_dir = {net:?}\n\
             [engine]\nruntime = \"runc\"\n",
            bin = cni_bin_dir.display().to_string(),
            net = cni_conf_dir.display().to_string(),
        );
        if let Err(e) = std::fs::write(&conf, text) {
            panic!("cannot write {}: {e}", conf.display());
        }
        Podman {
            netns: netns.map(str::to_string),
            conf,
            containers: Default::default(),
            images: Default::default(),
        }
    }

    /// Runs `podman ARGS` (in the node's namespace) and returns what it did.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut c = match &self.netns {
            // nsenter, not `ip netns exec`: the latter mounts the namespace's own /sys, which
            // hides /sys/fs/cgroup from the runtime.
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg("podman");
                c
            }
            None => Command::new("podman"),
        };
        match c.env("CONTAINERS_CONF", &self.conf).args(args).output() {
            Ok(out) => out,
            Err(e) => panic!("cannot run podman {args:?}: {e}"),
        }
    }

    /// Runs `podman ARGS`, which must succeed; returns its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Removes container `name` on drop (a `podman rm -f`, which also runs its CNI DEL).
    pub fn track_container(&self, name: &str) {
        self.containers.borrow_mut().push(name.to_string());
    }

    /// Removes image `name` on drop.
    pub fn track_image(&self, name: &str) {
        self.images.borrow_mut().push(name.to_string());
    }

    /// Removes a container now (stopped at once, network torn down through CNI DEL).
    pub fn remove(&self, name: &str) -> Output {
        self.containers.borrow_mut().retain(|c| c != name);
        self.run(&["rm", "-f", "-t", "0", name])
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        for c in self.containers.borrow().iter() {
            let _ = self.run(&["rm", "-f", "-t", "0", c]);
        }
        for i in self.images.borrow().iter() {
            let _ = self.run(&["rmi", "-f", i]);
        }
    }
}

/// Makes a tiny local image `tag` from the host's static busybox (a scratch image: `/bin/busybox`
/// and its applets as links), without any registry; `None` (and a printed reason) when the
/// host's busybox is not static.
pub fn busybox_image(podman: &Podman, dir: &Path, tag: &str) -> Option<()> {
    let busybox = Path::new("/bin/busybox");
    let elf = std::fs::read(busybox).ok()?;
    // A dynamically linked ELF names its loader in a PT_INTERP program header: a static
    // busybox has none.
    if has_interpreter(&elf) {
        eprintln!("SKIPPED: /bin/busybox is not static (install busybox-static)");
        return None;
    }
    let root = dir.join("busybox-root");
    std::fs::create_dir_all(root.join("bin")).ok()?;
    std::fs::copy(busybox, root.join("bin/busybox")).ok()?;
    for applet in [
        "sh", "ip", "ping", "nc", "httpd", "sleep", "cat", "echo", "wget", "mkdir", "timeout",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).ok()?;
    }
    let tar = dir.join("busybox.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .ok()?;
    assert!(status.success(), "tar of the busybox root failed");
    podman.ok(&[
        "import",
        "--change",
        "CMD [\"/bin/sh\"]",
        tar.to_str()?,
        tag,
    ]);
    podman.track_image(tag);
    Some(())
}

/// True when a 64-bit little-endian ELF file has a PT_INTERP program header (needs a dynamic
/// loader); an unreadable header counts as dynamic.
fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| {
        elf.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a) as usize
        })
    };
    if elf.get(..4) != Some(b"\x7fELF".as_slice()) || elf.get(4) != Some(&2) {
        return true;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return true;
    };
    (0..phnum).any(|i| u32_at(phoff + i * phentsize).is_none_or(|t| t == PT_INTERP))
}
