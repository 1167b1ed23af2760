//! The pod's network plumbing, as Calico lays it out: veth `cali<hash>` ⇄ `eth0`, the pod's
//! address as a host prefix, a default route via 169.254.1.1 (`onlink`) answered by proxy ARP
//! on the host end, and a host route to the pod.

use std::process::Command;

use crate::ipam_plugin::{codes, parse_cni_args, CniError};
use ipnet::IpNet;
use serde_json::Value;

use crate::conf::Env;

/// The gateway address every Calico pod routes through; the host end answers for it.
const GATEWAY_V4: &str = "169.254.1.1";
/// The link-local gateway of IPv6 pods (the host end's fixed MAC in EUI-64 form).
const GATEWAY_V6: &str = "fe80::ecee:eeff:feee:eeee";
/// The MAC of every host end, as Calico sets it.
const HOST_MAC: &str = "ee:ee:ee:ee:ee:ee";

/// The MAC addresses of the two ends.
#[derive(Debug, Clone, Default)]
pub struct Macs {
    /// Host end.
    pub host: String,
    /// Pod end.
    pub pod: String,
}

/// `cali` + 11 hex digits of a hash of the pod's identity (namespace and name when the runtime
/// gives them, else the container ID): stable across ADD/DEL, 15 characters like Calico's.
pub fn host_interface_name(env: &Env) -> String {
    let args = parse_cni_args(&env.args);
    let identity = match (args.get("K8S_POD_NAMESPACE"), args.get("K8S_POD_NAME")) {
        (Some(ns), Some(pod)) => format!("{ns}.{pod}"),
        _ => env.container_id.clone(),
    };
    // FNV-1a, 64 bits: no cryptography needed, only spread.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in identity.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("cali{:011x}", h & 0x0fff_ffff_ffff)
}

fn failure(what: &str, detail: String) -> CniError {
    CniError::new(codes::IO_FAILURE, what, detail)
}

