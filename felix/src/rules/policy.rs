//! Network policy on nftables: the desired per-workload rules, compiled into table
//! `inet calyx-policy`.
//!
//! The node computes, for every local workload interface, which tiers, policies and profiles
//! apply in each direction, and which addresses each selector or network list stands for
//! ([`PolicyState`]); this module turns that into chains and sets:
//!
//! ```text
//! chain forward (filter, hook forward, priority 0, policy accept)
//!     iifname "cali*" ct state invalid drop
//!     oifname "cali*" ct state invalid drop
//!     ct state established,related accept
//!     iifname "cali*" iifname != @workloads drop   no WorkloadEndpoint (yet): nothing passes
//!     oifname "cali*" oifname != @workloads drop
//!     iifname vmap @from-workload            egress: "caliA" : jump fw-caliA-t0, ...
//!     oifname vmap @to-workload              ingress: "caliA" : jump tw-caliA-t0, ...
//! chain tw-caliA-t0                         one chain per tier that has policies for the
//!     <policy rules, in order>              workload in that direction:
//!         Allow -> return                   back to `forward`, which goes on (ingress after
//!         Deny  -> drop                     egress) and ends in accept
//!         Pass  -> goto next tier / profiles
//!         Log   -> log, next rule
//!     drop (end of tier) | goto next (a tier whose defaultAction is Pass)
//! chain tw-caliA-pro                        profiles, when no tier has a policy for it
//!     <profile rules>; drop
//! set s-<id>-v4 / s-<id>-v6                 addresses of a selector or a list of nets
//! ```
//!
//! Allowing with `return` (rather than `accept`) is what makes a packet between two local
//! workloads pass both the sender's egress and the receiver's ingress. Chain `input` (hook
//! input) sends a workload's traffic to this host through the same egress chains. Traffic
//! from the host to its own workloads goes through the output hook and is never policed here
//! (kubelet probes work, as under Calico's defaults). Selector sets change element by
//! element, so a workload that starts or changes labels anywhere touches only the sets it is
//! in.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

use super::model::{
    ct_state, Action, AddrSet, BaseChain, Chain, ChainType, Family, Hook, IfMap, IfName, IpVersion,
    Match, Rule, Ruleset, Table, TableId,
};

/// The policy table's name.
pub const POLICY_TABLE: &str = "calyx-policy";
/// Priority of the policy chain: the filter priority (after Calyx's forward chain at -10).
pub const POLICY_PRIORITY: i32 = 0;
/// The set of the local workloads' interfaces.
pub const KNOWN_SET: &str = "workloads";
/// Verdict map: workload interface -> its first egress chain.
pub const FROM_MAP: &str = "from-workload";
/// Verdict map: workload interface -> its first ingress chain.
pub const TO_MAP: &str = "to-workload";

/// What a policy rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Allowed in this direction.
    Allow,
    /// Dropped.
    Deny,
    /// Logged; evaluation goes on.
    Log,
    /// The rest of the tier is skipped.
    Pass,
}

/// One side of a rule, resolved to sets and port numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Side {
    /// Sets (by name, see [`PolicyState::sets`]) the address must be in, each of them.
    pub in_sets: Vec<String>,
    /// Sets the address must not be in.
    pub not_in_sets: Vec<String>,
    /// Port ranges, any of which must hold (empty: any port).
    pub ports: Vec<(u16, u16)>,
    /// Port ranges none of which may hold.
    pub not_ports: Vec<(u16, u16)>,
}

/// A rule with its selectors and named ports resolved.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PolicyRule {
    /// Action.
    pub verdict: Verdict,
    /// Only this IP version.
    pub ip_version: Option<IpVersion>,
    /// Layer-4 protocol.
    pub protocol: Option<u8>,
    /// Not this layer-4 protocol.
    pub not_protocol: Option<u8>,
    /// ICMP type and code.
    pub icmp: Option<(u8, Option<u8>)>,
    /// Not this ICMP type and code.
    pub not_icmp: Option<(u8, Option<u8>)>,
    /// Packet source.
    pub source: Side,
    /// Packet destination.
    pub destination: Side,
}

