//! Which of the planned BGP peers run BFD (issue 19): a `BGPPeer` with
//! `failureDetectionMode: BFDIfDirectlyConnected`, and the node-to-node mesh when the default
//! `BGPConfiguration` has `nodeMeshFailureDetectionMode: BFDIfDirectlyConnected`, each only
//! for a peer on a subnet of this node (single-hop BFD, RFC 5881). Timers: the `BGPPeer`'s
//! `bfd`, else the `BGPConfiguration`'s, else 300 ms x 3. Pure, beside [`crate::bgp`]'s plan.

use std::collections::BTreeMap;
use std::net::IpAddr;

use calyx_bgp::config::BfdSettings;
use calyx_bgp::{PeerConfig, PeerLabel};
use calyx_datastore::resources::{wants_bfd, BGPConfiguration, BGPPeer, BfdSpec, Node};
use calyx_datastore::selector::Selector;

use super::cluster::ClusterState;

/// Whether `addr` is on a subnet of `node` (its BGP IPv4 or IPv6 address with prefix).
fn directly_connected(node: &Node, addr: IpAddr) -> bool {
    let Some(b) = node.spec.bgp.as_ref() else {
        return false;
    };
    match addr {
        IpAddr::V4(a) => b.ipv4_address.is_some_and(|n| n.contains(&a)),
        IpAddr::V6(a) => b.ipv6_address.is_some_and(|n| n.contains(&a)),
    }
}

fn settings(spec: Option<&BfdSpec>) -> BfdSettings {
    let (rx, tx, mult) = spec.cloned().unwrap_or_default().effective();
    let ms = |d: std::time::Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1);
    BfdSettings {
        min_tx_ms: ms(tx),
        min_rx_ms: ms(rx),
        multiplier: mult,
    }
}

/// Whether `node` has `addr` as its BGP address of either family.
fn has_address(node: &Node, addr: IpAddr) -> bool {
    node.spec.bgp.as_ref().is_some_and(|b| match addr {
        IpAddr::V4(a) => b.ipv4_address.is_some_and(|n| n.addr() == a),
        IpAddr::V6(a) => b.ipv6_address.is_some_and(|n| n.addr() == a),
    })
}

/// The BGPPeer that asks for BFD on this node's peering with `addr`, deciding per BGPPeer as
/// confd does: one that applies to this node (`node`/`nodeSelector`) and names `addr` by
/// `peerIP` or by a `peerSelector` that selects the node with that address; or the reverse
/// peering of one that applies to that node and whose `peerSelector` selects this node.
fn bfd_peer<'a>(state: &'a ClusterState, me: &Node, addr: IpAddr) -> Option<&'a BGPPeer> {
    let me_name = me.metadata.name.as_str();
    let selects = |selector: &str, n: &Node| {
        Selector::parse(selector).is_ok_and(|sel| sel.matches(&n.metadata.labels))
    };
    state.bgp_peers.values().find(|p| {
        let s = &p.spec;
        if !wants_bfd(s.failure_detection_mode.as_deref()) {
            return false;
        }
        if let Some(ip) = &s.peer_ip {
            return ip.addr == addr && crate::bgp::applies_to(s, me_name, me);
        }
        if s.peer_selector.is_empty() {
            return false;
        }
        state.nodes.iter().any(|(name, other)| {
            has_address(other, addr)
                && ((crate::bgp::applies_to(s, me_name, me) && selects(&s.peer_selector, other))
                    || (crate::bgp::applies_to(s, name, other) && selects(&s.peer_selector, me)))
        })
    })
}

