//! The rules Calyx itself needs, as Calico's Felix writes them for iptables, on nftables:
//! natOutgoing (`cali-nat-outgoing`), and the acceptance of workload and tunnel traffic in
//! the forward path (`cali-FORWARD`). See the README's "Rules on nftables" for the result as
//! `nft list ruleset` shows it.

use std::net::IpAddr;

use ipnet::IpNet;

use super::model::{
    Action, AddrSet, BaseChain, Chain, ChainInsert, ChainType, Family, Hook, IfName, IpVersion,
    Match, Rule, Ruleset, Table, TableId,
};
use crate::config::{IPIP_DEVICE, VXLAN_V4_DEVICE, VXLAN_V6_DEVICE};

/// Calyx's table.
pub const TABLE: &str = "calyx";
/// Priority of Calyx's forward chain: just before the filter tables (`filter - 10`).
pub const FORWARD_PRIORITY: i32 = -10;
/// Priority of Calyx's NAT chain: `srcnat`, where iptables' nat POSTROUTING also runs.
pub const SRCNAT_PRIORITY: i32 = 100;
/// Prefix of workload interfaces (Calico's `cali+`).
pub const WORKLOAD_PREFIX: &str = "cali";

/// `FelixConfiguration.natOutgoingExclusions`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NatExclusions {
    /// Traffic to any pool is never NATed (default).
    #[default]
    IpPoolsOnly,
    /// Nor is traffic to the hosts' addresses.
    IpPoolsAndHostIps,
}

/// What the node decides for natOutgoing and forwarding, from IPPools and FelixConfiguration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatSettings {
    /// Every IP pool: its CIDR and `natOutgoing`.
    pub pools: Vec<(IpNet, bool)>,
    /// `FelixConfiguration.natOutgoingAddress`: SNAT IPv4 traffic to this address instead of
    /// masquerading to the outgoing interface's.
    pub nat_outgoing_address: Option<IpAddr>,
    /// `FelixConfiguration.natPortRange`: source ports NAT may use.
    pub nat_port_range: Option<(u16, u16)>,
    /// `FelixConfiguration.natOutgoingExclusions`.
    pub exclusions: NatExclusions,
    /// The hosts' addresses (used with [`NatExclusions::IpPoolsAndHostIps`]).
    pub host_ips: Vec<IpNet>,
    /// Keep accept rules for workload and tunnel traffic at the top of iptables-nft's
    /// `filter FORWARD` chains (when they exist), as Felix keeps its `cali-FORWARD` jump there:
    /// a drop policy in that chain would drop pod traffic whatever Calyx's own table says.
    pub accept_in_iptables_forward: bool,
}

fn set_name(kind: &str, v: IpVersion) -> String {
    match v {
        IpVersion::V4 => format!("{kind}-v4"),
        IpVersion::V6 => format!("{kind}-v6"),
    }
}

fn forward_rules() -> Vec<Rule> {
    let mut v = Vec::new();
    let ifs = [
        IfName::Prefix(WORKLOAD_PREFIX.into()),
        IfName::Exact(VXLAN_V4_DEVICE.into()),
        IfName::Exact(VXLAN_V6_DEVICE.into()),
        IfName::Exact(IPIP_DEVICE.into()),
    ];
    for i in &ifs {
        let shown = match i {
            IfName::Prefix(p) => format!("{p}*"),
            IfName::Exact(n) => n.clone(),
        };
        v.push(Rule::new(
            vec![Match::Iifname(i.clone())],
            Action::Accept,
            &format!("accept from {shown}"),
        ));
        v.push(Rule::new(
            vec![Match::Oifname(i.clone())],
            Action::Accept,
            &format!("accept to {shown}"),
        ));
    }
    v
}

fn nat_rules(s: &NatSettings, v: IpVersion, exclude_hosts: bool) -> Vec<Rule> {
    let mut matches = vec![
        Match::Protocol(v),
        Match::SaddrInSet {
            version: v,
            set: set_name("masq-ipam-pools", v),
            negate: false,
        },
        Match::DaddrInSet {
            version: v,
            set: set_name("all-ipam-pools", v),
            negate: true,
        },
    ];
    if exclude_hosts {
        matches.push(Match::DaddrInSet {
            version: v,
            set: set_name("all-hosts", v),
            negate: true,
        });
    }
    let snat_to = s.nat_outgoing_address.filter(|a| IpVersion::of(*a) == v);
    let action = |ports| match snat_to {
        Some(addr) => Action::Snat {
            addr,
            ports,
            fully_random: true,
        },
        None => Action::Masquerade {
            ports,
            fully_random: true,
        },
    };
    let what = match snat_to {
        Some(a) => format!("natOutgoing: snat to {a}"),
        None => "natOutgoing: masquerade".to_string(),
    };
    let mut rules = Vec::new();
    if let Some(ports) = s.nat_port_range {
        // Ports can only be mapped for protocols that have them: TCP and UDP get the range,
        // everything else is NATed without it (as Felix does).
        for (proto, name) in [(6u8, "tcp"), (17u8, "udp")] {
            let mut m = matches.clone();
            m.push(Match::L4proto(proto));
            rules.push(Rule::new(
                m,
                action(Some(ports)),
                &format!("{what} {name} ports {}-{}", ports.0, ports.1),
            ));
        }
    }
    rules.push(Rule::new(matches, action(None), &what));
    rules
}