/// The rules of one policy or profile, with its name (for comments and log prefixes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedRules {
    /// `GlobalNetworkPolicy deny-all`, `NetworkPolicy shop/web`, `Profile kns.shop`.
    pub name: String,
    /// Rules in order.
    pub rules: Vec<PolicyRule>,
}

/// A tier's policies that apply to one workload in one direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierRules {
    /// Tier name.
    pub name: String,
    /// Policies, in order.
    pub policies: Vec<NamedRules>,
    /// The tier's `defaultAction` is `Pass` (otherwise traffic no policy allowed is dropped).
    pub default_pass: bool,
}

/// What applies to one workload in one direction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectionRules {
    /// Tiers with at least one policy for the workload, in order.
    pub tiers: Vec<TierRules>,
    /// The workload's profiles that exist, in order; `None` when none of them exists (then
    /// traffic that reaches the profiles is allowed: see the README on profiles).
    pub profiles: Option<Vec<NamedRules>>,
}

/// Policy of one local workload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointRules {
    /// Ingress (to the workload).
    pub ingress: DirectionRules,
    /// Egress (from the workload).
    pub egress: DirectionRules,
}

/// Everything policy needs on this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyState {
    /// Local workloads by interface name.
    pub endpoints: BTreeMap<String, EndpointRules>,
    /// Address sets by name: the workloads a selector selects, a rule's nets.
    pub sets: BTreeMap<String, BTreeSet<IpNet>>,
}

fn set_name(base: &str, v: IpVersion) -> String {
    match v {
        IpVersion::V4 => format!("{base}-v4"),
        IpVersion::V6 => format!("{base}-v6"),
    }
}

/// The nft rules of one policy rule: one per IP version it needs and per combination of
/// source and destination port range. `then` is the action for Allow and Pass.
fn compile_rule(r: &PolicyRule, allow: &Action, pass: &Action, what: &str) -> Vec<Rule> {
    let action = match r.verdict {
        Verdict::Allow => allow.clone(),
        Verdict::Deny => Action::Drop,
        Verdict::Pass => pass.clone(),
        Verdict::Log => Action::Log(log_prefix(what)),
    };
    let uses_sets = [&r.source, &r.destination]
        .iter()
        .any(|s| !s.in_sets.is_empty() || !s.not_in_sets.is_empty());
    let versions: Vec<Option<IpVersion>> = match (r.ip_version, uses_sets) {
        (Some(v), _) => vec![Some(v)],
        (None, true) => vec![Some(IpVersion::V4), Some(IpVersion::V6)],
        (None, false) => vec![None],
    };
    let ranges = |p: &Vec<(u16, u16)>| -> Vec<Option<(u16, u16)>> {
        if p.is_empty() {
            vec![None]
        } else {
            p.iter().copied().map(Some).collect()
        }
    };
    let mut out = Vec::new();
    for v in &versions {
        for sp in ranges(&r.source.ports) {
            for dp in ranges(&r.destination.ports) {
                let mut m = Vec::new();
                if let Some(v) = v {
                    m.push(Match::Protocol(*v));
                }
                if let Some(p) = r.protocol {
                    m.push(Match::L4proto(p));
                }
                if let Some(p) = r.not_protocol {
                    m.push(Match::NotL4proto(p));
                }
                for (side, src) in [(&r.source, true), (&r.destination, false)] {
                    let Some(v) = v else { break };
                    for (sets, negate) in [(&side.in_sets, false), (&side.not_in_sets, true)] {
                        for s in sets {
                            let set = set_name(s, *v);
                            m.push(if src {
                                Match::SaddrInSet {
                                    version: *v,
                                    set,
                                    negate,
                                }
                            } else {
                                Match::DaddrInSet {
                                    version: *v,
                                    set,
                                    negate,
                                }
                            });
                        }
                    }
                }
                for (side, p, dst) in [(&r.source, sp, false), (&r.destination, dp, true)] {
                    if let Some((first, last)) = p {
                        m.push(Match::Port {
                            dst,
                            first,
                            last,
                            negate: false,
                        });
                    }
                    for (first, last) in &side.not_ports {
                        m.push(Match::Port {
                            dst,
                            first: *first,
                            last: *last,
                            negate: true,
                        });
                    }
                }
                if let Some((ty, code)) = r.icmp {
                    m.push(Match::Icmp {
                        ty,
                        code,
                        negate: false,
                    });
                }
                if let Some((ty, code)) = r.not_icmp {
                    m.push(Match::Icmp {
                        ty,
                        code,
                        negate: true,
                    });
                }
                out.push(Rule::new(m, action.clone(), what));
            }
        }
    }
    out
}

