//! `BGPPeer.filters` as confd renders them into BIRD (`bird.cfg.template`,
//! `bird6.cfg.template`, `confd/pkg/resource/template/template_funcs.go`
//! `BGPFilterBIRDFuncs`), translated into the speaker's import and export policies.
//!
//! confd writes one BIRD function per filter and direction; a rule is `if (conditions) then
//! { accept; }` (or `reject;`), so the first matching rule decides and a filter with no
//! matching rule falls through to the next filter the peer names. After the last one, an
//! import filter ends in `accept;` and an export filter in `calico_export_to_bgp_peers(...);
//! reject;` (what the peer gets without filters). The speaker's [`Policy`] is an ordered rule
//! list with a default, so a peer's filters become the concatenation of their rules, each
//! tied to its family (`importV4` rules never see IPv6 routes), with default `Accept` on
//! import and `Calico` on export.
//!
//! As in confd, a name without a BGPFilter is skipped (the peering runs as if it were not
//! named) and the node-to-node mesh gets no filters. Unlike confd, which refuses to render the
//! whole BIRD configuration when one rule is malformed, a rule Calyx cannot honour (an
//! `interface` condition, a value or a field of a newer Calico) is skipped alone; both are
//! reported by [`problems`] in `calyx node status`.

use std::collections::BTreeMap;

use calyx_bgp::{
    DefaultAction, MatchOperator, Policy, PolicyRule, PrefixMatch, RouteFamily, RuleAction,
};
use calyx_datastore::resources::{
    parse_filter_cidr, BGPFilter, BGPFilterRule, BGPPeer, FilterFamily, Node, SOURCE_REMOTE_PEERS,
};
use serde::{Deserialize, Serialize};

/// A peer's filters, translated: `None` for a direction without rules (the speaker's
/// default for it, which is what confd renders without filters).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerPolicies {
    /// Applied to the routes received from the peer.
    pub import: Option<Policy>,
    /// Applied to the routes sent to the peer.
    pub export: Option<Policy>,
}

/// The import and export rules of one filter, and the rules it had to skip.
#[derive(Debug, Default)]
struct Translated {
    import: Vec<PolicyRule>,
    export: Vec<PolicyRule>,
    /// `importV4[2]: why`, one per rule skipped.
    skipped: Vec<String>,
}

/// The policies of a peering whose BGPPeer names `names` (in order).
pub fn policies(names: &[String], filters: &BTreeMap<String, BGPFilter>) -> PeerPolicies {
    let mut import = Vec::new();
    let mut export = Vec::new();
    for f in names.iter().filter_map(|n| filters.get(n)) {
        let t = translate(f);
        import.extend(t.import);
        export.extend(t.export);
    }
    PeerPolicies {
        // confd: `import filter { <filters>; accept; }`.
        import: (!import.is_empty()).then_some(Policy {
            rules: import,
            default: DefaultAction::Accept,
        }),
        // confd: `export filter { <filters>; calico_export_to_bgp_peers(...); reject; }`.
        export: (!export.is_empty()).then_some(Policy {
            rules: export,
            default: DefaultAction::Calico,
        }),
    }
}

fn translate(f: &BGPFilter) -> Translated {
    let mut t = Translated::default();
    let s = &f.spec;
    for (list, family, rules, import) in [
        ("importV4", FilterFamily::V4, &s.import_v4, true),
        ("importV6", FilterFamily::V6, &s.import_v6, true),
        ("exportV4", FilterFamily::V4, &s.export_v4, false),
        ("exportV6", FilterFamily::V6, &s.export_v6, false),
    ] {
        for (i, r) in rules.iter().enumerate() {
            match rule(r, family) {
                Ok(p) if import => t.import.push(p),
                Ok(p) => t.export.push(p),
                Err(why) => t.skipped.push(format!("{list}[{i}]: {why}")),
            }
        }
    }
    t
}