/// Runs a command (inside the pod's namespace when `netns` is given).
fn run(netns: Option<&str>, argv: &[&str]) -> Result<String, CniError> {
    let mut command = match netns {
        Some(path) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={path}")).arg("--");
            c.args(argv);
            c
        }
        None => {
            let mut c = Command::new(argv[0]);
            c.args(&argv[1..]);
            c
        }
    };
    let out = command
        .output()
        .map_err(|e| failure("cannot run a command", format!("{}: {e}", argv.join(" "))))?;
    if !out.status.success() {
        return Err(failure(
            "network setup failed",
            format!(
                "{}: {}",
                argv.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn write_sysctl(path: &str, value: &str) -> Result<(), CniError> {
    std::fs::write(path, value).map_err(|e| failure("cannot set a sysctl", format!("{path}: {e}")))
}

fn link_mac(netns: Option<&str>, name: &str) -> String {
    run(netns, &["ip", "-j", "link", "show", "dev", name])
        .ok()
        .and_then(|s| serde_json::from_str::<Value>(&s).ok())
        .and_then(|v| v.get(0)?.get("address")?.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Creates the veth pair and everything around it. On error the caller deletes `host_if`.
pub fn add(
    host_if: &str,
    netns: &str,
    ifname: &str,
    ips: &[IpNet],
    mtu: Option<u32>,
) -> Result<Macs, CniError> {
    if std::path::Path::new(&format!("/sys/class/net/{host_if}")).exists() {
        // A retried ADD for the same pod: start from a clean slate.
        delete(host_if);
    }
    run(
        None,
        &[
            "ip", "link", "add", host_if, "type", "veth", "peer", "name", ifname, "netns", netns,
        ],
    )?;
    let mtu_text = mtu.map(|m| m.to_string());
    let mut host_set = vec!["ip", "link", "set", host_if, "address", HOST_MAC];
    if let Some(m) = &mtu_text {
        host_set.extend(["mtu", m.as_str()]);
    }
    host_set.push("up");
    run(None, &host_set)?;
    let has_v4 = ips.iter().any(|ip| ip.addr().is_ipv4());
    let has_v6 = ips.iter().any(|ip| ip.addr().is_ipv6());
    if has_v4 {
        // The pod ARPs for 169.254.1.1; the host end answers with its own MAC, at once.
        write_sysctl(&format!("/proc/sys/net/ipv4/conf/{host_if}/proxy_arp"), "1")?;
        write_sysctl(
            &format!("/proc/sys/net/ipv4/neigh/{host_if}/proxy_delay"),
            "0",
        )?;
        write_sysctl(
            &format!("/proc/sys/net/ipv4/conf/{host_if}/forwarding"),
            "1",
        )?;
    }
    if has_v6 {
        write_sysctl(&format!("/proc/sys/net/ipv6/conf/{host_if}/proxy_ndp"), "1")?;
        write_sysctl(
            &format!("/proc/sys/net/ipv6/conf/{host_if}/forwarding"),
            "1",
        )?;
    }

    let pod = Some(netns);
    run(pod, &["ip", "link", "set", "lo", "up"])?;
    let mut pod_set = vec!["ip", "link", "set", ifname];
    if let Some(m) = &mtu_text {
        pod_set.extend(["mtu", m.as_str()]);
    }
    pod_set.push("up");
    run(pod, &pod_set)?;
    for ip in ips {
        let addr = ip.to_string();
        if ip.addr().is_ipv4() {
            run(pod, &["ip", "addr", "add", &addr, "dev", ifname])?;
        } else {
            run(
                pod,
                &["ip", "-6", "addr", "add", &addr, "dev", ifname, "nodad"],
            )?;
        }
    }
    if has_v4 {
        run(
            pod,
            &[
                "ip", "route", "add", "default", "via", GATEWAY_V4, "dev", ifname, "onlink",
            ],
        )?;
    }
    if has_v6 {
        run(
            pod,
            &[
                "ip", "-6", "route", "add", "default", "via", GATEWAY_V6, "dev", ifname,
            ],
        )?;
    }
    for ip in ips {
        let addr = ip.to_string();
        run(
            None,
            &[
                "ip", "route", "replace", &addr, "dev", host_if, "scope", "link",
            ],
        )?;
    }
    Ok(Macs {
        host: link_mac(None, host_if),
        pod: link_mac(pod, ifname),
    })
}

/// Deletes the host end (which deletes the pod end and the host routes with it). Idempotent.
pub fn delete(host_if: &str) {
    let _ = Command::new("ip").args(["link", "del", host_if]).output();
}

/// Verifies what ADD built.
pub fn check(host_if: &str, netns: &str, ifname: &str, ips: &[IpNet]) -> Result<(), CniError> {
    let unknown = |what: String| CniError::new(codes::UNKNOWN_CONTAINER, "CHECK failed", what);
    let host = run(None, &["ip", "-j", "link", "show", "dev", host_if])
        .map_err(|_| unknown(format!("host interface {host_if} is missing")))?;
    if !host.contains("\"UP\"") && !host.contains("LOWER_UP") {
        return Err(unknown(format!("host interface {host_if} is down")));
    }
    let addrs = run(Some(netns), &["ip", "-j", "addr", "show", "dev", ifname])
        .map_err(|_| unknown(format!("{ifname} is missing in the pod")))?;
    let routes = run(None, &["ip", "route", "show", "dev", host_if])?;
    for ip in ips {
        let bare = ip.addr().to_string();
        if !addrs.contains(&format!("\"local\":\"{bare}\"")) {
            return Err(unknown(format!("{ifname} does not hold {ip}")));
        }
        if ip.addr().is_ipv4() && !routes.contains(&bare) {
            return Err(unknown(format!("no host route to {ip} via {host_if}")));
        }
    }
    Ok(())
}