/// The prefix of a `Log` rule: `calyx <policy> (<direction> tier <tier>) `, cut to what the
/// kernel takes (`NF_LOG_PREFIXLEN`, 128 bytes with the NUL; a longer one would fail the
/// whole transaction).
fn log_prefix(what: &str) -> String {
    let mut p = format!("calyx {what}");
    if p.len() > 126 {
        let mut end = 126;
        while !p.is_char_boundary(end) {
            end -= 1;
        }
        p.truncate(end);
    }
    p.push(' ');
    p
}

/// The chains of one workload in one direction (`prefix` is `tw` or `fw`); returns the name
/// of the first chain, or `None` when nothing applies (traffic allowed).
fn compile_direction(
    chains: &mut BTreeMap<String, Chain>,
    prefix: &str,
    iface: &str,
    d: &DirectionRules,
) -> Option<String> {
    let profile_chain = format!("{prefix}-{iface}-pro");
    let tier_chain = |i: usize| format!("{prefix}-{iface}-t{i}");
    // Where Pass (and a Pass tier's end) leads after tier i.
    let after = |i: usize| -> Action {
        if i + 1 < d.tiers.len() {
            Action::Goto(tier_chain(i + 1))
        } else if d.profiles.is_some() {
            Action::Goto(profile_chain.clone())
        } else {
            Action::Return
        }
    };
    for (i, t) in d.tiers.iter().enumerate() {
        let mut rules = Vec::new();
        for p in &t.policies {
            let what = format!("{} ({} tier {})", p.name, prefix_word(prefix), t.name);
            for r in &p.rules {
                rules.extend(compile_rule(r, &Action::Return, &after(i), &what));
            }
        }
        let end = if t.default_pass {
            after(i)
        } else {
            Action::Drop
        };
        rules.push(Rule::new(
            vec![],
            end,
            &format!("end of tier {} ({})", t.name, prefix_word(prefix)),
        ));
        chains.insert(tier_chain(i), Chain { base: None, rules });
    }
    if let Some(profiles) = &d.profiles {
        let mut rules = Vec::new();
        for p in profiles {
            let what = format!("{} ({})", p.name, prefix_word(prefix));
            for r in &p.rules {
                // Pass in a profile goes on with the next profile's rules.
                if r.verdict == Verdict::Pass {
                    continue;
                }
                rules.extend(compile_rule(r, &Action::Return, &Action::Return, &what));
            }
        }
        rules.push(Rule::new(
            vec![],
            Action::Drop,
            &format!("no profile allowed it ({})", prefix_word(prefix)),
        ));
        chains.insert(profile_chain.clone(), Chain { base: None, rules });
    }
    if !d.tiers.is_empty() {
        Some(tier_chain(0))
    } else if d.profiles.is_some() {
        Some(profile_chain)
    } else {
        None
    }
}

fn prefix_word(prefix: &str) -> &'static str {
    if prefix == "tw" {
        "ingress"
    } else {
        "egress"
    }
}

/// Drops invalid packets from a workload (the first rule of the forward and input chains).
fn invalid_from_workload() -> Rule {
    Rule::new(
        vec![
            Match::Iifname(IfName::Prefix(super::calyx::WORKLOAD_PREFIX.into())),
            Match::CtState {
                mask: ct_state::INVALID,
                negate: false,
            },
        ],
        Action::Drop,
        "invalid from a workload",
    )
}

