//! Resource kinds and their names on the command line and in etcd.

use std::fmt;
use std::str::FromStr;

/// The `projectcalico.org/v3` resource kinds Calyx manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `IPPool`: a range of addresses for workloads, with its encapsulation settings.
    IPPool,
    /// `BGPPeer`: an explicit BGP peering (to a router or a route reflector).
    BGPPeer,
    /// `BGPConfiguration`: cluster-wide (`default`) or per-node (`node.<name>`) BGP settings.
    BGPConfiguration,
    /// `Node`: a host running Calyx, with its BGP and tunnel addresses.
    Node,
    /// `FelixConfiguration`: Felix's settings, stored and shown as written.
    FelixConfiguration,
    /// `IPReservation`: addresses IPAM never hands out automatically.
    IPReservation,
    /// `BGPFilter`: import/export rules a BGPPeer's sessions apply.
    BGPFilter,
}

/// The text did not name a known kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown resource kind {0:?} (expected one of ippool, bgppeer, bgpconfiguration, node, \
     felixconfiguration, ipreservation, bgpfilter, networkpolicy, globalnetworkpolicy, profile, \
     networkset, globalnetworkset, tier, or their plurals and short names; calyx get also shows \
     workloadendpoints, clusterinformations and kubecontrollersconfigurations)"
)]
pub struct UnknownKind(pub String);

impl Kind {
    /// Every kind, in the order in which they should be applied (configuration before the
    /// objects that depend on it).
    pub fn all() -> [Kind; 7] {
        [
            Kind::FelixConfiguration,
            Kind::IPReservation,
            Kind::BGPConfiguration,
            Kind::BGPFilter,
            Kind::IPPool,
            Kind::Node,
            Kind::BGPPeer,
        ]
    }

