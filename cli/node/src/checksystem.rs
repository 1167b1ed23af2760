//! `calyx node checksystem`: does this host have what the node daemon needs? One check per
//! kernel feature, forwarding switch and capability, each `OK` or what is missing, as
//! `calicoctl node checksystem` reports.
//!
//! Kernel features are tried, not guessed from module lists (which miss built-in code and
//! modules loaded on demand): a VXLAN and an IPIP link are created, and nftables is asked for
//! its generation, inside a network namespace made for the probe and owned by one thread, so
//! the kernel removes it, and all it holds, when the probe ends. Without CAP_SYS_ADMIN no such
//! namespace can be made; the kernel's build configuration (`/proc/config.gz`) and
//! `/sys/module` are read instead, and the line says so.

use std::io;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::os::fd::AsRawFd;

use calyx_felix::nl::NlSocket;
use calyx_felix::wire;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage,
};
use netlink_packet_route::RouteNetlinkMessage;

/// Whether a failed check stops the daemon from working at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// The daemon cannot do its job without it: the command fails.
    Required,
    /// Only some configurations use it: reported as a warning.
    Optional,
}

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Present.
    Ok,
    /// Absent, with the reason (the kernel's error, the value read).
    Missing(String),
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What is checked (`Kernel: VXLAN`).
    pub name: &'static str,
    /// Whether it is required.
    pub need: Need,
    /// What uses it, shown when it is missing.
    pub used_for: &'static str,
    /// The result.
    pub outcome: Outcome,
}

impl Check {
    /// True unless a required check failed.
    pub fn passes(&self) -> bool {
        self.need == Need::Optional || self.outcome == Outcome::Ok
    }
}

/// Capability numbers of `<linux/capability.h>`.
const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const CAP_SYS_ADMIN: u32 = 21;

/// Names of the probe devices (inside the probe's own namespace, so they cannot clash).
const PROBE_VXLAN: &str = "calyxprobe-vx";
const PROBE_IPIP: &str = "calyxprobe-ip";

/// Runs every check. Blocking (a thread, netlink requests, file reads): call it off the async
/// runtime.
pub fn run_checks() -> Vec<Check> {
    let caps = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| effective_caps(&s));
    let kernel = kernel_probes();
    let cap = |name, number, need, used_for| Check {
        name,
        need,
        used_for,
        outcome: match caps {
            Some(bits) if has_cap(bits, number) => Outcome::Ok,
            Some(_) => Outcome::Missing("not in the effective capability set".into()),
            None => Outcome::Missing("cannot read CapEff from /proc/self/status".into()),
        },
    };
    vec![
        Check {
            name: "Kernel: VXLAN",
            need: Need::Required,
            used_for: "VXLAN pools and the vxlan backend (vxlan.calico)",
            outcome: kernel.vxlan,
        },
        Check {
            name: "Kernel: IPIP",
            need: Need::Optional,
            used_for: "pools with ipipMode Always or CrossSubnet (tunl0)",
            outcome: kernel.ipip,
        },
        Check {
            name: "Kernel: nftables",
            need: Need::Optional,
            used_for: "natOutgoing and policy rules",
            outcome: kernel.nftables,
        },
        Check {
            name: "Kernel: TCP MD5 signatures",
            need: Need::Optional,
            used_for: "BGP peers with a password",
            outcome: kernel.tcp_md5,
        },
        Check {
            name: "Kernel: IPv6",
            need: Need::Optional,
            used_for: "IPv6 pools and IPv6 BGP",
            outcome: ipv6_outcome(),
        },
        Check {
            name: "Forwarding: IPv4",
            need: Need::Optional,
            used_for: "routing pods; `calyx node run` turns it on",
            outcome: sysctl_on("/proc/sys/net/ipv4/ip_forward"),
        },
        Check {
            name: "Forwarding: IPv6",
            need: Need::Optional,
            used_for: "routing IPv6 pods; `calyx node run` turns it on with IPv6",
            outcome: sysctl_on("/proc/sys/net/ipv6/conf/all/forwarding"),
        },
        cap(
            "Capability: CAP_NET_ADMIN",
            CAP_NET_ADMIN,
            Need::Required,
            "routes, tunnel devices, forwarding",
        ),
        cap(
            "Capability: CAP_NET_RAW",
            CAP_NET_RAW,
            Need::Optional,
            "raw sockets (BFD, ping-style probes)",
        ),
        cap(
            "Capability: CAP_SYS_ADMIN",
            CAP_SYS_ADMIN,
            Need::Optional,
            "network namespaces (these kernel probes)",
        ),
    ]
}

