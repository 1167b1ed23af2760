//! Finding the node's address as calico-node does (`IP_AUTODETECTION_METHOD`), and the prefix
//! length of a configured address from the interface that holds it.

use std::net::{IpAddr, ToSocketAddrs, UdpSocket};

use calyx_felix::link::{interface_addresses, InterfaceAddress};
use ipnet::IpNet;
use regex::Regex;

use super::config::{AddressSetting, AutodetectMethod};

/// Interfaces calico-node never picks with `first-found`: loopback, bridges and virtual
/// devices of container runtimes, and Calico's own devices.
const DEFAULT_SKIP: &[&str] = &[
    "^lo$",
    "^docker.*",
    "^cbr.*",
    "^dummy.*",
    "^virbr.*",
    "^lxcbr.*",
    "^veth.*",
    "^cali.*",
    "^tunl.*",
    "^flannel.*",
    "^kube-ipvs.*",
    "^cni.*",
    "^vxlan.calico.*",
    "^vxlan-v6.calico.*",
    "^wireguard.*",
    "^nodelocaldns.*",
    "^podman.*",
];

/// Errors of address detection.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// Listing the interfaces failed.
    #[error("cannot list interface addresses: {0}")]
    Netlink(#[from] std::io::Error),
    /// Nothing matched.
    #[error("no {family} address found by {method}")]
    NotFound {
        /// IPv4 or IPv6.
        family: &'static str,
        /// The method, as configured.
        method: String,
    },
    /// The `can-reach` destination could not be resolved or routed.
    #[error("can-reach={dest}: {reason}")]
    CanReach {
        /// The destination.
        dest: String,
        /// What failed.
        reason: String,
    },
    /// A regex in the method is invalid (checked at configuration time already).
    #[error("bad interface regex {0:?}")]
    Regex(String),
}

/// Resolves an address setting to the node's address with its prefix length (`None` for
/// `none`).
pub fn resolve(setting: &AddressSetting, v6: bool) -> Result<Option<IpNet>, DetectError> {
    let family = if v6 { "IPv6" } else { "IPv4" };
    match setting {
        AddressSetting::None => Ok(None),
        AddressSetting::Fixed(ip, Some(len)) => Ok(IpNet::new(*ip, *len).ok()),
        AddressSetting::Fixed(ip, None) => {
            // Without a length, take the one of the interface holding the address; a host
            // route when no interface holds it (e.g. an address on a load balancer).
            let all = interface_addresses(v6)?;
            Ok(Some(prefix_of(&all, *ip)))
        }
        AddressSetting::Autodetect(method) => {
            let all = interface_addresses(v6)?;
            let found = match method {
                AutodetectMethod::CanReach(dest) => {
                    let ip = source_for(dest, v6)?;
                    Some(prefix_of(&all, ip))
                }
                other => pick(&all, other, v6)?,
            };
            found.map(Some).ok_or_else(|| DetectError::NotFound {
                family,
                method: format!("{method:?}"),
            })
        }
    }
}

fn prefix_of(all: &[InterfaceAddress], ip: IpAddr) -> IpNet {
    all.iter()
        .find(|a| a.address.addr() == ip)
        .map(|a| a.address)
        .unwrap_or_else(|| IpNet::from(ip))
}

fn compile(patterns: &[&str]) -> Result<Vec<Regex>, DetectError> {
    patterns
        .iter()
        .map(|p| Regex::new(p).map_err(|_| DetectError::Regex((*p).to_string())))
        .collect()
}