/// One rule as confd's `filterStatement` renders it.
fn rule(r: &BGPFilterRule, family: FilterFamily) -> Result<PolicyRule, String> {
    if let Some(field) = r.extra.keys().next() {
        return Err(format!(
            "`{field}` is not supported (a newer Calico's field)"
        ));
    }
    let action = match r.action.as_str() {
        "Accept" => RuleAction::Accept,
        "Reject" => RuleAction::Reject,
        other => return Err(format!("unknown action {other:?}")),
    };
    if !r.interface.is_empty() {
        // BIRD matches the route's outgoing interface (`ifname`); the speaker's routes carry
        // no interface, so the rule cannot be evaluated as Calico would.
        return Err("matching on `interface` is not supported".into());
    }
    let from_peers = match r.source.as_str() {
        "" => false,
        SOURCE_REMOTE_PEERS => true,
        other => return Err(format!("unknown source {other:?}")),
    };
    let prefix = if r.cidr.is_empty() {
        // confd ignores `prefixLength` and `matchOperator` without a CIDR.
        None
    } else {
        let cidr = parse_filter_cidr(&r.cidr, family)
            .ok_or_else(|| format!("cidr {:?} is not a CIDR of this family", r.cidr))?;
        let operator = match r.match_operator.as_str() {
            "Equal" => MatchOperator::Equal,
            "NotEqual" => MatchOperator::NotEqual,
            "In" => MatchOperator::In,
            "NotIn" => MatchOperator::NotIn,
            other => return Err(format!("unknown matchOperator {other:?}")),
        };
        // confd's `filterMatchPrefixLength`: `C{max(len(C), min), min(top, max)}`.
        let top = family.max_len();
        let (min_len, max_len) = match &r.prefix_length {
            None => (None, None),
            Some(l) => {
                let clamp = |v: i64| u8::try_from(v.clamp(0, i64::from(top))).unwrap_or(top);
                let min = l
                    .min
                    .map_or(cidr.prefix_len(), clamp)
                    .max(cidr.prefix_len());
                let max = l.max.map_or(top, clamp);
                (Some(min), Some(max))
            }
        };
        Some(PrefixMatch {
            cidr,
            operator,
            min_len,
            max_len,
        })
    };
    Ok(PolicyRule {
        family: Some(match family {
            FilterFamily::V4 => RouteFamily::Ipv4,
            FilterFamily::V6 => RouteFamily::Ipv6,
        }),
        prefix,
        from_peers,
        action,
        ..PolicyRule::default()
    })
}

/// A filter a peering of this node names that does not exist or has rules Calyx skips: a
/// status line in `calyx node status` and an entry in `/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterProblem {
    /// The BGPFilter's name.
    pub filter: String,
    /// The BGPPeers that name it (`BGPPeer "tor"`).
    pub used_by: Vec<String>,
    /// What is wrong, and what the node does about it.
    pub reason: String,
}

/// The problems with the filters named by the BGPPeers that may give node `me` a peering
/// (those that select it, and those that name it as their peer).
pub fn problems(
    peers: &BTreeMap<String, BGPPeer>,
    filters: &BTreeMap<String, BGPFilter>,
    me: &str,
    node: &Node,
    selects: impl Fn(&str, &Node) -> bool,
) -> Vec<FilterProblem> {
    let mut users: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (name, p) in peers {
        let s = &p.spec;
        let forward = if !s.node.is_empty() {
            s.node == me
        } else if !s.node_selector.is_empty() {
            selects(&s.node_selector, node)
        } else {
            true
        };
        let reverse = !s.peer_selector.is_empty() && selects(&s.peer_selector, node);
        let my_ip = node
            .spec
            .bgp
            .as_ref()
            .and_then(|b| b.ipv4_address)
            .map(|n| std::net::IpAddr::V4(n.addr()));
        let by_ip = s.peer_ip.as_ref().is_some_and(|ip| Some(ip.addr) == my_ip);
        if !(forward || reverse || by_ip) {
            continue;
        }
        for f in &s.filters {
            let list = users.entry(f.as_str()).or_default();
            let who = format!("BGPPeer {name:?}");
            if !list.contains(&who) {
                list.push(who);
            }
        }
    }
    let mut out = Vec::new();
    for (filter, used_by) in users {
        match filters.get(filter) {
            None => out.push(FilterProblem {
                filter: filter.to_string(),
                used_by,
                reason: "no such BGPFilter; the peering runs as if it were not named".into(),
            }),
            Some(f) => {
                for skipped in translate(f).skipped {
                    out.push(FilterProblem {
                        filter: filter.to_string(),
                        used_by: used_by.clone(),
                        reason: format!("rule {skipped}; the rule is skipped"),
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
#[path = "filters_tests.rs"]
mod tests;