/// The report: one line per check, then a verdict line. Returns the text and whether every
/// required check passed.
pub fn render(checks: &[Check]) -> (String, bool) {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    let mut failed = Vec::new();
    for c in checks {
        let status = match (&c.outcome, c.need) {
            (Outcome::Ok, _) => "OK".to_string(),
            (Outcome::Missing(why), Need::Required) => {
                failed.push(c.name);
                format!("MISSING (required for {}): {why}", c.used_for)
            }
            (Outcome::Missing(why), Need::Optional) => {
                format!("WARNING, missing (used for {}): {why}", c.used_for)
            }
        };
        out.push_str(&format!("{:<width$}   {status}\n", c.name));
    }
    if failed.is_empty() {
        out.push_str("System meets the requirements to run Calyx.\n");
    } else {
        out.push_str(&format!(
            "System does not meet the requirements to run Calyx: {}\n",
            failed.join(", ")
        ));
    }
    (out, failed.is_empty())
}

/// The kernel probes' results.
struct KernelProbes {
    vxlan: Outcome,
    ipip: Outcome,
    nftables: Outcome,
    tcp_md5: Outcome,
}

/// Tries the kernel features in a namespace of their own; falls back to the kernel's build
/// configuration when no namespace can be made.
fn kernel_probes() -> KernelProbes {
    let probed = calyx_felix::run_in_new_netns(|| KernelProbes {
        vxlan: as_outcome(probe_link(vxlan_probe_msg())),
        ipip: as_outcome(probe_link(ipip_probe_msg())),
        nftables: as_outcome(probe_nftables()),
        tcp_md5: as_outcome(probe_tcp_md5()),
    });
    match probed {
        Ok(p) => p,
        Err(e) => {
            let config = read_kernel_config();
            let guess = |option: &str, module: &str| {
                guess_from_config(config.as_deref(), option, module, &e)
            };
            KernelProbes {
                vxlan: guess("CONFIG_VXLAN", "vxlan"),
                ipip: guess("CONFIG_NET_IPIP", "ipip"),
                nftables: guess("CONFIG_NF_TABLES", "nf_tables"),
                // Setting the option needs no namespace.
                tcp_md5: as_outcome(probe_tcp_md5()),
            }
        }
    }
}

fn as_outcome(r: Result<(), String>) -> Outcome {
    match r {
        Ok(()) => Outcome::Ok,
        Err(why) => Outcome::Missing(why),
    }
}

/// `ip link add calyxprobe-vx type vxlan id 4096 dstport 4789`.
fn vxlan_probe_msg() -> LinkMessage {
    let mut m = LinkMessage::default();
    m.attributes = vec![
        LinkAttribute::IfName(PROBE_VXLAN.into()),
        LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Vxlan),
            LinkInfo::Data(InfoData::Vxlan(vec![
                InfoVxlan::Id(4096),
                InfoVxlan::Port(4789),
            ])),
        ]),
    ];
    m
}

/// `ip link add calyxprobe-ip type ipip`.
fn ipip_probe_msg() -> LinkMessage {
    let mut m = LinkMessage::default();
    m.attributes = vec![
        LinkAttribute::IfName(PROBE_IPIP.into()),
        LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::IpIp)]),
    ];
    m
}

