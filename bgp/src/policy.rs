//! Import/export policy: ordered accept/reject rules in the shape of Calico's BGPFilter
//! resource, with actions that add communities or set LOCAL_PREF / MED.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use calyx_proto::{Asn, Community, PathAttributes};

/// Where a route came from, as a policy matches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PeerType {
    /// Originated by this speaker.
    Local,
    /// Learned from an iBGP peer.
    Ibgp,
    /// Learned from an eBGP peer.
    Ebgp,
}

/// How a rule's CIDR is compared with the route's prefix (Calico's `matchOperator`, rendered
/// by confd as BIRD's `net = C`, `net != C`, `net ~ C`, `net !~ C`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MatchOperator {
    /// The prefix is exactly the CIDR.
    Equal,
    /// The prefix is anything but the CIDR.
    NotEqual,
    /// The prefix is the CIDR or a more specific one.
    In,
    /// The prefix is not inside the CIDR.
    NotIn,
}

/// The address family of a route, for rules that apply to one family only (a BGPFilter's
/// `importV4` rules never see IPv6 routes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RouteFamily {
    /// IPv4 unicast.
    Ipv4,
    /// IPv6 unicast.
    Ipv6,
}

impl RouteFamily {
    /// The family of `p`.
    pub fn of(p: &IpNet) -> RouteFamily {
        match p {
            IpNet::V4(_) => RouteFamily::Ipv4,
            IpNet::V6(_) => RouteFamily::Ipv6,
        }
    }
}

/// A prefix condition. With a length range, `In` is BIRD's `net ~ [ C{min,max} ]` (inside the
/// CIDR and of a length in range) and `NotIn` its negation; `Equal` needs the CIDR itself with
/// its length in range, `NotEqual` is its negation. A prefix of the other family never
/// matches, whatever the operator.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrefixMatch {
    /// The CIDR to compare with.
    pub cidr: IpNet,
    /// The comparison.
    pub operator: MatchOperator,
    /// Minimum prefix length (inclusive).
    pub min_len: Option<u8>,
    /// Maximum prefix length (inclusive).
    pub max_len: Option<u8>,
}

impl PrefixMatch {
    /// Whether `p` matches.
    pub fn matches(&self, p: &IpNet) -> bool {
        let same_family = matches!(
            (p, &self.cidr),
            (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_))
        );
        if !same_family {
            return false;
        }
        let len_ok = self.min_len.is_none_or(|m| p.prefix_len() >= m)
            && self.max_len.is_none_or(|m| p.prefix_len() <= m);
        let equal = *p == self.cidr.trunc() && len_ok;
        let inside = self.cidr.contains(p) && len_ok;
        match self.operator {
            MatchOperator::Equal => equal,
            MatchOperator::NotEqual => !equal,
            MatchOperator::In => inside,
            MatchOperator::NotIn => !inside,
        }
    }
}

/// Accept or reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RuleAction {
    /// Accept the route (with the rule's modifications).
    Accept,
    /// Reject the route.
    Reject,
}

/// One rule: all given conditions must hold.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PolicyRule {
    /// Only routes of this family.
    pub family: Option<RouteFamily>,
    /// Prefix condition.
    pub prefix: Option<PrefixMatch>,
    /// Only routes learned from a BGP peer, not originated here (Calico's `source:
    /// RemotePeers`, BIRD's `source ~ [ RTS_BGP ]`).
    pub from_peers: bool,
    /// Where the route was learned.
    pub peer_type: Option<PeerType>,
    /// The route carries this community (`asn:value` as a 32-bit number).
    pub community: Option<u32>,
    /// The AS_PATH starts with these AS numbers.
    pub as_path_prefix: Vec<u32>,
    /// What to do on a match.
    pub action: RuleAction,
    /// Communities to add on accept.
    pub add_communities: Vec<u32>,
    /// LOCAL_PREF to set on accept.
    pub set_local_pref: Option<u32>,
    /// MED to set on accept.
    pub set_med: Option<u32>,
}

