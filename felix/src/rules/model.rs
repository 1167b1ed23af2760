//! The desired ruleset: tables of named sets and chains, chains as ordered rule lists.
//!
//! The model is made for many chains and sets that change a little at a time (network policy
//! will build one chain per policy and one set per selector): a set's elements are diffed
//! element by element against the kernel's, and a chain whose rule list changed is rewritten
//! alone, so a change costs work in proportion to what changed, not to the ruleset.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// Address family of an nftables table (`nfgen_family`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// `inet`: IPv4 and IPv6 in one table.
    Inet,
    /// `ip`: IPv4 only (iptables-nft's tables).
    Ip,
    /// `ip6`: IPv6 only (ip6tables-nft's tables).
    Ip6,
}

impl Family {
    /// The `NFPROTO_*` number.
    pub fn nfproto(self) -> u8 {
        match self {
            Family::Inet => 1,
            Family::Ip => 2,
            Family::Ip6 => 10,
        }
    }

    /// The name `nft` uses.
    pub fn name(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
        }
    }
}

/// A table by family and name, e.g. `inet calyx`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableId {
    /// Address family.
    pub family: Family,
    /// Table name.
    pub name: String,
}

impl TableId {
    /// A table id.
    pub fn new(family: Family, name: &str) -> TableId {
        TableId {
            family,
            name: name.to_string(),
        }
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.family.name(), self.name)
    }
}

/// IPv4 or IPv6: the key type of an address set, the protocol a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpVersion {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl IpVersion {
    /// Address length in bytes.
    pub fn addr_len(self) -> usize {
        match self {
            IpVersion::V4 => 4,
            IpVersion::V6 => 16,
        }
    }

    /// The version of an address.
    pub fn of(addr: IpAddr) -> IpVersion {
        match addr {
            IpAddr::V4(_) => IpVersion::V4,
            IpAddr::V6(_) => IpVersion::V6,
        }
    }
}

/// One table Calyx owns: everything in it is Calyx's, and anything else found in it is removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    /// Chains by name.
    pub chains: BTreeMap<String, Chain>,
    /// Named address sets by name.
    pub sets: BTreeMap<String, AddrSet>,
    /// Named sets of interface names, or verdict maps keyed by interface name, by name.
    pub if_maps: BTreeMap<String, IfMap>,
}

/// A set of interface names (`type ifname`), or a verdict map from interface names to the
/// chain to jump to (`type ifname : verdict`, used as `iifname vmap @NAME`): one lookup per
/// packet, whatever the number of elements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IfMap {
    /// A verdict map (`jump CHAIN` per element) rather than a plain set.
    pub verdicts: bool,
    /// Interface name -> chain to jump to (empty for a plain set).
    pub elements: BTreeMap<String, String>,
}

/// The netfilter hook of a base chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// `prerouting`.
    Prerouting,
    /// `input`.
    Input,
    /// `forward`.
    Forward,
    /// `output`.
    Output,
    /// `postrouting`.
    Postrouting,
}

impl Hook {
    /// `NF_INET_*` number.
    pub fn number(self) -> u32 {
        match self {
            Hook::Prerouting => 0,
            Hook::Input => 1,
            Hook::Forward => 2,
            Hook::Output => 3,
            Hook::Postrouting => 4,
        }
    }

    /// From an `NF_INET_*` number.
    pub fn from_number(n: u32) -> Option<Hook> {
        Some(match n {
            0 => Hook::Prerouting,
            1 => Hook::Input,
            2 => Hook::Forward,
            3 => Hook::Output,
            4 => Hook::Postrouting,
            _ => return None,
        })
    }
}

/// Type of a base chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainType {
    /// `filter`.
    Filter,
    /// `nat`: sees the first packet of each connection only.
    Nat,
}

impl ChainType {
    /// The kernel's name.
    pub fn name(self) -> &'static str {
        match self {
            ChainType::Filter => "filter",
            ChainType::Nat => "nat",
        }
    }
}

/// What makes a chain a base chain (one attached to a hook).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseChain {
    /// Chain type.
    pub kind: ChainType,
    /// Hook.
    pub hook: Hook,
    /// Priority: lower runs first (`filter` is 0, `srcnat` 100).
    pub priority: i32,
    /// Policy: true = accept, false = drop.
    pub accept: bool,
}