/// The ruleset for `s`: table `inet calyx`, and (if asked) the accept rules kept at the top of
/// `ip filter FORWARD` and `ip6 filter FORWARD`.
pub fn ruleset(s: &NatSettings) -> Ruleset {
    let mut t = Table::default();
    let exclude_hosts = s.exclusions == NatExclusions::IpPoolsAndHostIps;
    for v in [IpVersion::V4, IpVersion::V6] {
        let mut all = AddrSet::new(v);
        let mut masq = AddrSet::new(v);
        for (cidr, nat) in &s.pools {
            if IpVersion::of(cidr.addr()) != v {
                continue;
            }
            all.elements.insert(cidr.trunc());
            if *nat {
                masq.elements.insert(cidr.trunc());
            }
        }
        t.sets.insert(set_name("all-ipam-pools", v), all);
        t.sets.insert(set_name("masq-ipam-pools", v), masq);
        if exclude_hosts {
            let mut hosts = AddrSet::new(v);
            hosts.elements.extend(
                s.host_ips
                    .iter()
                    .filter(|n| IpVersion::of(n.addr()) == v)
                    .map(IpNet::trunc),
            );
            t.sets.insert(set_name("all-hosts", v), hosts);
        }
    }
    t.chains.insert(
        "forward".into(),
        Chain {
            base: Some(BaseChain {
                kind: ChainType::Filter,
                hook: Hook::Forward,
                priority: FORWARD_PRIORITY,
                accept: true,
            }),
            rules: forward_rules(),
        },
    );
    t.chains.insert(
        "postrouting".into(),
        Chain {
            base: Some(BaseChain {
                kind: ChainType::Nat,
                hook: Hook::Postrouting,
                priority: SRCNAT_PRIORITY,
                accept: true,
            }),
            rules: vec![Rule::new(
                vec![],
                Action::Jump("nat-outgoing".into()),
                "natOutgoing",
            )],
        },
    );
    let mut nat = nat_rules(s, IpVersion::V4, exclude_hosts);
    nat.extend(nat_rules(s, IpVersion::V6, exclude_hosts));
    t.chains.insert(
        "nat-outgoing".into(),
        Chain {
            base: None,
            rules: nat,
        },
    );
    let mut r = Ruleset::default();
    r.tables.insert(TableId::new(Family::Inet, TABLE), t);
    if s.accept_in_iptables_forward {
        for f in [Family::Ip, Family::Ip6] {
            r.inserts.push(ChainInsert {
                table: TableId::new(f, "filter"),
                chain: "FORWARD".into(),
                rules: forward_rules(),
            });
        }
    }
    r
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sets_split_by_version_and_nat() {
        let s = NatSettings {
            pools: vec![
                ("10.65.0.0/16".parse().unwrap(), true),
                ("10.66.0.0/16".parse().unwrap(), false),
                ("fd00:65::/48".parse().unwrap(), true),
            ],
            ..Default::default()
        };
        let r = ruleset(&s);
        let t = &r.tables[&TableId::new(Family::Inet, TABLE)];
        assert_eq!(t.sets["all-ipam-pools-v4"].elements.len(), 2);
        assert_eq!(t.sets["masq-ipam-pools-v4"].elements.len(), 1);
        assert_eq!(t.sets["masq-ipam-pools-v6"].elements.len(), 1);
        assert_eq!(t.chains["nat-outgoing"].rules.len(), 2);
        assert!(r.inserts.is_empty());
    }

    #[test]
    fn port_range_and_snat_address() {
        let s = NatSettings {
            pools: vec![("10.65.0.0/16".parse().unwrap(), true)],
            nat_outgoing_address: Some("192.0.2.7".parse().unwrap()),
            nat_port_range: Some((32768, 40000)),
            accept_in_iptables_forward: true,
            ..Default::default()
        };
        let r = ruleset(&s);
        let t = &r.tables[&TableId::new(Family::Inet, TABLE)];
        let rules = &t.chains["nat-outgoing"].rules;
        // v4: tcp, udp, rest (snat); v6: tcp, udp, rest (masquerade: the address is IPv4).
        assert_eq!(rules.len(), 6);
        assert!(matches!(rules[2].action, Action::Snat { .. }));
        assert!(matches!(rules[5].action, Action::Masquerade { .. }));
        assert_eq!(r.inserts.len(), 2);
    }
}