impl Default for PolicyRule {
    fn default() -> Self {
        PolicyRule {
            family: None,
            prefix: None,
            from_peers: false,
            peer_type: None,
            community: None,
            as_path_prefix: Vec::new(),
            action: RuleAction::Accept,
            add_communities: Vec::new(),
            set_local_pref: None,
            set_med: None,
        }
    }
}

impl PolicyRule {
    /// Whether the rule's conditions hold.
    pub fn matches(&self, prefix: &IpNet, attrs: &PathAttributes, source: PeerType) -> bool {
        if self.family.is_some_and(|f| f != RouteFamily::of(prefix)) {
            return false;
        }
        if self.from_peers && source == PeerType::Local {
            return false;
        }
        if let Some(m) = &self.prefix {
            if !m.matches(prefix) {
                return false;
            }
        }
        if self.peer_type.is_some_and(|t| t != source) {
            return false;
        }
        if let Some(c) = self.community {
            if !attrs.has_community(Community(c)) {
                return false;
            }
        }
        if !self.as_path_prefix.is_empty() {
            let path: Vec<Asn> = attrs
                .as_path
                .as_ref()
                .map(|p| {
                    p.segments
                        .iter()
                        .flat_map(|s| s.asns.iter().copied())
                        .collect()
                })
                .unwrap_or_default();
            if path.len() < self.as_path_prefix.len()
                || path
                    .iter()
                    .zip(&self.as_path_prefix)
                    .any(|(a, b)| a.0 != *b)
            {
                return false;
            }
        }
        true
    }

    /// Whether accepting with this rule changes the attributes.
    pub fn modifies(&self) -> bool {
        !self.add_communities.is_empty() || self.set_local_pref.is_some() || self.set_med.is_some()
    }

    /// Apply the rule's modifications.
    pub fn apply(&self, attrs: &mut PathAttributes) {
        for c in &self.add_communities {
            if !attrs.communities.contains(&Community(*c)) {
                attrs.communities.push(Community(*c));
            }
        }
        if let Some(lp) = self.set_local_pref {
            attrs.local_pref = Some(lp);
        }
        if let Some(m) = self.set_med {
            attrs.med = Some(m);
        }
    }
}

/// What happens to a route no rule matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum DefaultAction {
    /// Accept it.
    Accept,
    /// Reject it.
    Reject,
    /// Calico's default: on import accept; on export accept what this node originates and
    /// what it reflects as a route reflector.
    #[default]
    Calico,
}

/// An ordered rule list; the first matching rule decides.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Policy {
    /// The rules, in order.
    pub rules: Vec<PolicyRule>,
    /// What happens when none matches.
    pub default: DefaultAction,
}

/// The outcome of evaluating a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted by rule `i` (whose modifications apply).
    Rule(usize),
    /// Rejected.
    Reject,
    /// No rule matched: the default applies.
    Default(DefaultAction),
}

impl Policy {
    /// Accept everything.
    pub fn accept_all() -> Self {
        Policy {
            rules: Vec::new(),
            default: DefaultAction::Accept,
        }
    }

