//! What the daemon keeps on the host outside the datastore: IP forwarding, the node name file
//! that the CNI plugins read, and the marker of a graceful stop (so that the next start sets
//! BGP's restart bit).

use std::time::Duration;

use tracing::warn;

use crate::config::NodeConfig;
use crate::unix_now;

/// Pods are routed through this host: forwarding on, as Felix sets it. A knob that is already
/// on is left alone, so a container with a read-only /proc/sys (the DaemonSet's: not
/// privileged) works on a host that turned forwarding on itself (kubeadm requires it); when it
/// is off and cannot be turned on, start-up says so in one error line: pods on this node would
/// not be reachable from other nodes.
pub(crate) fn enable_forwarding(v6: bool) {
    let mut knobs = vec![("/proc/sys/net/ipv4/ip_forward", "net.ipv4.ip_forward")];
    if v6 {
        knobs.push((
            "/proc/sys/net/ipv6/conf/all/forwarding",
            "net.ipv6.conf.all.forwarding",
        ));
    }
    for (knob, name) in knobs {
        if std::fs::read_to_string(knob).is_ok_and(|v| v.trim() == "1") {
            continue;
        }
        if let Err(e) = std::fs::write(knob, "1") {
            tracing::error!(
                %knob, error = %e,
                "{name} is 0 and cannot be set here (read-only /proc/sys without privileges): \
                 pods on this node cannot be reached from other nodes until the host sets \
                 {name}=1"
            );
        }
    }
}

/// The CNI plugins find the node name here when their config does not give it.
pub(crate) fn write_nodename_file(config: &NodeConfig) {
    let path = config.state_dir.join("nodename");
    let written = std::fs::create_dir_all(&config.state_dir)
        .and_then(|_| std::fs::write(&path, format!("{}\n", config.nodename)));
    if let Err(e) = written {
        warn!(path = %path.display(), error = %e, "cannot write the node name file for CNI");
    }
}

/// How long after a graceful stop a start counts as a graceful restart (the restart time
/// this speaker advertises).
const GRACEFUL_RESTART_WINDOW: Duration = Duration::from_secs(120);

fn restart_marker(config: &NodeConfig) -> std::path::PathBuf {
    config.state_dir.join("graceful-stop")
}

/// Records when we stopped gracefully, so that the next start sets the GR restart bit.
pub(crate) fn mark_graceful_stop(config: &NodeConfig) {
    if let Err(e) = std::fs::write(restart_marker(config), unix_now().to_string()) {
        warn!(error = %e, "cannot record the graceful stop");
    }
}

/// True when the previous run stopped gracefully within the restart window.
pub(crate) fn restarted_recently(config: &NodeConfig) -> bool {
    let path = restart_marker(config);
    let stopped: Option<u64> = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let _ = std::fs::remove_file(&path);
    stopped.is_some_and(|t| unix_now().saturating_sub(t) < GRACEFUL_RESTART_WINDOW.as_secs())
}