/// A chain: a base chain attached to a hook, or a regular chain reached by `jump`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chain {
    /// `Some` for a base chain.
    pub base: Option<BaseChain>,
    /// Rules, in order.
    pub rules: Vec<Rule>,
}

/// A named set of IPv4 or IPv6 prefixes (an `interval` set in the kernel). Overlapping and
/// adjacent prefixes are merged into ranges when written, as the kernel needs disjoint ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrSet {
    /// Key type.
    pub version: IpVersion,
    /// Elements.
    pub elements: BTreeSet<IpNet>,
}

impl AddrSet {
    /// An empty set.
    pub fn new(version: IpVersion) -> AddrSet {
        AddrSet {
            version,
            elements: BTreeSet::new(),
        }
    }

    /// The elements as disjoint, merged ranges (only prefixes of the set's version).
    pub fn ranges(&self) -> Vec<Range> {
        let mut v: Vec<Range> = self
            .elements
            .iter()
            .filter(|n| IpVersion::of(n.addr()) == self.version)
            .map(|n| Range::of_net(n.trunc()))
            .collect();
        v.sort();
        let mut out: Vec<Range> = Vec::with_capacity(v.len());
        for r in v {
            if let Some(last) = out.last_mut() {
                match last.end {
                    None => continue, // already to the top of the space
                    Some(end) if r.start <= end => {
                        last.end = match (last.end, r.end) {
                            (Some(a), Some(b)) => Some(a.max(b)),
                            _ => None,
                        };
                        continue;
                    }
                    Some(_) => {}
                }
            }
            out.push(r);
        }
        out
    }
}

/// A range of addresses as the kernel's interval sets hold it: from `start`, up to `end`
/// excluded (`None`: to the top of the address space). Addresses as integers, IPv4 in the low
/// 32 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Range {
    /// First address.
    pub start: u128,
    /// First address after the range; `None` when the range reaches the last address.
    pub end: Option<u128>,
}

impl Range {
    /// The range of a prefix (host bits must be zero).
    pub fn of_net(net: IpNet) -> Range {
        let (start, bits, max) = match net {
            IpNet::V4(n) => (u32::from(n.addr()) as u128, 32, u32::MAX as u128),
            IpNet::V6(n) => (u128::from(n.addr()), 128, u128::MAX),
        };
        let host = bits - net.prefix_len() as u32;
        let last = if host >= 128 {
            u128::MAX
        } else {
            start | ((1u128 << host) - 1)
        };
        Range {
            start,
            end: (last < max).then(|| last + 1),
        }
    }
}

/// How an interface name is matched.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IfName {
    /// The whole name.
    Exact(String),
    /// Names that start with this (nft's `"cali*"`, iptables' `cali+`).
    Prefix(String),
}

/// One condition of a rule; all of a rule's matches must hold.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Match {
    /// The packet is IPv4 / IPv6 (`meta nfproto`); needed before address matches in an
    /// `inet` table.
    Protocol(IpVersion),
    /// Input interface.
    Iifname(IfName),
    /// Output interface.
    Oifname(IfName),
    /// Source address in (or, negated, not in) a named set of the same table.
    SaddrInSet {
        /// Address version of the set.
        version: IpVersion,
        /// Set name.
        set: String,
        /// `!=`.
        negate: bool,
    },
    /// Destination address in (or not in) a named set of the same table.
    DaddrInSet {
        /// Address version of the set.
        version: IpVersion,
        /// Set name.
        set: String,
        /// `!=`.
        negate: bool,
    },
    /// Layer-4 protocol number (`meta l4proto`).
    L4proto(u8),
    /// The input (`oif: false`) or output interface is (or, negated, is not) in a named
    /// interface set of the same table ([`IfMap`] without verdicts).
    IfnameInSet {
        /// Output interface rather than input.
        oif: bool,
        /// Set name.
        set: String,
        /// `!=`.
        negate: bool,
    },
    /// Layer-4 protocol is not this one (`meta l4proto != N`).
    NotL4proto(u8),
    /// Connection tracking state (`ct state & MASK != 0`, or `== 0` when negated); masks are
    /// the [`ct_state`] bits.
    CtState {
        /// Bits of [`ct_state`].
        mask: u32,
        /// True: none of the bits.
        negate: bool,
    },
    /// A transport port in (or not in) `first..=last` (`th dport 80-90`); needs an
    /// `L4proto` match of a protocol with ports before it.
    Port {
        /// Destination port (true) or source port.
        dst: bool,
        /// First port.
        first: u16,
        /// Last port.
        last: u16,
        /// `!=`.
        negate: bool,
    },
    /// ICMP (or ICMPv6) type and optional code (`icmp type 8 code 0`); needs an `L4proto`
    /// match of ICMP/ICMPv6 before it. Negated: not this type (and code).
    Icmp {
        /// Type.
        ty: u8,
        /// Code.
        code: Option<u8>,
        /// `!=`.
        negate: bool,
    },
}

