//! Unit tests of the translation for IPv6 and dual-stack nodes: one session per family, each
//! carrying its own family, as Calico's bird.cfg and bird6.cfg.

#![allow(clippy::field_reassign_with_default)] // Specs are built field by field, as users write them.

use super::tests::cluster;
use super::*;
use crate::config::RouterIdSetting;
use crate::secrets::Secrets;
use calyx_datastore::resources::{
    Asn, BGPPeer, BGPPeerSpec, Node, NodeBGPSpec, NodeSpec, ObjectMeta, PeerIp,
};
use std::net::IpAddr;

fn node(name: &str, v4: Option<&str>, v6: Option<&str>, labels: &[(&str, &str)]) -> Node {
    let mut meta = ObjectMeta::named(name);
    for (k, v) in labels {
        meta.labels.insert((*k).into(), (*v).into());
    }
    Node {
        metadata: meta,
        spec: NodeSpec {
            bgp: Some(NodeBGPSpec {
                ipv4_address: v4.map(|a| format!("{a}/24").parse().unwrap()),
                ipv6_address: v6.map(|a| format!("{a}/64").parse().unwrap()),
                ..Default::default()
            }),
            ..Default::default()
        },
        status: None,
        extra: Default::default(),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn a_dual_stack_mesh_has_one_session_per_family_each_carrying_its_own() {
    let mut s = cluster(vec![
        node("a", Some("10.0.0.1"), Some("fd00::1"), &[]),
        node("b", Some("10.0.0.2"), Some("fd00::2"), &[]),
        node("c", Some("10.0.0.3"), None, &[]),
    ]);
    for (cidr, host) in [
        ("10.65.0.0/26", "a"),
        ("fd10::/122", "a"),
        ("fd10::40/122", "b"),
    ] {
        s.affinities.insert(cidr.parse().unwrap(), host.to_string());
    }
    let p = plan(&s, "a", RouterIdSetting::NodeAddress, &Secrets::default()).unwrap();
    let addrs: Vec<String> = p.peers.keys().map(ToString::to_string).collect();
    assert_eq!(addrs, ["10.0.0.2", "10.0.0.3", "fd00::2"]);
    let v4 = &p.peers[&ip("10.0.0.2")];
    assert!(v4.ipv4 && !v4.ipv6, "an IPv4 session carries IPv4 only");
    assert_eq!(v4.local_address, Some(ip("10.0.0.1")));
    let v6 = &p.peers[&ip("fd00::2")];
    assert!(v6.ipv6 && !v6.ipv4, "an IPv6 session carries IPv6 only");
    assert_eq!(v6.local_address, Some(ip("fd00::1")));
    assert_eq!(v6.label, PeerLabel::Mesh);
    // confd's rule in each family: the greater address (as text) waits.
    assert!(v6.passive);
    let from_b = plan(&s, "b", RouterIdSetting::NodeAddress, &Secrets::default()).unwrap();
    assert!(!from_b.peers[&ip("fd00::1")].passive);
    // A node with an IPv6 address listens on [::] (both families on one socket).
    assert_eq!(
        p.global.listen.map(|l| l.to_string()).as_deref(),
        Some("[::]:179")
    );
    // A node without one keeps 0.0.0.0 and has no IPv6 peers.
    let from_c = plan(&s, "c", RouterIdSetting::NodeAddress, &Secrets::default()).unwrap();
    assert!(from_c.peers.keys().all(IpAddr::is_ipv4));
    assert_eq!(
        from_c.global.listen.map(|l| l.to_string()).as_deref(),
        Some("0.0.0.0:179")
    );
    // Own blocks of both families are originated.
    let originated: Vec<String> = p.originate.keys().map(ToString::to_string).collect();
    assert_eq!(originated, ["10.65.0.0/26", "fd10::/122"]);
}

#[test]
fn a_bgppeer_with_an_ipv6_peer_ip_peers_from_the_nodes_ipv6_address() {
    let mut s = cluster(vec![node("a", Some("10.0.0.1"), Some("fd00::1"), &[])]);
    let mut spec = BGPPeerSpec::default();
    spec.peer_ip = Some(PeerIp {
        addr: ip("fd00::fe"),
        port: None,
    });
    spec.as_number = Some(Asn(65001));
    s.bgp_peers
        .insert("tor6".into(), BGPPeer::new("tor6", spec));
    let p = plan(&s, "a", RouterIdSetting::NodeAddress, &Secrets::default()).unwrap();
    let tor = &p.peers[&ip("fd00::fe")];
    assert!(tor.ipv6 && !tor.ipv4);
    assert_eq!(tor.local_address, Some(ip("fd00::1")));
    assert_eq!(tor.remote_as, 65001);
}

#[test]
fn a_peer_selector_peers_with_each_address_family_of_the_selected_nodes() {
    let mut s = cluster(vec![
        node("a", Some("10.0.0.1"), Some("fd00::1"), &[]),
        node("rr", Some("10.0.0.9"), Some("fd00::9"), &[("rr", "yes")]),
    ]);
    let mut spec = BGPPeerSpec::default();
    spec.peer_selector = "rr == 'yes'".into();
    s.bgp_peers
        .insert("to-rr".into(), BGPPeer::new("to-rr", spec));
    let p = plan(&s, "a", RouterIdSetting::NodeAddress, &Secrets::default()).unwrap();
    let addrs: Vec<String> = p.peers.keys().map(ToString::to_string).collect();
    assert_eq!(addrs, ["10.0.0.9", "fd00::9"]);
    assert!(p.peers[&ip("fd00::9")].ipv6 && !p.peers[&ip("fd00::9")].ipv4);
    // And the reflector peers back with a over both families.
    let back = plan(&s, "rr", RouterIdSetting::NodeAddress, &Secrets::default()).unwrap();
    let addrs: Vec<String> = back.peers.keys().map(ToString::to_string).collect();
    assert_eq!(addrs, ["10.0.0.1", "fd00::1"]);
}