/// Accepts the return traffic of connections policy allowed (forward and input chains).
fn established_or_related() -> Rule {
    Rule::new(
        vec![Match::CtState {
            mask: ct_state::ESTABLISHED | ct_state::RELATED,
            negate: false,
        }],
        Action::Accept,
        "established or related",
    )
}

/// The policy table for `s`.
pub fn table(s: &PolicyState) -> Table {
    let mut t = Table::default();
    for (name, nets) in &s.sets {
        for v in [IpVersion::V4, IpVersion::V6] {
            let mut set = AddrSet::new(v);
            set.elements.extend(
                nets.iter()
                    .filter(|n| IpVersion::of(n.addr()) == v)
                    .map(IpNet::trunc),
            );
            t.sets.insert(set_name(name, v), set);
        }
    }
    let cali = || IfName::Prefix(super::calyx::WORKLOAD_PREFIX.into());
    let mut base = vec![
        invalid_from_workload(),
        Rule::new(
            vec![
                Match::Oifname(cali()),
                Match::CtState {
                    mask: ct_state::INVALID,
                    negate: false,
                },
            ],
            Action::Drop,
            "invalid to a workload",
        ),
        established_or_related(),
    ];
    // Which chain each workload's traffic jumps to: one verdict-map lookup per direction and
    // packet, however many workloads the node has.
    let mut known = IfMap::default();
    let mut from = IfMap {
        verdicts: true,
        ..IfMap::default()
    };
    let mut to = from.clone();
    for (iface, e) in &s.endpoints {
        known.elements.insert(iface.clone(), String::new());
        if let Some(first) = compile_direction(&mut t.chains, "fw", iface, &e.egress) {
            from.elements.insert(iface.clone(), first);
        }
        if let Some(first) = compile_direction(&mut t.chains, "tw", iface, &e.ingress) {
            to.elements.insert(iface.clone(), first);
        }
    }
    t.if_maps.insert(KNOWN_SET.into(), known);
    t.if_maps.insert(FROM_MAP.into(), from);
    t.if_maps.insert(TO_MAP.into(), to);
    for oif in [false, true] {
        let (cali, word) = if oif {
            (Match::Oifname(cali()), "to")
        } else {
            (Match::Iifname(cali()), "from")
        };
        base.push(Rule::new(
            vec![
                cali,
                Match::IfnameInSet {
                    oif,
                    set: KNOWN_SET.into(),
                    negate: true,
                },
            ],
            Action::Drop,
            &format!("{word} a workload interface with no WorkloadEndpoint (yet)"),
        ));
    }
    base.push(Rule::new(
        vec![],
        Action::Vmap {
            oif: false,
            map: FROM_MAP.into(),
        },
        "egress: the workload's first policy chain",
    ));
    base.push(Rule::new(
        vec![],
        Action::Vmap {
            oif: true,
            map: TO_MAP.into(),
        },
        "ingress: the workload's first policy chain",
    ));
    t.chains.insert(
        "forward".into(),
        Chain {
            base: Some(BaseChain {
                kind: ChainType::Filter,
                hook: Hook::Forward,
                priority: POLICY_PRIORITY,
                accept: true,
            }),
            rules: base,
        },
    );
    // Workload to this host (the input hook): the workload's egress policy applies too, then
    // the host takes it (Felix's `defaultEndpointToHostAction: Accept`).
    let input = vec![
        invalid_from_workload(),
        established_or_related(),
        Rule::new(
            vec![
                Match::Iifname(cali()),
                Match::IfnameInSet {
                    oif: false,
                    set: KNOWN_SET.into(),
                    negate: true,
                },
            ],
            Action::Drop,
            "from a workload interface with no WorkloadEndpoint (yet)",
        ),
        Rule::new(
            vec![],
            Action::Vmap {
                oif: false,
                map: FROM_MAP.into(),
            },
            "egress to this host: the workload's first policy chain",
        ),
    ];
    t.chains.insert(
        "input".into(),
        Chain {
            base: Some(BaseChain {
                kind: ChainType::Filter,
                hook: Hook::Input,
                priority: POLICY_PRIORITY,
                accept: true,
            }),
            rules: input,
        },
    );
    t
}