/// Creates the link (in the probe's namespace: it goes away with it).
fn probe_link(msg: LinkMessage) -> Result<(), String> {
    let mut nl = NlSocket::open().map_err(|e| format!("cannot open netlink: {e}"))?;
    nl.request(
        RouteNetlinkMessage::NewLink(msg),
        wire::NLM_F_CREATE | wire::NLM_F_EXCL,
    )
    .map_err(|f| {
        let base = f.describe();
        // What the kernel says when the link type is not built: name the cause.
        if f.errno == libc::EOPNOTSUPP || f.errno == libc::EINVAL && f.text.is_none() {
            format!("the kernel cannot create this link type ({base})")
        } else {
            base
        }
    })
}

/// `NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETGEN` and the reply type `NFT_MSG_NEWGEN`.
const NFT_GETGEN: u16 = (10 << 8) | 16;
const NFT_NEWGEN: u16 = (10 << 8) | 15;

/// Asks nf_tables for its ruleset generation over NETLINK_NETFILTER: the smallest request
/// that only a kernel with nf_tables answers.
fn probe_nftables() -> Result<(), String> {
    use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
    let mut sock =
        Socket::new(NETLINK_NETFILTER).map_err(|e| format!("no nfnetlink in this kernel: {e}"))?;
    sock.bind_auto().map_err(|e| e.to_string())?;
    sock.connect(&SocketAddr::new(0, 0))
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let start = wire::begin_msg(
        &mut buf,
        NFT_GETGEN,
        wire::NLM_F_REQUEST | wire::NLM_F_ACK,
        1,
    );
    // struct nfgenmsg: family AF_UNSPEC, version NFNETLINK_V0, res_id 0.
    buf.extend_from_slice(&[0, 0, 0, 0]);
    wire::end_msg(&mut buf, start);
    sock.send(&buf, 0).map_err(|e| e.to_string())?;
    let mut got_generation = false;
    let mut inb = vec![0u8; 16 * 1024];
    // The generation message, then the acknowledgement; bounded in case of a confused kernel.
    for _ in 0..8 {
        let n = {
            let mut slice = &mut inb[..];
            sock.recv(&mut slice, 0).map_err(|e| e.to_string())?
        };
        let n = n.min(inb.len());
        for m in wire::messages(&inb[..n]) {
            match m.ty {
                NFT_NEWGEN => got_generation = true,
                wire::NLMSG_ERROR => {
                    let code = wire::parse_error(m.payload).map_or(-libc::EIO, |(c, _)| c);
                    return if code == 0 && got_generation {
                        Ok(())
                    } else if code == 0 {
                        Err("nfnetlink answered without an nf_tables generation".into())
                    } else {
                        Err(format!(
                            "nf_tables refused the request: {}",
                            io::Error::from_raw_os_error(-code)
                        ))
                    };
                }
                _ => {}
            }
        }
    }
    Err("no acknowledgement from nf_tables".into())
}

/// Installs a TCP MD5 key on a listening socket, as the BGP speaker does for a peer with a
/// password.
fn probe_tcp_md5() -> Result<(), String> {
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0))
        .map_err(|e| format!("cannot open a TCP socket: {e}"))?;
    calyx_bgp::sockopt::set_md5(
        listener.as_raw_fd(),
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        Some("calyx-checksystem"),
    )
    .map_err(|e| format!("setsockopt TCP_MD5SIG: {e}"))
}

/// IPv6 is there when the kernel lists IPv6 interfaces and it is not switched off.
fn ipv6_outcome() -> Outcome {
    if !std::path::Path::new("/proc/net/if_inet6").exists() {
        return Outcome::Missing(
            "no /proc/net/if_inet6 (IPv6 not built or disabled at boot)".into(),
        );
    }
    match std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/disable_ipv6") {
        Ok(v) if v.trim() == "1" => Outcome::Missing("net.ipv6.conf.all.disable_ipv6 is 1".into()),
        _ => Outcome::Ok,
    }
}

/// A 0/1 sysctl file that must be 1.
fn sysctl_on(path: &str) -> Outcome {
    match std::fs::read_to_string(path) {
        Ok(v) if v.trim() == "1" => Outcome::Ok,
        Ok(v) => Outcome::Missing(format!("{path} is {}", v.trim())),
        Err(e) => Outcome::Missing(format!("cannot read {path}: {e}")),
    }
}