/// Set `bfd` on the planned peers of node `me` that ask for it.
pub(crate) fn apply(
    peers: &mut BTreeMap<IpAddr, PeerConfig>,
    state: &ClusterState,
    me: &Node,
    config: &BGPConfiguration,
) {
    let defaults = config.spec.bfd.as_ref();
    for p in peers.values_mut() {
        if !directly_connected(me, p.address) {
            continue;
        }
        let timers = match p.label {
            PeerLabel::Mesh => wants_bfd(config.spec.node_mesh_failure_detection_mode.as_deref())
                .then(|| settings(defaults)),
            PeerLabel::Global | PeerLabel::NodeSpecific => {
                bfd_peer(state, me, p.address).map(|bp| settings(bp.spec.bfd.as_ref().or(defaults)))
            }
        };
        p.bfd = timers;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use calyx_datastore::resources::{GoDuration, NodeBGPSpec};
    use std::time::Duration;

    fn node(ip: &str) -> Node {
        let mut n = Node::new("me", Default::default());
        n.spec.bgp = Some(NodeBGPSpec {
            ipv4_address: ip.parse().ok(),
            ..Default::default()
        });
        n
    }

    fn peer_cfg(addr: &str, label: PeerLabel) -> PeerConfig {
        PeerConfig {
            label,
            ..PeerConfig::new(addr.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])), 65000)
        }
    }

    #[test]
    fn bfd_for_directly_connected_peers_that_ask_for_it() {
        let me = node("10.0.0.1/24");
        let mut state = ClusterState::default();
        let mut config = BGPConfiguration::new("default", Default::default());
        let mut tor: BGPPeer = serde_json::from_value(serde_json::json!({
            "apiVersion": "projectcalico.org/v3", "kind": "BGPPeer",
            "metadata": {"name": "tor"},
            "spec": {"peerIP": "10.0.0.254", "asNumber": 65001,
                     "failureDetectionMode": "BFDIfDirectlyConnected",
                     "bfd": {"minimumSendInterval": "100ms", "multiplier": 5}}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        state.bgp_peers.insert("tor".into(), tor.clone());
        let mut far = tor.clone();
        far.spec.peer_ip = "192.0.2.1".parse().ok();
        state.bgp_peers.insert("far".into(), far);
        let mut peers = BTreeMap::new();
        for (a, l) in [
            ("10.0.0.254", PeerLabel::Global),
            ("192.0.2.1", PeerLabel::Global),
            ("10.0.0.2", PeerLabel::Mesh),
        ] {
            peers.insert(
                a.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
                peer_cfg(a, l),
            );
        }
        apply(&mut peers, &state, &me, &config);
        fn got(peers: &BTreeMap<IpAddr, PeerConfig>, a: &str) -> Option<BfdSettings> {
            peers
                .values()
                .find(|p| p.address.to_string() == a)
                .and_then(|p| p.bfd)
        }
        assert_eq!(
            got(&peers, "10.0.0.254"),
            Some(BfdSettings {
                min_tx_ms: 100,
                min_rx_ms: 300,
                multiplier: 5
            })
        );
        // Not directly connected: no BFD; the mesh did not ask for it.
        assert_eq!(got(&peers, "192.0.2.1"), None);
        assert_eq!(got(&peers, "10.0.0.2"), None);

        // The mesh asks, with default timers from the BGPConfiguration.
        config.spec.node_mesh_failure_detection_mode = Some("BFDIfDirectlyConnected".into());
        config.spec.bfd = Some(BfdSpec {
            minimum_recv_interval: Some(GoDuration(Duration::from_millis(200))),
            ..Default::default()
        });
        tor.spec.failure_detection_mode = Some("None".into());
        state.bgp_peers.insert("tor".into(), tor);
        apply(&mut peers, &state, &me, &config);
        assert_eq!(
            got(&peers, "10.0.0.2"),
            Some(BfdSettings {
                min_tx_ms: 300,
                min_rx_ms: 200,
                multiplier: 3
            })
        );
        assert_eq!(got(&peers, "10.0.0.254"), None);
    }

    #[test]
    fn bfd_is_decided_by_the_bgppeer_that_applies_to_this_node() {
        // `tor-b` asks for BFD but is node b's; `tor` (global, same address) does not.
        let me = node("10.0.0.1/24");
        let mut state = ClusterState::default();
        let config = BGPConfiguration::new("default", Default::default());
        let peer = |name: &str, extra: serde_json::Value| -> BGPPeer {
            let mut spec = serde_json::json!({"peerIP": "10.0.0.254", "asNumber": 65001});
            if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
                s.extend(e.clone());
            }
            serde_json::from_value(serde_json::json!({
                "apiVersion": "projectcalico.org/v3", "kind": "BGPPeer",
                "metadata": {"name": name}, "spec": spec
            }))
            .unwrap_or_else(|e| panic!("{e}"))
        };
        state
            .bgp_peers
            .insert("tor".into(), peer("tor", serde_json::json!({})));
        state.bgp_peers.insert(
            "tor-b".into(),
            peer(
                "tor-b",
                serde_json::json!({"node": "b", "failureDetectionMode": "BFDIfDirectlyConnected"}),
            ),
        );
        let mut peers = BTreeMap::new();
        peers.insert(
            "10.0.0.254".parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
            peer_cfg("10.0.0.254", PeerLabel::Global),
        );
        apply(&mut peers, &state, &me, &config);
        assert!(peers.values().all(|p| p.bfd.is_none()));
        // The same BGPPeer for this node ("me") turns it on.
        state.bgp_peers.insert(
            "tor-me".into(),
            peer(
                "tor-me",
                serde_json::json!({"node": "me", "failureDetectionMode": "BFDIfDirectlyConnected"}),
            ),
        );
        apply(&mut peers, &state, &me, &config);
        assert!(peers.values().all(|p| p.bfd.is_some()));
    }
}