/// Connection tracking state bits (`NF_CT_STATE_*_BIT`), for [`Match::CtState`].
pub mod ct_state {
    /// `invalid`.
    pub const INVALID: u32 = 1;
    /// `established`.
    pub const ESTABLISHED: u32 = 2;
    /// `related`.
    pub const RELATED: u32 = 4;
    /// `new`.
    pub const NEW: u32 = 8;
}

/// What a rule does when it matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    /// `accept`.
    Accept,
    /// `drop`.
    Drop,
    /// `return`.
    Return,
    /// `jump CHAIN`.
    Jump(String),
    /// `goto CHAIN`: a `return` there returns to the chain that jumped here.
    Goto(String),
    /// `log prefix "..."`, then the next rule (not a verdict).
    Log(String),
    /// `iifname vmap @MAP` (`oifname` when `oif`): jump to the chain the interface maps to;
    /// the next rule when it maps to nothing.
    Vmap {
        /// Output interface rather than input.
        oif: bool,
        /// Map name ([`IfMap`] with verdicts).
        map: String,
    },
    /// `masquerade [to :PORTS] [fully-random]`.
    Masquerade {
        /// Source port range (needs an `L4proto` match in the same rule).
        ports: Option<(u16, u16)>,
        /// `fully-random`, as Felix's `--random-fully`.
        fully_random: bool,
    },
    /// `snat to ADDR[:PORTS]`.
    Snat {
        /// Address to rewrite the source to.
        addr: IpAddr,
        /// Source port range (needs an `L4proto` match in the same rule).
        ports: Option<(u16, u16)>,
        /// `fully-random`.
        fully_random: bool,
    },
}

/// A rule: matches, an action, and a comment that says what it is for (shown by
/// `nft list ruleset`; Calyx also recognises its rules by it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Conditions, all of which must hold.
    pub matches: Vec<Match>,
    /// Action.
    pub action: Action,
    /// Human-readable purpose.
    pub comment: String,
}

impl Rule {
    /// A rule.
    pub fn new(matches: Vec<Match>, action: Action, comment: &str) -> Rule {
        Rule {
            matches,
            action,
            comment: comment.to_string(),
        }
    }
}

/// Rules Calyx keeps at the top of a chain it does not own (iptables-nft's `FORWARD`), when
/// that chain exists. Recognised by their comment prefix; nothing else of the chain is touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainInsert {
    /// The foreign table.
    pub table: TableId,
    /// The foreign chain.
    pub chain: String,
    /// Rules to keep first in it, in order.
    pub rules: Vec<Rule>,
}

/// Everything Calyx wants in nftables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Tables Calyx owns whole.
    pub tables: BTreeMap<TableId, Table>,
    /// Rules kept at the top of chains Calyx does not own.
    pub inserts: Vec<ChainInsert>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ranges_merge_overlaps_and_neighbours() {
        let mut s = AddrSet::new(IpVersion::V4);
        for n in [
            "10.0.0.0/24",
            "10.0.1.0/24",
            "10.0.0.128/25",
            "10.2.0.0/16",
            "fd00::/8",
        ] {
            s.elements.insert(n.parse().unwrap());
        }
        let r = s.ranges();
        assert_eq!(
            r,
            vec![
                Range {
                    start: 0x0a00_0000,
                    end: Some(0x0a00_0200)
                },
                Range {
                    start: 0x0a02_0000,
                    end: Some(0x0a03_0000)
                },
            ]
        );
    }

    #[test]
    fn range_to_the_top() {
        assert_eq!(
            Range::of_net("0.0.0.0/0".parse().unwrap()),
            Range {
                start: 0,
                end: None
            }
        );
        assert_eq!(
            Range::of_net("255.255.255.255/32".parse().unwrap()).end,
            None
        );
        assert_eq!(
            Range::of_net("::/0".parse().unwrap()),
            Range {
                start: 0,
                end: None
            }
        );
    }
}