/// The effective capability set from `/proc/self/status` (`CapEff:\t000001ffffffffff`).
pub fn effective_caps(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// Whether capability `number` is in `bits`.
pub fn has_cap(bits: u64, number: u32) -> bool {
    number < 64 && bits & (1u64 << number) != 0
}

/// `/proc/config.gz` decompressed by `zcat`, or `/boot/config-<release>`.
fn read_kernel_config() -> Option<String> {
    let zcat = std::process::Command::new("zcat")
        .arg("/proc/config.gz")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok());
    zcat.or_else(|| {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
        std::fs::read_to_string(format!("/boot/config-{}", release.trim())).ok()
    })
}

/// Whether a kernel configuration text builds `option` in (`y`) or as a module (`m`);
/// `None` when the text does not mention it.
pub fn config_option(config: &str, option: &str) -> Option<bool> {
    for line in config.lines() {
        if let Some(value) = line.strip_prefix(option).and_then(|r| r.strip_prefix('=')) {
            return Some(matches!(value.trim(), "y" | "m"));
        }
        if line.trim() == format!("# {option} is not set") {
            return Some(false);
        }
    }
    None
}

/// The answer without a probe: loaded module, else the kernel configuration.
fn guess_from_config(
    config: Option<&str>,
    option: &str,
    module: &str,
    probe_error: &io::Error,
) -> Outcome {
    let note = format!("not probed (no namespace: {probe_error})");
    if std::path::Path::new("/sys/module").join(module).exists() {
        return Outcome::Ok;
    }
    match config.and_then(|c| config_option(c, option)) {
        Some(true) => Outcome::Ok,
        Some(false) => Outcome::Missing(format!("{option} is not set in the kernel; {note}")),
        None => Outcome::Missing(format!(
            "module {module} not loaded and the kernel configuration is unreadable; {note}"
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn capabilities_from_status() {
        let status = "Name:\tcalyx\nCapInh:\t0000000000000000\nCapEff:\t000001fffeffffff\n";
        let bits = effective_caps(status).unwrap();
        assert!(has_cap(bits, CAP_NET_ADMIN));
        assert!(has_cap(bits, CAP_SYS_ADMIN));
        // Bit 24 (CAP_SYS_RESOURCE) is clear in that mask.
        assert!(!has_cap(bits, 24));
        assert!(!has_cap(bits, 64));
        let none = effective_caps("CapEff:\t0000000000000000\n").unwrap();
        assert!(!has_cap(none, CAP_NET_RAW));
        assert_eq!(effective_caps("CapEff:\tzz\n"), None);
        assert_eq!(effective_caps("Name: x\n"), None);
    }

    #[test]
    fn kernel_config_options() {
        let config =
            "CONFIG_VXLAN=y\n# CONFIG_NET_IPIP is not set\nCONFIG_NF_TABLES=m\nCONFIG_VXLAN_X=n\n";
        assert_eq!(config_option(config, "CONFIG_VXLAN"), Some(true));
        assert_eq!(config_option(config, "CONFIG_NF_TABLES"), Some(true));
        assert_eq!(config_option(config, "CONFIG_NET_IPIP"), Some(false));
        assert_eq!(config_option(config, "CONFIG_TCP_MD5SIG"), None);
    }

    #[test]
    fn report_fails_only_on_required_checks() {
        let check = |name, need, outcome| Check {
            name,
            need,
            used_for: "x",
            outcome,
        };
        let (text, ok) = render(&[
            check("A", Need::Required, Outcome::Ok),
            check("Longer B", Need::Optional, Outcome::Missing("gone".into())),
        ]);
        assert!(ok);
        assert_eq!(
            text,
            "A          OK\nLonger B   WARNING, missing (used for x): gone\n\
             System meets the requirements to run Calyx.\n"
        );
        let (text, ok) = render(&[check("A", Need::Required, Outcome::Missing("no".into()))]);
        assert!(!ok);
        assert!(
            text.starts_with("A   MISSING (required for x): no\n"),
            "{text}"
        );
        assert!(text.ends_with("run Calyx: A\n"), "{text}");
    }
}