    /// Evaluate the rules for a route.
    pub fn evaluate(&self, prefix: &IpNet, attrs: &PathAttributes, source: PeerType) -> Verdict {
        for (i, r) in self.rules.iter().enumerate() {
            if r.matches(prefix, attrs, source) {
                return match r.action {
                    RuleAction::Accept => Verdict::Rule(i),
                    RuleAction::Reject => Verdict::Reject,
                };
            }
        }
        Verdict::Default(self.default)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use calyx_proto::AsPath;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn prefix_operators_and_lengths() {
        let m = |op, min, max| PrefixMatch {
            cidr: net("10.0.0.0/8"),
            operator: op,
            min_len: min,
            max_len: max,
        };
        assert!(m(MatchOperator::Equal, None, None).matches(&net("10.0.0.0/8")));
        assert!(!m(MatchOperator::Equal, None, None).matches(&net("10.1.0.0/16")));
        assert!(m(MatchOperator::In, None, None).matches(&net("10.1.0.0/16")));
        assert!(!m(MatchOperator::In, None, None).matches(&net("11.0.0.0/16")));
        assert!(m(MatchOperator::NotIn, None, None).matches(&net("11.0.0.0/16")));
        assert!(!m(MatchOperator::In, Some(26), Some(26)).matches(&net("10.1.0.0/16")));
        assert!(m(MatchOperator::In, Some(26), Some(26)).matches(&net("10.1.0.64/26")));
        assert!(!m(MatchOperator::In, None, None).matches(&net("fd00::/64")));
        assert!(!m(MatchOperator::NotIn, None, None).matches(&net("fd00::/64")));
        assert!(m(MatchOperator::NotEqual, None, None).matches(&net("10.1.0.0/16")));
        assert!(!m(MatchOperator::NotEqual, None, None).matches(&net("10.0.0.0/8")));
        // NotIn with a range is the negation of In with it (BIRD's `net !~ [ C{a,b} ]`).
        assert!(m(MatchOperator::NotIn, Some(26), Some(26)).matches(&net("10.1.0.0/16")));
        assert!(!m(MatchOperator::NotIn, Some(26), Some(26)).matches(&net("10.1.0.64/26")));
        assert!(m(MatchOperator::NotIn, Some(26), Some(26)).matches(&net("11.1.0.64/26")));
        assert!(!m(MatchOperator::Equal, Some(9), None).matches(&net("10.0.0.0/8")));
        assert!(m(MatchOperator::NotEqual, Some(9), None).matches(&net("10.0.0.0/8")));
    }

    #[test]
    fn family_and_source_conditions() {
        let rule = PolicyRule {
            family: Some(RouteFamily::Ipv6),
            from_peers: true,
            action: RuleAction::Reject,
            ..Default::default()
        };
        let a = PathAttributes::default();
        assert!(rule.matches(&net("fd00::/64"), &a, PeerType::Ebgp));
        assert!(rule.matches(&net("fd00::/64"), &a, PeerType::Ibgp));
        assert!(!rule.matches(&net("fd00::/64"), &a, PeerType::Local));
        assert!(!rule.matches(&net("10.0.0.0/8"), &a, PeerType::Ebgp));
    }

    #[test]
    fn first_match_wins_and_actions_apply() {
        let p = Policy {
            rules: vec![
                PolicyRule {
                    prefix: Some(PrefixMatch {
                        cidr: net("10.0.0.0/8"),
                        operator: MatchOperator::In,
                        min_len: None,
                        max_len: None,
                    }),
                    peer_type: Some(PeerType::Ebgp),
                    action: RuleAction::Reject,
                    ..Default::default()
                },
                PolicyRule {
                    as_path_prefix: vec![65001],
                    add_communities: vec![Community::new(65000, 7).0],
                    set_local_pref: Some(200),
                    set_med: Some(5),
                    ..Default::default()
                },
                PolicyRule {
                    community: Some(Community::NO_EXPORT.0),
                    action: RuleAction::Reject,
                    ..Default::default()
                },
            ],
            default: DefaultAction::Accept,
        };
        let mut a = PathAttributes {
            as_path: Some(AsPath::sequence([Asn(65001), Asn(65009)])),
            ..Default::default()
        };
        assert_eq!(
            p.evaluate(&net("10.1.0.0/16"), &a, PeerType::Ebgp),
            Verdict::Reject
        );
        assert_eq!(
            p.evaluate(&net("10.1.0.0/16"), &a, PeerType::Ibgp),
            Verdict::Rule(1)
        );
        p.rules[1].apply(&mut a);
        assert_eq!(a.local_pref, Some(200));
        assert_eq!(a.med, Some(5));
        assert!(a.has_community(Community::new(65000, 7)));
        let b = PathAttributes {
            communities: vec![Community::NO_EXPORT],
            ..Default::default()
        };
        assert_eq!(
            p.evaluate(&net("192.168.0.0/16"), &b, PeerType::Local),
            Verdict::Reject
        );
        assert_eq!(
            p.evaluate(
                &net("192.168.0.0/16"),
                &PathAttributes::default(),
                PeerType::Local
            ),
            Verdict::Default(DefaultAction::Accept)
        );
    }
}