/// The ruleset of the policy engine: table `inet calyx-policy` only.
pub fn ruleset(s: &PolicyState) -> Ruleset {
    let mut r = Ruleset::default();
    r.tables
        .insert(TableId::new(Family::Inet, POLICY_TABLE), table(s));
    r
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn allow_from(set: &str, port: Option<u16>) -> PolicyRule {
        PolicyRule {
            verdict: Verdict::Allow,
            ip_version: None,
            protocol: port.map(|_| 6),
            not_protocol: None,
            icmp: None,
            not_icmp: None,
            source: Side {
                in_sets: vec![set.into()],
                ..Side::default()
            },
            destination: Side {
                ports: port.map(|p| vec![(p, p)]).unwrap_or_default(),
                ..Side::default()
            },
        }
    }

    #[test]
    fn tiers_pass_and_profiles() {
        let mut s = PolicyState::default();
        s.sets
            .insert("s-a".into(), ["10.0.0.1/32".parse().unwrap()].into());
        let mut pass = allow_from("s-a", None);
        pass.verdict = Verdict::Pass;
        s.endpoints.insert(
            "cali1".into(),
            EndpointRules {
                ingress: DirectionRules {
                    tiers: vec![
                        TierRules {
                            name: "security".into(),
                            policies: vec![NamedRules {
                                name: "GlobalNetworkPolicy p".into(),
                                rules: vec![pass],
                            }],
                            default_pass: false,
                        },
                        TierRules {
                            name: "default".into(),
                            policies: vec![NamedRules {
                                name: "NetworkPolicy ns/q".into(),
                                rules: vec![allow_from("s-a", Some(80))],
                            }],
                            default_pass: false,
                        },
                    ],
                    profiles: Some(vec![]),
                },
                egress: DirectionRules::default(),
            },
        );
        let t = table(&s);
        assert!(t.sets.contains_key("s-a-v4") && t.sets.contains_key("s-a-v6"));
        let t0 = &t.chains["tw-cali1-t0"].rules;
        // Pass: v4 and v6 rules, then the end of the tier.
        assert_eq!(t0.len(), 3);
        assert_eq!(t0[0].action, Action::Goto("tw-cali1-t1".into()));
        assert_eq!(t0[2].action, Action::Drop);
        let t1 = &t.chains["tw-cali1-t1"].rules;
        assert_eq!(t1[0].action, Action::Return);
        assert!(t1[0].matches.contains(&Match::Port {
            dst: true,
            first: 80,
            last: 80,
            negate: false
        }));
        assert_eq!(t.chains["tw-cali1-pro"].rules.len(), 1);
        // No egress chain: nothing applies and no profile exists.
        assert!(!t.chains.keys().any(|c| c.starts_with("fw-")));
        assert_eq!(t.if_maps[TO_MAP].elements["cali1"], "tw-cali1-t0");
        assert!(t.if_maps[FROM_MAP].elements.is_empty());
        assert!(t.if_maps[KNOWN_SET].elements.contains_key("cali1"));
    }

    #[test]
    fn log_prefix_fits_the_kernel() {
        assert_eq!(
            log_prefix("p (ingress tier default)"),
            "calyx p (ingress tier default) "
        );
        let long = "x".repeat(300);
        assert_eq!(log_prefix(&long).len(), 127);
    }

    #[test]
    fn ports_expand_and_tags_differ() {
        let mut r = allow_from("s", Some(80));
        r.destination.ports.push((8000, 8080));
        r.source.not_ports.push((1, 1023));
        let rules = compile_rule(&r, &Action::Return, &Action::Return, "x");
        // Two versions x two destination ranges.
        assert_eq!(rules.len(), 4);
        let tags: BTreeSet<String> = rules.iter().map(super::super::nft::tag_of).collect();
        assert_eq!(tags.len(), 4);
    }
}