/// Applies an interface-based method to the host's addresses (pure: unit-tested).
pub fn pick(
    all: &[InterfaceAddress],
    method: &AutodetectMethod,
    v6: bool,
) -> Result<Option<IpNet>, DetectError> {
    let usable = |a: &&InterfaceAddress| {
        let ip = a.address.addr();
        a.up && !ip.is_loopback() && !(v6 && is_link_local_v6(ip)) && ip.is_ipv6() == v6
    };
    let skip_default = compile(DEFAULT_SKIP)?;
    let found = match method {
        AutodetectMethod::FirstFound => all
            .iter()
            .filter(usable)
            .find(|a| !skip_default.iter().any(|r| r.is_match(&a.interface))),
        AutodetectMethod::Interface(patterns) => {
            let res = compile(&patterns.iter().map(String::as_str).collect::<Vec<_>>())?;
            all.iter()
                .filter(usable)
                .find(|a| res.iter().any(|r| r.is_match(&a.interface)))
        }
        AutodetectMethod::SkipInterface(patterns) => {
            let res = compile(&patterns.iter().map(String::as_str).collect::<Vec<_>>())?;
            all.iter().filter(usable).find(|a| {
                !res.iter().any(|r| r.is_match(&a.interface))
                    && !skip_default.iter().any(|r| r.is_match(&a.interface))
            })
        }
        AutodetectMethod::Cidr(cidrs) => all
            .iter()
            .filter(usable)
            .find(|a| cidrs.iter().any(|c| c.contains(&a.address.addr()))),
        AutodetectMethod::CanReach(_) => None,
    };
    Ok(found.map(|a| a.address))
}

fn is_link_local_v6(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}

/// The source address the kernel would use towards `dest`: connecting a UDP socket sends
/// nothing, it only asks the routing table.
fn source_for(dest: &str, v6: bool) -> Result<IpAddr, DetectError> {
    let err = |reason: String| DetectError::CanReach {
        dest: dest.to_string(),
        reason,
    };
    let target = if dest.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv6()) {
        format!("[{dest}]:80")
    } else {
        format!("{dest}:80")
    };
    let addr = target
        .to_socket_addrs()
        .map_err(|e| err(e.to_string()))?
        .find(|a| a.is_ipv6() == v6)
        .ok_or_else(|| err("no address of the right family".into()))?;
    let bind = if v6 { "[::]:0" } else { "0.0.0.0:0" };
    let socket = UdpSocket::bind(bind).map_err(|e| err(e.to_string()))?;
    socket.connect(addr).map_err(|e| err(e.to_string()))?;
    Ok(socket.local_addr().map_err(|e| err(e.to_string()))?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(interface: &str, up: bool, cidr: &str) -> InterfaceAddress {
        InterfaceAddress {
            interface: interface.into(),
            index: 1,
            up,
            address: cidr.parse().unwrap(),
        }
    }

    fn host() -> Vec<InterfaceAddress> {
        vec![
            addr("lo", true, "127.0.0.1/8"),
            addr("docker0", true, "172.17.0.1/16"),
            addr("eth0", false, "10.1.0.5/24"),
            addr("eth1", true, "10.2.0.5/24"),
            addr("ens5", true, "192.168.7.9/20"),
            addr("cali123", true, "169.254.1.1/32"),
        ]
    }

    #[test]
    fn first_found_skips_loopback_virtual_and_down() {
        let got = pick(&host(), &AutodetectMethod::FirstFound, false).unwrap();
        assert_eq!(got, Some("10.2.0.5/24".parse().unwrap()));
    }

    #[test]
    fn interface_skip_and_cidr_methods() {
        let h = host();
        let by_if = AutodetectMethod::Interface(vec!["ens.*".into()]);
        assert_eq!(
            pick(&h, &by_if, false).unwrap(),
            Some("192.168.7.9/20".parse().unwrap())
        );
        let skip = AutodetectMethod::SkipInterface(vec!["eth.*".into()]);
        assert_eq!(
            pick(&h, &skip, false).unwrap(),
            Some("192.168.7.9/20".parse().unwrap())
        );
        let cidr = AutodetectMethod::Cidr(vec!["192.168.0.0/16".parse().unwrap()]);
        assert_eq!(
            pick(&h, &cidr, false).unwrap(),
            Some("192.168.7.9/20".parse().unwrap())
        );
        let none = AutodetectMethod::Cidr(vec!["10.9.0.0/16".parse().unwrap()]);
        assert_eq!(pick(&h, &none, false).unwrap(), None);
    }

    #[test]
    fn ipv6_skips_link_local() {
        let h = vec![
            addr("eth0", true, "fe80::1/64"),
            addr("eth0", true, "fd00::5/64"),
        ];
        assert_eq!(
            pick(&h, &AutodetectMethod::FirstFound, true).unwrap(),
            Some("fd00::5/64".parse().unwrap())
        );
    }

    #[test]
    fn can_reach_loopback_uses_loopback() {
        assert_eq!(
            source_for("127.0.0.1", false).unwrap(),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
    }
}