    /// Parses a kind the way calicoctl does on its command line: case-insensitive, singular,
    /// plural or short name. `ippool(s)`, `ipp(s)`, `pool(s)`; `bgppeer(s)`, `bgpp(s)`, `bp(s)`;
    /// `bgpconfiguration(s)`, `bgpconfig(s)`, `bgpc(s)`; `node(s)`, `no(s)`;
    /// `felixconfiguration(s)`, `felixconfig(s)`; `ipreservation(s)`, `ipr(s)`; `bgpfilter(s)`,
    /// `bgpf(s)`, `bf(s)`.
    pub fn parse(s: &str) -> Result<Kind, UnknownKind> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ippool" | "ippools" | "ipp" | "ipps" | "pool" | "pools" => Ok(Kind::IPPool),
            "bgppeer" | "bgppeers" | "bgpp" | "bgpps" | "bp" | "bps" => Ok(Kind::BGPPeer),
            "bgpconfiguration" | "bgpconfigurations" | "bgpconfig" | "bgpconfigs" | "bgpc"
            | "bgpcs" => Ok(Kind::BGPConfiguration),
            "node" | "nodes" | "no" | "nos" => Ok(Kind::Node),
            "felixconfiguration" | "felixconfigurations" | "felixconfig" | "felixconfigs" => {
                Ok(Kind::FelixConfiguration)
            }
            "ipreservation" | "ipreservations" | "ipr" | "iprs" => Ok(Kind::IPReservation),
            "bgpfilter" | "bgpfilters" | "bgpf" | "bgpfs" | "bf" | "bfs" => Ok(Kind::BGPFilter),
            _ => Err(UnknownKind(s.to_string())),
        }
    }

    /// The exact `kind:` value of a document (`"IPPool"`), case-sensitive as in Kubernetes.
    /// List kinds are handled by [`Kind::from_list_kind`].
    pub fn from_kind_field(s: &str) -> Option<Kind> {
        match s {
            "IPPool" => Some(Kind::IPPool),
            "BGPPeer" => Some(Kind::BGPPeer),
            "BGPConfiguration" => Some(Kind::BGPConfiguration),
            "Node" => Some(Kind::Node),
            "FelixConfiguration" => Some(Kind::FelixConfiguration),
            "IPReservation" => Some(Kind::IPReservation),
            "BGPFilter" => Some(Kind::BGPFilter),
            _ => None,
        }
    }

    /// The kind of a typed list document (`"IPPoolList"` -> `IPPool`).
    pub fn from_list_kind(s: &str) -> Option<Kind> {
        s.strip_suffix("List").and_then(Kind::from_kind_field)
    }

    /// The canonical kind name, as in `kind:` (`"IPPool"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::IPPool => "IPPool",
            Kind::BGPPeer => "BGPPeer",
            Kind::BGPConfiguration => "BGPConfiguration",
            Kind::Node => "Node",
            Kind::FelixConfiguration => "FelixConfiguration",
            Kind::IPReservation => "IPReservation",
            Kind::BGPFilter => "BGPFilter",
        }
    }

    /// The lower-case plural used in etcd keys and URLs (`"ippools"`).
    pub fn plural(self) -> &'static str {
        match self {
            Kind::IPPool => "ippools",
            Kind::BGPPeer => "bgppeers",
            Kind::BGPConfiguration => "bgpconfigurations",
            Kind::Node => "nodes",
            Kind::FelixConfiguration => "felixconfigurations",
            Kind::IPReservation => "ipreservations",
            Kind::BGPFilter => "bgpfilters",
        }
    }

    /// The etcd key prefix of this kind, with a trailing slash:
    /// `/calico/resources/v3/projectcalico.org/ippools/`.
    pub fn key_prefix(self) -> &'static str {
        match self {
            Kind::IPPool => "/calico/resources/v3/projectcalico.org/ippools/",
            Kind::BGPPeer => "/calico/resources/v3/projectcalico.org/bgppeers/",
            Kind::BGPConfiguration => "/calico/resources/v3/projectcalico.org/bgpconfigurations/",
            Kind::Node => "/calico/resources/v3/projectcalico.org/nodes/",
            Kind::FelixConfiguration => {
                "/calico/resources/v3/projectcalico.org/felixconfigurations/"
            }
            Kind::IPReservation => "/calico/resources/v3/projectcalico.org/ipreservations/",
            Kind::BGPFilter => "/calico/resources/v3/projectcalico.org/bgpfilters/",
        }
    }

    /// The full etcd key of the resource `name` of this kind.
    pub fn key(self, name: &str) -> String {
        format!("{}{}", self.key_prefix(), name)
    }

    /// Splits an etcd key into kind and name, if it is a resource key.
    pub fn from_key(key: &str) -> Option<(Kind, &str)> {
        Kind::all().into_iter().find_map(|k| {
            key.strip_prefix(k.key_prefix())
                .filter(|n| !n.is_empty() && !n.contains('/'))
                .map(|n| (k, n))
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = UnknownKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_names() {
        for (s, k) in [
            ("ippool", Kind::IPPool),
            ("IPPools", Kind::IPPool),
            ("IPPool", Kind::IPPool),
            ("pool", Kind::IPPool),
            ("ipp", Kind::IPPool),
            ("bgppeer", Kind::BGPPeer),
            ("BGPPeers", Kind::BGPPeer),
            ("bgpconfig", Kind::BGPConfiguration),
            ("bgpconfigurations", Kind::BGPConfiguration),
            ("BGPConfiguration", Kind::BGPConfiguration),
            ("node", Kind::Node),
            ("Nodes", Kind::Node),
        ] {
            assert_eq!(Kind::parse(s).unwrap(), k, "{s}");
        }
        assert_eq!(
            Kind::parse("felixconfig").unwrap(),
            Kind::FelixConfiguration
        );
        assert_eq!(Kind::parse("bgpfilters").unwrap(), Kind::BGPFilter);
        assert_eq!(Kind::parse("bf").unwrap(), Kind::BGPFilter);
        let e = Kind::parse("hostendpoint").unwrap_err();
        assert!(e.to_string().contains("hostendpoint"));
    }

    #[test]
    fn keys() {
        assert_eq!(
            Kind::IPPool.key("pool-a"),
            "/calico/resources/v3/projectcalico.org/ippools/pool-a"
        );
        assert_eq!(
            Kind::from_key("/calico/resources/v3/projectcalico.org/bgpconfigurations/default"),
            Some((Kind::BGPConfiguration, "default"))
        );
        assert_eq!(
            Kind::from_key("/calico/resources/v3/projectcalico.org/nodes/"),
            None
        );
        for k in Kind::all() {
            assert_eq!(Kind::from_kind_field(k.as_str()), Some(k));
            assert_eq!(Kind::parse(k.plural()).unwrap(), k);
            assert!(k.key_prefix().ends_with(&format!("/{}/", k.plural())));
        }
        assert_eq!(Kind::from_list_kind("NodeList"), Some(Kind::Node));
    }
}
